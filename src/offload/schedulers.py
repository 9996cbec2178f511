"""Which engine runs a job, and the scheduler records admins register.

A job with a ``scheduler`` record runs on that scheduler; a job without one runs on its type's
default engine, configured in ``OFFLOAD["ENGINES"]`` (and by the ``start-*`` scripts' exports).
Engines are built once per scheduler and reused (one client per scheduler, never one per job).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from offload.conf import get_settings
from offload.engines import Engine, engine_class
from offload.errors import ConfigurationError, InvalidJobError
from offload.models import JOB_TYPES, Job, Scheduler, SchedulerType

#: group key → (the options the engine was built with, the engine).
_cache: dict[str, tuple[dict[str, Any], Engine]] = {}
_lock = threading.Lock()
log = logging.getLogger("offload.schedulers")


def engine_kind_for_job(job: Job) -> str:
    if job.scheduler_id is not None:
        return str(job.scheduler.scheduler_type)  # type: ignore[union-attr]
    cls = JOB_TYPES.get(job.job_type)
    if cls is None:
        raise ConfigurationError(f"job {job.id} has unknown job type {job.job_type!r}")
    return cls.engine_kind


def engine_class_for_job(job: Job) -> type[Engine]:
    return engine_class(engine_kind_for_job(job))


def group_key(job: Job) -> str:
    """Jobs with the same key are polled together, with one query per cycle."""
    return f"{engine_kind_for_job(job)}:{job.scheduler_id or 'default'}"


def engine_options(kind: str, scheduler: Scheduler | None) -> dict[str, Any]:
    settings = get_settings()
    defaults = dict(settings.engines.get(kind, {}))
    # Remote engines map workspaces below this folder to their remote_workspace_root.
    defaults.setdefault("local_workspace_root", str(settings.workspace_root))
    if scheduler is not None:
        defaults.update(scheduler.engine_options())
    return defaults


def build_engine_for(kind: str, scheduler: Scheduler | None) -> Engine:
    return engine_class(kind)(engine_options(kind, scheduler))


def engine_for_job(job: Job) -> Engine:
    """A shared engine for reading a job's logs and the like from app code. Built again when the
    options differ from those it was built with (a scheduler record edited, or a new record that
    got the id of a deleted one), so it never reads from the wrong host or folder."""
    key = group_key(job)
    kind = engine_kind_for_job(job)
    options = engine_options(kind, job.scheduler)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] == options:
            return cached[1]
        engine = engine_class(kind)(options)
        _cache[key] = (options, engine)
    if cached is not None:
        try:
            cached[1].close()
        except Exception:  # best effort: the replaced engine is no longer used here
            log.exception("closing the engine of %s failed", key)
    return engine


def create_scheduler(
    name: str,
    host: str = "",
    scheduler_type: str = "local",
    username: str = "",
    password: str | None = None,
    private_key_path: str | None = None,
    private_key_pass: str | None = None,
    port: int | None = None,
    **options: Any,
) -> Scheduler:
    """Register a scheduler. Passwords and key passphrases are encrypted at rest."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidJobError("name", "a scheduler needs a non-empty name")
    if scheduler_type not in SchedulerType.values:
        raise InvalidJobError(
            "scheduler_type",
            f"{scheduler_type!r} is not one of {', '.join(SchedulerType.values)}",
        )
    if port is not None and not (0 < int(port) < 65536):
        raise InvalidJobError("port", f"{port!r} is not a TCP port (1-65535)")
    if scheduler_type == "dask":
        _check_dask_options(host, options)
    if Scheduler.objects.filter(name=name).exists():
        raise InvalidJobError("name", f"a scheduler named {name!r} already exists")
    if private_key_path:
        options["private_key_path"] = private_key_path
    scheduler = Scheduler(
        name=name,
        scheduler_type=scheduler_type,
        host=host or "",
        username=username or "",
        port=port,
        options=options,
    )
    scheduler.set_secrets({"password": password or "", "private_key_pass": private_key_pass or ""})
    scheduler.save()
    return scheduler


def create_dask_scheduler(
    name: str,
    host: str,
    timeout: float | None = None,
    heartbeat_interval: int | None = None,
    dashboard: str | None = None,
) -> Scheduler:
    """Register a Dask scheduler (Tethys's ``create_dask_scheduler``): ``host`` is its address
    (``tcp://10.0.0.5:8786`` or ``10.0.0.5:8786``), ``timeout`` the seconds to connect,
    ``heartbeat_interval`` the client's heartbeat in milliseconds, ``dashboard`` its dashboard URL."""
    return create_scheduler(
        name,
        host=host,
        scheduler_type="dask",
        timeout=timeout,
        heartbeat_interval=heartbeat_interval,
        dashboard=dashboard,
    )


def create_condor_scheduler(
    name: str,
    host: str,
    username: str = "",
    password: str | None = None,
    private_key_path: str | None = None,
    private_key_pass: str | None = None,
    port: int | None = None,
    **options: Any,
) -> Scheduler:
    """Register an HTCondor schedd reached over SSH (Tethys's ``create_condor_scheduler``): the
    HTCondor commands run on ``host`` (a submit node of the pool) as ``username``. Options as for
    any SSH scheduler: ``known_hosts``, ``remote_workspace_root``, ``remote_environment`` …"""
    return create_scheduler(
        name,
        host=host,
        scheduler_type="condor",
        username=username,
        password=password,
        private_key_path=private_key_path,
        private_key_pass=private_key_pass,
        port=port,
        **options,
    )


def _check_dask_options(host: str, options: dict[str, Any]) -> None:
    if not isinstance(host, str) or not host.strip():
        raise InvalidJobError("host", "a Dask scheduler needs its address, e.g. tcp://host:8786")
    if any(c.isspace() for c in host.strip()):
        raise InvalidJobError("host", f"{host!r} is not a scheduler address")
    for field, kind in (("timeout", float), ("heartbeat_interval", int)):
        value = options.get(field)
        if value is None:
            options.pop(field, None)
            continue
        try:
            number = kind(value)
        except (TypeError, ValueError):
            number = 0
        if isinstance(value, bool) or number <= 0:
            raise InvalidJobError(field, f"must be a positive number, not {value!r}")
        options[field] = number
    dashboard = options.get("dashboard")
    if not dashboard:
        options.pop("dashboard", None)
    elif not isinstance(dashboard, str) or not dashboard.startswith(("http://", "https://")):
        raise InvalidJobError("dashboard", f"must be an http(s) URL, not {dashboard!r}")


def list_schedulers(scheduler_type: str | None = None) -> list[Scheduler]:
    qs = Scheduler.objects.all()
    if scheduler_type:
        qs = qs.filter(scheduler_type=scheduler_type)
    return list(qs)


def get_scheduler(name: str) -> Scheduler | None:
    return Scheduler.objects.filter(name=name).first()


def remove_scheduler(name: str) -> bool:
    """Remove a scheduler record; refused while jobs still use it."""
    scheduler = get_scheduler(name)
    if scheduler is None:
        return False
    if scheduler.jobs.exists():
        raise InvalidJobError(
            "name", f"scheduler {name!r} still has {scheduler.jobs.count()} jobs; delete them first"
        )
    scheduler.delete()
    return True
