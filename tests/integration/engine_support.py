"""What the integration tests of the batch engines (Slurm, PBS, Grid Engine, HTCondor) share: the
scheduler started by its ``scripts/start-*`` and its exports applied, the lock file that lets many
test sessions on one machine share that scheduler, and the small helpers every module uses.

One scheduler serves every test session on this machine (several people or helpers may run the
suite at once): ordinary tests hold ``.test-services/<name>/tests.lock`` shared; a test that stops
the scheduler's daemon on purpose holds it alone (the module names such tests in its EXCLUSIVE).
An engine that cannot be started skips its tests, or fails them when OFFLOAD_REQUIRE_ENGINES=1 (CI).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from tests import dbtools

from offload.engines.base import JobSpec, attempt_subpath
from offload.models import Job
from offload.monitor import Monitor
from offload.transport.base import CommandResult
from offload.transport.local import LocalRunner

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / ".test-services"


def apply_exports(text: str, *, expand: bool = False) -> None:
    """Set the ``export NAME=value`` lines of a start script in this process's environment;
    ``expand``: unquoted values have their ``$VARIABLES`` expanded (``PATH=<wrappers>:$PATH``)."""
    for line in text.splitlines():
        match = re.match(r"^export ([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if match:
            value = match.group(2)
            if value.startswith("'") and value.endswith("'"):
                value = value[1:-1]
            elif expand:
                value = os.path.expandvars(value)
            os.environ[match.group(1)] = value


def run_start_script(name: str, *, timeout: float = 300, expand: bool = False) -> str:
    """Run ``scripts/start-<name>`` (idempotent) and apply its exports; its output.
    RuntimeError when it fails."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / f"start-{name}")],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/start-{name} failed: {result.stderr.strip()[-2000:]}")
    apply_exports(result.stdout, expand=expand)
    return result.stdout


def engine_absent(required: str, missing: str) -> NoReturn:
    """Fail with ``required`` where the engines are required (CI), else skip with ``missing``."""
    if dbtools.engines_required():
        pytest.fail(required)
    pytest.skip(missing)


@contextlib.contextmanager
def service_lock(lock_file: Path, *, exclusive: bool = False) -> Iterator[None]:
    """Hold a scheduler's ``tests.lock``: shared, or alone for a test that stops its daemon."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Service:
    """A scheduler of the machine as a module's tests see it.

    ``ready``: configured in this environment and answering (then nothing is started);
    ``start``: bring it up and apply its exports (RuntimeError, OSError or a timeout when it cannot);
    ``required`` / ``missing`` name it in the failure (CI) and skip messages.
    """

    directory: Path
    ready: Callable[[], bool]
    start: Callable[[], None]
    required: str
    missing: str

    @property
    def lock_file(self) -> Path:
        return self.directory / "tests.lock"

    def lock(self, *, exclusive: bool = False) -> contextlib.AbstractContextManager[None]:
        return service_lock(self.lock_file, exclusive=exclusive)

    def ensure(self) -> None:
        """Start it unless it is ready (never while another session's test has stopped it);
        skip, or fail in CI, when it does not start. Nothing in the PostgreSQL phase."""
        if dbtools.database_kind() == "postgres":
            return
        with self.lock():
            if self.ready():
                return
            try:
                self.start()
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                engine_absent(
                    f"{self.required} is required here (CI) but did not start: {exc}",
                    f"{self.missing}: {exc}",
                )

    def test_lock(self, request: pytest.FixtureRequest, exclusive: set[str]) -> Iterator[None]:
        """The body of a module's autouse lock fixture: the lock held for the test, alone when
        the test's name is in ``exclusive``. Nothing in the PostgreSQL phase."""
        if dbtools.database_kind() == "postgres":
            yield
            return
        with self.lock(exclusive=request.node.originalname in exclusive):
            yield


def fresh(job: Job) -> Job:
    return Job.objects.get(pk=job.pk)


def run_to(
    monitor: Monitor, until: Callable[..., Any], job: Job, *statuses: str, timeout: float = 40
) -> Job:
    """Run monitor cycles until the job has one of ``statuses``; the job as it is then."""
    until(
        lambda: fresh(job).status in statuses,
        step=monitor.run_cycle,
        timeout=timeout,
        interval=0.2,
        what=lambda: f"job {job.pk} to become {' or '.join(statuses)} (is {fresh(job).status})",
    )
    return fresh(job)


def spec_of(job: Job) -> JobSpec:
    """The engine's spec of the job's current attempt, as a monitor submits it."""
    return JobSpec(job.pk, job.attempt, job.job_type, job.name, job.workspace, dict(job.parameters))


def script_of(job: Job, attempt: int = 1) -> str:
    """The batch script offload wrote for the job's attempt (in its local workspace)."""
    return (Path(job.workspace) / attempt_subpath(job.pk, attempt) / "job.sh").read_text()


def monitor_fixture(name: str) -> Any:
    """A ``monitor`` fixture: a Monitor called ``name``, shut down after the test."""

    @pytest.fixture
    def monitor() -> Iterator[Monitor]:
        m = Monitor(name)
        yield m
        m.shutdown()

    return monitor


def cleanup_fixture(*cancel: str, timeout: float = 10) -> Any:
    """A ``cleanup_jobs`` fixture: a list the test adds jobs to; the scheduler job of each that
    still exists and has a native id is cancelled with ``cancel`` at the end, whatever happened."""

    @pytest.fixture
    def cleanup_jobs() -> Iterator[list[Job]]:
        jobs: list[Job] = []
        yield jobs
        for job in jobs:
            row = Job.objects.filter(pk=job.pk).first()  # a deleted job is gone
            if row is not None and row.native_id:
                subprocess.run(
                    [*cancel, row.native_id], capture_output=True, timeout=timeout, check=False
                )

    return cleanup_jobs


class CountingRunner(LocalRunner):
    """Our own transport, recording each command's name (not a double: it runs them)."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        self.commands.append(Path(str(argv[0])).name)
        return super().run(argv, **kwargs)
