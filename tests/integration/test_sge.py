"""The SGE (Grid Engine) engine through the monitor, on the real one-host Son of Grid Engine cluster
of scripts/start-sge: logs, exit codes, cancel, hold/release and suspend/resume, the wall-time
limit, an array with a failing task, dependencies, shell metacharacters, crash recovery, a qmaster
that is down for a while, and one qstat per poll however many jobs are active.

These tests run in the SQLite phase only: they exercise the engine, not the database.
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
from tests.integration.engine_support import CountingRunner, fresh, run_to, script_of, spec_of

from offload import JobManager, SgeJob
from offload.engines.sge import SgeEngine
from offload.errors import InvalidJobError
from offload.models import IntentAction, Job, JobEvent, JobIntent
from offload.monitor import Monitor
from offload.monitor.loop import CycleStats
from offload.schedulers import build_engine_for

SGE_DIR = engine_support.SERVICES / "sge"
QMASTER_PIDFILE = Path("/var/spool/gridengine/qmaster/qmaster.pid")

pytestmark = [
    pytest.mark.usefixtures("offload_home", "sge_cluster"),
    pytest.mark.skipif(
        dbtools.database_kind() == "postgres",
        reason="Grid Engine tests run once, in the SQLite phase (they test the engine)",
    ),
]


def qstat_answers() -> bool:
    try:
        result = subprocess.run(["qstat"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def start_sge() -> None:
    engine_support.run_start_script("sge")


SGE = engine_support.Service(
    SGE_DIR,
    ready=lambda: bool(
        os.environ.get("OFFLOAD_ENGINE_SGE") and os.environ.get("SGE_ROOT") and qstat_answers()
    ),
    start=start_sge,
    required="Grid Engine",
    missing="no Grid Engine cluster",
)


@pytest.fixture(scope="session")
def sge_cluster() -> None:
    """The project's Grid Engine cluster, started if ``qstat`` does not answer; its exports applied."""
    SGE.ensure()


#: Tests that stop the shared qmaster: they wait until no other session's Grid Engine test runs.
EXCLUSIVE = {"test_a_stopped_qmaster_makes_jobs_stale_not_failed"}


@pytest.fixture(autouse=True)
def sge_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from SGE.test_lock(request, EXCLUSIVE)


def sge_job(user: Any, name: str = "sge {id}", **parameters: Any) -> SgeJob:
    job = JobManager("sge_app").create_job(name, user, job_type="SGE", **parameters)
    assert isinstance(job, SgeJob)
    return job


def queue_state(native_id: str) -> str:
    """The job's state letters in qstat (all tasks, space separated), "" once it left the queue."""
    result = subprocess.run(
        ["qstat", "-g", "d"], capture_output=True, text=True, timeout=10, check=False
    )
    states = [
        line.split()[4]
        for line in result.stdout.splitlines()
        if line.split() and line.split()[0] == native_id
    ]
    return " ".join(states)


monitor = engine_support.monitor_fixture("sge-test-monitor")
#: Jobs whose Grid Engine jobs are deleted at the end, whatever happened.
cleanup_jobs = engine_support.cleanup_fixture("qdel")


# -- running jobs ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_command_runs_and_its_logs_are_read(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = sge_job(user, executable="sh", arguments=["-c", "echo hello from $JOB_ID; echo oops >&2"])
    started = time.monotonic()
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error")
    latency = time.monotonic() - started
    assert done.status == "Complete", done.status_message
    assert done.native_id.isdigit()
    assert done.native_status == "exit 0"
    logs = done.get_logs()
    assert logs["stdout"] == f"hello from {done.native_id}\n"
    assert logs["stderr"] == "oops\n"
    assert f"#$ -ac offload_key=offload-{job.pk}-1\n" in script_of(done)
    assert latency < 20, f"a trivial job took {latency:.1f} s"


@pytest.mark.django_db
def test_a_script_with_resources_fails_with_its_exit_code(
    user: Any, monitor: Monitor, until: Callable[..., Any], tmp_path: Path
) -> None:
    job = sge_job(
        user,
        script="echo about to fail in $PWD\nexit 7\n",
        queue="offload.q",
        memory="2G",
        wall_time="00:05:00",
        working_directory=str(tmp_path),
        extra_directives=["-l h_cpu=600"],
    )
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Error"
    assert done.native_status == "exit 7"
    assert "exited with code 7" in done.status_message
    assert done.get_logs()["stdout"] == f"about to fail in {tmp_path}\n"
    script = script_of(done)
    for directive in ("-q offload.q", "-l h_vmem=2048M", "-l h_rt=0:05:00", "-l h_cpu=600"):
        assert f"#$ {directive}\n" in script


@pytest.mark.django_db
def test_a_name_arguments_and_environment_full_of_metacharacters_run_verbatim(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    nasty = "a;b && c | d $(touch pwned) `touch pwned2` 'q' \"dq\" \\ * ? ~ # $JOB_ID\n#$ -l x=1"
    job = sge_job(
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
    assert [line for line in script_of(done).splitlines() if line.startswith("#$ -l x")] == []


@pytest.mark.django_db
def test_bad_parameters_are_refused_naming_the_field(user: Any) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"queue": "all.q\n#$ -u root"}, "queue"),
        ({"project": "a b"}, "project"),
        ({"wall_time": "soon"}, "wall_time"),
        ({"wall_time": "0"}, "wall_time"),
        ({"memory": "lots"}, "memory"),
        ({"slots": 4}, "parallel_environment"),
        ({"slots": 0, "parallel_environment": "smp"}, "slots"),
        ({"array": "1-"}, "array"),
        ({"array": "5-1"}, "array"),
        ({"environment": {"BAD NAME": "x"}}, "environment"),
        ({"extra_directives": ["-l x=1\n#$ -u root"]}, "extra_directives[0]"),
        ({"extra_directives": ["echo hi"]}, "extra_directives[0]"),
        ({"arguments": "a string"}, "arguments"),
        ({"working_directory": "../elsewhere"}, "working_directory"),
    ]
    for extra, field in cases:
        job = sge_job(user, executable="true", **extra)
        with pytest.raises(InvalidJobError) as info:
            job.execute()
        assert info.value.field == field, (extra, str(info.value))
        assert not JobIntent.objects.filter(job_id=job.pk).exists()


# -- control --------------------------------------------------------------------------------
@pytest.mark.django_db
def test_cancel_a_running_and_a_queued_job(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    running = sge_job(user, executable="sleep", arguments=["120"])
    # -a: not before 2099, so it stays queued.
    queued = sge_job(user, executable="true", extra_directives=["-a 209901010000"])
    cleanup_jobs.extend([running, queued])
    running.execute()
    queued.execute()
    run_to(monitor, until, running, "Running")
    run_to(monitor, until, queued, "Submitted")
    until(lambda: fresh(queued).native_id, step=monitor.run_cycle, what="the job to be queued")
    running.stop()
    queued.stop()
    for job in (running, queued):
        done = run_to(monitor, until, job, "Aborted", "Error", "Complete")
        assert done.status == "Aborted", done.status_message
        assert done.status_message == "cancelled" or "cancelled" in done.status_message


@pytest.mark.django_db
def test_hold_and_release_a_queued_job(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    job = sge_job(user, executable="true", extra_directives=["-a 209901010000"])
    cleanup_jobs.append(job)
    job.execute()
    until(lambda: fresh(job).native_id, step=monitor.run_cycle, what="the job to be queued")
    assert fresh(job).status == "Submitted"
    native_id = fresh(job).native_id
    job.pause()
    run_to(monitor, until, job, "Paused")
    assert "h" in queue_state(native_id)
    monitor._poll_soon.add("sge:default")
    monitor.run_cycle()
    assert fresh(job).status == "Paused"
    assert fresh(job).native_status == "hqw"
    job.resume()
    until(
        lambda: "h" not in queue_state(native_id),
        step=monitor.run_cycle,
        what="the hold to be released",
    )
    subprocess.run(["qalter", "-a", "200001010000", native_id], check=True, timeout=10)
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message


@pytest.mark.django_db
def test_suspend_and_resume_a_running_job(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    job = sge_job(user, executable="sleep", arguments=["4"])
    cleanup_jobs.append(job)
    job.execute()
    running = run_to(monitor, until, job, "Running")
    job.pause()
    run_to(monitor, until, job, "Paused")
    assert "s" in queue_state(running.native_id)

    def poll() -> None:
        monitor._poll_soon.add("sge:default")
        monitor.run_cycle()

    # A job suspended right after it started may still show "st" (suspended, in transfer) for a
    # poll or two before Grid Engine settles on "s".
    until(
        lambda: fresh(job).native_status == "s",
        step=poll,
        timeout=20,
        interval=0.2,
        what=lambda: f"job {job.pk}'s native status to read 's' (is {fresh(job).native_status!r})",
    )
    assert fresh(job).native_status == "s"
    assert fresh(job).status == "Paused"
    job.resume()
    run_to(monitor, until, job, "Running", "Complete")
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message


@pytest.mark.django_db
def test_wall_time_exceeded_is_an_error(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    job = sge_job(user, executable="sleep", arguments=["300"], wall_time="00:03")
    cleanup_jobs.append(job)
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error", "Aborted", timeout=90)
    assert done.status == "Error"
    assert done.native_status.startswith("failed 37")
    assert "wall time exceeded" in done.status_message


# -- arrays ------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_an_array_with_a_failing_task_is_various_then_various_complete(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    job = sge_job(
        user,
        script='echo "task $SGE_TASK_ID"\n[ "$SGE_TASK_ID" = 2 ] && exit 4\nsleep 3\n',
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
    assert "#$ -t 1-4:1\n" in script_of(done) and "#$ -tc 2\n" in script_of(done)
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

    first = sge_job(user, executable="sh", arguments=step("A", "2"))
    first.save()
    second = sge_job(user, executable="sh", arguments=step("B"), dependencies=[first.pk])
    second.save()
    third = sge_job(
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
    assert f"#$ -hold_jid {fresh(second).native_id}\n" in script_of(fresh(third))


@pytest.mark.django_db
def test_afterok_on_a_failed_job_is_an_error_and_afterany_runs(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    failing = sge_job(user, executable="sh", arguments=["-c", "sleep 2; exit 3"])
    failing.save()
    needs_ok = sge_job(user, executable="touch", arguments=["ran"], dependencies=[failing.pk])
    needs_end = sge_job(
        user, executable="true", dependencies=[{"type": "afterany", "job": failing.pk}]
    )
    for job in (failing, needs_ok, needs_end):
        job.execute()
    assert run_to(monitor, until, failing, "Complete", "Error").status == "Error"
    doomed = run_to(monitor, until, needs_ok, "Complete", "Error", "Aborted", timeout=60)
    assert doomed.status == "Error"
    assert "never run" in doomed.status_message
    if doomed.native_id:  # waited in Grid Engine: its script refused to run the command
        assert f"job {fresh(failing).native_id}" in doomed.status_message
        assert not (Path(doomed.workspace) / "ran").exists()
    assert run_to(monitor, until, needs_end, "Complete", "Error").status == "Complete"


# -- failures of the monitor and of Grid Engine -----------------------------------------------
@pytest.mark.django_db
def test_a_monitor_that_crashed_after_qsub_adopts_the_submission(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = sge_job(user, executable="sh", arguments=["-c", "echo started >> starts.txt"])
    job.execute()
    loaded = fresh(job)
    engine = build_engine_for("sge", None)
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


def qmaster_pid() -> int:
    return int(QMASTER_PIDFILE.read_text().strip())


@pytest.mark.django_db
def test_a_stopped_qmaster_makes_jobs_stale_not_failed(
    user: Any,
    monitor: Monitor,
    until: Callable[..., Any],
    cleanup_jobs: list[Job],
    offload_settings: Callable[..., None],
) -> None:
    if not QMASTER_PIDFILE.exists():
        pytest.skip("no qmaster pid file; not stopping a qmaster this suite did not start")
    offload_settings(RETRY_INITIAL=0.05, RETRY_MAX=0.2)
    monitor = Monitor("sge-stale-monitor")
    jobs = [sge_job(user, executable="sleep", arguments=["8"]) for _ in range(2)]
    cleanup_jobs.extend(jobs)
    for job in jobs:
        job.execute()
    for job in jobs:
        run_to(monitor, until, job, "Running")
    pid = qmaster_pid()
    os.kill(pid, 15)
    until(lambda: not Path(f"/proc/{pid}").exists(), what="sge_qmaster to stop")
    try:
        until(
            lambda: all(fresh(j).is_stale for j in jobs),
            step=monitor.run_cycle,
            interval=0.2,
            timeout=90,
            what="the jobs to go stale",
        )
        assert {fresh(j).status for j in jobs} == {"Running"}
        late = sge_job(user, executable="true")
        cleanup_jobs.append(late)
        late.execute()
        monitor.run_cycle()
        assert fresh(late).status == "Submitted" and fresh(late).native_id == ""
        assert {fresh(j).status for j in jobs} == {"Running"}
    finally:
        start_sge()
    jobs.append(late)
    for job in jobs:
        done = run_to(monitor, until, job, "Complete", "Error", "Aborted", timeout=90)
        assert done.status == "Complete", done.status_message
        assert not done.is_stale
    monitor.shutdown()


@pytest.mark.django_db
def test_one_qstat_per_poll_however_many_jobs(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    runner = CountingRunner()
    monitor.engines["sge:default"] = SgeEngine(build_engine_for("sge", None).options, runner=runner)
    jobs = [sge_job(user, executable="sleep", arguments=["60"]) for _ in range(8)]
    cleanup_jobs.extend(jobs)
    for job in jobs:
        job.execute()
    until(
        lambda: all(fresh(j).native_id for j in jobs),
        step=monitor.run_cycle,
        what="every job to be submitted",
    )
    assert runner.commands.count("qsub") == 8
    runner.commands.clear()
    monitor._poll_soon.add("sge:default")
    stats = CycleStats()
    monitor.poll(stats)
    assert stats.polled_jobs == 8
    assert runner.commands == ["qstat"]  # queued or running: no accounting call
    for job in jobs:
        job.stop()
    until(
        lambda: all(queue_state(fresh(j).native_id) == "" for j in jobs),
        step=monitor.run_cycle,
        what="Grid Engine to delete every job",
    )
    until(
        lambda: {fresh(j).status for j in jobs} == {"Aborted"},
        step=monitor.run_cycle,
        what="every job to be Aborted",
    )
    runner.commands.clear()
    monitor._poll_soon.add("sge:default")
    monitor.poll(CycleStats())
    assert runner.commands == []  # nothing active is left to ask about
