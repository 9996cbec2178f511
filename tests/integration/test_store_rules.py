"""Status reads and writes through the store: the rules, the events, execute/pause/resubmit, saving
from stale objects and result processing, on the real database."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
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
from offload.errors import (
    InvalidJobError,
    JobAlreadyExecutedError,
    JobStateError,
    NotSupportedError,
)
from offload.models import OTHER_STATUS_KEY, IntentAction, Job, JobEvent, JobIntent, Scheduler
from offload.monitor import Monitor
from offload.status import Category, Status
from offload.store import apply_reports

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]


def _write_queries(ctx: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in ctx.captured_queries
        if q["sql"].lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE"))
    ]


@pytest.fixture
def manager() -> JobManager:
    return JobManager("rules_app")


@pytest.fixture
def basic(manager: JobManager, user: Any) -> Job:
    job = manager.create_job("basic {id}", user)
    job.save()
    return job


def _events(job: Job) -> list[tuple[str, str, str]]:
    return [(e.from_status, e.to_status, e.source) for e in job.events]


# -- reading the status -----------------------------------------------------------------------
def test_status_read_is_free_and_never_writes(basic: Job, django_assert_num_queries: Any) -> None:
    basic.update_status("Running")
    job = Job.objects.get(pk=basic.pk)
    with django_assert_num_queries(0):
        for _ in range(100):
            assert job.status == "Running"
            assert job.cached_status == "Running"
    assert JobEvent.objects.filter(job_id=job.pk).count() == 2  # created, Running


def test_status_of_a_new_job_is_pending(manager: JobManager, user: Any) -> None:
    job = manager.create_job("new", user)
    assert job.status == "Pending"
    assert job.status_enum is Status.PENDING


# -- update_status ----------------------------------------------------------------------------
def test_update_status_by_display_name_and_code(basic: Job) -> None:
    basic.update_status("Running")
    assert basic.status == "Running"
    assert basic.start_time is not None
    fresh = Job.objects.get(pk=basic.pk)
    assert fresh.status == "Running"
    assert fresh._status == "RUN"
    fresh.update_status("PAS")
    assert Job.objects.get(pk=basic.pk).status == "Paused"
    fresh.update_status(Status.RUNNING)
    fresh.update_status("complete")
    done = Job.objects.get(pk=basic.pk)
    assert done.status == "Complete"
    assert done.completion_time is not None


def test_status_setter_is_update_status(basic: Job) -> None:
    basic.status = "Running"
    assert Job.objects.get(pk=basic.pk).status == "Running"


def test_custom_text_is_other_with_the_text(basic: Job) -> None:
    basic.update_status("Meshing the domain")
    assert basic.status == "Meshing the domain"
    fresh = Job.objects.get(pk=basic.pk)
    assert fresh._status == Status.OTHER.value
    assert fresh.status == "Meshing the domain"
    assert fresh.extended_properties[OTHER_STATUS_KEY] == "Meshing the domain"
    last = fresh.events[-1]
    assert (last.to_status, last.status_text, last.to_display) == (
        "OTH",
        "Meshing the domain",
        "Meshing the domain",
    )
    # Another custom text is a change; a standard status clears the text.
    fresh.update_status("Solving")
    assert Job.objects.get(pk=basic.pk).status == "Solving"
    fresh.update_status("Complete")
    done = Job.objects.get(pk=basic.pk)
    assert done.status == "Complete"
    assert OTHER_STATUS_KEY not in done.extended_properties


@pytest.mark.parametrize("value", ["", "   ", None, 5])
def test_update_status_rejects_empty_values(basic: Job, value: Any) -> None:
    if value is None:
        basic.update_status(value)  # None means "refresh", not a status
        assert Job.objects.get(pk=basic.pk).status == "Pending"
        return
    with pytest.raises(InvalidJobError) as info:
        basic.update_status(value)
    assert info.value.field == "status"


def test_custom_statuses_declared_in_a_category_per_app(user: Any) -> None:
    manager = JobManager(
        "custom_app", custom_statuses={"Archived": "terminal", "Queued remotely": "pre-running"}
    )
    manager.add_custom_status("Meshing", Category.RUNNING)
    with pytest.raises(ValueError, match="category"):
        manager.add_custom_status("Bad", "sideways")

    archived = manager.create_job("a", user)
    archived.save()
    archived.update_status("Running")
    archived.update_status("Archived")
    fresh = Job.objects.get(pk=archived.pk)
    assert fresh.status == "Archived"
    assert fresh.other_category is Category.TERMINAL  # stored with the job
    with pytest.raises(JobStateError, match="final"):
        fresh.update_status("Running")

    queued = manager.create_job("q", user)
    queued.save()
    queued.update_status("Meshing")
    assert Job.objects.get(pk=queued.pk).other_category is Category.RUNNING
    with pytest.raises(JobStateError):
        queued.update_status("Queued remotely")  # running -> pre-running is backwards
    assert Job.objects.get(pk=queued.pk).status == "Meshing"

    # The declaration belongs to its app: the same text elsewhere is an undeclared custom status.
    elsewhere = JobManager("custom_other_app").create_job("e", user)
    elsewhere.save()
    elsewhere.update_status("Archived")
    fresh_elsewhere = Job.objects.get(pk=elsewhere.pk)
    assert fresh_elsewhere.other_category is None
    fresh_elsewhere.update_status("Running")  # not final there
    assert Job.objects.get(pk=elsewhere.pk).status == "Running"


def test_backward_move_is_refused(basic: Job) -> None:
    basic.update_status("Running")
    events_before = JobEvent.objects.filter(job_id=basic.pk).count()
    for earlier in ("Submitted", "Pending", "SUB"):
        with pytest.raises(JobStateError, match="back"):
            basic.update_status(earlier)
    fresh = Job.objects.get(pk=basic.pk)
    assert fresh.status == "Running"
    assert JobEvent.objects.filter(job_id=basic.pk).count() == events_before


@pytest.mark.parametrize("final", ["Complete", "Error", "Aborted"])
def test_final_status_only_changes_through_resubmit(basic: Job, final: str) -> None:
    basic.update_status("Running")
    basic.update_status(final)
    for other in ("Running", "Submitted", "Complete", "Error", "Aborted", "Some text"):
        if other == final:
            continue
        with pytest.raises(JobStateError, match="final"):
            basic.update_status(other)
    assert Job.objects.get(pk=basic.pk).status == final
    history = len(basic.events)
    basic.resubmit()
    fresh = Job.objects.get(pk=basic.pk)
    assert fresh.status == "Submitted"
    assert fresh.attempt == basic.attempt
    assert fresh.completion_time is None
    events = fresh.events
    assert len(events) == history + 1  # the history is kept
    assert (events[-1].from_status, events[-1].to_status) == (Status.parse(final).value, "SUB")  # type: ignore[union-attr]


def test_every_accepted_change_writes_one_event(basic: Job) -> None:
    sequence = ["Running", "Paused", "Running", "Various", "Results-Ready", "Complete"]
    for status in sequence:
        before = JobEvent.objects.filter(job_id=basic.pk).count()
        assert basic.update_status(status) is None
        assert JobEvent.objects.filter(job_id=basic.pk).count() == before + 1
    events = basic.events
    assert [(e.from_status, e.to_status) for e in events] == [
        ("", "PEN"),
        ("PEN", "RUN"),
        ("RUN", "PAS"),
        ("PAS", "RUN"),
        ("RUN", "VAR"),
        ("VAR", "RES"),
        ("RES", "COM"),
    ]
    assert all(e.source == "app" for e in events)
    assert all(e.job_id == basic.pk for e in events)
    # Oldest first.
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert [e.time for e in events] == sorted(e.time for e in events)


def test_duplicate_report_writes_nothing(basic: Job) -> None:
    basic.update_status("Running")
    count = JobEvent.objects.filter(job_id=basic.pk).count()
    with CaptureQueriesContext(connection) as ctx:
        basic.update_status("Running")
        basic.update_status("RUN")
    assert _write_queries(ctx) == []
    assert JobEvent.objects.filter(job_id=basic.pk).count() == count
    basic.update_status("Meshing")
    count = JobEvent.objects.filter(job_id=basic.pk).count()
    with CaptureQueriesContext(connection) as ctx:
        basic.update_status("Meshing")
    assert _write_queries(ctx) == []
    assert JobEvent.objects.filter(job_id=basic.pk).count() == count


def test_events_cannot_be_changed(basic: Job) -> None:
    event = basic.events[0]
    event.message = "rewritten"
    with pytest.raises(ValueError, match="append-only"):
        event.save()


# -- execute ----------------------------------------------------------------------------------
def test_execute_sets_execute_time_and_submitted(manager: JobManager, user: Any) -> None:
    job = manager.create_job("run {id}", user, job_type="LOCAL", executable="true")
    assert job.execute_time is None
    job.execute()
    fresh = Job.objects.get(pk=job.pk)
    assert fresh.status == "Submitted"
    assert fresh.execute_time is not None
    assert fresh.attempt == 1
    assert [(e.from_status, e.to_status) for e in fresh.events] == [("", "PEN"), ("PEN", "SUB")]
    intents = list(JobIntent.objects.filter(job_id=job.pk))
    assert [(i.action, i.attempt) for i in intents] == [(IntentAction.EXECUTE, 1)]
    assert Path(fresh.workspace).is_dir()


def test_execute_twice_is_refused(manager: JobManager, user: Any) -> None:
    job = manager.create_job("twice", user, job_type="LOCAL", executable="true")
    job.execute()
    with pytest.raises(JobAlreadyExecutedError, match="resubmit"):
        job.execute()
    # Also from another, stale object of the same job.
    stale = Job.objects.get(pk=job.pk)
    stale._status = Status.PENDING.value
    stale.attempt = 0
    with pytest.raises(JobAlreadyExecutedError):
        stale.execute()
    assert JobIntent.objects.filter(job_id=job.pk).count() == 1
    assert isinstance(JobAlreadyExecutedError("x"), JobStateError)


def test_execute_validates_local_parameters(manager: JobManager, user: Any) -> None:
    job = manager.create_job("bad", user, job_type="LOCAL", executable="python", arguments="a b")
    with pytest.raises(InvalidJobError) as info:
        job.execute()
    assert info.value.field == "arguments"
    assert not Job.objects.filter(name="bad").exists()  # no half-made job left behind
    saved = manager.create_job("saved", user, job_type="LOCAL", executable="python", arguments=[])
    saved.save()
    saved.environment = {"BAD NAME": "x"}
    with pytest.raises(InvalidJobError) as info:
        saved.execute()
    assert info.value.field == "environment"
    assert Job.objects.get(pk=saved.pk).status == "Pending"
    assert not JobIntent.objects.exists()


def test_basic_execute_needs_no_monitor(basic: Job) -> None:
    basic.execute()
    fresh = Job.objects.get(pk=basic.pk)
    assert fresh.status == "Submitted"
    assert fresh.execute_time is not None
    assert not JobIntent.objects.filter(job_id=basic.pk).exists()


# -- pause / resume / stop --------------------------------------------------------------------
class NoPauseEngine(Engine):
    """A test engine (ours, at the edge of our code) that runs nothing and cannot pause."""

    kind = "nopause"
    can_pause = False

    def submit_batch(self, specs: Sequence[JobSpec]) -> list[SubmitResult]:
        return [
            SubmitResult(s.job_id, SubmitOutcome.SUBMITTED, native_id=f"np-{s.job_id}")
            for s in specs
        ]

    def poll_batch(self, handles: Sequence[JobHandle]) -> dict[int, NativeReport]:
        return {h.job_id: NativeReport(h.job_id, Status.RUNNING, "R") for h in handles}


@pytest.fixture
def nopause_scheduler() -> Iterator[Scheduler]:
    ENGINE_CLASSES["nopause"] = f"{__name__}:NoPauseEngine"
    try:
        yield Scheduler.objects.create(name="no-pause", scheduler_type="nopause")
    finally:
        del ENGINE_CLASSES["nopause"]


def test_pause_on_an_engine_that_cannot_pause(
    manager: JobManager, user: Any, nopause_scheduler: Scheduler, until: Callable[..., Any]
) -> None:
    job = manager.create_job("np", user, scheduler=nopause_scheduler)
    job.execute()
    monitor = Monitor("np-monitor")
    until(
        lambda: Job.objects.get(pk=job.pk).status == "Running",
        step=monitor.run_cycle,
        what="the job to run",
    )
    running = Job.objects.get(pk=job.pk)
    with pytest.raises(NotSupportedError, match="nopause"):
        running.pause()
    with pytest.raises(NotSupportedError):
        running.resume()
    assert not JobIntent.objects.filter(job_id=job.pk, action=IntentAction.PAUSE).exists()
    assert Job.objects.get(pk=job.pk).status == "Running"
    monitor.shutdown()


def test_pause_and_resume_a_basic_job(basic: Job) -> None:
    with pytest.raises(JobStateError):
        basic.pause()  # Pending: nothing to pause
    basic.update_status("Running")
    basic.pause()
    assert Job.objects.get(pk=basic.pk).status == "Paused"
    basic.resume()
    assert Job.objects.get(pk=basic.pk).status == "Running"
    with pytest.raises(JobStateError):
        basic.resume()  # not paused


def test_stop_a_pending_or_running_basic_job(manager: JobManager, user: Any) -> None:
    pending = manager.create_job("p", user)
    pending.save()
    pending.stop()
    assert Job.objects.get(pk=pending.pk).status == "Aborted"
    running = manager.create_job("r", user)
    running.save()
    running.update_status("Running")
    running.terminate()
    assert Job.objects.get(pk=running.pk).status == "Aborted"
    with pytest.raises(JobStateError):
        running.stop()


# -- saving from a stale object ---------------------------------------------------------------
def test_save_from_a_stale_object_keeps_the_monitors_status(basic: Job) -> None:
    first = Job.objects.get(pk=basic.pk)
    second = Job.objects.get(pk=basic.pk)
    first.update_status("Running")
    first.update_status("Complete")
    second.description = "edited while it ran"
    second.status_message = "note"
    second.save()
    fresh = Job.objects.get(pk=basic.pk)
    assert fresh.status == "Complete"
    assert fresh.description == "edited while it ran"
    assert fresh.status_message == "note"
    assert fresh.completion_time is not None
    assert fresh.start_time is not None


def test_save_of_unchanged_object_writes_nothing(basic: Job) -> None:
    job = Job.objects.get(pk=basic.pk)
    with CaptureQueriesContext(connection) as ctx:
        job.save()
    assert _write_queries(ctx) == []


def test_save_from_a_stale_object_keeps_a_custom_status_text(basic: Job) -> None:
    first = Job.objects.get(pk=basic.pk)
    second = Job.objects.get(pk=basic.pk)
    first.update_status("Meshing")
    second.extended_properties = {**second.extended_properties, "note": "app data"}
    second.save()
    fresh = Job.objects.get(pk=basic.pk)
    assert fresh.extended_properties.get("note") == "app data"
    assert fresh.status == "Meshing"


# -- delete -----------------------------------------------------------------------------------
def test_delete_removes_only_the_jobs_own_workspace(
    manager: JobManager, user: Any, tmp_path: Path
) -> None:
    own = manager.create_job("own", user)
    own.save()
    Path(own.workspace).mkdir(parents=True)
    (Path(own.workspace) / "result.txt").write_text("x")
    user_ws = Path(manager.get_user_workspace(user))
    (user_ws / "keep.txt").write_text("shared")
    own.delete()
    assert not Path(own.workspace).exists()
    assert (user_ws / "keep.txt").exists()
    assert not Job.objects.filter(pk=own.pk).exists()

    shared = tmp_path / "shared-folder"
    shared.mkdir()
    (shared / "data.csv").write_text("1,2")
    chosen = manager.create_job("chosen", user, workspace=str(shared))
    chosen.save()
    chosen.delete()
    assert (shared / "data.csv").exists()
    assert manager.get_job(chosen.pk) is None


# -- result processing ------------------------------------------------------------------------
RESULT_CALLS: list[tuple[str, int, str]] = []
FAIL_RESULTS = {"on": False}


def record_results(job: Any) -> None:
    RESULT_CALLS.append(("record", job.pk, type(job).__name__))


def flaky_results(job: Any) -> None:
    RESULT_CALLS.append(("flaky", job.pk, type(job).__name__))
    if FAIL_RESULTS["on"]:
        raise RuntimeError("the results disk is full")


@pytest.fixture
def result_calls() -> Iterator[list[tuple[str, int, str]]]:
    RESULT_CALLS.clear()
    FAIL_RESULTS["on"] = False
    yield RESULT_CALLS
    RESULT_CALLS.clear()
    FAIL_RESULTS["on"] = False


@pytest.mark.parametrize("as_path", [False, True], ids=["callable", "dotted-path"])
def test_results_function_runs_once_for_a_local_job(
    manager: JobManager,
    user: Any,
    result_calls: list[tuple[str, int, str]],
    until: Callable[..., Any],
    as_path: bool,
) -> None:
    function: Any = f"{__name__}.record_results" if as_path else record_results
    job = manager.create_job(
        "results",
        user,
        job_type="LOCAL",
        executable="true",
        process_results_function=function,
    )
    assert job._process_results_function == f"{__name__}.record_results"  # stored as a path
    assert job.process_results_function is record_results
    job.execute()
    monitor = Monitor("results-monitor")
    until(
        lambda: Job.objects.get(pk=job.pk).status == "Complete",
        step=monitor.run_cycle,
        what="the job to complete",
    )
    for _ in range(5):
        monitor.run_cycle()
    assert result_calls == [("record", job.pk, "LocalJob")]
    transitions = [(e.from_status, e.to_status) for e in Job.objects.get(pk=job.pk).events]
    assert transitions[-2:] == [("RUN", "RES"), ("RES", "COM")]
    monitor.shutdown()


def test_results_function_for_a_basic_job(
    manager: JobManager, user: Any, result_calls: list[tuple[str, int, str]]
) -> None:
    job = manager.create_job("b", user, process_results_function=record_results)
    job.save()
    job.update_status("Running")
    job.update_status("Results-Ready")
    monitor = Monitor("basic-results")
    monitor.run_cycle()
    monitor.run_cycle()
    assert Job.objects.get(pk=job.pk).status == "Complete"
    assert result_calls == [("record", job.pk, "BasicJob")]
    monitor.shutdown()


def test_failing_results_function_is_retried_then_errs_and_can_be_retried(
    manager: JobManager,
    user: Any,
    result_calls: list[tuple[str, int, str]],
    until: Callable[..., Any],
) -> None:
    FAIL_RESULTS["on"] = True
    job = manager.create_job(
        "failing", user, job_type="LOCAL", executable="true", process_results_function=flaky_results
    )
    job.execute()
    monitor = Monitor("failing-results")
    until(
        lambda: Job.objects.get(pk=job.pk).status == "Error",
        step=monitor.run_cycle,
        what="the result step to fail for good",
    )
    failed = Job.objects.get(pk=job.pk)
    assert "the results disk is full" in failed.status_message
    assert "RuntimeError" in failed.status_message
    calls = len(result_calls)
    assert calls >= 2  # retried before giving up
    assert all(c == ("flaky", job.pk, "LocalJob") for c in result_calls)
    for _ in range(5):
        monitor.run_cycle()
    assert len(result_calls) == calls  # Error is final: no more tries on its own

    FAIL_RESULTS["on"] = False
    failed.process_results()
    done = Job.objects.get(pk=job.pk)
    assert done.status == "Complete"
    assert len(result_calls) == calls + 1
    with pytest.raises(JobStateError):
        done.process_results()  # already complete
    monitor.shutdown()


def test_process_results_refused_before_the_job_finished(basic: Job) -> None:
    basic.update_status("Running")
    with pytest.raises(JobStateError):
        basic.process_results()


def test_results_function_must_be_importable(manager: JobManager, user: Any) -> None:
    with pytest.raises(InvalidJobError) as info:
        manager.create_job("x", user, process_results_function=lambda job: None)
    assert info.value.field == "process_results_function"
    with pytest.raises(InvalidJobError):
        manager.create_job("x", user, process_results_function="not a path")


def _submitted(manager: JobManager, user: Any, count: int) -> list[Job]:
    """``count`` executed BASIC jobs (Submitted), loaded as the monitor loads them."""
    jobs = []
    for i in range(count):
        job = manager.create_job(f"polled {i}", user)
        job.save()
        job.execute()
        jobs.append(Job.objects.get(pk=job.pk))
    return jobs


def test_a_polls_changes_write_their_events_and_result_intents_together(
    manager: JobManager, user: Any
) -> None:
    """One conditional UPDATE for all the batch's changed jobs, one INSERT for their events and
    one for the result intents; every row and event as apply_change alone would write it."""
    jobs = _submitted(manager, user, 6)
    # Job 0 stays Submitted (no change), 1-3 run, 4-5 complete with result processing pending.
    jobs[4]._process_results_function = "json.dumps"
    jobs[5]._process_results_function = "json.dumps"
    reports = {
        jobs[0].pk: NativeReport(jobs[0].pk, Status.SUBMITTED),
        **{j.pk: NativeReport(j.pk, Status.RUNNING, "R", "started") for j in jobs[1:3]},
        jobs[3].pk: NativeReport(
            jobs[3].pk, Status.RUNNING, "R", "started", state={"tasks": {"1": [None, "é", 2.5]}}
        ),
        **{j.pk: NativeReport(j.pk, Status.COMPLETE, "CD", exit_code=0) for j in jobs[4:]},
    }
    with CaptureQueriesContext(connection) as ctx:
        counts = apply_reports({j.pk: j for j in jobs}, reports)
    assert counts == {"changed": 5, "same": 1, "stale": 0}
    writes = _write_queries(ctx)
    assert sum(w.lstrip().upper().startswith("UPDATE") for w in writes) == 1
    inserts = [w for w in writes if w.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 2, inserts  # the events, the result intents
    for job in jobs[1:4]:
        assert _events(Job.objects.get(pk=job.pk))[-1] == ("SUB", "RUN", "poll")
        assert Job.objects.get(pk=job.pk).status_message == "started"
        event = JobEvent.objects.filter(job_id=job.pk).order_by("id").last()
        assert event is not None
        assert (event.attempt, event.native_status, event.message) == (1, "R", "started")
        assert (event.status_text, event.actor) == ("", "")
        assert abs((timezone.now() - event.time).total_seconds()) < 60
    for job in jobs[4:]:
        assert _events(Job.objects.get(pk=job.pk))[-1] == ("SUB", "RES", "poll")
        assert JobIntent.objects.filter(
            job_id=job.pk, action=IntentAction.RESULTS, done_at__isnull=True
        ).exists()
    assert _events(Job.objects.get(pk=jobs[0].pk))[-1][1] == "SUB"
    stored = Job.objects.get(pk=jobs[3].pk)
    assert stored.engine_state == {"tasks": {"1": [None, "é", 2.5]}}
    assert stored.start_time is not None and stored.last_contact is not None
    assert Job.objects.get(pk=jobs[1].pk).engine_state == {}


def test_a_poll_batch_raced_by_another_writer_falls_back_to_one_by_one(
    manager: JobManager, user: Any
) -> None:
    """If another writer moved one of the batch's jobs after the monitor loaded it, the batch's
    UPDATE writes nothing and each change is decided again on fresh data: the raced job gets no
    second event, the others change as reported."""
    jobs = _submitted(manager, user, 3)
    # Behind the monitor's back, job 1 is stopped (Aborted) by someone else.
    Job.objects.get(pk=jobs[1].pk).update_status("Aborted")
    reports = {j.pk: NativeReport(j.pk, Status.RUNNING, "R") for j in jobs}
    counts = apply_reports({j.pk: j for j in jobs}, reports)
    assert counts["changed"] == 2
    assert [Job.objects.get(pk=j.pk).status for j in jobs] == ["Running", "Aborted", "Running"]
    raced = _events(Job.objects.get(pk=jobs[1].pk))
    assert [to for _, to, _ in raced] == ["PEN", "SUB", "ABT"]
    for job in (jobs[0], jobs[2]):
        assert [to for _, to, _ in _events(Job.objects.get(pk=job.pk))] == ["PEN", "SUB", "RUN"]
