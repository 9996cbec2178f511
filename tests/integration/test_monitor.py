"""The monitor loop: stale schedulers, batched polling, SIGTERM, until_idle and leases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from offload import JobManager
from offload.engines import ENGINE_CLASSES
from offload.engines.base import (
    Engine,
    JobHandle,
    JobSpec,
    NativeReport,
    SubmitOutcome,
    SubmitResult,
)
from offload.errors import EngineUnavailableError
from offload.models import IntentAction, Job, JobEvent, JobIntent, MonitorLease, Scheduler
from offload.monitor import Monitor
from offload.status import Status

pytestmark = pytest.mark.usefixtures("offload_home")


class FlakyEngine(Engine):
    """A test engine of ours: it runs nothing; its "scheduler" answers from class attributes and
    can be made unreachable. It counts its calls."""

    kind = "flaky"
    down: ClassVar[bool] = False
    poll_calls: ClassVar[list[int]] = []  # number of handles per poll_batch call
    submit_calls: ClassVar[list[int]] = []
    states: ClassVar[dict[int, Status]] = {}

    def submit_batch(self, specs: Sequence[JobSpec]) -> list[SubmitResult]:
        type(self).submit_calls.append(len(specs))
        if type(self).down:
            raise EngineUnavailableError("flaky scheduler: connection refused")
        return [
            SubmitResult(
                s.job_id, SubmitOutcome.SUBMITTED, native_id=f"flaky.{s.job_id}", native_status="Q"
            )
            for s in specs
        ]

    def poll_batch(self, handles: Sequence[JobHandle]) -> dict[int, NativeReport]:
        type(self).poll_calls.append(len(handles))
        if type(self).down:
            raise EngineUnavailableError("flaky scheduler: connection refused")
        return {
            h.job_id: NativeReport(h.job_id, type(self).states.get(h.job_id, Status.RUNNING), "R")
            for h in handles
        }


@pytest.fixture
def flaky() -> Iterator[type[FlakyEngine]]:
    ENGINE_CLASSES["flaky"] = f"{__name__}:FlakyEngine"
    FlakyEngine.down = False
    FlakyEngine.poll_calls = []
    FlakyEngine.submit_calls = []
    FlakyEngine.states = {}
    try:
        yield FlakyEngine
    finally:
        del ENGINE_CLASSES["flaky"]
        FlakyEngine.down = False


@pytest.fixture
def flaky_scheduler(flaky: type[FlakyEngine]) -> Scheduler:
    return Scheduler.objects.create(name="flaky-1", scheduler_type="flaky")


def flaky_jobs(user: Any, scheduler: Scheduler, n: int) -> list[Job]:
    manager = JobManager("monitor_app")
    jobs = []
    for i in range(n):
        job = manager.create_job(f"f{i}", user, scheduler=scheduler)
        job.execute()
        jobs.append(job)
    return jobs


@pytest.fixture
def started_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; any still running at its end are killed."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for proc in processes:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def fresh(job: Job) -> Job:
    return Job.objects.get(pk=job.pk)


# -- stale, never Error -----------------------------------------------------------------------
@pytest.mark.django_db
def test_unreachable_scheduler_marks_jobs_stale_never_error(
    user: Any,
    flaky: type[FlakyEngine],
    flaky_scheduler: Scheduler,
    until: Callable[..., Any],
) -> None:
    monitor = Monitor("stale-monitor")
    [job] = flaky_jobs(user, flaky_scheduler, 1)
    until(lambda: fresh(job).status == "Running", step=monitor.run_cycle, what="Running")
    running = fresh(job)
    assert running.stale_since is None
    assert running.last_contact is not None
    events = JobEvent.objects.filter(job_id=job.pk).count()

    flaky.down = True
    polls = len(flaky.poll_calls)
    until(lambda: len(flaky.poll_calls) > polls + 2, step=monitor.run_cycle, what="polls")
    stale = fresh(job)
    assert stale.status == "Running"  # kept: lost contact is not an Error
    assert stale.stale_since is not None
    assert stale.is_stale
    # The time of the last contact is kept (the last poll that answered), before it went stale.
    assert stale.last_contact is not None and running.last_contact is not None
    assert running.last_contact <= stale.last_contact <= stale.stale_since
    assert JobEvent.objects.filter(job_id=job.pk).count() == events  # nothing happened to it
    first_stale = stale.stale_since

    flaky.down = False
    until(lambda: fresh(job).stale_since is None, step=monitor.run_cycle, what="recovery")
    recovered = fresh(job)
    assert recovered.status == "Running"
    assert recovered.last_contact is not None and recovered.last_contact > first_stale
    flaky.states[job.pk] = Status.COMPLETE
    until(lambda: fresh(job).status == "Complete", step=monitor.run_cycle, what="Complete")
    monitor.shutdown()


@pytest.mark.django_db
def test_unreachable_scheduler_at_submission_retries(
    user: Any,
    flaky: type[FlakyEngine],
    flaky_scheduler: Scheduler,
    until: Callable[..., Any],
) -> None:
    monitor = Monitor("submit-stale-monitor")
    flaky.down = True
    [job] = flaky_jobs(user, flaky_scheduler, 1)
    until(lambda: len(flaky.submit_calls) >= 2, step=monitor.run_cycle, what="a retried submit")
    waiting = fresh(job)
    assert waiting.status == "Submitted"
    assert waiting.stale_since is not None
    intent = JobIntent.objects.get(job_id=job.pk, action=IntentAction.EXECUTE)
    assert intent.done_at is None and intent.tries >= 1
    flaky.down = False
    until(lambda: fresh(job).native_id, step=monitor.run_cycle, what="the submission")
    until(lambda: fresh(job).status == "Running", step=monitor.run_cycle, what="Running")
    assert fresh(job).stale_since is None
    monitor.shutdown()


# -- batched polling --------------------------------------------------------------------------
@pytest.mark.django_db
def test_one_poll_per_scheduler_per_cycle(
    user: Any, flaky: type[FlakyEngine], flaky_scheduler: Scheduler
) -> None:
    other_scheduler = Scheduler.objects.create(name="flaky-2", scheduler_type="flaky")
    jobs = flaky_jobs(user, flaky_scheduler, 50)
    others = flaky_jobs(user, other_scheduler, 5)
    monitor = Monitor("batch-monitor")
    stats = monitor.run_cycle()
    assert stats.submitted == 55
    assert sorted(flaky.submit_calls) == [5, 50]  # one submission batch per scheduler
    assert sorted(flaky.poll_calls) == [5, 50]  # then one poll per scheduler, for all its jobs
    assert stats.polled_groups == 2
    assert stats.polled_jobs == 55
    assert all(fresh(j).status == "Running" for j in jobs + others)

    flaky.poll_calls.clear()
    time.sleep(monitor.settings.poll_interval)
    with CaptureQueriesContext(connection) as ctx:
        stats = monitor.run_cycle()
    assert sorted(flaky.poll_calls) == [5, 50]
    assert stats.changed == 0
    # Nothing changed: the cycle's queries do not grow with the number of jobs.
    few_queries = len(ctx.captured_queries)
    assert few_queries < 20, [q["sql"] for q in ctx.captured_queries]
    writes = [
        q["sql"]
        for q in ctx.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "DELETE"))
        or (
            q["sql"].lstrip().upper().startswith("UPDATE")
            and "offload_job" in q["sql"].lower()
            and "offload_jobintent" not in q["sql"].lower()
        )
    ]
    assert writes == []
    monitor.shutdown()


# -- until_idle -------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)  # Monitor.run() manages its own connections
def test_until_idle_returns_when_nothing_is_active(
    user: Any,
    flaky: type[FlakyEngine],
    flaky_scheduler: Scheduler,
    keep_signal_handlers: None,
) -> None:
    jobs = flaky_jobs(user, flaky_scheduler, 3)
    for job in jobs:
        flaky.states[job.pk] = Status.COMPLETE
    started = time.monotonic()
    assert Monitor("idle-monitor").run(until_idle=True, timeout=30) == 0
    assert time.monotonic() - started < 10
    assert all(fresh(j).status == "Complete" for j in jobs)
    assert Monitor("idle-monitor-2").run(until_idle=True, timeout=30) == 0  # idle at once


@pytest.mark.django_db(transaction=True)  # Monitor.run() manages its own connections
def test_until_idle_times_out_with_code_1(
    user: Any,
    flaky: type[FlakyEngine],
    flaky_scheduler: Scheduler,
    keep_signal_handlers: None,
) -> None:
    flaky_jobs(user, flaky_scheduler, 1)  # runs for ever
    started = time.monotonic()
    assert Monitor("busy-monitor").run(until_idle=True, timeout=0.5) == 1
    assert 0.4 < time.monotonic() - started < 10


@pytest.mark.django_db
def test_shutdown_releases_intent_and_poll_leases(
    user: Any, flaky: type[FlakyEngine], flaky_scheduler: Scheduler
) -> None:
    from offload import store

    jobs = flaky_jobs(user, flaky_scheduler, 2)
    monitor = Monitor("leaving-monitor")
    monitor.run_cycle()
    assert MonitorLease.objects.filter(owner="leaving-monitor").exists()
    for job in jobs:
        fresh(job).stop()
    claimed = store.claim_intents("leaving-monitor", 10, seconds=60)
    assert len(claimed) == 2
    other = store.claim_intents("other-monitor", 10, seconds=60)
    assert other == []  # leased
    monitor.shutdown()
    assert not MonitorLease.objects.filter(owner="leaving-monitor").exists()
    assert not JobIntent.objects.filter(
        done_at__isnull=True, claimed_by__startswith="leaving-monitor:"
    ).exists()
    assert len(store.claim_intents("other-monitor", 10, seconds=60)) == 2  # at once


# -- SIGTERM, with the monitor as its own process -----------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_sigterm_finishes_the_step_releases_leases_and_exits_0(
    user: Any,
    until: Callable[..., Any],
    offload_home: Path,
    started_processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    job = JobManager("sigterm_app").create_job(
        "sleeper",
        user,
        job_type="LOCAL",
        executable=sys.executable,
        arguments=["-c", "import time; time.sleep(60)"],
    )
    job.execute()
    # The real command, with the test settings and this test's offload home.
    log = tmp_path / "monitor.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "offload.cli", "monitor", "--name", "sigterm-monitor"],
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "tests.settings",
                "OFFLOAD_TEST_HOME": str(offload_home),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    started_processes.append(proc)
    until(
        lambda: (
            fresh(job).status == "Running"
            and MonitorLease.objects.filter(owner="sigterm-monitor").exists()
        ),
        timeout=30,
        what="the monitor to run the job and hold its poll lease",
    )
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, log.read_text()
    assert time.monotonic() - started < 10
    assert not MonitorLease.objects.filter(owner="sigterm-monitor").exists()
    assert not JobIntent.objects.filter(
        done_at__isnull=True, claimed_by__startswith="sigterm-monitor:"
    ).exists()
    # The job is not the monitor's child: it keeps running after the monitor has gone.
    assert fresh(job).status == "Running"
    pid = int(fresh(job).native_id)
    os.kill(pid, 0)
    fresh(job).stop()
    monitor = Monitor("cleanup-monitor")
    until(lambda: fresh(job).status == "Aborted", step=monitor.run_cycle, what="Aborted")
    monitor.shutdown()
