"""The LOCAL engine through the monitor, with real processes: logs, exit codes, arguments and
environment, cancel, pause/resume, the slot limit, and monitor restarts and crashes."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from offload import JobManager, LocalJob
from offload.engines.base import JobSpec, attempt_dir
from offload.engines.local_runner import proc_state
from offload.models import IntentAction, Job, JobIntent
from offload.monitor import Monitor
from offload.schedulers import build_engine_for

pytestmark = pytest.mark.usefixtures("offload_home")

PY = sys.executable
#: A job that runs until a file named "release" appears in its workspace.
WAIT_FOR_RELEASE = (
    "import os, time\n"
    "while not os.path.exists('release'):\n"
    "    time.sleep(0.02)\n"
    "print('released')\n"
)


def fresh(job: Job) -> Job:
    return Job.objects.get(pk=job.pk)


def status_of(job: Job) -> str:
    return fresh(job).status


def local_job(user: Any, *arguments: str, name: str = "local {id}", **kwargs: Any) -> LocalJob:
    job = JobManager("local_app").create_job(
        name,
        user,
        job_type="LOCAL",
        executable=kwargs.pop("executable", PY),
        arguments=list(arguments),
        **kwargs,
    )
    assert isinstance(job, LocalJob)
    return job


def release(job: Job) -> None:
    (Path(fresh(job).workspace) / "release").write_text("go")


def run_to(monitor: Monitor, until: Callable[..., Any], job: Job, *statuses: str) -> Job:
    until(
        lambda: status_of(job) in statuses,
        step=monitor.run_cycle,
        what=lambda: f"job {job.pk} to become {' or '.join(statuses)} (is {status_of(job)})",
    )
    return fresh(job)


def alive(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z", "X")


@pytest.fixture
def monitor() -> Any:
    m = Monitor("local-test-monitor")
    yield m
    m.shutdown()


# -- running ----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_success_with_logs(user: Any, monitor: Monitor, until: Callable[..., Any]) -> None:
    job = local_job(
        user, "-c", "import sys; print('to stdout'); print('to stderr ü', file=sys.stderr)"
    )
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message
    assert done.start_time is not None and done.completion_time is not None
    assert done.start_time <= done.completion_time
    assert done.native_id and int(done.native_id) > 0
    logs = done.get_logs()
    assert logs["stdout"] == "to stdout\n"
    assert logs["stderr"] == "to stderr ü\n"
    transitions = [(e.from_status, e.to_status, e.source) for e in done.events]
    assert transitions == [
        ("", "PEN", "app"),
        ("PEN", "SUB", "app"),
        ("SUB", "RUN", "monitor"),
        ("RUN", "COM", "poll"),
    ]
    # The job ran in its own workspace.
    folder = attempt_dir(done.workspace, done.pk, 1)
    assert (folder / "stdout.log").is_file()
    assert json.loads((folder / "exit.json").read_text())["returncode"] == 0


@pytest.mark.django_db
def test_nonzero_exit_is_error_with_the_code(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = local_job(user, "-c", "import sys; print('bad input', file=sys.stderr); sys.exit(3)")
    job.execute()
    done = run_to(monitor, until, job, "Error", "Complete")
    assert done.status == "Error"
    assert "exited with code 3" in done.status_message
    assert done.completion_time is not None
    assert done.get_logs()["stderr"] == "bad input\n"


@pytest.mark.django_db
def test_jobs_sharing_a_workspace_keep_their_own_runs_logs_and_files(
    user: Any, monitor: Monitor, until: Callable[..., Any], tmp_path: Path
) -> None:
    """An app may give several jobs one workspace (as Tethys apps do): each job's attempt has its
    own folder, so neither adopts the other's run, reads its logs or deletes its files."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "input.txt").write_text("kept")
    ok = local_job(user, "-c", "print('A')", workspace=str(shared))
    bad = local_job(user, "-c", "import sys; print('B'); sys.exit(3)", workspace=str(shared))
    ok.execute()
    bad.execute()
    done_ok = run_to(monitor, until, ok, "Complete", "Error")
    done_bad = run_to(monitor, until, bad, "Complete", "Error")
    assert done_ok.status == "Complete", done_ok.status_message
    assert done_bad.status == "Error" and "exited with code 3" in done_bad.status_message
    assert done_ok.get_logs()["stdout"] == "A\n"
    assert done_bad.get_logs()["stdout"] == "B\n"
    assert sorted(p.name for p in (shared / ".offload").iterdir()) == sorted(
        [f"job-{ok.pk}", f"job-{bad.pk}"]
    )
    # Deleting one job removes its own folder only: the other job's logs and the app's files stay.
    fresh(bad).delete()
    until(
        lambda: not Job.objects.filter(pk=bad.pk).exists(),
        step=monitor.run_cycle,
        what="the deleted job's row to go",
    )
    assert not (shared / ".offload" / f"job-{bad.pk}").exists()
    assert fresh(ok).get_logs()["stdout"] == "A\n"
    assert (shared / "input.txt").read_text() == "kept"
    fresh(ok).delete()
    until(
        lambda: not Job.objects.filter(pk=ok.pk).exists(),
        step=monitor.run_cycle,
        what="the other job's row to go",
    )
    assert sorted(p.name for p in shared.iterdir()) == ["input.txt"]


@pytest.mark.django_db
def test_arguments_are_passed_verbatim(
    user: Any, monitor: Monitor, until: Callable[..., Any], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    weird = [
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"; touch {marker}",
        f"&& touch {marker} ||",
        f"| touch {marker}",
        "'single' \"double\" \\back",
        "line one\nline two",
        "ünïcödé ☃ 日本",
        "*",
        "$HOME",
        "",
        " leading and trailing ",
        "--flag=value with spaces",
        "-c",
    ]
    job = local_job(
        user,
        "-c",
        "import json, sys; json.dump(sys.argv[1:], sys.stdout)",
        *weird,
    )
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message
    assert json.loads(done.get_logs()["stdout"]) == weird
    assert not marker.exists()


@pytest.mark.django_db
def test_environment_per_job_without_the_monitors_secrets(
    user: Any, monitor: Monitor, until: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFLOAD_DATABASE_URL", "postgresql://offload:hunter2@db.example/offload")
    monkeypatch.setenv("OFFLOAD_SECRET_KEY", "monitor-secret-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    dump = "import json, os; json.dump(dict(os.environ), open('env.json', 'w'))"
    first = local_job(user, "-c", dump, environment={"MODEL_N": 3, "GREETING": "hi there; $(x)"})
    second = local_job(user, "-c", dump, environment={"MODEL_N": "7"})
    first.execute()
    second.execute()
    for job in (first, second):
        assert run_to(monitor, until, job, "Complete", "Error").status == "Complete"
    env1 = json.loads((Path(fresh(first).workspace) / "env.json").read_text())
    env2 = json.loads((Path(fresh(second).workspace) / "env.json").read_text())
    assert env1["MODEL_N"] == "3"
    assert env1["GREETING"] == "hi there; $(x)"
    assert env2["MODEL_N"] == "7"
    assert "GREETING" not in env2
    for env, job in ((env1, first), (env2, second)):
        assert env["OFFLOAD_JOB_ID"] == str(job.pk)
        assert env["OFFLOAD_WORKSPACE"] == fresh(job).workspace
        assert env["OFFLOAD_ATTEMPT"] == "1"
        assert "PATH" in env
        for secret in (
            "OFFLOAD_DATABASE_URL",
            "OFFLOAD_SECRET_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "DJANGO_SETTINGS_MODULE",
        ):
            assert secret not in env
        assert "hunter2" not in json.dumps(env)


@pytest.mark.django_db
def test_executable_not_found_is_error_naming_it(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = local_job(user, "--help", executable="no-such-program-offload-xyz")
    job.execute()
    done = run_to(monitor, until, job, "Error", "Complete")
    assert done.status == "Error"
    assert "no-such-program-offload-xyz" in done.status_message
    assert "executable" in done.status_message
    by_path = local_job(user, executable="./missing.sh")
    by_path.execute()
    assert "missing.sh" in run_to(monitor, until, by_path, "Error").status_message


@pytest.mark.django_db
def test_executable_relative_to_the_workspace(
    user: Any, monitor: Monitor, until: Callable[..., Any], tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    script = workspace / "run.sh"
    script.write_text('#!/bin/sh\necho "script got $1"\n')
    script.chmod(0o755)
    job = local_job(user, "one arg", executable="./run.sh", workspace=str(workspace))
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message
    assert done.get_logs()["stdout"] == "script got one arg\n"


# -- control ----------------------------------------------------------------------------------
CHILD_IGNORING_TERM = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', "
    "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    'open("child.ready", "w").close(); time.sleep(300)\'])\n'
    "open('child.pid', 'w').write(str(child.pid))\n"
    "time.sleep(300)\n"
)


@pytest.mark.django_db
def test_cancel_kills_the_whole_process_group(
    user: Any,
    until: Callable[..., Any],
    offload_settings: Callable[..., None],
) -> None:
    offload_settings(ENGINES={"local": {"kill_grace": 0.5}})
    monitor = Monitor("cancel-monitor")
    job = local_job(user, "-c", CHILD_IGNORING_TERM)
    job.execute()
    running = run_to(monitor, until, job, "Running")
    child_pid_file = Path(running.workspace) / "child.pid"
    until(
        lambda: (
            (Path(running.workspace) / "child.ready").exists()
            and child_pid_file.read_text().strip()
        ),
        what="the job's child to start and ignore SIGTERM",
    )
    child_pid = int(child_pid_file.read_text())
    leader_pid = int(running.native_id)
    assert alive(child_pid) and alive(leader_pid)
    assert os.getpgid(child_pid) == os.getpgid(leader_pid) == leader_pid

    running.stop()
    assert JobIntent.objects.filter(job_id=job.pk, action=IntentAction.STOP).exists()
    done = run_to(monitor, until, job, "Aborted", "Error", "Complete")
    assert done.status == "Aborted"
    assert done.completion_time is not None
    until(lambda: not alive(leader_pid), timeout=10, what="the job to die")
    until(
        lambda: not alive(child_pid), timeout=10, what="the job's child (ignoring SIGTERM) to die"
    )
    monitor.shutdown()


TRAPS_TERM = (
    "import signal, sys, time\n"
    "def bye(*_):\n"
    "    print('cleaning up', flush=True)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "open('ready', 'w').close()\n"
    "time.sleep(300)\n"
)


@pytest.mark.django_db
def test_cancel_sends_sigterm_first(user: Any, monitor: Monitor, until: Callable[..., Any]) -> None:
    # The default grace period (10 s) is not waited for: the job ends on SIGTERM and cleans up.
    job = local_job(user, "-c", TRAPS_TERM)
    job.execute()
    running = run_to(monitor, until, job, "Running")
    until((Path(running.workspace) / "ready").exists, what="the job to trap SIGTERM")
    started = time.monotonic()
    running.stop()
    done = run_to(monitor, until, job, "Aborted", "Error", "Complete")
    assert done.status == "Aborted"
    assert time.monotonic() - started < 5
    assert done.get_logs()["stdout"] == "cleaning up\n"


@pytest.mark.django_db
def test_pause_and_resume_stop_and_continue_the_process(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = local_job(user, "-c", WAIT_FOR_RELEASE)
    job.execute()
    running = run_to(monitor, until, job, "Running")
    pid = int(running.native_id)
    running.pause()
    paused = run_to(monitor, until, job, "Paused")
    assert proc_state(pid) == "T"
    for _ in range(5):  # polls keep it Paused
        monitor.run_cycle()
    assert status_of(job) == "Paused"
    paused.resume()
    run_to(monitor, until, job, "Running")
    until(lambda: proc_state(pid) in ("S", "R"), timeout=5, what="the process to continue")
    for _ in range(3):
        monitor.run_cycle()
    assert status_of(job) == "Running"
    release(job)
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete"
    transitions = [(e.from_status, e.to_status) for e in done.events]
    assert ("RUN", "PAS") in transitions and ("PAS", "RUN") in transitions


@pytest.mark.django_db
def test_max_jobs_queues_beyond_the_limit(
    user: Any, until: Callable[..., Any], offload_settings: Callable[..., None]
) -> None:
    offload_settings(ENGINES={"local": {"max_jobs": 1}})
    monitor = Monitor("slots-monitor")
    first = local_job(user, "-c", WAIT_FOR_RELEASE, name="first")
    second = local_job(user, "-c", "print('second')", name="second")
    first.execute()
    second.execute()
    run_to(monitor, until, first, "Running")
    for _ in range(10):
        monitor.run_cycle()
        time.sleep(0.02)
    waiting = fresh(second)
    assert waiting.status == "Submitted"
    assert "waiting for a free local slot" in waiting.status_message
    assert not attempt_dir(waiting.workspace, waiting.pk, 1).joinpath("runner.json").exists()
    release(first)
    assert run_to(monitor, until, first, "Complete").status == "Complete"
    assert run_to(monitor, until, second, "Complete", "Error").status == "Complete"
    first_exit = json.loads(
        (attempt_dir(fresh(first).workspace, first.pk, 1) / "exit.json").read_text()
    )
    second_run = json.loads(
        (attempt_dir(fresh(second).workspace, second.pk, 1) / "runner.json").read_text()
    )
    assert second_run["started"] >= first_exit["finished"]
    assert fresh(second).get_logs()["stdout"] == "second\n"
    monitor.shutdown()


# -- monitor restarts and crashes -------------------------------------------------------------
@pytest.mark.django_db
def test_new_monitor_reattaches_to_a_running_job(
    user: Any, until: Callable[..., Any], offload_settings: Callable[..., None]
) -> None:
    offload_settings(LEASE_SECONDS=0.5)
    first_monitor = Monitor("monitor-a")
    job = local_job(user, "-c", WAIT_FOR_RELEASE)
    job.execute()
    pid = int(run_to(first_monitor, until, job, "Running").native_id)
    del first_monitor  # thrown away without shutting down (its leases just expire)
    assert alive(pid)
    second_monitor = Monitor("monitor-b")
    for _ in range(3):
        second_monitor.run_cycle()
    assert status_of(job) == "Running"
    release(job)
    done = run_to(second_monitor, until, job, "Complete", "Error")
    assert done.status == "Complete"
    assert done.get_logs()["stdout"] == "released\n"
    assert [(e.from_status, e.to_status) for e in done.events].count(("SUB", "RUN")) == 1
    second_monitor.shutdown()


@pytest.mark.django_db
def test_job_that_ended_while_no_monitor_ran(
    user: Any, until: Callable[..., Any], offload_settings: Callable[..., None]
) -> None:
    offload_settings(LEASE_SECONDS=0.5)
    first_monitor = Monitor("monitor-a")
    ok = local_job(user, "-c", WAIT_FOR_RELEASE, name="ok")
    failing = local_job(user, "-c", WAIT_FOR_RELEASE + "raise SystemExit(4)\n", name="failing")
    ok.execute()
    failing.execute()
    run_to(first_monitor, until, ok, "Running")
    run_to(first_monitor, until, failing, "Running")
    del first_monitor
    for job in (ok, failing):
        release(job)
    for job in (ok, failing):
        exit_file = attempt_dir(fresh(job).workspace, job.pk, 1) / "exit.json"
        until(exit_file.exists, what="the job to end on its own")
    assert status_of(ok) == status_of(failing) == "Running"  # nobody has looked yet
    second_monitor = Monitor("monitor-b")
    assert run_to(second_monitor, until, ok, "Complete", "Error").status == "Complete"
    failed = run_to(second_monitor, until, failing, "Error", "Complete")
    assert failed.status == "Error"
    assert "exited with code 4" in failed.status_message
    second_monitor.shutdown()


@pytest.mark.django_db
def test_crash_after_submit_before_recording_adopts_the_running_attempt(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    append = "open('starts.txt', 'a').write('started\\n')\n" + WAIT_FOR_RELEASE
    job = local_job(user, "-c", append)
    job.execute()
    loaded = fresh(job)
    # A monitor submitted the attempt to the engine, then died before writing anything down.
    engine = build_engine_for("local", None)
    spec = JobSpec(
        job_id=loaded.pk,
        attempt=loaded.attempt,
        job_type=loaded.job_type,
        name=loaded.name,
        workspace=loaded.workspace,
        parameters=dict(loaded.parameters),
    )
    [result] = engine.submit_batch([spec])
    assert result.native_id
    starts = Path(loaded.workspace) / "starts.txt"
    until(starts.exists, what="the attempt to start")
    assert fresh(job).native_id == ""  # nothing recorded
    # The next monitor carries out the same execute intent: it adopts instead of starting again.
    running = run_to(monitor, until, job, "Running")
    assert running.native_id == result.native_id
    intent = JobIntent.objects.get(job_id=job.pk, action=IntentAction.EXECUTE)
    assert intent.done_at is not None
    assert intent.outcome == "adopted"
    release(job)
    assert run_to(monitor, until, job, "Complete", "Error").status == "Complete"
    assert starts.read_text() == "started\n"  # started exactly once


@pytest.mark.django_db
def test_crash_after_the_attempt_already_ended_adopts_its_exit(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    job = local_job(user, "-c", "open('starts.txt', 'a').write('started\\n')")
    job.execute()
    loaded = fresh(job)
    engine = build_engine_for("local", None)
    spec = JobSpec(
        loaded.pk,
        loaded.attempt,
        loaded.job_type,
        loaded.name,
        loaded.workspace,
        dict(loaded.parameters),
    )
    engine.submit_batch([spec])
    until(
        (attempt_dir(loaded.workspace, loaded.pk, 1) / "exit.json").exists,
        what="the attempt to end",
    )
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete"
    assert (Path(loaded.workspace) / "starts.txt").read_text() == "started\n"


KILLED_MONITOR_OVERRIDES = {
    "POLL_INTERVAL": 0.1,
    "IDLE_INTERVAL": 0.05,
    "LEASE_SECONDS": 1,
    "RETRY_INITIAL": 0.05,
}


@pytest.mark.django_db(transaction=True)
def test_killed_monitor_process_and_a_new_monitor_finishes_the_job(
    user: Any,
    until: Callable[..., Any],
    offload_home: Path,
    offload_settings: Callable[..., None],
    monitor_processes: Callable[..., Any],
    tmp_path: Path,
) -> None:
    offload_settings(LEASE_SECONDS=1)
    job = local_job(user, "-c", WAIT_FOR_RELEASE)
    job.execute()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    proc = monitor_processes(
        env,
        name="doomed-monitor",
        overrides={**KILLED_MONITOR_OVERRIDES, "HOME": str(offload_home)},
        log_path=tmp_path / "monitor.log",
    )
    running = until(
        lambda: (j := fresh(job)).status == "Running" and j.native_id and j,
        timeout=30,
        what="the monitor process to start the job",
    )
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    pid = int(running.native_id)
    time.sleep(0.2)
    assert alive(pid), "the job died with its monitor"
    new_monitor = Monitor("successor")
    for _ in range(3):
        new_monitor.run_cycle()
    assert status_of(job) == "Running"
    release(job)
    done = run_to(new_monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message
    assert done.get_logs()["stdout"] == "released\n"
    new_monitor.shutdown()
