"""The SSH transport on the real sshd of scripts/start-sshd (127.0.0.1:2222, user offload-ssh, key
login, host key in a known_hosts file), and the Slurm engine driven over it by the monitor.

The runner tests need no database; the Slurm-over-SSH tests need the cluster of
scripts/start-slurm too and, like test_slurm.py, run in the SQLite phase only.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from test_slurm import queue_state, slurm_cluster, slurm_lock  # noqa: F401 (fixtures)
from tests import dbtools
from tests.integration import engine_support
from tests.integration.engine_support import apply_exports, fresh

from offload import JobManager
from offload.engines.base import JobHandle, attempt_folder, attempt_subpath
from offload.engines.slurm import SlurmEngine
from offload.errors import EngineUnavailableError
from offload.models import Job
from offload.monitor import Monitor
from offload.schedulers import build_engine_for, create_scheduler
from offload.transport import LocalRunner, is_remote, runner_for
from offload.transport.ssh import SSHRunner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def sshd() -> dict[str, str]:
    """The project's sshd (started by scripts/start-sshd, which is idempotent); its exports."""
    try:
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "start-sshd")],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        problem = "" if result.returncode == 0 else result.stderr.strip()[-2000:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = str(exc)
    if problem:
        if dbtools.engines_required():
            pytest.fail(f"sshd is required here (CI) but did not start: {problem}")
        pytest.skip(f"no test sshd: {problem}")
    apply_exports(result.stdout)
    return {
        name: os.environ[f"OFFLOAD_SSH_{name.upper()}"]
        for name in ("host", "port", "user", "key", "known_hosts", "workspace_root")
    }


def make_runner(sshd: dict[str, str], **changes: Any) -> SSHRunner:
    options: dict[str, Any] = {
        "host": sshd["host"],
        "port": int(sshd["port"]),
        "username": sshd["user"],
        "private_key_path": sshd["key"],
        "known_hosts": sshd["known_hosts"],
        **changes,
    }
    return SSHRunner.from_options(options)


@pytest.fixture
def runner(sshd: dict[str, str]) -> Iterator[SSHRunner]:
    r = make_runner(sshd)
    yield r
    r.close()


# -- choosing the transport ----------------------------------------------------------------------
def test_which_options_mean_ssh() -> None:
    assert not is_remote({})
    assert not is_remote({"host": ""})
    assert not is_remote({"host": "localhost"})
    assert is_remote({"host": "localhost", "port": 2222})
    assert is_remote({"host": "127.0.0.1"})
    assert is_remote({"host": "hpc.example.org"})
    assert not is_remote({"host": "hpc.example.org", "transport": "local"})
    assert isinstance(runner_for({"host": ""}), LocalRunner)
    remote = runner_for({"host": "hpc.example.org", "username": "u"})
    assert isinstance(remote, SSHRunner) and remote.target == "u@hpc.example.org:22"
    remote.close()


# -- the runner ----------------------------------------------------------------------------------
METACHARACTERS = [
    "a b",
    "$HOME ${PATH} $(id) `id`",
    "semi;colon && or || pipe | amp &",
    "quotes ' \" \\ back",
    "glob * ? [a-z] ~ ~root",
    "newline\nand\ttab",
    "#not a comment",
    "",
    "-n",
    "ünïcode ✓",
]


def test_run_passes_every_argument_verbatim(runner: SSHRunner) -> None:
    started = time.monotonic()
    result = runner.run(["printf", "%s\\0", *METACHARACTERS])
    first = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\0")[:-1] == METACHARACTERS
    assert result.argv[0] == "printf"
    # Exit codes, stderr, stdin, the working folder and variables come through.
    failed = runner.run(["sh", "-c", "echo err >&2; exit 7"])
    assert (failed.returncode, failed.stdout, failed.stderr) == (7, "", "err\n")
    assert runner.run(["cat"], input_text="to stdin\n").stdout == "to stdin\n"
    assert runner.run(["pwd"], cwd="/tmp").stdout == "/tmp\n"
    env = runner.run(["sh", "-c", 'printf %s "$ODD"'], env={"ODD": "x; $(id) 'y'"})
    assert env.stdout == "x; $(id) 'y'"
    assert runner.run(["whoami"]).stdout.strip() == "offload-ssh"
    assert runner.connections_opened == 1  # one connection for all of them
    assert first < 5, f"connect and run took {first:.2f} s"


def test_command_line_is_one_quoted_line(runner: SSHRunner) -> None:
    line = runner.command_line(["echo", "a;b", "$(x)"], cwd="/my dir", env={"A": "1 2"})
    assert line == "cd '/my dir' && env 'A=1 2' echo 'a;b' '$(x)'"
    assert shlex.split(line.split(" && ", 1)[1]) == ["env", "A=1 2", "echo", "a;b", "$(x)"]


def test_write_and_read_files_over_sftp(runner: SSHRunner, sshd: dict[str, str]) -> None:
    folder = f"{sshd['workspace_root']}/runner-test-{os.getpid()}-{time.monotonic_ns()}"
    path = f"{folder}/deep/er/file $(id).sh"
    text = "#!/bin/sh\necho 'héllo ✓'\n"
    runner.write_text(path, text, mode=0o750)
    assert runner.read_text(path) == text
    assert runner.read_text(path, limit=9) == "#!/bin/sh"
    assert runner.read_text(f"{folder}/missing.log") is None
    # The file belongs to the SSH user, with the mode asked for, and replaces an older one.
    stat = runner.run(["stat", "-c", "%U %a", path])
    assert stat.stdout.strip() == "offload-ssh 750"
    runner.write_text(path, "second\n")
    assert runner.run(["cat", path]).stdout == "second\n"
    assert runner.run(["ls", "-A", f"{folder}/deep/er"]).stdout == "file $(id).sh\n"
    with pytest.raises(EngineUnavailableError, match="cannot write /root/x"):
        runner.write_text("/root/x/forbidden.txt", "no")
    runner.run(["rm", "-rf", folder])
    assert runner.connections_opened == 1


def test_a_command_over_its_time_is_unavailable_and_the_connection_lives_on(
    runner: SSHRunner,
) -> None:
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError, match=r"did not answer within 0\.5 s"):
        runner.run(["sleep", "10"], timeout=0.5)
    assert time.monotonic() - started < 5
    assert runner.run(["echo", "still here"]).stdout == "still here\n"


def test_a_dropped_connection_is_opened_again(runner: SSHRunner) -> None:
    assert runner.run(["true"]).returncode == 0
    # The sshd process serving this connection (the parent of the remote shell): end it.
    session_pid = int(runner.run(["sh", "-c", "echo $PPID"]).stdout)
    assert runner.connections_opened == 1
    os.kill(session_pid, 15)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{session_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    # The next call may find out mid-way (unavailable, nothing run twice); the one after works.
    results = []
    for _ in range(2):
        try:
            results.append(runner.run(["echo", "back"]).stdout)
        except EngineUnavailableError as exc:
            results.append(str(exc))
    assert results[-1] == "back\n", results
    assert runner.connections_opened == 2


def test_a_changed_host_key_is_refused(sshd: dict[str, str], tmp_path: Path) -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    known = tmp_path / "known_hosts"
    known.write_text(
        f"[{sshd['host']}]:{sshd['port']} {impostor.export_public_key().decode().strip()}\n"
    )
    r = make_runner(sshd, known_hosts=str(known))
    try:
        with pytest.raises(EngineUnavailableError, match="host key does not match") as info:
            r.run(["true"])
        assert str(known) in str(info.value)
        assert r.connections_opened == 0
    finally:
        r.close()
    # An empty known_hosts file: the host is unknown, also refused.
    known.write_text("")
    r = make_runner(sshd, known_hosts=str(known))
    try:
        with pytest.raises(EngineUnavailableError, match="host key"):
            r.run(["true"])
    finally:
        r.close()
    # Only an explicit host_key_checking=false (unsafe, for throwaway machines) skips the check.
    r = make_runner(sshd, known_hosts=str(known), host_key_checking="false")
    try:
        assert r.run(["echo", "unchecked"]).stdout == "unchecked\n"
    finally:
        r.close()


def test_refused_logins_and_unreachable_hosts_are_unavailable(
    sshd: dict[str, str], tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger_key"
    stranger.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    stranger.chmod(0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens once the socket is closed
    cases: list[tuple[dict[str, Any], str]] = [
        ({"private_key_path": str(stranger)}, "login to offload-ssh@127.0.0.1:2222 refused"),
        ({"username": "nobody-here"}, "login to nobody-here@127.0.0.1:2222 refused"),
        ({"port": closed_port}, f"cannot connect to offload-ssh@127.0.0.1:{closed_port}"),
    ]
    for changes, message in cases:
        r = make_runner(sshd, **changes)
        try:
            started = time.monotonic()
            with pytest.raises(EngineUnavailableError, match=re.escape(message)):
                r.run(["true"])
            assert time.monotonic() - started < 10
            with pytest.raises(EngineUnavailableError):  # and again on the next cycle
                r.write_text("/tmp/never.txt", "x")
        finally:
            r.close()
    # A key with a passphrase needs it.
    locked = tmp_path / "locked_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "right", "-f", str(locked)],
        check=True,
        timeout=30,
    )
    r = make_runner(sshd, private_key_path=str(locked), private_key_pass="wrong")
    try:
        with pytest.raises(EngineUnavailableError, match="wrong passphrase"):
            r.run(["true"])
    finally:
        r.close()
    # The right passphrase opens the key; the server still refuses it (not authorized).
    r = make_runner(sshd, private_key_path=str(locked), private_key_pass="right")
    try:
        with pytest.raises(
            EngineUnavailableError, match=re.escape("login to offload-ssh@127.0.0.1:2222")
        ):
            r.run(["true"])
    finally:
        r.close()


def test_a_closed_runner_refuses_work(sshd: dict[str, str]) -> None:
    r = make_runner(sshd)
    assert r.run(["true"]).returncode == 0
    r.close()
    r.close()  # twice is fine
    with pytest.raises(EngineUnavailableError, match="closed"):
        r.run(["true"])


# -- Slurm over SSH ------------------------------------------------------------------------------
SLURM_OVER_SSH = pytest.mark.skipif(
    dbtools.database_kind() == "postgres",
    reason="Slurm tests run once, in the SQLite phase (they test the engine, not the database)",
)


@pytest.fixture
def ssh_cluster(sshd: dict[str, str], slurm_cluster: None, slurm_lock: None) -> Any:  # noqa: F811
    """A scheduler record of type slurm reached over SSH as offload-ssh."""
    # `sacct -c` (the test cluster's accounting) must be able to open the jobcomp file for writing;
    # slurmctld makes it 644 whenever it reopens it (after a restart by another test, say).
    jobcomp = ROOT / ".test-services" / "slurm" / "jobcomp.txt"
    if jobcomp.exists():
        jobcomp.chmod(0o666)
    return create_scheduler(
        "slurm-over-ssh",
        host=sshd["host"],
        scheduler_type="slurm",
        username=sshd["user"],
        private_key_path=sshd["key"],
        port=int(sshd["port"]),
        known_hosts=sshd["known_hosts"],
        # Its own folder: job ids (so workspace paths) start again in every test database.
        remote_workspace_root=f"{sshd['workspace_root']}/{uuid.uuid4().hex}",
        # The test cluster's configuration is not in /etc/slurm: tell the remote commands.
        remote_environment={"SLURM_CONF": os.environ["SLURM_CONF"]},
        partition="debug",
        accounting="jobcomp",
    )


monitor = engine_support.monitor_fixture("ssh-test-monitor")


def run_to(monitor: Monitor, until: Callable[..., Any], job: Job, *statuses: str) -> Job:
    until(
        lambda: fresh(job).status in statuses,
        step=monitor.run_cycle,
        timeout=30,
        interval=0.2,
        what=lambda: (
            f"job {job.pk} to become {' or '.join(statuses)} (is {fresh(job).status}: {fresh(job).status_message} {fresh(job).events[-3:]} {fresh(job).is_stale})"
        ),
    )
    return fresh(job)


@SLURM_OVER_SSH
@pytest.mark.django_db
@pytest.mark.usefixtures("offload_home")
def test_slurm_over_ssh_runs_jobs_verbatim_on_one_connection(
    user: Any, monitor: Monitor, until: Callable[..., Any], ssh_cluster: Any, sshd: dict[str, str]
) -> None:
    manager = JobManager("ssh_app")
    name = "odd `id` $(whoami); name & 'quoted' \"double\"\n#SBATCH --uid=0"
    args = METACHARACTERS
    jobs = [
        manager.create_job(
            name,
            user,
            job_type="SLURM",
            scheduler=ssh_cluster,
            executable="sh",
            arguments=[
                "-c",
                'printf "%s\\0" "$@"; whoami >&2; exit "$EXIT"',
                "sh",
                *args,
            ],
            environment={"EXIT": str(code)},
        )
        for code in (0, 3)
    ]
    started = time.monotonic()
    for job in jobs:
        job.execute()
    ok = run_to(monitor, until, jobs[0], "Complete", "Error")
    bad = run_to(monitor, until, jobs[1], "Complete", "Error")
    elapsed = time.monotonic() - started
    assert ok.status == "Complete", ok.status_message
    assert ok.native_status == "COMPLETED"
    assert bad.status == "Error" and bad.native_status == "FAILED"
    assert "exited with code 3" in bad.status_message
    # Logs come back over SFTP: every argument verbatim, and the job ran as the SSH user.
    logs = ok.get_logs()
    assert logs["stdout"].split("\0")[:-1] == args
    assert logs["stderr"] == "offload-ssh\n"
    assert ok.name == name
    # The script was staged on the remote side only, under remote_workspace_root.
    engine = monitor.engines[f"slurm:{ssh_cluster.pk}"]
    assert isinstance(engine, SlurmEngine) and isinstance(engine.runner, SSHRunner)
    remote = engine.remote_workspace(ok.workspace)
    assert remote.startswith(sshd["workspace_root"] + "/")
    # (A local copy appears only when the finished job's files are copied back.)
    local_copy = (Path(ok.workspace) / ".offload").exists()
    assert not local_copy or "staged_out" in (fresh(ok).engine_state or {})
    script = engine.runner.read_text(f"{attempt_folder(remote, ok.pk, 1)}/job.sh") or ""
    assert "\n#SBATCH --uid" not in script
    assert f"#SBATCH --comment=offload-{ok.pk}-1" in script
    # Submissions, polls and log reads of the whole run shared one connection.
    assert engine.runner.connections_opened == 1
    assert elapsed < 30


@SLURM_OVER_SSH
@pytest.mark.django_db
@pytest.mark.usefixtures("offload_home")
def test_slurm_over_ssh_cancel_and_hold(
    user: Any, monitor: Monitor, until: Callable[..., Any], ssh_cluster: Any
) -> None:
    manager = JobManager("ssh_app")
    sleeper = manager.create_job(
        "sleeper",
        user,
        job_type="SLURM",
        scheduler=ssh_cluster,
        executable="sleep",
        arguments=["120"],
    )
    held = manager.create_job(
        "held",
        user,
        job_type="SLURM",
        scheduler=ssh_cluster,
        executable="true",
        extra_directives=["--begin=now+3600"],
    )
    try:
        sleeper.execute()
        held.execute()
        run_to(monitor, until, sleeper, "Running")
        until(lambda: fresh(held).native_id, step=monitor.run_cycle, what="held to be queued")
        sleeper.stop()
        assert run_to(monitor, until, sleeper, "Aborted", "Error", "Complete").status == "Aborted"
        group = f"slurm:{ssh_cluster.pk}"

        def poll() -> None:
            monitor._poll_soon.add(group)
            monitor.run_cycle()

        held.pause()
        run_to(monitor, until, held, "Paused")
        until(
            lambda: fresh(held).native_status.startswith("PENDING (JobHeld"),
            step=poll,
            interval=0.2,
            what="Slurm to report the hold",
        )
        assert fresh(held).status == "Paused"
        held.resume()
        native_id = fresh(held).native_id
        until(
            lambda: "JobHeld" not in queue_state(native_id),
            step=monitor.run_cycle,
            interval=0.2,
            what="the hold to be released",
        )
        assert "PENDING" in queue_state(native_id)
        held.stop()
        assert run_to(monitor, until, held, "Aborted", "Error").status == "Aborted"
    finally:
        for job in (sleeper, held):
            if fresh(job).native_id:
                subprocess.run(["scancel", fresh(job).native_id], timeout=10, check=False)


@SLURM_OVER_SSH
@pytest.mark.django_db
@pytest.mark.usefixtures("offload_home")
def test_an_unreachable_ssh_host_makes_jobs_wait_not_fail(
    user: Any,
    monitor: Monitor,
    until: Callable[..., Any],
    sshd: dict[str, str],
    slurm_cluster: None,  # noqa: F811
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    nowhere = create_scheduler(
        "nowhere",
        host="127.0.0.1",
        scheduler_type="slurm",
        username=sshd["user"],
        private_key_path=sshd["key"],
        port=closed_port,
        known_hosts=sshd["known_hosts"],
    )
    job = JobManager("ssh_app").create_job(
        "waits", user, job_type="SLURM", scheduler=nowhere, executable="true"
    )
    job.execute()
    for _ in range(3):
        monitor.run_cycle()
    waiting = fresh(job)
    assert waiting.status == "Submitted" and waiting.native_id == ""
    engine = build_engine_for("slurm", nowhere)
    try:
        assert isinstance(engine, SlurmEngine) and isinstance(engine.runner, SSHRunner)
        with pytest.raises(EngineUnavailableError, match="cannot connect"):
            engine.get_logs(JobHandle(job.pk, 1, "", waiting.workspace))
    finally:
        engine.close()


def read_staged_output(job: Job) -> None:
    """A process_results_function: the output must already be here, copied back from the
    cluster before result processing runs."""
    text = (Path(job.workspace) / "out" / "result.txt").read_text()
    job.extended_properties = {**(job.extended_properties or {}), "result": text}
    job.save()


@SLURM_OVER_SSH
@pytest.mark.django_db
@pytest.mark.usefixtures("offload_home")
def test_slurm_over_ssh_stages_inputs_in_and_outputs_back_before_results(
    user: Any, monitor: Monitor, until: Callable[..., Any], ssh_cluster: Any, sshd: dict[str, str]
) -> None:
    manager = JobManager("ssh_app")
    job = manager.create_job(
        "staged",
        user,
        job_type="SLURM",
        scheduler=ssh_cluster,
        script="mkdir -p out\ntr a-z A-Z < input.txt > out/result.txt\necho done\n",
        process_results_function=read_staged_output,
    )
    job.save()
    # The app puts the job's input into its (local) workspace before executing it.
    (Path(job.workspace) / "data").mkdir(parents=True)
    (Path(job.workspace) / "input.txt").write_text("hello from the portal\n")
    (Path(job.workspace) / "data" / "more $(id).txt").write_text("x" * 100_000)
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error", "Various-Complete")
    assert done.status == "Complete", done.status_message
    assert done.extended_properties["result"] == "HELLO FROM THE PORTAL\n"
    engine = monitor.engines[f"slurm:{ssh_cluster.pk}"]
    assert isinstance(engine, SlurmEngine)
    remote = engine.remote_workspace(done.workspace)
    # In: the inputs went to the cluster (not offload's own folder: the script is written there).
    assert engine.runner.read_text(f"{remote}/data/more $(id).txt") == "x" * 100_000
    # Back: outputs and this attempt's logs, into the local workspace, mtimes kept.
    workspace = Path(done.workspace)
    assert (workspace / "out" / "result.txt").read_text() == "HELLO FROM THE PORTAL\n"
    assert (workspace / attempt_subpath(done.pk, 1) / "stdout.log").read_text() == "done\n"
    staged = done.engine_state["staged_out"]
    assert staged["attempt"] == 1 and staged["files"] >= 3
    # All over the one connection.
    assert isinstance(engine.runner, SSHRunner) and engine.runner.connections_opened == 1


@SLURM_OVER_SSH
@pytest.mark.django_db
@pytest.mark.usefixtures("offload_home")
def test_a_failed_copy_back_is_retried_and_never_makes_the_job_an_error(
    user: Any,
    monitor: Monitor,
    until: Callable[..., Any],
    ssh_cluster: Any,
    offload_settings: Callable[..., None],
) -> None:
    offload_settings(RETRY_INITIAL=0.05, RETRY_MAX=0.2)
    manager = JobManager("ssh_app")
    # The job leaves an output the SSH user cannot read: SFTP refuses to copy it back.
    job = manager.create_job(
        "unreadable",
        user,
        job_type="SLURM",
        scheduler=ssh_cluster,
        script="echo secret > locked.txt\nchmod 000 locked.txt\necho ok > fine.txt\n",
    )
    job.execute()
    done = run_to(monitor, until, job, "Complete", "Error")
    assert done.status == "Complete", done.status_message
    until(
        lambda: "copying its files back" in fresh(job).status_message,
        step=monitor.run_cycle,
        interval=0.1,
        timeout=20,
        what="the copy back to fail",
    )
    for _ in range(5):  # retried, and the job stays Complete (no Error, no event)
        monitor.run_cycle()
    failing = fresh(job)
    assert failing.status == "Complete"
    assert "Permission denied" in failing.status_message or "denied" in failing.status_message
    assert [e.to_status for e in failing.events][-1] == "COM"
    assert "staged_out" not in (failing.engine_state or {})
    # The cluster side is fixed (here: as root, on the same machine); the next try copies it.
    engine = monitor.engines[f"slurm:{ssh_cluster.pk}"]
    assert isinstance(engine, SlurmEngine)
    os.chmod(f"{engine.remote_workspace(done.workspace)}/locked.txt", 0o644)
    until(
        lambda: "staged_out" in (fresh(job).engine_state or {}),
        step=monitor.run_cycle,
        interval=0.1,
        timeout=20,
        what="the retried copy to succeed",
    )
    assert (Path(done.workspace) / "locked.txt").read_text() == "secret\n"
    assert (Path(done.workspace) / "fine.txt").read_text() == "ok\n"
    assert fresh(job).status == "Complete"
