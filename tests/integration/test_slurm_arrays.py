"""SLURM job arrays through the monitor, on the real one-node cluster of scripts/start-slurm: a
status per task in the job's engine state, Various while the tasks disagree, Various-Complete
once none waits (then result processing, then Complete), logs per task, hold/release and cancel
of the whole array, crash recovery of an array submission.

Like test_slurm.py, these run in the SQLite phase only (they test the engine, not the database).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_slurm import fresh, queue_state, slurm_cluster, slurm_job, slurm_lock  # noqa: F401
from tests import dbtools

from offload.engines.base import JobSpec, attempt_subpath
from offload.errors import InvalidJobError
from offload.models import IntentAction, Job, JobIntent
from offload.monitor import Monitor
from offload.schedulers import build_engine_for

pytestmark = [
    pytest.mark.usefixtures("offload_home", "slurm_cluster", "slurm_lock"),
    pytest.mark.skipif(
        dbtools.database_kind() == "postgres",
        reason="Slurm tests run once, in the SQLite phase (they test the engine, not the database)",
    ),
]


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    m = Monitor("slurm-array-monitor")
    yield m
    m.shutdown()


@pytest.fixture
def cleanup_jobs() -> Iterator[list[Job]]:
    jobs: list[Job] = []
    yield jobs
    for job in jobs:
        native_id = fresh(job).native_id
        if native_id:
            subprocess.run(["scancel", native_id], capture_output=True, timeout=10, check=False)


def statuses_seen(job: Job) -> list[str]:
    """The status codes the job went through."""
    return [event.to_status for event in fresh(job).events]


def tasks_of(job: Job) -> dict[str, Any]:
    return dict((fresh(job).engine_state or {}).get("tasks") or {})


def intents_of(job: Job) -> list[tuple[str, int, str, str]]:
    """The job's intents: action, tries, outcome, done or not (for failure messages)."""
    return [
        (i.action, i.tries, i.outcome, "done" if i.done_at else "open")
        for i in JobIntent.objects.filter(job_id=job.pk).order_by("id")
    ]


def wait_status(
    monitor: Monitor, until: Callable[..., Any], job: Job, *statuses: str, timeout: float = 40
) -> Job:
    until(
        lambda: fresh(job).status in statuses,
        step=monitor.run_cycle,
        timeout=timeout,
        interval=0.1,
        what=lambda: (
            f"job {job.pk} to become {' or '.join(statuses)} (is {fresh(job).status}: "
            f"{fresh(job).status_message}; native {fresh(job).native_status!r}, stale "
            f"{fresh(job).is_stale}, tasks {tasks_of(job)}, queue "
            f"{queue_state(fresh(job).native_id)!r}, intents {intents_of(job)})"
        ),
    )
    return fresh(job)


@pytest.mark.django_db
def test_an_array_with_one_failing_task_is_various_then_various_complete_then_complete(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    # Task 2 fails at once; tasks 1 and 3 finish a few seconds later.
    script = (
        'echo "task $OFFLOAD_TASK_ID of $SLURM_ARRAY_JOB_ID"\n'
        'if [ "$SLURM_ARRAY_TASK_ID" = 2 ]; then echo broken >&2; exit 5; fi\n'
        "sleep 4\n"
    )
    job = slurm_job(user, script=script, array="1-3")
    cleanup_jobs.append(job)
    job.execute()
    various = wait_status(monitor, until, job, "Various", "Various-Complete", "Complete", "Error")
    assert various.status == "Various", various.status_message
    script_text = (Path(various.workspace) / attempt_subpath(various.pk, 1) / "job.sh").read_text()
    assert "#SBATCH --array=1-3\n" in script_text
    done = wait_status(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message
    seen = statuses_seen(job)
    assert seen.index("VAR") < seen.index("VCP") < seen.index("COM"), seen
    tasks = tasks_of(job)
    assert set(tasks) == {"1", "2", "3"}
    assert {t: (r["status"], r["native_status"], r["exit_code"]) for t, r in tasks.items()} == {
        "1": ("COM", "COMPLETED", 0),
        "2": ("ERR", "FAILED", 5),
        "3": ("COM", "COMPLETED", 0),
    }
    # The Various-Complete event says which task failed.
    vcp = next(e for e in fresh(job).events if e.to_status == "VCP")
    assert "task 2: FAILED (exit 5)" in vcp.message
    assert "3 tasks: 2 Complete, 1 Error" in vcp.message
    # One log pair per task: stdout-<array>_<task>.
    logs = done.get_logs()
    native_id = done.native_id
    assert logs[f"stdout-{native_id}_1"] == f"task 1 of {native_id}\n"
    assert logs[f"stderr-{native_id}_2"] == "broken\n"
    assert set(logs) == {f"{s}-{native_id}_{t}" for s in ("stdout", "stderr") for t in "123"}


@pytest.mark.django_db
def test_an_array_of_tasks_that_all_succeed_is_complete_with_a_step_and_a_limit(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    job = slurm_job(user, executable="sh", arguments=["-c", "echo $1", "sh", "x"], array="0-4:2%1")
    cleanup_jobs.append(job)
    job.execute()
    done = wait_status(monitor, until, job, "Complete", "Error", "Various-Complete", timeout=60)
    assert done.status == "Complete", done.status_message
    # One task at a time: some done while others wait is Various; never Various-Complete.
    assert "VCP" not in statuses_seen(job) and statuses_seen(job)[-1] == "COM"
    assert sorted(tasks_of(job), key=int) == ["0", "2", "4"]
    assert {r["status"] for r in tasks_of(job).values()} == {"COM"}
    assert done.native_status == "3 COMPLETED"


@pytest.mark.django_db
def test_hold_release_and_cancel_cover_the_whole_array(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    # One task at a time: task 1 runs, tasks 2-4 wait for it (JobArrayTaskLimit).
    job = slurm_job(user, executable="sleep", arguments=["120"], array="1-4%1")
    cleanup_jobs.append(job)
    job.execute()
    until(
        lambda: tasks_of(job).get("1", {}).get("status") == "RUN",
        step=monitor.run_cycle,
        interval=0.1,
        timeout=30,
        what="task 1 to run",
    )
    assert fresh(job).status == "Various"  # one running, three queued
    assert {t: r["status"] for t, r in tasks_of(job).items()} == {
        "1": "RUN",
        "2": "SUB",
        "3": "SUB",
        "4": "SUB",
    }
    native_id = fresh(job).native_id
    job.pause()  # queued tasks held, the running one suspended
    wait_status(monitor, until, job, "Paused")
    until(
        lambda: {r["status"] for r in tasks_of(job).values()} == {"PAS"},
        step=lambda: (monitor._poll_soon.add("slurm:default"), monitor.run_cycle()),
        interval=0.1,
        timeout=20,
        what="every task to be held or suspended",
    )
    assert fresh(job).status == "Paused"
    assert "SUSPENDED" in fresh(job).native_status and "JobHeld" in fresh(job).native_status
    job.resume()
    until(
        lambda: (
            tasks_of(job).get("1", {}).get("status") == "RUN"
            and "JobHeld" not in queue_state(f"{native_id}_2")
        ),
        step=lambda: (monitor._poll_soon.add("slurm:default"), monitor.run_cycle()),
        interval=0.1,
        timeout=20,
        what="the array to be released and resumed",
    )
    job.stop()  # one scancel for the whole array
    done = wait_status(monitor, until, job, "Aborted", "Error", "Complete", "Various-Complete")
    assert done.status == "Aborted", done.status_message
    assert {t: r["status"] for t, r in tasks_of(job).items()} == {
        "1": "ABT",
        "2": "ABT",
        "3": "ABT",
        "4": "ABT",
    }


@pytest.mark.django_db
def test_a_monitor_that_crashed_after_submitting_an_array_adopts_it(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = slurm_job(user, executable="true", array="1-2")
    job.execute()
    loaded = fresh(job)
    engine = build_engine_for("slurm", None)
    spec = JobSpec(
        loaded.pk, 1, loaded.job_type, loaded.name, loaded.workspace, dict(loaded.parameters)
    )
    [result] = engine.submit_batch([spec])
    assert result.native_id and not result.adopted
    assert result.state == {"array": "1-2"}
    done = wait_status(monitor, until, job, "Complete", "Error", "Various-Complete")
    assert done.status == "Complete", done.status_message
    assert done.native_id == result.native_id
    assert JobIntent.objects.get(job_id=job.pk, action=IntentAction.EXECUTE).outcome == "adopted"
    assert set(tasks_of(job)) == {"1", "2"}


@pytest.mark.django_db
def test_bad_arrays_are_refused_naming_the_field(user: Any) -> None:
    for bad in ("1-10;echo", "5-1", "1-3:0", "1-10%0", "x", "1-2\n#SBATCH --uid=0", "1--3", True):
        job = slurm_job(user, executable="true", array=bad)
        with pytest.raises(InvalidJobError) as info:
            job.execute()
        assert info.value.field == "array", bad
