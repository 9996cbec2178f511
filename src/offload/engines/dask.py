"""The Dask engine: DaskJobs on a Dask scheduler (``dask.distributed``).

``DaskJob.execute(obj)`` runs in the app's process, where the task lives as a Python object: a
``dask.delayed`` object (or any Dask collection), a callable with its arguments, or a ``Future``
already on a scheduler. The first two are written with Dask's own serialization into the job's
workspace (``.offload/job-<id>/task.dask``), never into a database column; a Future's key is
recorded (and the future held on its scheduler). The monitor submits the task with one
:class:`Client` per scheduler, reused for every job and every cycle, under a key of its own per
attempt (``offload-<job>-<attempt>``), so a monitor that restarts finds the task instead of
submitting it again.

Status comes from the scheduler's view (a client sees a running task as "pending"): one
``run_on_scheduler`` call per cycle answers for every key (:func:`dask_remote.task_states`).
A finished task's result is gathered by the monitor and stored in the workspace, again with Dask's
serialization (``.offload/job-<id>/attempt-<n>/result.dask``); ``DaskJob.result`` loads it. Every
offload task is held on the scheduler by a pseudo-client until its result is stored (see
:mod:`dask_remote`).

Options (``OFFLOAD_ENGINE_DASK='{"address": "tcp://127.0.0.1:8786"}'`` or a scheduler record):
``address`` (or the record's ``host``/``port``), ``timeout`` (seconds to connect and for each
call, default 10), ``heartbeat_interval`` (milliseconds), ``dashboard`` (URL shown in the UI;
default: what the scheduler reports), ``lost_polls`` (polls a key may be missing from a scheduler
that answers before the job is Error, default 3).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from offload.engines import dask_remote
from offload.engines.base import (
    Engine,
    JobHandle,
    JobSpec,
    NativeReport,
    SubmitOutcome,
    SubmitResult,
    attempt_dir,
    job_folder,
)
from offload.errors import EngineUnavailableError, InvalidJobError
from offload.status import Status

log = logging.getLogger("offload.engines.dask")

#: How a DaskJob's task was given: a delayed object (or collection), a callable, a Future.
TASK_KINDS = ("delayed", "callable", "future")
TASK_FILE = "task.dask"
RESULT_FILE = "result.dask"
ERROR_FILE = "error.txt"
LOG_FILE = "dask.log"
#: Lines of the scheduler's and each worker's log read when tasks end.
LOG_LINES = 1000
#: Dask task states → offload statuses ("memory" and "erred" are handled on their own).
WAITING_STATES = frozenset({"released", "waiting", "no-worker", "queued", "forgotten"})
_connection_errors: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncio.CancelledError,
    concurrent.futures.CancelledError,
)


def _pickle_remote_by_value() -> None:
    """The scheduler and the workers need not have offload installed."""
    import cloudpickle  # type: ignore[import-untyped]

    if dask_remote.__name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(dask_remote)


def offload_folder(workspace: str, job_id: int) -> Path:
    """offload's folder for the job in its workspace (its task file and attempts)."""
    return Path(job_folder(workspace, job_id))


def result_path(workspace: str, job_id: int, attempt: int) -> Path:
    return attempt_dir(workspace, job_id, attempt) / RESULT_FILE


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def serialize(value: Any) -> bytes:
    """``value`` in Dask's serialization; raises for a value Dask cannot serialize (instead of
    Dask's default, which stores its error message in the value's place)."""
    from distributed.protocol.serialize import serialize_bytes

    return bytes(serialize_bytes(value, on_error="raise"))


def deserialize(data: bytes) -> Any:
    from distributed.protocol.serialize import deserialize_bytes

    return deserialize_bytes(data)


def task_kind(obj: Any) -> str:
    """What ``DaskJob.execute(obj)`` was given; :class:`InvalidJobError` for anything else."""
    from dask.base import is_dask_collection
    from distributed import Future

    if isinstance(obj, Future):
        return "future"
    if is_dask_collection(obj):
        return "delayed"
    if callable(obj):
        return "callable"
    raise InvalidJobError(
        "obj",
        f"a DaskJob runs a dask.delayed object, a Future or a callable, not {type(obj).__name__}",
    )


def task_bytes(kind: str, obj: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
    """The task in Dask's serialization, for ``.offload/job-<id>/task.dask``."""
    payload = {"kind": kind, "obj": obj, "args": tuple(args), "kwargs": dict(kwargs)}
    try:
        return serialize(payload)
    except Exception as exc:
        raise InvalidJobError(
            "obj", f"the task cannot be serialized: {type(exc).__name__}: {exc}"
        ) from None


def write_task(workspace: str, job_id: int, data: bytes) -> Path:
    path = offload_folder(workspace, job_id) / TASK_FILE
    _write_atomic(path, data)
    return path


def read_task(workspace: str, job_id: int) -> dict[str, Any]:
    path = offload_folder(workspace, job_id) / TASK_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidJobError("obj", f"the job's task file {path} is missing") from None
    payload = deserialize(data)
    if not isinstance(payload, dict) or payload.get("kind") not in ("delayed", "callable"):
        raise InvalidJobError("obj", f"{path} does not hold an offload Dask task")
    return payload


def store_result(workspace: str, job_id: int, attempt: int, value: Any) -> Path:
    """Keep ``value`` as the attempt's result (what :func:`load_result` returns from now on)."""
    path = result_path(workspace, job_id, attempt)
    _write_atomic(path, serialize(value))
    return path


def load_result(workspace: str, job_id: int, attempt: int) -> Any:
    """The stored result of an attempt (None when the job was run with ``forget=True``)."""
    path = result_path(workspace, job_id, attempt)
    if not path.exists():
        return None
    return deserialize(path.read_bytes())


def _clock(stamp: Any) -> str:
    try:
        return datetime.datetime.fromtimestamp(float(stamp), datetime.UTC).strftime(
            "%Y-%m-%d %H:%M:%S.%f"
        )[:-3]
    except (TypeError, ValueError, OverflowError):
        return str(stamp)


def _story_keys(entry: Sequence[Any]) -> tuple[Any, ...]:
    """The keys a ``Client.story`` entry is about: its second item, or a tuple of keys there."""
    if len(entry) < 3:
        return ()
    return (
        tuple(entry[1])
        if isinstance(entry[1], tuple)
        else (entry[1], *(entry[2] if isinstance(entry[2], tuple) else ()))
    )


def _names(text: str, key: str) -> bool:
    """Whether ``text`` names ``key`` (not merely a longer key: offload-1-1 in offload-1-10)."""
    start = text.find(key)
    while start >= 0:
        after = text[start + len(key) : start + len(key) + 1]
        if not (after.isalnum() or after in ("-", "_")):
            return True
        start = text.find(key, start + 1)
    return False


def task_logs(
    keys: Sequence[str],
    story: Sequence[Sequence[Any]],
    scheduler_lines: Sequence[Sequence[str]],
    worker_lines: Mapping[str, Sequence[Sequence[str]]],
) -> dict[str, str]:
    """The text of ``dask.log`` for each key: its story (``Client.story``: source first,
    timestamp last), then the scheduler's and the workers' log lines that name it. One pass over
    the story; log lines are matched only against keys they could name."""
    wanted = set(keys)
    # A key's story may hold an earlier task of the same name (another database's job, a
    # scheduler that outlived a reset): keep what followed its last start on the scheduler.
    since: dict[Any, float] = {}
    for entry in story:
        if len(entry) >= 4 and entry[0] == "scheduler" and entry[2] == "released":
            since[entry[1]] = max(since.get(entry[1], 0.0), float(entry[-1]))
    stories: dict[str, list[str]] = {key: [] for key in keys}
    for entry in story:
        for key in _story_keys(entry):
            if key in wanted and float(entry[-1]) >= since.get(key, 0.0):
                source, *middle, stamp = entry
                parts = " ".join(str(p) for p in middle if not isinstance(p, dict) and p != key)
                stories[key].append(f"{_clock(stamp)} {source}: {parts}")

    def naming(lines: Sequence[Sequence[str]]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = defaultdict(list)
        for line in reversed(lines):  # Dask gives them newest first
            text = str(line[-1])
            for key in wanted:
                if _names(text, key):
                    found[key].append(text)
        return found

    in_scheduler = naming(scheduler_lines)
    in_workers = {worker: naming(lines) for worker, lines in sorted(worker_lines.items())}
    texts: dict[str, str] = {}
    for key in keys:
        out = [f"Dask task {key}", "", "-- story (scheduler and workers, UTC) --", *stories[key]]
        out += ["", "-- scheduler log --", *in_scheduler.get(key, [])]
        for worker, found in in_workers.items():
            if found.get(key):
                out += ["", f"-- worker {worker} log --", *found[key]]
        texts[key] = "\n".join(out) + "\n"
    return texts


def scheduler_address(options: Mapping[str, Any]) -> str:
    """The scheduler address from engine options: a record's ``host`` (+ ``port``), else ``address``."""
    address = str(options.get("host") or options.get("address") or "").strip()
    port = options.get("port")
    if address and port and address.rsplit("/", 1)[-1].count(":") == 0:
        address = f"{address}:{port}"
    if address and "://" not in address:
        address = f"tcp://{address}"
    return address


class DaskEngine(Engine):
    kind = "dask"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.address = scheduler_address(self.options)
        self.timeout = float(self.options.get("timeout") or 10)
        heartbeat = self.options.get("heartbeat_interval")
        self.heartbeat_interval = int(heartbeat) if heartbeat else None
        self.dashboard = str(self.options.get("dashboard") or "")
        self.lost_polls = int(self.options.get("lost_polls") or 3)
        self.gather_timeout = float(self.options.get("gather_timeout") or 120)
        self._clients: dict[str, Any] = {}
        #: Futures of tasks this engine submitted, kept until the scheduler's holder has them.
        self._pending: dict[str, Any] = {}
        #: Key → consecutive polls it was missing from a scheduler that answered.
        self._missing: dict[str, int] = {}
        #: Number of status calls made (one per scheduler per poll), for tests and benchmarks.
        self.status_calls = 0

    # -- validation ------------------------------------------------------------------------------
    def validate(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        params = dict(parameters)
        task = params.get("task")
        if task not in TASK_KINDS:
            raise InvalidJobError(
                "obj",
                "a DaskJob is executed with its task: job.execute(delayed_obj), "
                "job.execute(future) or job.execute(function, *args, **kwargs)",
            )
        forget = params.get("forget")
        if forget is not None and not isinstance(forget, bool):
            raise InvalidJobError("forget", f"must be true or false, not {forget!r}")
        for name in ("scheduler_address", "key"):
            value = params.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidJobError(name, f"must be a string, not {value!r}")
        if task == "future" and not params.get("key"):
            raise InvalidJobError("key", "a Future's job needs the future's key")
        return params

    # -- the client (one per scheduler, reused) --------------------------------------------------
    def address_for(self, parameters: Mapping[str, Any], state: Mapping[str, Any]) -> str:
        return str(
            state.get("address") or parameters.get("scheduler_address") or self.address or ""
        )

    def client(self, address: str) -> Any:
        if not address:
            raise EngineUnavailableError(
                "no Dask scheduler is configured: set OFFLOAD_ENGINE_DASK "
                '(\'{"address": "tcp://host:8786"}\') or give the job a scheduler'
            )
        client = self._clients.get(address)
        if client is not None and client.status == "running":
            return client
        if client is not None:
            self._drop_client(address)
        from distributed import Client

        _pickle_remote_by_value()
        try:
            client = Client(  # type: ignore[no-untyped-call]
                address,
                timeout=self.timeout,
                set_as_default=False,
                heartbeat_interval=self.heartbeat_interval,
                name="offload-monitor",
            )
        except _connection_errors as exc:
            raise EngineUnavailableError(
                f"the Dask scheduler {address} cannot be reached: {exc or type(exc).__name__}"
            ) from None
        except ValueError as exc:
            raise EngineUnavailableError(f"bad Dask scheduler address {address!r}: {exc}") from None
        self._clients[address] = client
        return client

    def _drop_client(self, address: str) -> None:
        client = self._clients.pop(address, None)
        self._pending = {k: f for k, f in self._pending.items() if f.client is not client}
        if client is not None:
            try:
                client.close(timeout=2)
            except Exception:  # closing a broken client is best effort
                log.debug("closing the Dask client of %s failed", address, exc_info=True)

    def call(self, address: str, function: Any, **kwargs: Any) -> Any:
        """``function(dask_scheduler=…, **kwargs)`` on the scheduler; unreachable → stale."""
        client = self.client(address)
        try:
            return client.run_on_scheduler(function, callback_timeout=self.timeout, **kwargs)
        except _connection_errors as exc:
            self._drop_client(address)
            raise EngineUnavailableError(
                f"the Dask scheduler {address} did not answer: {exc or type(exc).__name__}"
            ) from None

    def states(
        self, address: str, keys: Sequence[str], release: Sequence[str] = ()
    ) -> tuple[str, dict[str, list[str]]]:
        self.status_calls += 1
        answer = self.call(address, dask_remote.task_states, keys=list(keys), release=list(release))
        return str(answer["id"]), dict(answer["tasks"])

    def dashboard_for(self, client: Any) -> str:
        if self.dashboard:
            return self.dashboard
        try:
            return str(client.dashboard_link or "")
        except Exception:  # the dashboard is optional (bokeh may be missing)
            return ""

    # -- submitting ------------------------------------------------------------------------------
    @staticmethod
    def key_for(spec: JobSpec) -> str:
        if spec.parameters.get("task") == "future":
            return str(spec.parameters["key"])
        return spec.key

    def submit_batch(self, specs: Sequence[JobSpec]) -> list[SubmitResult]:
        by_address: dict[str, list[JobSpec]] = defaultdict(list)
        for spec in specs:
            by_address[self.address_for(spec.parameters, {})].append(spec)
        results: dict[int, SubmitResult] = {}
        for address, group in by_address.items():
            try:
                client = self.client(address)
                scheduler_id, existing = self.states(address, [self.key_for(s) for s in group])
            except EngineUnavailableError as exc:
                for spec in group:
                    results[spec.job_id] = SubmitResult(
                        spec.job_id, SubmitOutcome.UNAVAILABLE, message=str(exc)
                    )
                continue
            dashboard = self.dashboard_for(client)
            for spec in group:
                results[spec.job_id] = self._submit_one(
                    client, address, scheduler_id, dashboard, spec, existing
                )
        return [results[s.job_id] for s in specs]

    def _submit_one(
        self,
        client: Any,
        address: str,
        scheduler_id: str,
        dashboard: str,
        spec: JobSpec,
        existing: Mapping[str, list[str]],
    ) -> SubmitResult:
        kind = str(spec.parameters.get("task"))
        key = self.key_for(spec)
        state = {
            "address": address,
            "scheduler_id": scheduler_id,
            "dashboard": dashboard,
            "task": kind,
            "key": key,
            "forget": bool(spec.parameters.get("forget")),
        }
        known = existing.get(key)
        if known is not None and known[0] != "cancelled":
            return SubmitResult(
                spec.job_id,
                SubmitOutcome.SUBMITTED,
                native_id=key,
                state=state,
                native_status=known[0],
                adopted=kind != "future",
            )
        if kind == "future":
            return SubmitResult(
                spec.job_id,
                SubmitOutcome.REJECTED,
                message=f"the Future's task {key} is not on the Dask scheduler {address} "
                "(it was released, or the scheduler restarted)",
            )
        try:
            self._submit_task(client, spec.workspace, spec.job_id, key)
        except InvalidJobError as exc:
            return SubmitResult(spec.job_id, SubmitOutcome.REJECTED, message=exc.problem)
        except _connection_errors as exc:
            self._drop_client(address)
            return SubmitResult(
                spec.job_id,
                SubmitOutcome.UNAVAILABLE,
                message=f"the Dask scheduler {address} did not answer: {exc}",
            )
        except Exception as exc:  # the user's object could not be loaded or submitted
            return SubmitResult(
                spec.job_id,
                SubmitOutcome.REJECTED,
                message=f"the task could not be submitted: {type(exc).__name__}: {exc}",
            )
        return SubmitResult(
            spec.job_id, SubmitOutcome.SUBMITTED, native_id=key, state=state, native_status="sent"
        )

    def _submit_task(self, client: Any, workspace: str, job_id: int, key: str) -> None:
        from dask.delayed import delayed

        payload = read_task(workspace, job_id)
        if payload["kind"] == "delayed":
            wrapped = delayed(dask_remote.identity, pure=False)(payload["obj"], dask_key_name=key)
            future = client.compute(wrapped)
        else:
            future = client.submit(
                payload["obj"], *payload["args"], key=key, pure=False, **payload["kwargs"]
            )
        # Held here until a status call has the scheduler's holder take it over.
        self._pending[key] = future

    # -- polling ---------------------------------------------------------------------------------
    def poll_batch(self, handles: Sequence[JobHandle]) -> dict[int, NativeReport]:
        by_address: dict[str, list[JobHandle]] = defaultdict(list)
        for handle in handles:
            by_address[self.address_for({}, handle.state)].append(handle)
        reports: dict[int, NativeReport] = {}
        for address, group in by_address.items():
            reports.update(self._poll_scheduler(address, group))
        return reports

    def _poll_scheduler(
        self, address: str, handles: Sequence[JobHandle]
    ) -> dict[int, NativeReport]:
        keys = [h.native_id for h in handles]
        scheduler_id, tasks = self.states(address, keys)
        for key in keys:
            if key in tasks:
                self._pending.pop(key, None)  # the holder has it now
        reports: dict[int, NativeReport] = {}
        to_gather: list[JobHandle] = []
        release: list[str] = []
        forget_marks: list[str] = []
        for handle in handles:
            key = handle.native_id
            known = tasks.get(key)
            if known is None:
                reports[handle.job_id] = self._missing_report(address, scheduler_id, handle)
                continue
            self._missing.pop(key, None)
            state, error = known
            if state == "memory":
                if handle.state.get("forget"):
                    reports[handle.job_id] = NativeReport(
                        handle.job_id, Status.COMPLETE, state, "finished (result not kept: forget)"
                    )
                    release.append(key)
                else:
                    to_gather.append(handle)
            elif state == "processing":
                reports[handle.job_id] = NativeReport(handle.job_id, Status.RUNNING, state)
            elif state == "erred":
                self._write_error(handle, error)
                reports[handle.job_id] = NativeReport(
                    handle.job_id, Status.ERROR, state, error or "the task failed"
                )
                release.append(key)
            elif state == "cancelled":
                reports[handle.job_id] = NativeReport(
                    handle.job_id, Status.ABORTED, state, "cancelled"
                )
                forget_marks.append(key)
            elif state in WAITING_STATES:
                message = "no worker can run it" if state == "no-worker" else ""
                reports[handle.job_id] = NativeReport(
                    handle.job_id, Status.SUBMITTED, state, message
                )
            else:
                reports[handle.job_id] = NativeReport(
                    handle.job_id, None, state, f"unknown Dask state {state}"
                )
        if to_gather:
            gathered = self._gather(address, to_gather)
            reports.update(gathered)
            release.extend(h.native_id for h in to_gather)
        ended = [
            h
            for h in handles
            if h.job_id in reports
            and reports[h.job_id].status in (Status.COMPLETE, Status.ERROR, Status.ABORTED)
            and reports[h.job_id].native_status != "lost"
        ]
        if ended:
            self._write_logs(address, ended)
        if release or forget_marks:
            # Letting go of finished tasks: best effort (a later poll or cleanup retries).
            try:
                self.call(address, dask_remote.task_states, release=release)
                if forget_marks:
                    self.call(address, dask_remote.forget_cancelled, keys=forget_marks)
            except EngineUnavailableError as exc:
                log.info("could not release finished Dask tasks: %s", exc)
        return reports

    def _missing_report(self, address: str, scheduler_id: str, handle: JobHandle) -> NativeReport:
        key = handle.native_id
        if result_path(handle.workspace, handle.job_id, handle.attempt).exists():
            return NativeReport(handle.job_id, Status.COMPLETE, "memory", "result stored")
        submitted_on = str(handle.state.get("scheduler_id") or "")
        if submitted_on and submitted_on != scheduler_id:
            # The scheduler restarted: everything it held is gone for sure.
            if handle.state.get("task") in ("delayed", "callable"):
                try:
                    self._submit_task(self.client(address), handle.workspace, handle.job_id, key)
                except Exception as exc:
                    return NativeReport(
                        handle.job_id,
                        Status.ERROR,
                        "lost",
                        f"the Dask scheduler restarted and the task could not be sent again: {exc}",
                    )
                return NativeReport(
                    handle.job_id,
                    Status.SUBMITTED,
                    "sent",
                    "the Dask scheduler restarted; the task was sent again",
                    state={"scheduler_id": scheduler_id},
                )
            return NativeReport(
                handle.job_id,
                Status.ERROR,
                "lost",
                "the Dask scheduler restarted and lost the Future's task",
            )
        if key in self._pending:
            return NativeReport(handle.job_id, Status.SUBMITTED, "sent")
        count = self._missing.get(key, 0) + 1
        self._missing[key] = count
        if count < self.lost_polls:
            return NativeReport(handle.job_id, None, "missing")
        self._missing.pop(key, None)
        return NativeReport(
            handle.job_id,
            Status.ERROR,
            "lost",
            f"the Dask scheduler no longer knows the task {key}",
        )

    def _gather(self, address: str, handles: Sequence[JobHandle]) -> dict[int, NativeReport]:
        from distributed import Future, wait

        client = self.client(address)
        futures: dict[str, Any] = {h.native_id: Future(h.native_id, client=client) for h in handles}
        # The futures exist first; then the scheduler is asked to report their keys to this
        # client (a public scheduler method through run_on_scheduler), and they finish here.
        self.call(address, dask_remote.desire_keys, keys=list(futures), client=client.id)
        values: dict[str, Any] = {}
        failures: dict[str, str] = {}

        def gather(items: list[Any]) -> list[Any]:
            with client.as_current():  # wait() asks for the current client
                wait(items, timeout=self.gather_timeout)  # type: ignore[no-untyped-call]
            return list(client.gather(items, errors="raise"))

        try:
            values = dict(zip(futures, gather(list(futures.values())), strict=True))
        except _connection_errors as exc:
            if client.status != "running":
                self._drop_client(address)
                raise EngineUnavailableError(
                    f"the Dask scheduler {address} did not answer: {exc}"
                ) from None
            failures = {k: f"{type(exc).__name__}: {exc}" for k in futures}
        except Exception:
            for key, future in futures.items():  # one by one, to tell which failed
                try:
                    values[key] = gather([future])[0]
                except Exception as exc:
                    failures[key] = f"{type(exc).__name__}: {exc}"
        reports: dict[int, NativeReport] = {}
        for handle in handles:
            key = handle.native_id
            if key in failures:
                message = f"the result could not be retrieved: {failures[key]}"
                self._write_error(handle, message)
                reports[handle.job_id] = NativeReport(
                    handle.job_id, Status.ERROR, "memory", message
                )
                continue
            try:
                path = store_result(handle.workspace, handle.job_id, handle.attempt, values[key])
            except Exception as exc:
                message = f"the result could not be serialized: {type(exc).__name__}: {exc}"
                self._write_error(handle, message)
                reports[handle.job_id] = NativeReport(
                    handle.job_id, Status.ERROR, "memory", message
                )
                continue
            reports[handle.job_id] = NativeReport(
                handle.job_id, Status.COMPLETE, "memory", state={"result_file": str(path)}
            )
        return reports

    def _write_logs(self, address: str, handles: Sequence[JobHandle]) -> None:
        """Keep what Dask knows of each ended task in its attempt folder (``dask.log``): its story
        on the scheduler and the workers (``Client.story``) and the scheduler's and workers' log
        lines that name it. Three calls for every task that ended in a cycle; best effort."""
        try:
            client = self.client(address)
            keys = [h.native_id for h in handles]
            story = client.story(*keys, on_error="ignore")
            scheduler_lines = client.get_scheduler_logs(n=LOG_LINES)
            worker_lines = client.get_worker_logs(n=LOG_LINES)
        except Exception as exc:  # logs must never fail a poll
            log.info("could not read the Dask logs of %d task(s): %s", len(handles), exc)
            return
        try:
            texts = task_logs(keys, story, scheduler_lines, worker_lines)
        except Exception:  # an unexpected story entry must not fail a poll either
            log.exception("could not make the Dask logs of %d task(s)", len(handles))
            return
        for handle in handles:
            text = texts[handle.native_id]
            try:
                path = attempt_dir(handle.workspace, handle.job_id, handle.attempt) / LOG_FILE
                _write_atomic(path, text.encode())
            except OSError:
                log.debug("job %s: could not write its Dask log", handle.job_id, exc_info=True)

    def _write_error(self, handle: JobHandle, text: str) -> None:
        try:
            path = attempt_dir(handle.workspace, handle.job_id, handle.attempt) / ERROR_FILE
            _write_atomic(path, (text + "\n").encode())
        except OSError:
            log.debug("job %s: could not write its error file", handle.job_id, exc_info=True)

    # -- actions ---------------------------------------------------------------------------------
    def cancel(self, handle: JobHandle) -> None:
        if not handle.native_id:
            return
        address = self.address_for({}, handle.state)
        self._pending.pop(handle.native_id, None)
        self.call(address, dask_remote.cancel_keys, keys=[handle.native_id])

    def cleanup(self, handle: JobHandle) -> None:
        if not handle.native_id:
            return
        address = self.address_for({}, handle.state)
        self._pending.pop(handle.native_id, None)
        self.call(address, dask_remote.task_states, release=[handle.native_id])
        self.call(address, dask_remote.forget_cancelled, keys=[handle.native_id])

    def get_logs(self, handle: JobHandle) -> dict[str, str]:
        """What the monitor stored for the attempt (never a scheduler call: web requests read
        logs): ``dask`` (the task's story on the scheduler and the workers, and their log lines
        naming it, kept when the task ended), ``error`` (if it failed) and ``dashboard`` (the
        scheduler's dashboard URL, when known)."""
        logs: dict[str, str] = {}
        dashboard = str(handle.state.get("dashboard") or "")
        if dashboard:
            logs["dashboard"] = dashboard
        if not handle.workspace:
            return logs
        folder = attempt_dir(handle.workspace, handle.job_id, handle.attempt)
        for name, filename in (("dask", LOG_FILE), ("error", ERROR_FILE)):
            path = folder / filename
            if path.exists():
                logs[name] = path.read_text(errors="replace")
        return logs

    def close(self) -> None:
        for address in list(self._clients):
            self._drop_client(address)
        self._pending.clear()


def hold_future(future: Any, timeout: float = 10.0) -> None:
    """Have the scheduler's offload holder take a Future the app passed to ``execute`` (with the
    app's own client, which made the future), so the task survives the app dropping it."""
    import time

    _pickle_remote_by_value()
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = future.client.run_on_scheduler(
                dask_remote.task_states, keys=[future.key], callback_timeout=timeout
            )
        except _connection_errors as exc:
            raise EngineUnavailableError(
                f"the Future's Dask scheduler cannot be reached: {exc or type(exc).__name__}"
            ) from None
        if future.key in answer["tasks"]:
            return
        if time.monotonic() > deadline:
            raise InvalidJobError("obj", f"the Future's task {future.key} is not on its scheduler")
        time.sleep(0.02)  # the future's graph is still on its way to the scheduler
