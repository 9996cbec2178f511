"""The SLURM engine through the monitor, on the real one-node Slurm cluster of scripts/start-slurm:
logs, exit codes, cancel, hold/release, the wall-time limit, shell metacharacters, crash recovery,
a controller that is down for a while, and one squeue per poll however many jobs are active.

These tests run in the SQLite phase only: they exercise the engine, not the database, and the
wall-time test alone takes a minute.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests import dbtools
from tests.integration import engine_support
from tests.integration.engine_support import CountingRunner, fresh, script_of, spec_of

from offload import JobManager, SlurmJob
from offload.engines.base import attempt_folder
from offload.engines.slurm import SlurmEngine
from offload.errors import InvalidJobError
from offload.models import IntentAction, Job, JobIntent
from offload.monitor import Monitor
from offload.monitor.loop import CycleStats
from offload.schedulers import build_engine_for

SLURM_DIR = engine_support.SERVICES / "slurm"

pytestmark = [
    pytest.mark.usefixtures("offload_home", "slurm_cluster"),
    pytest.mark.skipif(
        dbtools.database_kind() == "postgres",
        reason="Slurm tests run once, in the SQLite phase (they test the engine, not the database)",
    ),
]


def sinfo_answers() -> bool:
    try:
        result = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def start_slurm() -> None:
    engine_support.run_start_script("slurm")


SLURM = engine_support.Service(
    SLURM_DIR,
    ready=lambda: bool(
        os.environ.get("SLURM_CONF") and os.environ.get("OFFLOAD_ENGINE_SLURM") and sinfo_answers()
    ),
    start=start_slurm,
    required="Slurm",
    missing="no Slurm cluster",
)


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """The project's Slurm cluster, started if ``sinfo`` does not answer; its exports applied."""
    SLURM.ensure()


#: Tests that stop the shared controller: they wait until no other session's Slurm test runs.
EXCLUSIVE = {"test_a_stopped_controller_makes_jobs_stale_not_failed"}


@pytest.fixture(autouse=True)
def slurm_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """One cluster serves every test session on this machine (several people or helpers may run
    the suite at once): ordinary tests share it; a test that stops the controller takes it alone."""
    yield from SLURM.test_lock(request, EXCLUSIVE)


def slurm_job(user: Any, name: str = "slurm {id}", **parameters: Any) -> SlurmJob:
    job = JobManager("slurm_app").create_job(name, user, job_type="SLURM", **parameters)
    assert isinstance(job, SlurmJob)
    return job


def run_to(
    monitor: Monitor, until: Callable[..., Any], job: Job, *statuses: str, timeout: float = 30
) -> Job:
    return engine_support.run_to(monitor, until, job, *statuses, timeout=timeout)


def queue_state(native_id: str) -> str:
    result = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", native_id, "-o", "%T|%r"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return result.stdout.strip()


monitor = engine_support.monitor_fixture("slurm-test-monitor")
#: Jobs whose Slurm jobs are cancelled at the end, whatever happened.
cleanup_jobs = engine_support.cleanup_fixture("scancel")


# -- running jobs ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_command_runs_and_its_logs_are_read(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = slurm_job(
        user, executable="sh", arguments=["-c", "echo hello from $SLURM_JOB_ID; echo oops >&2"]
    )
    started = time.monotonic()
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error")
    latency = time.monotonic() - started
    assert done.status == "Complete", done.status_message
    assert done.native_id.isdigit()
    assert done.native_status == "COMPLETED"
    logs = done.get_logs()
    assert logs["stdout"] == f"hello from {done.native_id}\n"
    assert logs["stderr"] == "oops\n"
    script = script_of(done)
    assert f"#SBATCH --comment=offload-{job.pk}-1" in script
    assert latency < 15, f"a trivial job took {latency:.1f} s"


@pytest.mark.django_db
def test_a_script_with_resources_fails_with_its_exit_code(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = slurm_job(
        user,
        script="echo about to fail\nexit 7\n",
        partition="debug",
        nodes=1,
        ntasks=1,
        cpus_per_task=1,
        memory="100M",
        wall_time="00:05:00",
        extra_directives=["--open-mode=append"],
    )
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Error"
    assert done.native_status == "FAILED"
    assert "exited with code 7" in done.status_message
    assert done.get_logs()["stdout"] == "about to fail\n"
    script = script_of(done)
    for directive in ("--mem=100M", "--time=00:05:00", "--cpus-per-task=1", "--open-mode=append"):
        assert f"#SBATCH {directive}\n" in script


@pytest.mark.django_db
def test_a_name_arguments_and_environment_full_of_metacharacters_run_verbatim(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    nasty = "a;b && c | d $(touch pwned) `touch pwned2` 'q' \"dq\" \\ * ? ~ # %j\n#SBATCH --x"
    job = slurm_job(
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
    script = script_of(done)
    assert [line for line in script.splitlines() if line.startswith("#SBATCH --x")] == []


@pytest.mark.django_db
def test_bad_parameters_are_refused_naming_the_field(user: Any) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"partition": "debug\n#SBATCH --uid=0"}, "partition"),
        ({"account": "a b"}, "account"),
        ({"wall_time": "soon"}, "wall_time"),
        ({"wall_time": "0"}, "wall_time"),
        ({"memory": "lots"}, "memory"),
        ({"nodes": 0}, "nodes"),
        ({"ntasks": "two"}, "ntasks"),
        ({"environment": {"BAD NAME": "x"}}, "environment"),
        ({"extra_directives": ["--qos=x\n#SBATCH --uid=0"]}, "extra_directives[0]"),
        ({"extra_directives": ["echo hi"]}, "extra_directives[0]"),
        ({"arguments": "a string"}, "arguments"),
    ]
    for extra, field in cases:
        job = slurm_job(user, executable="true", **extra)
        with pytest.raises(InvalidJobError) as info:
            job.execute()
        assert info.value.field == field, (extra, str(info.value))
        # Nothing was submitted (create_job leaves an unexecuted job unsaved until execute).
        assert not JobIntent.objects.filter(job_id=job.pk).exists()


# -- control --------------------------------------------------------------------------------
@pytest.mark.django_db
def test_cancel_a_running_job(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    job = slurm_job(user, executable="sleep", arguments=["120"])
    cleanup_jobs.append(job)
    job.execute()
    run_to(monitor, until, job, "Running")
    job.stop()
    done = run_to(monitor, until, job, "Aborted", "Error", "Complete")
    assert done.status == "Aborted"
    assert done.native_status.startswith("CANCELLED")


@pytest.mark.django_db
def test_hold_and_release_a_pending_job(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    # --begin keeps it queued until the test lets it start.
    job = slurm_job(user, executable="true", extra_directives=["--begin=now+3600"])
    cleanup_jobs.append(job)
    job.execute()
    submitted = run_to(monitor, until, job, "Submitted")
    until(lambda: fresh(job).native_id, step=monitor.run_cycle, what="the job to be queued")
    assert "PENDING" in queue_state(fresh(job).native_id)
    job.pause()
    paused = run_to(monitor, until, job, "Paused")
    native_id = paused.native_id
    assert "JobHeld" in queue_state(native_id)
    # The next polls agree that it is held.
    monitor._poll_soon.add("slurm:default")
    monitor.run_cycle()
    assert fresh(job).status == "Paused"
    assert fresh(job).native_status.startswith("PENDING (JobHeld")
    job.resume()
    until(
        lambda: "JobHeld" not in queue_state(native_id),
        step=monitor.run_cycle,
        what="the hold to be released",
    )
    subprocess.run(
        ["scontrol", "update", f"JobId={native_id}", "StartTime=now"], check=True, timeout=10
    )
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message
    assert submitted.native_id in ("", native_id)


@pytest.mark.django_db
def test_wall_time_exceeded_is_an_error(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    # One minute is Slurm's smallest limit; the test cluster kills at once (OverTimeLimit=0).
    job = slurm_job(user, executable="sleep", arguments=["300"], wall_time="1")
    cleanup_jobs.append(job)
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error", "Aborted", timeout=150)
    assert done.status == "Error"
    assert done.native_status == "TIMEOUT"
    assert "wall time exceeded" in done.status_message


# -- failures of the monitor and of Slurm -----------------------------------------------------
@pytest.mark.django_db
def test_a_monitor_that_crashed_after_sbatch_adopts_the_submission(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = slurm_job(user, executable="sh", arguments=["-c", "echo started >> starts.txt"])
    job.execute()
    loaded = fresh(job)
    # A monitor submitted the attempt, then died before writing anything down.
    engine = build_engine_for("slurm", None)
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
    # Exactly one Slurm job carries this attempt's tag and script.
    script = f"{attempt_folder(loaded.workspace, loaded.pk, 1)}/job.sh"
    tagged = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i|%k|%o"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.splitlines()
    assert [line for line in tagged if line.endswith(f"|{script}")] == [
        f"{result.native_id}|offload-{job.pk}-1|{script}"
    ]


def slurmctld_pid() -> int:
    return int((SLURM_DIR / "slurmctld.pid").read_text().strip())


@pytest.mark.django_db
def test_a_stopped_controller_makes_jobs_stale_not_failed(
    user: Any,
    monitor: Monitor,
    until: Callable[..., Any],
    cleanup_jobs: list[Job],
    offload_settings: Callable[..., None],
) -> None:
    if not (SLURM_DIR / "slurmctld.pid").exists():
        pytest.skip("the cluster was not started by scripts/start-slurm; not stopping it")
    offload_settings(RETRY_INITIAL=0.05, RETRY_MAX=0.2)
    monitor = Monitor("slurm-stale-monitor")
    jobs = [slurm_job(user, executable="sleep", arguments=["6"]) for _ in range(2)]
    cleanup_jobs.extend(jobs)
    for job in jobs:
        job.execute()
    for job in jobs:
        run_to(monitor, until, job, "Running")
    pid = slurmctld_pid()
    os.kill(pid, 15)
    until(lambda: not Path(f"/proc/{pid}").exists(), what="slurmctld to stop")
    try:
        until(
            lambda: all(fresh(j).is_stale for j in jobs),
            step=monitor.run_cycle,
            interval=0.2,
            timeout=60,
            what="the jobs to go stale",
        )
        assert {fresh(j).status for j in jobs} == {"Running"}
        # A job executed meanwhile waits (Submitted), it is not refused.
        late = slurm_job(user, executable="true")
        cleanup_jobs.append(late)
        late.execute()
        monitor.run_cycle()
        assert fresh(late).status == "Submitted" and fresh(late).native_id == ""
        monitor.run_cycle()
        assert {fresh(j).status for j in jobs} == {"Running"}
    finally:
        start_slurm()
    jobs.append(late)
    for job in jobs:
        done = run_to(monitor, until, job, "Complete", "Error", "Aborted", timeout=60)
        assert done.status == "Complete", done.status_message
        assert not done.is_stale
    monitor.shutdown()


@pytest.mark.django_db
def test_one_squeue_per_poll_however_many_jobs(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    runner = CountingRunner()
    monitor.engines["slurm:default"] = SlurmEngine(
        build_engine_for("slurm", None).options, runner=runner
    )
    jobs = [slurm_job(user, executable="sleep", arguments=["60"]) for _ in range(12)]
    # Arrays too: their tasks come in the same squeue, and in the same sacct once they end.
    jobs += [slurm_job(user, executable="sleep", arguments=["60"], array="1-5") for _ in range(2)]
    cleanup_jobs.extend(jobs)
    for job in jobs:
        job.execute()
    until(
        lambda: all(fresh(j).native_id for j in jobs),
        step=monitor.run_cycle,
        what="every job to be submitted",
    )
    assert runner.commands.count("sbatch") == 14
    assert runner.commands.count("squeue") <= 2  # the crash-recovery lookup, once per batch
    runner.commands.clear()
    monitor._poll_soon.add("slurm:default")
    stats = CycleStats()
    monitor.poll(stats)
    assert stats.polled_jobs == 14
    assert runner.commands == ["squeue"]  # all queued or running: no accounting call
    assert all(len(fresh(j).engine_state["tasks"]) == 5 for j in jobs[12:])
    for job in jobs:
        subprocess.run(["scancel", fresh(job).native_id], check=True, timeout=10)
    until(
        lambda: all(
            not queue_state(fresh(j).native_id).startswith(("PENDING", "RUNNING")) for j in jobs
        ),
        what="Slurm to end every job",
    )
    runner.commands.clear()
    monitor._poll_soon.add("slurm:default")
    monitor.poll(CycleStats())
    assert runner.commands == ["squeue", "sacct"]
    assert {fresh(j).status for j in jobs} == {"Aborted"}
    assert {r["status"] for j in jobs[12:] for r in fresh(j).engine_state["tasks"].values()} == {
        "ABT"
    }


# -- dependencies on other offload jobs ---------------------------------------------------------
@pytest.mark.django_db
def test_a_dependency_chain_runs_in_order(
    user: Any, monitor: Monitor, until: Callable[..., Any], tmp_path: Path
) -> None:
    order = tmp_path / "order.txt"

    def step(name: str, pause: str = "0") -> list[str]:
        return ["-c", f'sleep {pause}; echo {name} >> "$1"', "step", str(order)]

    first = slurm_job(user, executable="sh", arguments=step("A", "1"))
    first.save()  # saved (not executed), so that others can name it
    second = slurm_job(user, executable="sh", arguments=step("B"), dependencies=[first.pk])
    second.save()
    third = slurm_job(
        user,
        executable="sh",
        arguments=step("C"),
        dependencies=[{"type": "afterok", "job": second.pk}],
    )
    # Executed last first: each waits (Submitted) until what it depends on has a Slurm id.
    third.execute()
    second.execute()
    monitor.run_cycle()
    assert fresh(third).native_id == "" and fresh(second).native_id == ""
    first.execute()
    for job in (first, second, third):
        done = run_to(monitor, until, job, "Complete", "Error", "Aborted")
        assert done.status == "Complete", (job.pk, done.status_message)
    assert order.read_text() == "A\nB\nC\n"
    script = script_of(fresh(third))
    assert f"#SBATCH --dependency=afterok:{fresh(second).native_id}\n" in script


@pytest.mark.django_db
def test_afterok_on_a_failed_job_is_an_error_and_afterany_runs(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    failing = slurm_job(user, executable="sh", arguments=["-c", "sleep 1; exit 3"])
    failing.save()
    needs_ok = slurm_job(user, executable="true", dependencies=[failing.pk])
    needs_end = slurm_job(
        user, executable="true", dependencies=[{"type": "afterany", "job": failing.pk}]
    )
    for job in (failing, needs_ok, needs_end):
        job.execute()
    assert run_to(monitor, until, failing, "Complete", "Error").status == "Error"
    doomed = run_to(monitor, until, needs_ok, "Complete", "Error", "Aborted")
    assert doomed.status == "Error"
    assert "never run" in doomed.status_message
    if doomed.native_id:  # submitted while the first still ran: removed from Slurm's queue too
        until(
            lambda: not queue_state(doomed.native_id).startswith("PENDING"),
            what="the doomed job to leave the queue",
        )
    assert run_to(monitor, until, needs_end, "Complete", "Error").status == "Complete"
    # Afterwards, a dependency on a job that already failed is refused at once.
    late = slurm_job(user, executable="true", dependencies=[failing.pk])
    late.execute()
    refused = run_to(monitor, until, late, "Error", "Complete")
    assert f"job {failing.pk} ended Error" in refused.status_message
    assert refused.native_id == ""


@pytest.mark.django_db
def test_dependencies_that_cannot_be_waited_for_are_errors(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    local = JobManager("slurm_app").create_job("local", user, job_type="LOCAL", executable="true")
    local.save()
    cases = [
        ([999_999], "job 999999 does not exist"),
        ([local.pk], f"job {local.pk} runs on another scheduler (local:default)"),
    ]
    for dependencies, message in cases:
        job = slurm_job(user, executable="true", dependencies=dependencies)
        job.execute()
        refused = run_to(monitor, until, job, "Error", "Complete")
        assert message in refused.status_message
        assert refused.native_id == ""
    itself = slurm_job(user, executable="true")
    itself.save()
    itself.dependencies = [itself.pk]
    itself.execute()
    assert "cannot depend on itself" in run_to(monitor, until, itself, "Error").status_message


@pytest.mark.django_db
def test_a_requeued_job_stays_running_and_then_completes(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    # What Slurm does to a preempted (or node-failed) job with requeue: back to PENDING, then
    # it runs again. offload keeps it Running (never backwards) and shows the native state.
    job = slurm_job(user, executable="sh", arguments=["-c", "sleep 3; echo run >> runs.txt"])
    cleanup_jobs.append(job)
    job.execute()
    running = run_to(monitor, until, job, "Running")
    subprocess.run(["scontrol", "requeue", running.native_id], check=True, timeout=10)
    until(
        lambda: fresh(job).native_status.startswith("PENDING"),
        step=lambda: (monitor._poll_soon.add("slurm:default"), monitor.run_cycle()),
        interval=0.1,
        timeout=20,
        what="the requeued job to be seen pending",
    )
    assert fresh(job).status == "Running"
    # Slurm delays a requeued job's start (BeginTime); let it start now, but not within a
    # second of the requeue: slurmd still holds the old run's revoked credential and Slurm 22.05
    # then kills the new start ("Job credential revoked", exit 1).
    time.sleep(2)
    subprocess.run(
        ["scontrol", "update", f"JobId={running.native_id}", "StartTime=now"],
        check=True,
        timeout=10,
    )
    done = run_to(monitor, until, job, "Complete", "Error", "Aborted")
    assert done.status == "Complete", done.status_message
    assert (Path(done.workspace) / "runs.txt").read_text() == "run\n"
