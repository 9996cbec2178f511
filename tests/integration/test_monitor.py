"""The monitor loop: stale schedulers, batched polling, SIGTERM, until_idle and leases."""

from __future__ import annotations

import datetime
import itertools
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
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

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
from offload.schedulers import group_key
from offload.status import Status

pytestmark = pytest.mark.usefixtures("offload_home")


class FlakyEngine(Engine):
    """A test engine of ours: it runs nothing; its "scheduler" answers from class attributes and
    can be made unreachable, for good (``down``) or for its next few calls (``fail_polls``,
    ``fail_submits``). It counts its calls."""

    kind = "flaky"
    down: ClassVar[bool] = False
    fail_polls: ClassVar[int] = 0
    fail_submits: ClassVar[int] = 0
    poll_calls: ClassVar[list[int]] = []  # number of handles per poll_batch call
    submit_calls: ClassVar[list[int]] = []
    submit_times: ClassVar[list[float]] = []  # time.monotonic() of each submit_batch call
    states: ClassVar[dict[int, Status]] = {}

    def submit_batch(self, specs: Sequence[JobSpec]) -> list[SubmitResult]:
        type(self).submit_calls.append(len(specs))
        type(self).submit_times.append(time.monotonic())
        if type(self).fail_submits > 0:
            type(self).fail_submits -= 1
            raise EngineUnavailableError("flaky scheduler: connection refused")
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
        if type(self).fail_polls > 0:
            type(self).fail_polls -= 1
            raise EngineUnavailableError("flaky scheduler: connection refused")
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
    FlakyEngine.fail_polls = FlakyEngine.fail_submits = 0
    FlakyEngine.poll_calls = []
    FlakyEngine.submit_calls = []
    FlakyEngine.submit_times = []
    FlakyEngine.states = {}
    try:
        yield FlakyEngine
    finally:
        del ENGINE_CLASSES["flaky"]
        FlakyEngine.down = False
        FlakyEngine.fail_polls = FlakyEngine.fail_submits = 0


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


# -- backoff ----------------------------------------------------------------------------------
class FakeClock:
    """The monitor's backoff clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.django_db
def test_polls_of_an_unreachable_scheduler_back_off_across_cycles_and_refreshes(
    user: Any,
    flaky: type[FlakyEngine],
    flaky_scheduler: Scheduler,
    client: Client,
    until: Callable[..., Any],
    offload_settings: Callable[..., None],
) -> None:
    offload_settings(RETRY_INITIAL=1, RETRY_FACTOR=3, RETRY_MAX=9)
    monitor = Monitor("backoff-monitor")
    clock = FakeClock()
    monitor.poll_backoff.clock = clock
    [job] = flaky_jobs(user, flaky_scheduler, 1)
    until(lambda: fresh(job).status == "Running", step=monitor.run_cycle, what="Running")
    key = group_key(fresh(job))
    events = JobEvent.objects.filter(job_id=job.pk).count()

    flaky.fail_polls = 4  # then it answers again
    for delay in (1, 3, 9, 9):  # RETRY_INITIAL * RETRY_FACTOR**n, at most RETRY_MAX
        polls = len(flaky.poll_calls)
        until(lambda n=polls: len(flaky.poll_calls) > n, step=monitor.run_cycle, what="a poll")
        assert len(flaky.poll_calls) == polls + 1
        assert monitor.poll_backoff.wait(key) == delay
        stale = fresh(job)
        assert stale.status == "Running" and stale.stale_since is not None  # stale, not Error
        # While it backs off, neither the poll interval nor refresh requests (the Tethys
        # endpoint, as a job page would call it) make the monitor call the scheduler again.
        for _ in range(3):
            response = client.get(f"/update-job-status/{job.pk}/")
            assert response.json() == {"success": True}
            time.sleep(monitor.settings.poll_interval)
            monitor.run_cycle()
        assert len(flaky.poll_calls) == polls + 1
        assert fresh(job).stale_since is not None
        clock.now += delay  # the next try is due

    polls = len(flaky.poll_calls)
    until(lambda: fresh(job).stale_since is None, step=monitor.run_cycle, what="recovery")
    assert len(flaky.poll_calls) == polls + 1
    assert monitor.poll_backoff.failures(key) == 0
    assert monitor.poll_backoff.wait(key) == 0
    assert fresh(job).status == "Running"
    assert JobEvent.objects.filter(job_id=job.pk).count() == events  # nothing happened to it

    flaky.fail_polls = 1  # after a success, a new failure starts from RETRY_INITIAL
    polls = len(flaky.poll_calls)
    until(lambda: len(flaky.poll_calls) > polls, step=monitor.run_cycle, what="a poll")
    assert monitor.poll_backoff.wait(key) == 1
    monitor.shutdown()


@pytest.mark.django_db
def test_a_backing_off_monitor_keeps_other_monitors_off_the_scheduler(
    user: Any,
    flaky: type[FlakyEngine],
    flaky_scheduler: Scheduler,
    until: Callable[..., Any],
    offload_settings: Callable[..., None],
) -> None:
    offload_settings(RETRY_INITIAL=120, RETRY_MAX=300, LEASE_SECONDS=10)
    first, second = Monitor("backoff-first"), Monitor("backoff-second")
    [job] = flaky_jobs(user, flaky_scheduler, 1)
    until(lambda: fresh(job).status == "Running", step=first.run_cycle, what="Running")
    flaky.fail_polls = 1
    polls = len(flaky.poll_calls)
    until(lambda: len(flaky.poll_calls) > polls, step=first.run_cycle, what="a failed poll")
    # The poll lease is held for the backoff's delay, not just LEASE_SECONDS.
    lease = MonitorLease.objects.get(name=f"poll:{group_key(fresh(job))}")
    assert lease.owner == "backoff-first"
    assert lease.expires > timezone.now() + datetime.timedelta(seconds=100)
    time.sleep(second.settings.poll_interval)
    second.run_cycle()
    assert len(flaky.poll_calls) == polls + 1
    first.shutdown()  # releases the lease: the other monitor polls at once
    second.run_cycle()
    assert len(flaky.poll_calls) == polls + 2
    assert fresh(job).stale_since is None
    second.shutdown()


@pytest.mark.django_db
def test_submissions_to_an_unreachable_scheduler_back_off_across_cycles(
    user: Any,
    flaky: type[FlakyEngine],
    flaky_scheduler: Scheduler,
    until: Callable[..., Any],
    offload_settings: Callable[..., None],
) -> None:
    offload_settings(RETRY_INITIAL=0.2, RETRY_FACTOR=2, RETRY_MAX=0.5)
    monitor = Monitor("submit-backoff-monitor")
    flaky.fail_submits = 3
    [job] = flaky_jobs(user, flaky_scheduler, 1)
    until(lambda: len(flaky.submit_times) >= 1, step=monitor.run_cycle, what="a submission")
    key = group_key(fresh(job))
    assert monitor.submit_backoff.failures(key) == 1
    assert monitor.submit_backoff.wait(key) <= 0.2
    # A job executed while the scheduler is backed off waits for the same next try.
    [later] = flaky_jobs(user, flaky_scheduler, 1)
    until(lambda: fresh(later).stale_since is not None, step=monitor.run_cycle, what="stale")
    assert fresh(later).status == "Submitted"
    until(
        lambda: fresh(job).native_id and fresh(later).native_id,
        step=monitor.run_cycle,
        what="both submissions",
    )
    times = flaky.submit_times
    assert len(times) >= 4  # three failures, then the submission(s) that went through
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and gaps[2] >= 0.5, gaps
    assert monitor.submit_backoff.failures(key) == 0
    for each in (job, later):
        until(lambda j=each: fresh(j).status == "Running", step=monitor.run_cycle, what="Running")
        assert fresh(each).stale_since is None
    # A failed submission is a try of each intent it held; waiting for the next try is not.
    intents = JobIntent.objects.filter(job_id__in=[job.pk, later.pk])
    assert sum(i.tries for i in intents) == sum(flaky.submit_calls[:3])
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
