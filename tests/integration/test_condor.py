"""The CONDOR engine through the monitor, on the real personal pool of scripts/start-htcondor: logs,
exit codes, hold/release, remove, num_jobs procs through Various, crash recovery, a schedd that is
off for a while, and one condor_q per poll however many jobs are active.

These tests run in the SQLite phase only: they exercise the engine, not the database.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests import dbtools
from tests.integration import engine_support
from tests.integration.engine_support import CountingRunner, fresh, spec_of

from offload import JobManager
from offload.engines.base import JobSpec, attempt_subpath
from offload.engines.condor import CondorEngine
from offload.errors import InvalidJobError
from offload.models import CondorJob, IntentAction, Job, JobIntent
from offload.monitor import Monitor
from offload.monitor.loop import CycleStats
from offload.schedulers import build_engine_for

CONDOR_DIR = engine_support.SERVICES / "htcondor"

pytestmark = [
    pytest.mark.usefixtures("offload_home", "condor_pool"),
    pytest.mark.skipif(
        dbtools.database_kind() == "postgres",
        reason="HTCondor tests run once, in the SQLite phase (they test the engine, not the database)",
    ),
]


def condor(*argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=check)


def pool_answers() -> bool:
    try:
        return condor("condor_q", "-json", "-constraint", "false").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_htcondor() -> None:
    engine_support.run_start_script("htcondor", timeout=600, expand=True)


def start_pool() -> None:
    start_htcondor()
    if not pool_answers():
        engine_support.engine_absent(
            "HTCondor is required here (CI) but condor_q does not answer",
            "the HTCondor pool does not answer",
        )


CONDOR = engine_support.Service(
    CONDOR_DIR,
    ready=lambda: bool(os.environ.get("OFFLOAD_ENGINE_CONDOR") and pool_answers()),
    start=start_pool,
    required="HTCondor",
    missing="no HTCondor pool",
)


@pytest.fixture(scope="session")
def condor_pool() -> None:
    """The project's HTCondor pool, started if condor_q does not answer; its exports applied."""
    CONDOR.ensure()


#: Tests that switch the shared schedd off: they wait until no other session's test runs.
EXCLUSIVE = {"test_a_schedd_that_is_off_makes_jobs_stale_not_failed"}


@pytest.fixture(autouse=True)
def condor_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from CONDOR.test_lock(request, EXCLUSIVE)


def condor_job(user: Any, name: str = "condor {id}", **parameters: Any) -> CondorJob:
    job = JobManager("condor_app").create_job(name, user, job_type="CONDOR", **parameters)
    assert isinstance(job, CondorJob)
    return job


def run_to(
    monitor: Monitor, until: Callable[..., Any], job: Job, *statuses: str, timeout: float = 60
) -> Job:
    return engine_support.run_to(monitor, until, job, *statuses, timeout=timeout)


def remote_folder(job: Job) -> Path:
    """Where the pool ran the job: its workspace below the engine's remote_workspace_root."""
    engine = build_engine_for("condor", None)
    assert isinstance(engine, CondorEngine)
    return Path(engine.remote_workspace(fresh(job).workspace))


def queue_ads(cluster: str) -> list[dict[str, Any]]:
    out = condor("condor_q", "-json", cluster, "-attributes", "JobStatus,HoldReason").stdout
    return list(json.loads(out)) if out.strip() else []


monitor = engine_support.monitor_fixture("condor-test-monitor")
#: Jobs whose clusters are removed at the end, whatever happened.
cleanup_jobs = engine_support.cleanup_fixture("condor_rm", timeout=30)


# -- running jobs ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_job_runs_and_its_logs_are_read(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = condor_job(
        user,
        executable="/bin/sh",
        arguments=["-c", 'echo "hello from $OFFLOAD_JOB_ID"; echo oops >&2; echo made > out.txt'],
    )
    started = time.monotonic()
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error")
    latency = time.monotonic() - started
    assert done.status == "Complete", done.status_message
    assert done.native_id.isdigit()
    assert done.native_status == "Completed"
    logs = done.get_logs()
    assert logs["stdout"] == f"hello from {job.pk}\n"
    assert logs["stderr"] == "oops\n"
    assert "Job terminated" in logs["condor_log"]
    folder = remote_folder(job)
    submit = (folder / attempt_subpath(job.pk, 1) / "job.sub").read_text()
    assert f'+OffloadKey = "offload-{job.pk}-1"' in submit
    assert (folder / "out.txt").read_text() == "made\n"
    assert latency < 30, f"a trivial job took {latency:.1f} s"


@pytest.mark.django_db
def test_a_non_zero_exit_is_an_error_with_the_code(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = condor_job(
        user,
        executable="/bin/sh",
        arguments=["-c", "echo about to fail; exit 7"],
        condorpy_template_name="vanilla_nfs",
    )
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Error"
    assert done.native_status == "Completed"
    assert "exited with code 7" in done.status_message
    assert done.get_logs()["stdout"] == "about to fail\n"


@pytest.mark.django_db
def test_arguments_name_and_environment_full_of_metacharacters_run_verbatim(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    nasty = "a;b && c | d $(touch pwned) `touch pwned2` 'q' \"dq\" \\ * ? ~ # $(Process) %"
    job = condor_job(
        user,
        name=nasty + "\nqueue 5",
        executable="/usr/bin/python3",
        arguments=[
            "-c",
            "import os, sys; print(repr(sys.argv[1:])); print(repr(os.environ['NASTY']))",
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
    assert out == [repr([nasty, "", "$HOME"]), repr(nasty)]
    folder = remote_folder(job)
    assert not (folder / "pwned").exists() and not (folder / "pwned2").exists()
    submit = (folder / attempt_subpath(job.pk, 1) / "job.sub").read_text()
    assert [line for line in submit.splitlines() if line.startswith("queue")] == ["queue 1"]


@pytest.mark.django_db
def test_bad_parameters_are_refused_naming_the_field(user: Any) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"attributes": {"request_memory": "1\nqueue 10"}}, "attributes.request_memory"),
        ({"attributes": {"requirements": "true \\"}}, "attributes.requirements"),
        ({"attributes": {"queue": "5"}}, "attributes.queue"),
        ({"attributes": {"log": "/tmp/x"}}, "attributes.log"),
        ({"attributes": {"+OffloadKey": '"x"'}}, "attributes.+OffloadKey"),
        ({"attributes": {"environment": "X=$ENV(SECRET)"}}, "attributes.environment"),
        ({"attributes": {"bad name": "x"}}, "attributes"),
        ({"condorpy_template_name": "nope"}, "condorpy_template_name"),
        ({"num_jobs": 0}, "num_jobs"),
        ({"num_jobs": "three"}, "num_jobs"),
        ({"remote_input_files": ["../../etc/passwd"]}, "remote_input_files[0]"),
        ({"remote_input_files": ["a,b"]}, "remote_input_files[0]"),
        ({"arguments": "a string"}, "arguments"),
        ({"environment": {"BAD NAME": "x"}}, "environment"),
    ]
    for extra, field in cases:
        job = condor_job(user, executable="/bin/true", **extra)
        with pytest.raises(InvalidJobError) as info:
            job.execute()
        assert info.value.field == field, (extra, str(info.value))
        assert not JobIntent.objects.filter(job_id=job.pk).exists()


@pytest.mark.django_db
def test_set_attribute_and_a_template_shape_the_submission(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = condor_job(user, condorpy_template_name="vanilla_transfer_files")
    job.set_attribute("executable", "/bin/echo")
    job.set_attribute("arguments", '"one two"')
    job.set_attribute("request_memory", 64)
    assert job.get_attribute("request_memory") == 64
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message
    assert done.get_logs()["stdout"] == "one two\n"
    submit = (remote_folder(job) / attempt_subpath(job.pk, 1) / "job.sub").read_text()
    assert "should_transfer_files = YES\n" in submit
    assert "request_memory = 64\n" in submit


# -- control --------------------------------------------------------------------------------
@pytest.mark.django_db
def test_remove_a_running_job(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    job = condor_job(user, executable="/bin/sleep", arguments=["120"])
    cleanup_jobs.append(job)
    job.execute()
    run_to(monitor, until, job, "Running")
    job.stop()
    done = run_to(monitor, until, job, "Aborted", "Error", "Complete")
    assert done.status == "Aborted"
    assert done.native_status == "Removed"


@pytest.mark.django_db
def test_hold_and_release(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    job = condor_job(user, executable="/bin/sh", arguments=["-c", "sleep 3; echo done"])
    cleanup_jobs.append(job)
    job.execute()
    run_to(monitor, until, job, "Submitted", "Running")
    until(lambda: fresh(job).native_id, step=monitor.run_cycle, what="the job to be queued")
    job.pause()
    paused = run_to(monitor, until, job, "Paused")
    [ad] = queue_ads(paused.native_id)
    assert ad["JobStatus"] == 5 and ad["HoldReason"].startswith("offload: paused")
    monitor._poll_soon.add("condor:default")
    monitor.run_cycle()
    assert fresh(job).status == "Paused"
    job.resume()
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message
    assert done.get_logs()["stdout"] == "done\n"


@pytest.mark.django_db
def test_a_hold_by_htcondor_is_an_error_with_its_reason(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    # An input file that does not exist: HTCondor holds the job when it tries to send it.
    job = condor_job(
        user,
        executable="/bin/true",
        condorpy_template_name="vanilla_transfer_files",
        remote_input_files=["/nonexistent/input.txt"],
    )
    cleanup_jobs.append(job)
    job.execute()
    done = run_to(monitor, until, job, "Error", "Complete")
    assert done.status == "Error"
    assert done.native_status.startswith("Held")
    assert "held:" in done.status_message and "input.txt" in done.status_message


@pytest.mark.django_db
def test_num_jobs_procs_go_through_various(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    # Proc n sleeps a little, then exits with code n: they disagree while running, and end unalike.
    job = condor_job(
        user,
        executable="/bin/sh",
        attributes={"arguments": "\"-c 'echo proc $(Process); sleep 2; exit $(Process)'\""},
        num_jobs=3,
    )
    cleanup_jobs.append(job)
    job.execute()
    seen: set[str] = set()

    def ended() -> bool:
        status = fresh(job).status
        seen.add(status)
        return status in ("Various-Complete", "Complete", "Error")

    until(ended, step=monitor.run_cycle, timeout=90, interval=0.2, what="the procs to end")
    done = fresh(job)
    assert "Various" in seen or "Running" in seen
    assert done.status in ("Various-Complete", "Complete"), done.status_message
    tasks = done.engine_state["tasks"]
    assert {p: t["exit_code"] for p, t in tasks.items()} == {"0": 0, "1": 1, "2": 2}
    assert {p: t["status"] for p, t in tasks.items()} == {"0": "COM", "1": "ERR", "2": "ERR"}
    logs = done.get_logs()
    assert [logs[f"stdout.{n}"] for n in range(3)] == ["proc 0\n", "proc 1\n", "proc 2\n"]


# -- failures of the monitor and of HTCondor -----------------------------------------------------
@pytest.mark.django_db
def test_a_monitor_that_crashed_after_condor_submit_adopts_the_cluster(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = condor_job(user, executable="/bin/sh", arguments=["-c", "echo started >> starts.txt"])
    job.execute()
    loaded = fresh(job)
    # A monitor submitted the attempt, then died before writing anything down.
    engine = build_engine_for("condor", None)
    spec = spec_of(loaded)
    [result] = engine.submit_batch([spec])
    assert result.native_id and not result.adopted
    assert fresh(job).native_id == ""
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message
    assert done.native_id == result.native_id
    intent = JobIntent.objects.get(job_id=job.pk, action=IntentAction.EXECUTE)
    assert intent.outcome == "adopted"
    assert (remote_folder(job) / "starts.txt").read_text() == "started\n"
    # Exactly one cluster, in the queue or the history, carries this attempt's tag and file (job
    # ids repeat from one test database to the next; submit files are unique to one attempt).
    submit = remote_folder(job) / attempt_subpath(job.pk, 1) / "job.sub"
    key = f'OffloadKey == "offload-{job.pk}-1" && OffloadSubmission == "{submit}"'
    clusters = set()
    for command in ("condor_q", "condor_history"):
        out = condor(command, "-json", "-constraint", key, "-attributes", "ClusterId").stdout
        clusters |= {ad["ClusterId"] for ad in (json.loads(out) if out.strip() else [])}
    assert clusters == {int(result.native_id)}


@pytest.mark.django_db
def test_a_schedd_that_is_off_makes_jobs_stale_not_failed(
    user: Any,
    monitor: Monitor,
    until: Callable[..., Any],
    cleanup_jobs: list[Job],
    offload_settings: Callable[..., None],
) -> None:
    offload_settings(RETRY_INITIAL=0.05, RETRY_MAX=0.2)
    jobs = [condor_job(user, executable="/bin/sleep", arguments=["4"]) for _ in range(2)]
    cleanup_jobs.extend(jobs)
    for job in jobs:
        job.execute()
    for job in jobs:
        run_to(monitor, until, job, "Running")
    # Only the schedd goes (the collector, negotiator and startd stay): other tests' pool survives.
    condor("condor_off", "-schedd", check=True)
    try:
        until(lambda: not pool_answers(), timeout=30, what="the schedd to stop")
        until(
            lambda: all(fresh(j).is_stale for j in jobs),
            step=monitor.run_cycle,
            interval=0.2,
            timeout=60,
            what="the jobs to go stale",
        )
        assert {fresh(j).status for j in jobs} == {"Running"}
        late = condor_job(user, executable="/bin/true")
        cleanup_jobs.append(late)
        late.execute()
        monitor.run_cycle()
        assert fresh(late).status == "Submitted" and fresh(late).native_id == ""
        monitor.run_cycle()
        assert {fresh(j).status for j in jobs} == {"Running"}
    finally:
        condor("condor_on", "-schedd")
        until(pool_answers, timeout=60, what="the schedd to answer again")
    jobs.append(late)
    for job in jobs:
        done = run_to(monitor, until, job, "Complete", "Error", "Aborted", timeout=90)
        assert done.status == "Complete", done.status_message
        assert not done.is_stale


@pytest.mark.django_db
def test_one_condor_q_per_poll_however_many_jobs(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    runner = CountingRunner()
    monitor.engines["condor:default"] = CondorEngine(
        build_engine_for("condor", None).options, runner=runner
    )
    jobs = [condor_job(user, executable="/bin/sleep", arguments=["60"]) for _ in range(8)]
    cleanup_jobs.extend(jobs)
    for job in jobs:
        job.execute()
    until(
        lambda: all(fresh(j).native_id for j in jobs),
        step=monitor.run_cycle,
        what="every job to be submitted",
    )
    assert runner.commands.count("condor_submit") == 1  # the 8 alike jobs in one batch
    runner.commands.clear()
    monitor._poll_soon.add("condor:default")
    stats = CycleStats()
    monitor.poll(stats)
    assert stats.polled_jobs == 8
    assert runner.commands == ["condor_q"]  # all queued or running: no history call
    for job in jobs:
        condor("condor_rm", fresh(job).native_id, check=True)
    until(
        lambda: all(not queue_ads(fresh(j).native_id) for j in jobs),
        timeout=30,
        what="HTCondor to remove every job",
    )
    runner.commands.clear()
    monitor._poll_soon.add("condor:default")
    monitor.poll(CycleStats())
    assert runner.commands == ["condor_q", "condor_history"]
    assert {fresh(j).status for j in jobs} == {"Aborted"}


@pytest.mark.django_db
def test_resubmit_makes_a_new_cluster_and_attempt(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = condor_job(user, executable="/bin/sh", arguments=["-c", "echo run $OFFLOAD_ATTEMPT"])
    job.execute()
    first = run_to(monitor, until, job, "Complete", "Error")
    assert first.status == "Complete", first.status_message
    fresh(job).resubmit()
    until(
        lambda: fresh(job).attempt == 2 and fresh(job).native_id not in ("", first.native_id),
        step=monitor.run_cycle,
        timeout=60,
        what="the second attempt to be submitted",
    )
    second = run_to(monitor, until, job, "Complete", "Error")
    assert second.status == "Complete", second.status_message
    assert int(second.native_id) > int(first.native_id)
    assert second.get_logs()["stdout"] == "run 2\n"
    submit = (remote_folder(job) / attempt_subpath(job.pk, 2) / "job.sub").read_text()
    assert f'+OffloadKey = "offload-{job.pk}-2"' in submit


@pytest.mark.django_db
def test_delete_removes_the_cluster_from_the_queue(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    job = condor_job(user, executable="/bin/sleep", arguments=["120"])
    cleanup_jobs.append(job)
    job.execute()
    running = run_to(monitor, until, job, "Running")
    folder = remote_folder(job) / ".offload" / f"job-{job.pk}"
    assert folder.is_dir()
    fresh(job).delete()
    until(
        lambda: not queue_ads(running.native_id) and not folder.exists(),
        step=monitor.run_cycle,
        timeout=60,
        what="the cluster to leave the queue and offload's files to go",
    )


# -- batched submission ----------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_batch_of_jobs_is_one_condor_submit_and_each_runs_as_its_own_cluster(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    runner = CountingRunner()
    monitor.engines["condor:default"] = CondorEngine(
        build_engine_for("condor", None).options, runner=runner
    )
    jobs = [
        condor_job(
            user,
            executable="/bin/sh",
            arguments=["-c", f'echo "job {n} is $OFFLOAD_JOB_ID"; echo {n} > own.txt'],
            num_jobs=2 if n == 3 else 1,
        )
        for n in range(5)
    ]
    cleanup_jobs.extend(jobs)
    for job in jobs:
        job.execute()
    monitor.run_cycle()
    assert runner.commands.count("condor_submit") == 1
    clusters = [fresh(j).native_id for j in jobs]
    assert all(c.isdigit() for c in clusters) and len(set(clusters)) == 5
    for n, job in enumerate(jobs):
        done = run_to(monitor, until, job, "Complete", "Error", timeout=90)
        assert done.status == "Complete", done.status_message
        logs = done.get_logs()
        stdout = [logs["stdout.0"], logs["stdout.1"]] if n == 3 else [logs["stdout"]]
        assert stdout == [f"job {n} is {job.pk}\n"] * len(stdout)
        assert (remote_folder(job) / "own.txt").read_text() == f"{n}\n"
        submit = (remote_folder(job) / attempt_subpath(job.pk, 1) / "job.sub").read_text()
        assert f'+OffloadKey = "offload-{job.pk}-1"' in submit
        ads = json.loads(
            condor(
                "condor_history", "-json", clusters[n], "-attributes", "OffloadKey,ProcId"
            ).stdout
        )
        assert {ad["OffloadKey"] for ad in ads} == {f"offload-{job.pk}-1"}
        assert sorted(ad["ProcId"] for ad in ads) == ([0, 1] if n == 3 else [0])


@pytest.mark.django_db
def test_one_job_htcondor_refuses_does_not_fail_the_rest_of_its_batch(
    user: Any, monitor: Monitor, until: Callable[..., Any], cleanup_jobs: list[Job]
) -> None:
    runner = CountingRunner()
    monitor.engines["condor:default"] = CondorEngine(
        build_engine_for("condor", None).options, runner=runner
    )
    programs = ["/bin/echo", "/bin/echo", "/nonexistent/program", "/bin/echo"]
    jobs = [condor_job(user, executable=p, arguments=["ok"]) for p in programs]
    cleanup_jobs.extend(jobs)
    for job in jobs:
        job.execute()
    monitor.run_cycle()
    # The batch's file, refused, then each job alone.
    assert runner.commands.count("condor_submit") == 1 + len(jobs)
    bad = fresh(jobs[2])
    assert bad.status == "Error" and bad.native_id == ""
    assert "/nonexistent/program" in bad.status_message
    for job in jobs[:2] + jobs[3:]:
        done = run_to(monitor, until, job, "Complete", "Error", timeout=90)
        assert done.status == "Complete", done.status_message
        assert done.get_logs()["stdout"] == "ok\n"


@pytest.mark.django_db
def test_a_monitor_that_crashed_after_a_batched_submit_adopts_every_cluster(user: Any) -> None:
    engine = build_engine_for("condor", None)
    jobs = [condor_job(user, executable="/bin/sleep", arguments=["30"]) for _ in range(3)]
    for job in jobs:
        job.execute()  # no monitor runs here: this test submits as a monitor would
    specs = [
        JobSpec(j.pk, j.attempt, j.job_type, j.name, j.workspace, dict(j.parameters))
        for j in map(fresh, jobs)
    ]
    first = engine.submit_batch(specs)
    try:
        assert [r.outcome for r in first] == ["submitted"] * 3
        assert not any(r.adopted for r in first)
        again = engine.submit_batch(specs)  # a new monitor, nothing written down
        assert [(r.native_id, r.adopted) for r in again] == [(r.native_id, True) for r in first]
    finally:
        for result in first:
            if result.native_id:
                condor("condor_rm", result.native_id)
