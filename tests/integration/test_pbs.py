"""The PBS engine through the monitor, against Slurm's PBS-compatible commands (slurm-wlm-torque's
qsub/qstat/qdel/qhold/qrls, unpacked by scripts/start-slurm; no PBS server exists in Debian): logs,
exit codes, cancel, hold/release, the wall-time limit, an array with a failing task, shell
metacharacters, crash recovery, a dependency chain, and one qstat per poll however many jobs are
active.

The controller behind these commands is the Slurm tests' slurmctld, shared with them (one lock file
for both modules): the test that stops it for a while, so that the PBS commands fail and the jobs go
stale, then recover, takes that lock alone. These tests run in the SQLite phase only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_slurm import SLURM_DIR, sinfo_answers, slurmctld_pid

# What Slurm itself says (the wrappers' qstat shows neither holds nor reasons).
from test_slurm import queue_state as slurm_state
from tests import dbtools
from tests.integration import engine_support
from tests.integration.engine_support import CountingRunner, fresh, run_to, script_of, spec_of

from offload import JobManager, PbsJob
from offload.engines.pbs import PbsEngine
from offload.errors import InvalidJobError
from offload.models import IntentAction, Job, JobEvent, JobIntent
from offload.monitor import Monitor
from offload.monitor.loop import CycleStats
from offload.schedulers import build_engine_for

pytestmark = [
    pytest.mark.usefixtures("offload_home", "pbs_commands"),
    pytest.mark.skipif(
        dbtools.database_kind() == "postgres",
        reason="PBS tests run once, in the SQLite phase (they test the engine, not the database)",
    ),
]


def pbs_bin() -> str:
    return str(json.loads(os.environ.get("OFFLOAD_ENGINE_PBS") or "{}").get("bin") or "")


def qstat_answers() -> bool:
    try:
        result = subprocess.run(
            [f"{pbs_bin()}/qstat"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode in (0, 153)  # 153: no jobs at all


def start_slurm() -> None:
    stdout = engine_support.run_start_script("slurm")
    if not pbs_bin():
        raise RuntimeError(f"scripts/start-slurm set up no PBS commands: {stdout[-2000:]}")


#: The Slurm tests' cluster and lock file: none runs while one of them has stopped the controller.
PBS = engine_support.Service(
    SLURM_DIR,
    ready=lambda: bool(os.environ.get("SLURM_CONF") and pbs_bin() and qstat_answers()),
    start=start_slurm,
    required="the PBS commands",
    missing="no PBS commands",
)


@pytest.fixture(scope="session")
def pbs_commands() -> None:
    """The PBS commands over the project's Slurm cluster, started if they do not answer."""
    PBS.ensure()


#: Tests that stop the shared controller: they wait until no other session's Slurm or PBS test runs.
EXCLUSIVE = {"test_a_stopped_controller_makes_jobs_stale_not_failed"}


@pytest.fixture(autouse=True)
def slurm_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """Shared with the Slurm tests: none runs while one of them has stopped the controller."""
    yield from PBS.test_lock(request, EXCLUSIVE)


def pbs_job(user: Any, name: str = "pbs {id}", **parameters: Any) -> PbsJob:
    job = JobManager("pbs_app").create_job(name, user, job_type="PBS", **parameters)
    assert isinstance(job, PbsJob)
    return job


monitor = engine_support.monitor_fixture("pbs-test-monitor")
cleanup_jobs = engine_support.cleanup_fixture("scancel")


# -- running jobs ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_command_runs_and_its_logs_are_read(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = pbs_job(user, executable="sh", arguments=["-c", "echo hello; echo oops >&2"])
    started = time.monotonic()
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error")
    latency = time.monotonic() - started
    assert done.status == "Complete", done.status_message
    assert done.native_id.isdigit()
    assert done.native_status == "C (exit 0)"
    logs = done.get_logs()
    assert logs == {"stdout": "hello\n", "stderr": "oops\n"}
    assert f"#PBS -N offload-{job.pk}-1-" in script_of(done)
    assert latency < 20, f"a trivial job took {latency:.1f} s"


@pytest.mark.django_db
def test_a_script_with_resources_fails_with_its_exit_code(
    user: Any, monitor: Monitor, until: Callable[..., Any], tmp_path: Path
) -> None:
    job = pbs_job(
        user,
        script="echo about to fail in $PWD\nexit 7\n",
        queue="debug",
        nodes=1,
        ppn=1,
        memory="100M",
        wall_time="00:05:00",
        working_directory=str(tmp_path),
        extra_directives=["-m n"],
    )
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Error"
    assert done.native_status == "C (exit 7)", done.status_message
    assert done.status_message == "exited with code 7"
    assert done.get_logs()["stdout"] == f"about to fail in {tmp_path}\n"
    script = script_of(done)
    for directive in ("-q debug", "-l nodes=1:ppn=1", "-l mem=100mb", "-l walltime=0:05:00"):
        assert f"#PBS {directive}\n" in script


@pytest.mark.django_db
def test_a_name_arguments_and_environment_full_of_metacharacters_run_verbatim(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    nasty = "a;b && c | d $(touch pwned) `touch pwned2` 'q' \"dq\" \\ * ? ~ # %j\n#PBS -l x=1"
    job = pbs_job(
        user,
        name=nasty,
        executable="python3",
        arguments=[
            "-c",
            "import os, sys; print(repr(sys.argv[1:])); print(repr(os.environ['OFFLOAD_JOB_NAME']));"
            " print(repr(os.environ['NASTY']))",
            nasty,
            "",
            "$HOME",
        ],
        environment={"NASTY": nasty},
    )
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message
    out = done.get_logs()["stdout"].splitlines()
    assert out == [repr([nasty, "", "$HOME"]), repr(nasty), repr(nasty)]
    workspace = Path(done.workspace)
    assert not (workspace / "pwned").exists() and not (workspace / "pwned2").exists()
    assert [line for line in script_of(done).splitlines() if line.startswith("#PBS -l x")] == []


@pytest.mark.django_db
def test_bad_parameters_are_refused_naming_the_field(user: Any) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"queue": "debug\n#PBS -u root"}, "queue"),
        ({"account": "a b"}, "account"),
        ({"wall_time": "soon"}, "wall_time"),
        ({"memory": "lots"}, "memory"),
        ({"nodes": 0}, "nodes"),
        ({"ppn": "two"}, "ppn"),
        ({"array": "1-"}, "array"),
        ({"environment": {"BAD NAME": "x"}}, "environment"),
        ({"extra_directives": ["-m n\n#PBS -u root"]}, "extra_directives[0]"),
        ({"extra_directives": ["echo hi"]}, "extra_directives[0]"),
        ({"arguments": "a string"}, "arguments"),
    ]
    for extra, field in cases:
        job = pbs_job(user, executable="true", **extra)
        with pytest.raises(InvalidJobError) as info:
            job.execute()
        assert info.value.field == field, (extra, str(info.value))
        assert not JobIntent.objects.filter(job_id=job.pk).exists()


# -- control --------------------------------------------------------------------------------
@pytest.mark.django_db
def test_cancel_a_running_job(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    job = pbs_job(user, executable="sleep", arguments=["120"])
    cleanup_jobs.append(job)
    job.execute()
    run_to(monitor, until, job, "Running")
    job.stop()
    done = run_to(monitor, until, job, "Aborted", "Error", "Complete")
    assert done.status == "Aborted", done.status_message
    assert done.native_status.startswith("C")  # the wrappers' qdel: SIGTERM (143), then SIGKILL


@pytest.mark.django_db
def test_hold_and_release_a_queued_job(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    # Queued behind a running job (afterany), so it is still queued when offload holds it.
    blocker = pbs_job(user, executable="sleep", arguments=["60"])
    blocker.save()
    job = pbs_job(user, executable="true", dependencies=[{"type": "afterany", "job": blocker.pk}])
    cleanup_jobs.extend([blocker, job])
    blocker.execute()
    job.execute()
    run_to(monitor, until, blocker, "Running")
    until(lambda: fresh(job).native_id, step=monitor.run_cycle, what="the job to be queued")
    assert fresh(job).status == "Submitted"
    native_id = fresh(job).native_id
    job.pause()
    run_to(monitor, until, job, "Paused")
    assert slurm_state(native_id).startswith("PENDING|JobHeld")
    monitor._poll_soon.add("pbs:default")
    monitor.run_cycle()
    assert fresh(job).status == "Paused"  # the next polls agree that it is held
    job.resume()
    run_to(monitor, until, job, "Submitted")
    blocker.stop()
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message


@pytest.mark.django_db
def test_a_job_submitted_held_is_paused_until_released(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    job = pbs_job(user, executable="true", extra_directives=["-h"])
    cleanup_jobs.append(job)
    job.execute()
    run_to(monitor, until, job, "Paused")
    job.resume()
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message


@pytest.mark.django_db
def test_wall_time_exceeded_is_an_error(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    # One minute is the smallest limit Slurm (behind the wrappers) keeps.
    job = pbs_job(user, executable="sleep", arguments=["300"], wall_time="1")
    cleanup_jobs.append(job)
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error", "Aborted", timeout=150)
    assert done.status == "Error"
    assert "wall time exceeded" in done.status_message
    # Slurm (behind the wrappers) killed it for its limit: TIMEOUT, or, in the moment before,
    # COMPLETING with the reason TimeLimit (seen once in CI).
    state, _, reason = slurm_state(done.native_id).partition("|")
    assert state == "TIMEOUT" or reason == "TimeLimit", (state, reason)


# -- arrays ------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_an_array_with_a_failing_task_is_various_then_various_complete(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    job = pbs_job(
        user,
        script='echo "task $OFFLOAD_TASK_ID"\n[ "$OFFLOAD_TASK_ID" = 2 ] && exit 4\nsleep 3\n',
        array="1-4%2",
    )
    cleanup_jobs.append(job)
    job.execute()
    done = run_to(monitor, until, job, "Various-Complete", "Complete", "Error", timeout=60)
    statuses = list(
        JobEvent.objects.filter(job_id=job.pk).order_by("id").values_list("to_status", flat=True)
    )
    assert "VAR" in statuses and "VCP" in statuses, statuses
    tasks = done.engine_state["tasks"]
    assert sorted(tasks) == ["1", "2", "3", "4"]
    assert tasks["2"] == {"status": "ERR", "native_status": "exit 4", "exit_code": 4}
    assert {tasks[t]["status"] for t in ("1", "3", "4")} == {"COM"}
    assert "#PBS -t 1-4%2\n" in script_of(done)
    logs = done.get_logs()
    assert logs["stdout.2"] == "task 2\n" and logs["stdout.4"] == "task 4\n"


# -- dependencies ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_dependency_chain_runs_in_order(
    user: Any, monitor: Monitor, until: Callable[..., Any], tmp_path: Path
) -> None:
    order = tmp_path / "order.txt"

    def step(name: str, pause: str = "0") -> list[str]:
        return ["-c", f'sleep {pause}; echo {name} >> "$1"', "step", str(order)]

    first = pbs_job(user, executable="sh", arguments=step("A", "1"))
    first.save()
    second = pbs_job(user, executable="sh", arguments=step("B"), dependencies=[first.pk])
    second.save()
    third = pbs_job(
        user,
        executable="sh",
        arguments=step("C"),
        dependencies=[{"type": "afterany", "job": second.pk}],
    )
    third.execute()
    second.execute()
    monitor.run_cycle()
    assert fresh(third).native_id == "" and fresh(second).native_id == ""
    first.execute()
    for job in (first, second, third):
        done = run_to(monitor, until, job, "Complete", "Error", "Aborted", timeout=60)
        assert done.status == "Complete", (job.pk, done.status_message)
    assert order.read_text() == "A\nB\nC\n"
    assert f"#PBS -W depend=afterany:{fresh(second).native_id}\n" in script_of(fresh(third))


# -- failures of the monitor ------------------------------------------------------------------
@pytest.mark.django_db
def test_a_monitor_that_crashed_after_qsub_adopts_the_submission(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = pbs_job(user, executable="sh", arguments=["-c", "echo started >> starts.txt"])
    job.execute()
    loaded = fresh(job)
    engine = build_engine_for("pbs", None)
    spec = spec_of(loaded)
    [result] = engine.submit_batch([spec])
    assert result.native_id and not result.adopted
    assert fresh(job).native_id == ""
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete"
    assert done.native_id == result.native_id
    intent = JobIntent.objects.get(job_id=job.pk, action=IntentAction.EXECUTE)
    assert intent.outcome == "adopted"
    assert (Path(loaded.workspace) / "starts.txt").read_text() == "started\n"


@pytest.mark.django_db
def test_a_stopped_controller_makes_jobs_stale_not_failed(
    user: Any,
    until: Callable[..., Any],
    cleanup_jobs: list[Job],
    offload_settings: Callable[..., None],
) -> None:
    if not (SLURM_DIR / "slurmctld.pid").exists():
        pytest.skip("the cluster was not started by scripts/start-slurm; not stopping it")
    offload_settings(RETRY_INITIAL=0.05, RETRY_MAX=0.2)
    monitor = Monitor("pbs-stale-monitor")
    try:
        job = pbs_job(user, executable="sleep", arguments=["6"])
        cleanup_jobs.append(job)
        job.execute()
        run_to(monitor, until, job, "Running")
        pid = slurmctld_pid()
        os.kill(pid, signal.SIGTERM)
        until(lambda: not Path(f"/proc/{pid}").exists(), what="slurmctld to stop")
        try:
            # qstat cannot reach the controller: the job goes stale and stays Running.
            until(
                lambda: fresh(job).is_stale,
                step=monitor.run_cycle,
                interval=0.2,
                timeout=60,
                what="the job to go stale",
            )
            assert fresh(job).status == "Running"
            # A job executed meanwhile waits (Submitted), it is not refused.
            late = pbs_job(user, executable="true")
            cleanup_jobs.append(late)
            late.execute()
            monitor.run_cycle()
            assert fresh(late).status == "Submitted" and fresh(late).native_id == ""
            monitor.run_cycle()
            assert fresh(job).status == "Running" and fresh(job).is_stale
        finally:
            start_slurm()
            until(sinfo_answers, timeout=60, interval=0.5, what="sinfo to answer again")
        for each in (job, late):
            done = run_to(monitor, until, each, "Complete", "Error", "Aborted", timeout=60)
            assert done.status == "Complete", done.status_message
            assert not done.is_stale
        # Never an Error on the way: staleness is not a status change.
        reached = set(JobEvent.objects.filter(job_id=job.pk).values_list("to_status", flat=True))
        assert "ERR" not in reached
    finally:
        monitor.shutdown()


@pytest.mark.django_db
def test_one_qstat_per_poll_however_many_jobs(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    runner = CountingRunner()
    monitor.engines["pbs:default"] = PbsEngine(build_engine_for("pbs", None).options, runner=runner)
    jobs = [pbs_job(user, executable="sleep", arguments=["60"]) for _ in range(6)]
    cleanup_jobs.extend(jobs)
    for job in jobs:
        job.execute()
    until(
        lambda: all(fresh(j).native_id for j in jobs),
        step=monitor.run_cycle,
        what="every job to be submitted",
    )
    assert runner.commands.count("qsub") == 6
    runner.commands.clear()
    monitor._poll_soon.add("pbs:default")
    stats = CycleStats()
    monitor.poll(stats)
    assert stats.polled_jobs == 6
    assert runner.commands == ["qstat"]
