"""The ``offload`` command, driven as a subprocess against a real, migrated database.

Every command runs as ``python -m offload.cli …`` with its own ``OFFLOAD_HOME`` and short poll
intervals; monitors and the portal run as real processes and are stopped with real signals.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import pty
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests import dbtools

from offload.engines.local_runner import proc_start_time

#: An argument full of shell metacharacters: it must reach the program exactly as written.
NASTY = """'; rm -rf / $(x) "q" `id` | & > out.txt * ~ \\ {id}"""


class Offload:
    """Runs ``offload`` commands against one database and home folder."""

    def __init__(self, database_url: str, home: Path) -> None:
        self.database_url = database_url
        self.home = home
        env = dbtools.portal_environment(database_url, home)
        env.pop("OFFLOAD_USER", None)
        env.update(
            {
                "OFFLOAD_POLL_INTERVAL": "0.2",
                "OFFLOAD_IDLE_INTERVAL": "0.1",
                "COLUMNS": "200",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env = env
        self.processes: list[subprocess.Popen[str]] = []

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "offload.cli", *args]

    def run(
        self, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, input=input)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def json(self, *args: str) -> Any:
        """The command's ``--json`` output (the flag goes before a ``--`` command)."""
        at = args.index("--") if "--" in args else len(args)
        return json.loads(self.ok(*args[:at], "--json", *args[at:]).stdout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            self.argv(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.processes.append(process)
        return process

    def job(self, job_id: int) -> dict[str, Any]:
        data: dict[str, Any] = self.json("jobs", "show", str(job_id))
        return data

    def wait_for(self, job_id: int, predicate: Callable[[dict[str, Any]], bool], what: str) -> Any:
        deadline = time.monotonic() + 30
        job = self.job(job_id)
        while not predicate(job):
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} never became {what}: {job}")
            time.sleep(0.2)
            job = self.job(job_id)
        return job

    def cleanup(self) -> None:
        """Kill what a failed test may leave running: our processes, then local jobs."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)
        for runner_file in self.home.rglob("runner.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                runner = json.loads(runner_file.read_text())
                if proc_start_time(runner["pid"]) == runner["start"]:
                    os.killpg(runner["pgid"], signal.SIGKILL)


def _cli(database_url: str, tmp_path: Path) -> Iterator[Offload]:
    cli = Offload(database_url, tmp_path / "home")
    try:
        yield cli
    finally:
        cli.cleanup()


@pytest.fixture
def cli(fresh_sqlite_url: str, tmp_path: Path) -> Iterator[Offload]:
    yield from _cli(fresh_sqlite_url, tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db_cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Offload]:
    url = request.getfixturevalue(f"fresh_{request.param}_url")
    yield from _cli(url, tmp_path)


def stop(process: subprocess.Popen[str], sig: int, within: float = 15) -> tuple[int, str, str]:
    process.send_signal(sig)
    out, err = process.communicate(timeout=within)
    return process.returncode, out, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- users --------------------------------------------------------------------------------------------
def test_createuser(cli: Offload) -> None:
    created = cli.json("createuser", "alice", "--email", "alice@example.org")
    assert created["username"] == "alice"
    assert len(created["password"]) >= 12  # generated and printed

    again = cli.run("createuser", "alice")
    assert again.returncode == 1
    assert "user 'alice' already exists" in again.stderr
    assert "Traceback" not in again.stderr

    human = cli.ok("createuser", "bob", "--password-stdin", "--admin", input="Bob-s3cret-pw\n")
    assert "created admin user bob" in human.stdout
    assert "password:" not in human.stdout  # not generated, so not printed

    weak = cli.run("createuser", "carol", "--password", "123")
    assert weak.returncode == 1
    assert "password:" in weak.stderr


# -- submit -------------------------------------------------------------------------------------------
def test_submit_wait_success_runs_arguments_verbatim(cli: Offload) -> None:
    program = "import sys\nprint('hello from the job')\nprint(sys.argv[1])\n"
    result = cli.run("submit", "--wait", "--", sys.executable, "-c", program, NASTY)
    assert result.returncode == 0, result.stderr
    assert "hello from the job" in result.stdout
    assert NASTY in result.stdout.splitlines()  # one argument, exactly as given: no shell
    assert "Complete" in result.stdout
    assert not (cli.home / "out.txt").exists()

    [job] = cli.json("jobs", "list")
    assert job["status"] == "Complete"
    assert job["app"] == "cli"
    assert job["user"] == "offload"  # the default user, created on first use
    assert job["parameters"]["arguments"] == ["-c", program, NASTY]


def test_submit_wait_failure_exits_1_with_stderr(cli: Offload) -> None:
    program = "import sys; print('working'); print('boom: bad input', file=sys.stderr); sys.exit(4)"
    result = cli.run(
        "submit", "--wait", "--name", "failing", "--env", "GREETING=hi there", "--",
        sys.executable, "-c", program,
    )  # fmt: skip
    assert result.returncode == 1
    assert "boom: bad input" in result.stdout  # the stderr tail is shown
    assert "Error" in result.stdout
    assert "exited with code 4" in result.stdout

    data = json.loads(
        cli.run(
            "submit", "--wait", "--json", "--env", "GREETING=hi there", "--",
            sys.executable, "-c", "import os; print(os.environ['GREETING'])",
        ).stdout
    )  # fmt: skip
    assert data["status"] == "Complete"
    assert data["logs"]["stdout"].strip() == "hi there"


def test_submit_without_wait_prints_the_id_and_needs_a_monitor(cli: Offload) -> None:
    refused = cli.run("submit", "--env", "1BAD=x", "--", "true")
    assert refused.returncode == 1
    assert cli.json("jobs", "list") == []  # bad input leaves no job behind
    job_id = int(cli.ok("submit", "-q", "--", sys.executable, "-c", "print('later')").stdout)
    assert cli.job(job_id)["status"] == "Submitted"
    assert cli.ok("monitor", "--until-idle", "--timeout", "30").returncode == 0
    assert cli.job(job_id)["status"] == "Complete"
    assert cli.ok("jobs", "logs", str(job_id), "--stream", "stdout").stdout == "later\n"


#: A job that says it is ready, then waits until the file named by its argument exists, so a test
#: decides when it ends.
GATED_JOB = (
    "import os, sys, time\n"
    "print('ready', flush=True)\n"
    "while not os.path.exists(sys.argv[1]):\n"
    "    time.sleep(0.05)\n"
    "sys.exit(int(os.environ.get('EXIT_CODE', '0')))\n"
)
#: Variables that would make rich treat a pipe as a terminal, or a terminal as a dumb one.
TERMINAL_OVERRIDES = ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "TERM")


def _display_environment(cli: Offload, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in cli.env.items() if k not in TERMINAL_OVERRIDES}
    return env | extra


def _plain(text: str) -> str:
    """Terminal output without its control sequences (colours, cursor, erase)."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


class Lines:
    """The lines a process writes to a pipe, read as they come (in a thread)."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The next line matching ``pattern`` (the lines before it are kept too)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in {self.lines}") from None
            if line is None:
                raise AssertionError(f"the stream ended without {pattern!r}: {self.lines}")
            self.lines.append(line)
            found = re.fullmatch(pattern, line)
            if found:
                return found

    def rest(self) -> list[str]:
        self._thread.join(timeout=30)
        while (line := self._queue.get_nowait()) is not None:
            self.lines.append(line)
        return self.lines


def test_submit_wait_without_a_terminal_prints_each_status_once_on_stderr(
    cli: Offload, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    waiting = subprocess.Popen(
        cli.argv(
            "submit", "--wait", "--no-monitor", "--", sys.executable, "-c", GATED_JOB, str(go)
        ),
        env=_display_environment(cli),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cli.processes.append(waiting)
    stderr = Lines(waiting.stderr)
    job_id = stderr.expect(r"submitted job (\d+): python.*").group(1)
    # --no-monitor: nothing runs the job until a monitor starts, so Submitted is seen first.
    stderr.expect(rf"job {job_id}: Submitted")
    cli.start("monitor", "--until-idle", "--timeout", "60")
    stderr.expect(rf"job {job_id}: Running")
    go.touch()
    stderr.expect(rf"job {job_id}: Complete")
    out, _ = waiting.communicate(timeout=30)
    assert waiting.returncode == 0
    lines = stderr.rest()
    assert lines[1:] == [f"job {job_id}: {s}" for s in ("Submitted", "Running", "Complete")]
    assert not any("\x1b" in line or "\r" in line for line in lines)  # no spinner, no colour
    assert "ready" in out and f"job {job_id} Complete" in out  # the log tail and the outcome


def test_submit_wait_exits_1_when_the_job_fails_after_its_status_lines(
    cli: Offload, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    failing = subprocess.Popen(
        cli.argv(
            "submit", "--wait", "--env", "EXIT_CODE=3", "--",
            sys.executable, "-c", GATED_JOB, str(go),
        ),
        env=_display_environment(cli),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    cli.processes.append(failing)
    stderr = Lines(failing.stderr)
    job_id = stderr.expect(r"submitted job (\d+): .*").group(1)
    # Its own monitor submits and polls in the same cycle before it first looks: Running first.
    stderr.expect(rf"job {job_id}: Running")
    go.touch()
    stderr.expect(rf"job {job_id}: Error")
    out, _ = failing.communicate(timeout=30)
    assert failing.returncode == 1
    assert stderr.rest()[1:] == [f"job {job_id}: Running", f"job {job_id}: Error"]
    assert "exited with code 3" in out


def test_submit_wait_on_a_terminal_shows_one_live_status_line(cli: Offload, tmp_path: Path) -> None:
    go = tmp_path / "go"
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            cli.argv("submit", "--wait", "--", sys.executable, "-c", GATED_JOB, str(go)),
            env=_display_environment(cli, TERM="xterm-256color"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
        )
    finally:
        os.close(follower)
    cli.processes.append(process)
    screen: list[str] = []

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the process closed its end
                return
            if not chunk:
                return
            screen.append(chunk.decode("utf-8", "replace"))

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        # The live line: status, elapsed time and the job's last line of output.
        live = re.compile(r"job (\d+): Running · \d+:\d\d:\d\d · ready")
        while not live.search(_plain("".join(screen))):
            assert time.monotonic() < deadline, _plain("".join(screen))[-2000:]
            assert process.poll() is None, _plain("".join(screen))[-2000:]
            time.sleep(0.1)
        go.touch()
        out, _ = process.communicate(timeout=30)
        reader.join(timeout=10)
    finally:
        os.close(leader)
    assert process.returncode == 0
    raw = "".join(screen)
    text = _plain(raw)
    match = live.search(text)
    assert match is not None
    job_id = match.group(1)
    assert f"submitted job {job_id}" in text
    assert any(frame in text for frame in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")  # rich's spinner
    assert "\x1b[2K" in raw  # redrawn in place: the line is erased and written again
    assert not re.search(rf"job {job_id}: Running\r?\n", text)  # not the pipe's status lines
    assert f"job {job_id} Complete" in out  # the outcome still goes to standard output


# -- jobs ---------------------------------------------------------------------------------------------
def test_jobs_list_show_logs_cancel_resubmit_delete(any_db_cli: Offload) -> None:
    cli = any_db_cli
    cli.ok("createuser", "alice", "--password", "Alice-s3cret-pw")
    monitor = cli.start("monitor", "--name", "test-monitor")

    done = cli.json(
        "submit", "--wait", "--no-monitor", "--user", "alice", "--app", "science",
        "--name", "counting", "--", sys.executable, "-c",
        "import sys\nfor i in range(3): print('line', i)\nprint('warned', file=sys.stderr)",
    )  # fmt: skip
    assert done["status"] == "Complete"
    program = "import time\nprint('started', flush=True)\ntime.sleep(30)\nprint('never')"
    long_id = cli.json("submit", "--user", "alice", "--", sys.executable, "-c", program)["id"]

    # list: filters and JSON
    listed = cli.json("jobs", "list")
    assert [j["id"] for j in listed] == [long_id, done["id"]]  # newest first
    assert [j["id"] for j in cli.json("jobs", "list", "--app", "science")] == [done["id"]]
    assert [j["id"] for j in cli.json("jobs", "list", "--status", "COM")] == [done["id"]]
    assert [j["id"] for j in cli.json("jobs", "list", "--user", "alice", "--limit", "1")] == [
        long_id
    ]
    table = cli.ok("jobs", "list").stdout
    assert "counting" in table
    assert "science" in table

    # show: fields and history
    shown = cli.ok("jobs", "show", str(done["id"])).stdout
    assert "counting" in shown
    assert "history" in shown
    assert "Complete" in shown
    events = cli.job(done["id"])["events"]
    assert [e["to"] for e in events] == ["Pending", "Submitted", "Running", "Complete"]
    assert events[1]["source"] == "user"
    assert events[1]["actor"] == "cli"

    # logs
    assert cli.ok("jobs", "logs", str(done["id"]), "--stream", "stdout").stdout == (
        "line 0\nline 1\nline 2\n"
    )
    logs = cli.json("jobs", "logs", str(done["id"]))
    assert logs == {"stdout": "line 0\nline 1\nline 2\n", "stderr": "warned\n"}
    both = cli.ok("jobs", "logs", str(done["id"])).stdout
    assert "line 2" in both
    assert "warned" in both

    # cancel the long job while the monitor runs it
    cli.wait_for(long_id, lambda j: j["status"] == "Running", "Running")
    cancelled = cli.ok("jobs", "cancel", str(long_id))
    assert f"job {long_id}" in cancelled.stdout
    job = cli.wait_for(long_id, lambda j: j["status"] == "Aborted", "Aborted")
    assert job["events"][-1]["to"] == "Aborted"
    refused = cli.run("jobs", "cancel", str(long_id))
    assert refused.returncode == 1
    assert "already finished" in refused.stderr

    # resubmit: a new attempt that runs again, then follow its logs to the end
    resubmitted = cli.json("jobs", "resubmit", str(done["id"]))
    assert resubmitted["attempt"] == 2
    followed = cli.run("jobs", "logs", str(done["id"]), "--follow", timeout=30)
    assert followed.returncode == 0
    assert followed.stdout == "line 0\nline 1\nline 2\n"
    assert followed.stderr == "warned\n"
    assert cli.job(done["id"])["status"] == "Complete"

    # delete: gone from lists at once, its workspace removed by the monitor
    workspace = Path(cli.job(done["id"])["workspace"])
    assert workspace.is_dir()
    cli.ok("jobs", "delete", str(done["id"]))
    assert [j["id"] for j in cli.json("jobs", "list")] == [long_id]
    gone = cli.run("jobs", "show", str(done["id"]))
    assert gone.returncode == 1
    assert f"job {done['id']} does not exist" in gone.stderr
    deadline = time.monotonic() + 20
    while workspace.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not workspace.exists()

    code, _, err = stop(monitor, signal.SIGTERM)
    assert code == 0, err


# -- monitor ------------------------------------------------------------------------------------------
def test_monitor_until_idle_and_timeout(cli: Offload) -> None:
    assert cli.run("monitor", "--until-idle", "--timeout", "10").returncode == 0  # nothing to do

    program = "import time; time.sleep(20)"
    job_id = cli.json("submit", "--", sys.executable, "-c", program)["id"]
    started = time.monotonic()
    timed_out = cli.run("monitor", "--until-idle", "--timeout", "1.5")
    assert timed_out.returncode == 1
    assert "still active" in timed_out.stderr
    assert time.monotonic() - started < 15
    assert cli.job(job_id)["status"] == "Running"

    cli.ok("jobs", "cancel", str(job_id))
    assert cli.run("monitor", "--until-idle", "--timeout", "20").returncode == 0
    assert cli.job(job_id)["status"] == "Aborted"


def test_sigterm_stops_a_running_monitor_quickly(cli: Offload) -> None:
    monitor = cli.start("monitor")
    line = monitor.stderr.readline() if monitor.stderr else ""
    assert "watching" in line
    time.sleep(0.5)  # inside its loop now
    started = time.monotonic()
    code, _, err = stop(monitor, signal.SIGTERM, within=10)
    assert code == 0, err
    assert time.monotonic() - started < 5
    assert "Traceback" not in err


# -- schedulers ---------------------------------------------------------------------------------------
def test_schedulers_add_list_remove(cli: Offload, tmp_path: Path) -> None:
    assert cli.json("schedulers", "list") == []
    key = tmp_path / "id_ed25519"
    key.write_text("not really a key\n")
    result = cli.run(
        "schedulers", "add", "cluster", "--type", "slurm", "--host", "hpc.example.org",
        "--port", "2222", "--username", "me", "--private-key", str(key), "--password-stdin",
        "--option", "partition=debug", "--option", "max_jobs=4", "--json",
        input="hunter2-but-long\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "cluster"
    [listed] = cli.json("schedulers", "list")
    assert listed["name"] == "cluster"
    assert listed["type"] == "slurm"
    assert listed["port"] == 2222
    assert listed["options"] == {
        "partition": "debug",
        "max_jobs": 4,
        "private_key_path": str(key),
    }
    assert listed["has_secrets"] is True
    assert "hunter2" not in cli.ok("schedulers", "list").stdout + json.dumps(listed)

    duplicate = cli.run("schedulers", "add", "cluster", "--type", "slurm")
    assert duplicate.returncode == 1
    assert "name: a scheduler named 'cluster' already exists" in duplicate.stderr
    bad_type = cli.run("schedulers", "add", "other", "--type", "nope")
    assert bad_type.returncode == 1
    assert "scheduler_type:" in bad_type.stderr
    bad_key = cli.run("schedulers", "add", "other", "--type", "slurm", "--private-key", "/nope")
    assert bad_key.returncode == 1
    assert "private_key:" in bad_key.stderr

    assert "removed scheduler cluster" in cli.ok("schedulers", "remove", "cluster").stdout
    again = cli.run("schedulers", "remove", "cluster")
    assert again.returncode == 1
    assert "scheduler 'cluster' does not exist" in again.stderr


# -- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["jobs", "show", "999"], 1, "job 999 does not exist"),
        (["jobs", "cancel", "999"], 1, "job 999 does not exist"),
        (["jobs", "logs", "999"], 1, "job 999 does not exist"),
        (["jobs", "show", "abc"], 2, "a job id is a number"),
        (["submit", "--env", "NOVALUE", "--", "true"], 2, "expected NAME=VALUE"),
        (["submit", "--env", "1BAD=x", "--", "true"], 1, "environment: '1BAD'"),
        (["submit", "--"], 2, "give the command after --"),
        (["submit", "--type", "BASIC", "--", "true"], 2, "do not run a command"),
        (["submit", "--type", "NOPE", "--", "true"], 2, "valid types"),
        (["submit", "--user", "nobody", "--", "true"], 1, "user 'nobody' does not exist"),
        (["jobs", "list", "--status", "Sleepy"], 2, "'Sleepy' is not a status"),
        (["monitor", "--timeout", "-1"], 2, "must be more than 0"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_bad_input_is_one_clear_line(
    cli: Offload, args: list[str], code: int, message: str
) -> None:
    result = cli.run(*args)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_or_unmigrated_database_exits_3(tmp_path: Path) -> None:
    closed = free_port()
    cli = Offload(f"postgresql://postgres@127.0.0.1:{closed}/offload", tmp_path / "home")
    result = cli.run("jobs", "list")
    assert result.returncode == 3
    assert f"cannot reach the database at postgresql://postgres@127.0.0.1:{closed}" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr

    empty = Offload(f"sqlite:///{tmp_path / 'empty.sqlite3'}", tmp_path / "home")
    result = empty.run("jobs", "list")
    assert result.returncode == 3
    assert "run `offload migrate`" in result.stderr
    assert empty.run("migrate").returncode == 0
    assert empty.json("jobs", "list") == []

    flag = Offload(f"sqlite:///{tmp_path / 'flag.sqlite3'}", tmp_path / "home")
    other = tmp_path / "other.sqlite3"
    assert flag.run("--database", f"sqlite:///{other}", "migrate").returncode == 0
    assert other.exists()
    assert not (tmp_path / "flag.sqlite3").exists()


# -- serve --------------------------------------------------------------------------------------------
def _get(opener: urllib.request.OpenerDirector, url: str, data: bytes | None = None) -> Any:
    return opener.open(urllib.request.Request(url, data=data), timeout=10)


def _wait_for_http(url: str, process: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, ConnectionError):
            if process.poll() is not None:
                out, err = process.communicate()
                raise AssertionError(f"serve exited {process.returncode}:\n{out}\n{err}") from None
            if time.monotonic() > deadline:
                raise AssertionError("serve never answered") from None
            time.sleep(0.2)


def _start_serve(cli: Offload, port: int, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``offload serve``, wait until it answers, return it and its banner."""
    server = cli.start("serve", "--port", str(port), *extra)
    assert _wait_for_http(f"http://127.0.0.1:{port}/accounts/login/", server) == 200
    banner = ""
    assert server.stdout is not None
    while "stop with Ctrl-C" not in banner:
        line = server.stdout.readline()
        assert line, banner
        banner += line
    return server, banner


def _log_in(base: str, username: str, password: str) -> str:
    """Sign in through the login form; returns the path the portal redirected to."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = _get(opener, f"{base}/accounts/login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token, page
    form = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)}
    ).encode()
    response = _get(opener, f"{base}/accounts/login/", data=form)
    return urllib.parse.urlsplit(response.geturl()).path


def test_serve_demo_answers_http_and_stops_cleanly_on_signals(cli: Offload) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    passwords = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        server, banner = _start_serve(cli, port, "--demo")
        assert f"{base}/" in banner
        assert "monitor:        running in this process" in banner
        match = re.search(r"demo login:\s+user demo\s+password (\S+)", banner)
        assert match, banner
        passwords.append(match.group(1))
        if sig == signal.SIGINT:  # the second start: the password printed now is the valid one
            assert _log_in(base, "demo", passwords[-1]) != "/accounts/login/"
            assert _log_in(base, "demo", passwords[0]) == "/accounts/login/"  # rotated
        started = time.monotonic()
        code, _, err = stop(server, sig)
        assert code == 0, err
        assert time.monotonic() - started < 10
        assert "Traceback" not in err

    demo_jobs = cli.json("jobs", "list", "--app", "demo")  # created once, not at every start
    names = sorted(j["name"] for j in demo_jobs)
    assert names == ["Demo: fails", "Demo: runs for two minutes", "Demo: succeeds"]
    assert {j["status"] for j in demo_jobs} <= {"Submitted", "Running", "Complete", "Error"}
    for job in demo_jobs:  # the long demo job must not outlive the test
        if job["status"] in ("Submitted", "Running"):
            cli.ok("jobs", "cancel", str(job["id"]))
    assert cli.run("monitor", "--until-idle", "--timeout", "20").returncode == 0


def test_serve_refuses_a_port_in_use(cli: Offload) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli.run("serve", "--port", str(port))
    assert result.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
