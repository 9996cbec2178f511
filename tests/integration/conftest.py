"""Fixtures for the core integration tests (manager, store rules, local engine, monitors).

Nothing here is autouse: modules that want a private offload home (workspaces and local-engine
state under the test's tmp_path) ask for ``offload_home``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def kill_leftover_jobs(root: Path) -> None:
    """SIGKILL the process group of every local job started under ``root`` that still runs (a test
    that failed half-way must not leave sleeping jobs behind). Only groups whose leader is still the
    process the runner recorded (same kernel start time) are signalled."""
    for runner_file in root.rglob("runner.json"):
        try:
            runner = json.loads(runner_file.read_text())
        except (OSError, ValueError):
            continue
        pid, pgid, start = runner.get("pid"), runner.get("pgid"), runner.get("start")
        if isinstance(pid, int) and isinstance(pgid, int) and _proc_start_time(pid) == start:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGCONT)
                os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def offload_home(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """A private OFFLOAD home for this test: workspaces and local-engine state under tmp_path,
    with short intervals. Local jobs still running at the end are killed."""
    home = tmp_path / "home"
    home.mkdir()
    settings.OFFLOAD = {
        **getattr(settings, "OFFLOAD", {}),
        "HOME": str(home),
        "POLL_INTERVAL": 0.1,
        "IDLE_INTERVAL": 0.05,
        "RETRY_INITIAL": 0.05,
        "RETRY_MAX": 0.5,
        "LEASE_SECONDS": 10,
    }
    yield home
    kill_leftover_jobs(tmp_path)


@pytest.fixture
def offload_settings(settings: Any, offload_home: Path) -> Callable[..., None]:
    """Change entries of the test's OFFLOAD dict: ``offload_settings(LEASE_SECONDS=1)``."""

    def change(**entries: Any) -> None:
        settings.OFFLOAD = {**settings.OFFLOAD, **entries}

    return change


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password="pw-alice")


@pytest.fixture
def other_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("bob", password="pw-bob")


@pytest.fixture
def keep_signal_handlers() -> Iterator[None]:
    """Monitor.run() installs SIGTERM/SIGINT handlers in the main thread; put pytest's back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def wait_for(
    condition: Callable[[], Any],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    step: Callable[[], Any] | None = None,
    what: str | Callable[[], str] = "condition",
) -> Any:
    """Call ``step`` (e.g. a monitor cycle) then ``condition`` until it is truthy; its value.
    ``what`` names the condition in the failure message; a callable is asked at the failure,
    so the message can show the state the wait ended in."""
    deadline = time.monotonic() + timeout
    while True:
        if step is not None:
            step()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {described}")
        time.sleep(interval)


@pytest.fixture
def until() -> Callable[..., Any]:
    """``until(condition, step=monitor.run_cycle, timeout=…)``: see :func:`wait_for`."""
    return wait_for


MONITOR_SCRIPT = """
import json, os, sys
import django
django.setup()
from django.conf import settings
settings.OFFLOAD = {**getattr(settings, "OFFLOAD", {}), **json.loads(os.environ.get("TEST_OFFLOAD_OVERRIDES", "{}"))}
from offload.monitor import Monitor
args = json.loads(sys.argv[1])
monitor = Monitor(name=args.get("name"))
print("monitor started", monitor.name, flush=True)
sys.exit(monitor.run(until_idle=args.get("until_idle", False), timeout=args.get("timeout")))
"""


def start_monitor_process(
    env: dict[str, str],
    *,
    name: str,
    until_idle: bool = False,
    timeout: float | None = None,
    overrides: dict[str, Any] | None = None,
    log_path: Path | None = None,
) -> subprocess.Popen[bytes]:
    """A monitor in its own process (the settings of ``env``), as an operator would run one."""
    full_env = {
        **env,
        "TEST_OFFLOAD_OVERRIDES": json.dumps(overrides or {}),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")])),
    }
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                MONITOR_SCRIPT,
                json.dumps({"name": name, "until_idle": until_idle, "timeout": timeout}),
            ],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]


@pytest.fixture
def monitor_processes() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start monitor subprocesses; any still running at the end of the test are killed."""
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = start_monitor_process(env, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
