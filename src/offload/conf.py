"""offload's settings: one ``OFFLOAD = {...}`` dict in Django settings, with documented defaults.

See ``docs/settings.md``. Environment variables (``OFFLOAD_HOME``, ``OFFLOAD_LOCAL_MAX_JOBS`` …)
fill the defaults, so the start-* scripts can point the CLI and the monitor at an engine without a
settings file.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offload.errors import ConfigurationError

ENGINE_ENV_PREFIX = "OFFLOAD_ENGINE_"


def default_home() -> Path:
    """``$OFFLOAD_HOME``, else ``.offload`` in the current directory."""
    return _resolved(str(os.environ.get("OFFLOAD_HOME") or Path.cwd() / ".offload"))


@functools.lru_cache(maxsize=256)
def _resolved(path: str) -> Path:
    """``Path(path).resolve()``, remembered: every new job needs its workspace root, and
    resolving costs a system call per path component."""
    return Path(path).resolve()


def workspace_root() -> Path:
    """The root of app and user workspaces, as :func:`get_settings` gives it, without the rest of
    the settings (this is on the path of every job creation)."""
    from django.conf import settings as django_settings

    raw: dict[str, Any] = getattr(django_settings, "OFFLOAD", None) or {}
    if raw.get("WORKSPACE_ROOT"):
        return _resolved(str(raw["WORKSPACE_ROOT"]))
    home = _resolved(str(raw["HOME"])) if raw.get("HOME") else default_home()
    return _resolved(str(home / "workspaces"))


@dataclass(frozen=True)
class OffloadSettings:
    #: Root of offload's files: workspaces, the embedded SQLite database, local-engine state.
    home: Path
    #: Root of app and user workspaces (``<workspace_root>/<app>/app``, ``…/<app>/users/<user>``).
    workspace_root: Path
    #: Seconds between monitor cycles while jobs are active.
    poll_interval: float = 5.0
    #: Seconds between cycles while nothing is active (intents still wake it at this pace).
    idle_interval: float = 1.0
    #: Seconds a monitor's claim on an intent or a scheduler lasts without renewal.
    lease_seconds: float = 60.0
    #: Backoff for transient failures: first delay, factor, ceiling (seconds).
    retry_initial: float = 2.0
    retry_factor: float = 2.0
    retry_max: float = 300.0
    #: Jobs submitted per engine call.
    submit_batch_size: int = 200
    #: Engine options per engine kind, e.g. ``{"local": {"max_jobs": 4}}``.
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)


def engine_options_from_environment() -> dict[str, dict[str, Any]]:
    """``OFFLOAD_ENGINE_<KIND>='{"option": value}'`` variables (printed by the start-* scripts) as
    engine options per kind; ``OFFLOAD["ENGINES"]`` entries override them."""
    engines: dict[str, dict[str, Any]] = {}
    for name, value in os.environ.items():
        if not name.startswith(ENGINE_ENV_PREFIX) or not value.strip():
            continue
        kind = name[len(ENGINE_ENV_PREFIX) :].lower()
        try:
            options = json.loads(value)
        except ValueError as exc:
            raise ConfigurationError(f"{name} must hold a JSON object of options: {exc}") from None
        if not isinstance(options, dict):
            raise ConfigurationError(f"{name} must hold a JSON object of options, not {value!r}")
        engines[kind] = options
    return engines


def get_settings() -> OffloadSettings:
    from django.conf import settings as django_settings

    raw: dict[str, Any] = dict(getattr(django_settings, "OFFLOAD", {}) or {})
    home = _resolved(str(raw["HOME"])) if raw.get("HOME") else default_home()
    engines = engine_options_from_environment()
    for kind, options in (raw.get("ENGINES") or {}).items():
        engines[kind.lower()] = {**engines.get(kind.lower(), {}), **dict(options)}
    local = engines.setdefault("local", {})
    local.setdefault("state_dir", str(home / "local-engine"))
    if os.environ.get("OFFLOAD_LOCAL_MAX_JOBS"):
        local.setdefault("max_jobs", int(os.environ["OFFLOAD_LOCAL_MAX_JOBS"]))
    return OffloadSettings(
        home=home,
        workspace_root=workspace_root(),
        poll_interval=float(raw.get("POLL_INTERVAL", 5.0)),
        idle_interval=float(raw.get("IDLE_INTERVAL", 1.0)),
        lease_seconds=float(raw.get("LEASE_SECONDS", 60.0)),
        retry_initial=float(raw.get("RETRY_INITIAL", 2.0)),
        retry_factor=float(raw.get("RETRY_FACTOR", 2.0)),
        retry_max=float(raw.get("RETRY_MAX", 300.0)),
        submit_batch_size=int(raw.get("SUBMIT_BATCH_SIZE", 200)),
        engines=engines,
    )
