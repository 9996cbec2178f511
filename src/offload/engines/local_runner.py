"""The detached runner of one LOCAL job attempt (standard library only, run by file path).

``python local_runner.py ATTEMPT_DIR`` detaches (double fork, new session), so the job outlives the
monitor that started it, then runs the command described in ``ATTEMPT_DIR/command.json`` as its own
process group, sends its output to ``stdout.log``/``stderr.log``, and records the exit status in
``exit.json`` (written atomically). A restarted monitor reads ``runner.json`` to re-attach and
``exit.json`` to learn how the job ended; it never needs to have been the runner's parent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def proc_stat(pid: int) -> tuple[str, str] | None:
    """The state letter of ``pid`` (R, S, T, Z …) and the kernel's start time of it (field 22 of
    /proc/PID/stat, to tell a reused pid apart), from one read; None if there is no such
    process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def proc_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid``, or None (see :func:`proc_stat`)."""
    stat = proc_stat(pid)
    return stat[1] if stat else None


def proc_state(pid: int) -> str | None:
    """The state letter of ``pid``, or None (see :func:`proc_stat`)."""
    stat = proc_stat(pid)
    return stat[0] if stat else None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def run(attempt_dir: Path) -> int:
    command = json.loads((attempt_dir / "command.json").read_text())
    argv: list[str] = command["argv"]
    env: dict[str, str] = command["env"]
    cwd: str = command["cwd"]
    grace: float = float(command.get("kill_grace", 10))
    slot_file = command.get("slot_file")

    stdout = open(attempt_dir / "stdout.log", "ab")  # noqa: SIM115 - held for the child's lifetime
    stderr = open(attempt_dir / "stderr.log", "ab")  # noqa: SIM115
    started = time.time()
    try:
        child = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            restore_signals=True,
        )
    except OSError as exc:
        write_json_atomic(
            attempt_dir / "exit.json",
            {
                "returncode": None,
                "error": f"could not start {argv[0]!r}: {exc.strerror or exc}",
                "started": started,
                "finished": time.time(),
            },
        )
        _release_slot(slot_file)
        return 0

    # The runner survives the terminal and monitor that started it; only the job's group is signalled.
    # Ignored only now: an ignored signal stays ignored across exec, and the job must get SIGTERM.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)

    def escalate(_signum: int, _frame: object) -> None:
        # The engine asked us to make sure the job ends: SIGKILL the group after the grace period.
        def kill_later() -> None:
            time.sleep(grace)
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except OSError:
                pass

        threading.Thread(target=kill_later, daemon=True).start()

    # Installed before runner.json exists: the engine signals only a runner it has read about.
    signal.signal(signal.SIGUSR1, escalate)

    write_json_atomic(
        attempt_dir / "runner.json",
        {
            "runner_pid": os.getpid(),
            "runner_start": proc_start_time(os.getpid()),
            "pid": child.pid,
            "pgid": child.pid,
            "start": proc_start_time(child.pid),
            "started": started,
        },
    )

    returncode = child.wait()
    if (attempt_dir / "cancelled").exists():
        _finish_group(child.pid, grace)
    write_json_atomic(
        attempt_dir / "exit.json",
        {"returncode": returncode, "started": started, "finished": time.time()},
    )
    _release_slot(slot_file)
    return 0


def _finish_group(pgid: int, grace: float) -> None:
    """After a cancel the job's leader has ended; what is left of its process group gets up to the
    grace period to end too, then SIGKILL, so a stopped job leaves nothing running."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except OSError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _release_slot(slot_file: str | None) -> None:
    if slot_file:
        try:
            os.unlink(slot_file)
        except OSError:
            pass


def main() -> None:
    attempt_dir = Path(sys.argv[1])
    # Detach: the first child starts a new session, the grandchild runs the job, the first child
    # exits at once so the monitor's wait() returns and no zombie is left with the monitor.
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        code = run(attempt_dir)
    except BaseException as exc:  # record why, so the job errs with a reason instead of vanishing
        try:
            write_json_atomic(
                attempt_dir / "exit.json",
                {
                    "returncode": None,
                    "error": f"local runner failed: {exc!r}",
                    "finished": time.time(),
                },
            )
        finally:
            os._exit(1)
    os._exit(code)


if __name__ == "__main__":
    main()
