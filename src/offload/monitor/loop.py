"""The monitor's control loop: claim intents, submit in batches, poll each scheduler once per cycle,
apply what changed through the status rules, run result processing, retry what failed.

Any number of monitors may run against one PostgreSQL database: intents are claimed with leases
(``FOR UPDATE SKIP LOCKED``) and each scheduler's poll with a named lease, so no job is submitted
twice and a killed monitor's work is taken over when its lease expires.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import close_old_connections
from django.db.models import Q

from offload import status as rules
from offload import store
from offload.conf import OffloadSettings, get_settings
from offload.engines import Engine, JobSpec, engine_class
from offload.engines.base import SubmitResult, parse_dependencies
from offload.errors import (
    EngineUnavailableError,
    InvalidJobError,
    JobStateError,
    NotSupportedError,
    OffloadError,
)
from offload.models import JOB_TYPES, EventSource, IntentAction, Job, JobIntent
from offload.monitor.backoff import Backoff
from offload.schedulers import build_engine_for, engine_kind_for_job, group_key
from offload.status import Status

log = logging.getLogger("offload.monitor")

SUBMIT_ACTIONS = (IntentAction.EXECUTE, IntentAction.RESUBMIT)

#: The test hook of docs/development.md: ``OFFLOAD_FAULT=kill-after-submit`` makes a monitor kill
#: itself (SIGKILL) once a batch is submitted and before anything about it is written down.
FAULT_KILL_AFTER_SUBMIT = "kill-after-submit"
FAULTS = (FAULT_KILL_AFTER_SUBMIT,)


@dataclass
class CycleStats:
    intents: int = 0
    submitted: int = 0
    polled_groups: int = 0
    polled_jobs: int = 0
    changed: int = 0
    stale: int = 0
    errors: list[str] = field(default_factory=list)


class Monitor:
    """One monitor. ``run()`` loops until stopped; ``run_cycle()`` does one pass (for tests)."""

    def __init__(self, name: str | None = None, settings: OffloadSettings | None = None) -> None:
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.settings = settings or get_settings()
        self.engines: dict[str, Engine] = {}
        self.stopping = threading.Event()
        self._last_poll: dict[str, float] = {}
        self._poll_soon: set[str] = set()
        # An unreachable scheduler is tried less and less often, polls and submissions each on
        # their own: RETRY_INITIAL after the first failure, times RETRY_FACTOR after each further
        # one, at most RETRY_MAX; a success starts over (docs/monitor.md#failures).
        self.poll_backoff = self._backoff()
        self.submit_backoff = self._backoff()
        self.claim_limit = 100
        self.fault = os.environ.get("OFFLOAD_FAULT", "")  # a test hook, read once
        if self.fault and self.fault not in FAULTS:
            log.warning("OFFLOAD_FAULT=%r is not a known fault; ignored", self.fault)
            self.fault = ""

    def _backoff(self) -> Backoff:
        return Backoff(
            initial=self.settings.retry_initial,
            factor=self.settings.retry_factor,
            maximum=self.settings.retry_max,
        )

    @staticmethod
    def _failed(backoff: Backoff, doing: str, key: str, reason: object) -> float:
        """Count a failure to reach scheduler ``key`` and log it; the delay before the next try."""
        delay = backoff.failed(key)
        log.warning(
            "%s %s failed (%d in a row), next try in %.1f s: %s",
            doing,
            key,
            backoff.failures(key),
            delay,
            reason,
        )
        return delay

    # -- engines --------------------------------------------------------------------------------
    def engine_for(self, job: Job) -> tuple[str, Engine]:
        key = group_key(job)
        engine = self.engines.get(key)
        if engine is None:
            engine = build_engine_for(engine_kind_for_job(job), job.scheduler)
            self.engines[key] = engine
        return key, engine

    def close(self) -> None:
        for engine in self.engines.values():
            try:
                engine.close()
            except Exception:  # closing is best effort; the process is ending
                log.exception("closing an engine failed")
        self.engines.clear()

    # -- the loop -------------------------------------------------------------------------------
    def run(
        self,
        *,
        until_idle: bool = False,
        timeout: float | None = None,
        on_cycle: Callable[[CycleStats], None] | None = None,
    ) -> int:
        """Loop until stopped (SIGTERM/SIGINT finish the current step and release leases).
        Returns 0, or 1 when ``timeout`` passed before the jobs went idle."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
            signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        deadline = time.monotonic() + timeout if timeout else None
        log.info("monitor %s started", self.name)
        code = 0
        try:
            while not self.stopping.is_set():
                close_old_connections()
                try:
                    stats = self.run_cycle()
                except Exception:  # a database blip must not end the monitor
                    log.exception("monitor cycle failed; retrying")
                    stats = CycleStats(errors=["cycle failed"])
                if on_cycle is not None:
                    on_cycle(stats)
                if until_idle and self.is_idle():
                    break
                if deadline is not None and time.monotonic() > deadline:
                    code = 1 if until_idle else 0
                    break
                self.stopping.wait(self.settings.idle_interval)
        finally:
            self.shutdown()
        return code

    def shutdown(self) -> None:
        try:
            store.release_intents(self.name)
            store.release_leases(self.name)
        except Exception:
            log.exception("releasing leases failed")
        self.close()
        log.info("monitor %s stopped", self.name)

    def is_idle(self) -> bool:
        """No open intent and no job under watch."""
        if JobIntent.objects.filter(done_at__isnull=True).exists():
            return False
        return not self._active_jobs().exists()

    def run_cycle(self) -> CycleStats:
        stats = CycleStats()
        self.process_intents(stats)
        self.poll(stats)
        return stats

    # -- intents --------------------------------------------------------------------------------
    def process_intents(self, stats: CycleStats) -> None:
        for _ in range(50):  # bounded: a flood of intents still leaves time to poll
            if self.stopping.is_set():
                return
            intents = store.claim_intents(
                self.name, self.claim_limit, seconds=self.settings.lease_seconds
            )
            if not intents:
                return
            stats.intents += len(intents)
            submits: dict[str, list[JobIntent]] = defaultdict(list)
            for intent in intents:
                job = intent.job
                if job.deleted_at is not None and intent.action != IntentAction.DELETE:
                    store.finish_intent(intent, "job deleted")
                    continue
                if intent.action in SUBMIT_ACTIONS:
                    if job.attempt != intent.attempt or rules.is_final(Status(job._status)):
                        store.finish_intent(intent, "superseded")
                        continue
                    try:
                        submits[group_key(job)].append(intent)
                    except OffloadError as exc:
                        store.apply_change(
                            job, store.Change(Status.ERROR, EventSource.MONITOR, str(exc))
                        )
                        store.finish_intent(intent, str(exc))
                    continue
                self.carry_out(intent, stats)
            for key, group in submits.items():
                self.submit_group(key, group, stats)

    def submit_group(self, key: str, intents: list[JobIntent], stats: CycleStats) -> None:
        wait = self.submit_backoff.wait(key)
        if wait > 0:
            # The scheduler refused the last submission as unreachable: its intents wait for
            # the next try instead of calling it again (a wait is not a try of the intent).
            store.mark_stale([i.job_id for i in intents])
            for intent in intents:
                store.retry_intent(
                    intent,
                    f"{key} unreachable; next submission in {wait:.1f} s",
                    count_try=False,
                    delay=wait,
                )
            return
        _, engine = self.engine_for(intents[0].job)
        ready: list[JobIntent] = []
        native_dependencies: dict[int, list[dict[str, str]]] = {}
        for intent in intents:
            previous = (intent.payload or {}).get("previous")
            if intent.action == IntentAction.RESUBMIT and previous:
                from offload.engines.base import JobHandle

                try:
                    engine.cancel(JobHandle.from_dict(previous))
                except NotSupportedError:
                    pass
                except EngineUnavailableError as exc:
                    store.retry_intent(intent, f"stopping the previous attempt: {exc}")
                    continue
                except OffloadError as exc:
                    log.info("job %s: previous attempt not stopped: %s", intent.job_id, exc)
            if engine.supports_dependencies and (intent.job.parameters or {}).get("dependencies"):
                try:
                    resolved = resolve_dependencies(intent.job, key)
                except InvalidJobError as exc:
                    store.apply_change(
                        intent.job, store.Change(Status.ERROR, EventSource.MONITOR, str(exc))
                    )
                    store.finish_intent(intent, str(exc))
                    continue
                if resolved is None:
                    store.retry_intent(
                        intent,
                        "waiting for the jobs it depends on to be submitted",
                        count_try=False,
                        delay=self.settings.idle_interval,
                    )
                    continue
                native_dependencies[intent.pk] = resolved
            ready.append(intent)
        size = max(1, self.settings.submit_batch_size)
        for start in range(0, len(ready), size):
            batch = ready[start : start + size]
            specs = [
                JobSpec(
                    job_id=i.job.pk,
                    attempt=i.attempt,
                    job_type=i.job.job_type,
                    name=i.job.name,
                    workspace=i.job.workspace,
                    parameters=dict(i.job.parameters or {})
                    | (
                        {"native_dependencies": native_dependencies[i.pk]}
                        if i.pk in native_dependencies
                        else {}
                    ),
                )
                for i in batch
            ]
            try:
                results = engine.submit_batch(specs)
            except EngineUnavailableError as exc:
                delay = self._failed(self.submit_backoff, "submitting to", key, exc)
                # This batch is tried again then; the batches after it wait with it.
                tried = {i.pk for i in batch}
                waiting = ready[start:]
                store.mark_stale([i.job_id for i in waiting])
                for intent in waiting:
                    store.retry_intent(intent, str(exc), count_try=intent.pk in tried, delay=delay)
                stats.errors.append(f"{key}: {exc}")
                return
            except Exception as exc:  # an engine bug must not lose the jobs: retry them
                log.exception("submitting to %s failed", key)
                for intent in batch:
                    store.retry_intent(intent, f"{type(exc).__name__}: {exc}")
                stats.errors.append(f"{key}: {exc}")
                continue
            self.submit_backoff.succeeded(key)
            if self.fault == FAULT_KILL_AFTER_SUBMIT and any(r.native_id for r in results):
                self._die_after_submit(results)
            for intent, result in zip(batch, results, strict=True):
                store.record_submission(intent.job, intent, result)
                if result.native_id:
                    stats.submitted += 1
            self._poll_soon.add(key)

    def _die_after_submit(self, results: list[SubmitResult]) -> None:
        """The crash the tests need: the scheduler has the jobs, the database does not know."""
        ids = ", ".join(r.native_id for r in results if r.native_id)
        log.critical(
            "OFFLOAD_FAULT=%s: killing monitor %s after submitting %s", self.fault, self.name, ids
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def carry_out(self, intent: JobIntent, stats: CycleStats) -> None:
        job = intent.job
        action = intent.action
        try:
            if action == IntentAction.REFRESH:
                if rules.is_active(Status(job._status), job.other_category):
                    self._poll_soon.add(group_key(job))
                store.finish_intent(intent, "poll requested")
                return
            if action == IntentAction.RESULTS:
                pending = Status(job._status) in rules.RESULTS_PENDING
                stage_only = bool((intent.payload or {}).get(store.STAGE_OUT_ONLY))
                if job.attempt != intent.attempt or not (
                    pending or (stage_only and rules.is_final(Status(job._status)))
                ):
                    store.finish_intent(intent, "superseded")
                    return
                # A remote cluster's files come back first, so result processing sees them; a
                # copy that fails is retried and never makes the job an Error.
                engine = self._engine_if_it_stages(job)
                if engine is not None:
                    try:
                        copied = engine.stage_out(job.handle())
                    except OffloadError as exc:
                        store.stage_out_failed(job, intent, str(exc))
                        stats.errors.append(f"job {job.pk} stage out: {exc}")
                        return
                    store.record_stage_out(job, copied)
                if pending:
                    store.run_results(job, intent)
                else:
                    store.finish_intent(intent, "files copied back")
                return
            key, engine = self.engine_for(job)
            handle = job.handle()
            if action == IntentAction.STOP:
                if rules.is_final(Status(job._status)):
                    store.finish_intent(intent, "already finished")
                    return
                engine.cancel(handle)
                self._poll_soon.add(key)
                store.finish_intent(intent, "stop sent")
            elif action == IntentAction.PAUSE:
                engine.pause(handle)
                store.apply_change(job, store.Change(Status.PAUSED, EventSource.MONITOR))
                store.finish_intent(intent, "paused")
            elif action == IntentAction.RESUME:
                engine.resume(handle)
                # The poll (due at once) tells Running from back-in-the-queue (a released hold).
                self._poll_soon.add(key)
                store.finish_intent(intent, "resumed")
            elif action == IntentAction.DELETE:
                from offload.engines.base import JobHandle

                saved = (intent.payload or {}).get("handle")
                engine.cleanup(JobHandle.from_dict(saved) if saved else handle)
                store.finish_intent(intent, "deleted")
                store.purge_deleted(job)
            else:
                store.finish_intent(intent, f"unknown action {action!r}")
        except EngineUnavailableError as exc:
            store.mark_stale([job.pk])
            store.retry_intent(intent, str(exc))
            stats.errors.append(f"job {job.pk} {action}: {exc}")
        except (NotSupportedError, JobStateError) as exc:
            store.finish_intent(intent, str(exc))
            store.apply_change(
                job, store.Change(Status(job._status), EventSource.MONITOR, str(exc))
            )
        except Exception as exc:  # never lose the intent to a bug: retry with backoff
            log.exception("job %s: %s failed", job.pk, action)
            store.retry_intent(intent, f"{type(exc).__name__}: {exc}")
            stats.errors.append(f"job {job.pk} {action}: {exc}")

    def _engine_if_it_stages(self, job: Job) -> Engine | None:
        """The job's engine when its files must be copied back from a remote workspace. An
        engine that cannot even be built does not hold up result processing (it is logged)."""
        try:
            _, engine = self.engine_for(job)
        except Exception:
            log.exception("job %s: no engine to copy its files back with", job.pk)
            return None
        return engine if engine.needs_stage_out() else None

    # -- polling --------------------------------------------------------------------------------
    def _active_jobs(self) -> Any:
        silent = [
            code for code, cls in JOB_TYPES.items() if not engine_class(cls.engine_kind).executes
        ]
        polled = [s.value for s in rules.POLLED] + [Status.OTHER.value]
        return (
            Job.objects.visible()
            .filter(_status__in=polled, attempt__gt=0)
            .exclude(Q(job_type__in=silent) & Q(scheduler__isnull=True))
            .exclude(native_id="")
        )

    def poll(self, stats: CycleStats) -> None:
        now = time.monotonic()
        groups: dict[str, dict[int, Job]] = defaultdict(dict)
        jobs = (
            self._active_jobs()
            .select_related("scheduler")
            .only(
                "id",
                "job_type",
                "_status",
                "attempt",
                "native_id",
                "native_status",
                "engine_state",
                "workspace",
                "extended_properties",
                "status_message",
                "start_time",
                "stale_since",
                "scheduler",
                "_process_results_function",
                "label",
            )
        )
        for job in jobs.iterator(chunk_size=2000):
            if job._status == Status.OTHER.value and not rules.is_active(
                Status.OTHER, job.other_category
            ):
                continue
            groups[group_key(job)][job.pk] = job
        for key, members in groups.items():
            if self.stopping.is_set():
                return
            due = key in self._poll_soon or (
                now - self._last_poll.get(key, 0.0) >= self.settings.poll_interval
            )
            if not due or self.poll_backoff.wait(key) > 0:
                # Backing off: a refresh request (in _poll_soon) waits for the next try too.
                continue
            if not store.claim_lease(f"poll:{key}", self.name, seconds=self.settings.lease_seconds):
                continue  # another monitor polls this scheduler
            self._poll_soon.discard(key)
            self._last_poll[key] = now
            self.poll_group(key, members, stats)

    def poll_group(self, key: str, jobs: dict[int, Job], stats: CycleStats) -> None:
        first = next(iter(jobs.values()))
        _, engine = self.engine_for(first)
        handles = [job.handle() for job in jobs.values()]
        stats.polled_groups += 1
        stats.polled_jobs += len(handles)
        try:
            reports = engine.poll_batch(handles)
        except Exception as exc:
            # Unreachable (or broken) scheduler: the jobs keep their status and go stale.
            reason = str(exc) if isinstance(exc, EngineUnavailableError) else repr(exc)
            if not isinstance(exc, EngineUnavailableError):
                log.exception("polling %s failed", key)
            stats.stale += store.mark_stale(
                jobs, reason=reason, last_contact=store.last_poll_success(f"poll:{key}")
            )
            delay = self._failed(self.poll_backoff, "polling", key, reason)
            # Hold the scheduler's poll lease until then, so another monitor does not poll it
            # in the meantime (this one's SIGTERM releases it as usual).
            store.claim_lease(
                f"poll:{key}", self.name, seconds=max(self.settings.lease_seconds, delay)
            )
            stats.errors.append(f"{key}: {reason}")
            return
        self.poll_backoff.succeeded(key)
        before = {job_id: job._status for job_id, job in jobs.items()}
        counts = store.apply_reports(
            jobs, reports, last_contact=store.last_poll_success(f"poll:{key}")
        )
        if engine.needs_stage_out():
            # Jobs that just ended with no result processing to run (which stages them itself).
            for job_id, job in jobs.items():
                now = Status(job._status)
                if before[job_id] != job._status and now in rules.FINAL:
                    store.request_stage_out(job)
        store.record_poll_success(f"poll:{key}")
        stats.changed += counts["changed"]
        stats.stale += counts["stale"]


def resolve_dependencies(job: Job, key: str) -> list[dict[str, str]] | None:
    """The native ids a job must wait for, from its ``dependencies`` on other offload jobs of the
    same scheduler; None while one of them has no native id yet (the submission waits). A
    dependency that already ended drops out when it is satisfied and makes this job an Error when
    it never can be (``afterok`` on a job that failed)."""
    pairs = parse_dependencies((job.parameters or {}).get("dependencies"))
    others = {
        other.pk: other
        for other in Job.objects.filter(pk__in=[dep for _, dep in pairs]).select_related(
            "scheduler"
        )
    }
    resolved: list[dict[str, str]] = []
    waiting = False
    for kind, dep_id in pairs:
        other = others.get(dep_id)
        if dep_id == job.pk:
            raise InvalidJobError("dependencies", "a job cannot depend on itself")
        if other is None or other.deleted_at is not None:
            raise InvalidJobError("dependencies", f"job {dep_id} does not exist")
        if group_key(other) != key:
            raise InvalidJobError(
                "dependencies",
                f"job {dep_id} runs on another scheduler ({group_key(other)}), so {key} "
                "cannot wait for it",
            )
        status = Status(other._status)
        ended_ok = status in (Status.COMPLETE, Status.RESULTS_READY)
        ended_badly = status in (Status.ERROR, Status.ABORTED, Status.VARIOUS_COMPLETE)
        if ended_ok or ended_badly:
            if kind == "afterany" or (kind == "afterok") == ended_ok:
                continue  # satisfied already
            raise InvalidJobError(
                "dependencies",
                f"job {dep_id} ended {status.display}, so this job ({kind}) can never run",
            )
        if other.native_id and other.attempt > 0:
            resolved.append({"type": kind, "native_id": other.native_id})
        else:
            waiting = True
    return None if waiting else resolved


def run_monitor(
    *, until_idle: bool = False, timeout: float | None = None, name: str | None = None
) -> int:
    monitor = Monitor(name=name)
    return monitor.run(until_idle=until_idle, timeout=timeout)


__all__ = ["CycleStats", "Monitor", "run_monitor"]
