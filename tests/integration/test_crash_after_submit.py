"""A monitor really killed between a submission and its database write, on each real batch
scheduler (HTCondor, Slurm, Grid Engine, PBS): the next monitor adopts the submission, never
submits the attempt a second time.

The crash is the test hook of docs/development.md: ``OFFLOAD_FAULT=kill-after-submit`` makes an
``offload monitor`` process SIGKILL itself once the engine returned the batch's native ids and
before the store records them. The monitors are real processes on a fresh committed database
(SQLite in the SQLite phase, PostgreSQL in the PostgreSQL phase: the write that never happened is
the database's); the schedulers are the ones the project's ``scripts/start-*`` bring up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests import dbtools
from tests.integration.engine_support import SERVICES, engine_absent, service_lock

from offload.engines.base import attempt_folder
from offload.engines.condor import CondorEngine

#: The job: still queued or running when the first monitor dies; two starts would show twice.
COMMAND = ["/bin/sh", "-c", "sleep 2; echo started >> starts.txt"]


def run(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


def answers(*argv: str, ok: tuple[int, ...] = (0,)) -> bool:
    try:
        return run(*argv, timeout=20).returncode in ok
    except (OSError, subprocess.TimeoutExpired):
        return False


def options(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(os.environ.get(f"OFFLOAD_ENGINE_{kind}") or "{}")
    return loaded


def script_path(workspace: str, key: str) -> str:
    """The job script of the attempt the key (``offload-<job>-<attempt>``) names."""
    _, job_id, attempt = key.rsplit("-", 2)
    return f"{attempt_folder(workspace, int(job_id), int(attempt))}/job.sh"


# -- each scheduler's own record of the submissions of one attempt --------------------------------
# Job ids restart in every fresh test database, so a submission is recognised by the attempt's key
# together with something unique to this test's workspace.
def slurm_submissions(key: str, workspace: str, name: str) -> set[str]:
    lines = run("squeue", "-h", "-t", "all", "-o", "%i|%k|%o").stdout.splitlines()
    wanted = f"|{key}|{script_path(workspace, key)}"
    return {line.split("|", 1)[0] for line in lines if line.endswith(wanted)}


def pbs_submissions(key: str, workspace: str, name: str) -> set[str]:
    # The PBS commands are Slurm's wrappers: the job name is the key plus a hash of the script.
    digest = hashlib.sha256(script_path(workspace, key).encode()).hexdigest()[:8]
    lines = run("squeue", "-h", "-t", "all", "-o", "%i|%j").stdout.splitlines()
    return {line.split("|", 1)[0] for line in lines if line.endswith(f"|{key}-{digest}")}


def sge_submissions(key: str, workspace: str, name: str) -> set[str]:
    found: set[str] = set()
    # In the queue: every job with its context (the key) and script file.
    for block in re.split(r"^=+\s*$", run("qstat", "-j", "*").stdout, flags=re.MULTILINE):
        fields = {
            k.strip(): v.strip()
            for k, sep, v in (line.partition(":") for line in block.splitlines())
            if sep
        }
        if f"offload_key={key}" in fields.get("context", "").split(",") and fields.get(
            "script_file"
        ) == script_path(workspace, key):
            found.add(fields["job_number"])
    # Left the queue: the accounting, by the job's (unique) name.
    for line in run("qacct", "-j", name).stdout.splitlines():
        label, _, value = line.partition(" ")
        if label == "jobnumber":
            found.add(value.strip())
    return found


def condor_submissions(key: str, workspace: str, name: str) -> set[str]:
    engine = CondorEngine(options("CONDOR"))
    _, job_id, attempt = key.rsplit("-", 2)
    folder = attempt_folder(engine.remote_workspace(workspace), int(job_id), int(attempt))
    submit = f"{folder}/job.sub"
    constraint = f"OffloadKey == {json.dumps(key)} && OffloadSubmission == {json.dumps(submit)}"
    found: set[str] = set()
    for command in ("condor_q", "condor_history"):
        out = run(command, "-json", "-constraint", constraint, "-attributes", "ClusterId").stdout
        found |= {str(ad["ClusterId"]) for ad in (json.loads(out) if out.strip() else [])}
    return found


def condor_folder(workspace: str) -> Path:
    return Path(CondorEngine(options("CONDOR")).remote_workspace(workspace))


@dataclass(frozen=True)
class Scheduler:
    job_type: str
    start: str  # its scripts/start-<start>
    lock: Path
    answers: Callable[[], bool]
    submissions: Callable[[str, str, str], set[str]]
    cancel: tuple[str, ...]
    folder: Callable[[str], Path] = Path

    def __str__(self) -> str:
        return self.job_type


def pbs_answers() -> bool:
    bin_dir = options("PBS").get("bin") or ""
    return bool(bin_dir) and answers(f"{bin_dir}/qstat", ok=(0, 153))


SCHEDULERS = [
    Scheduler(
        "CONDOR",
        "htcondor",
        SERVICES / "htcondor" / "tests.lock",
        lambda: answers("condor_q", "-json", "-constraint", "false"),
        condor_submissions,
        ("condor_rm",),
        condor_folder,
    ),
    Scheduler(
        "SLURM",
        "slurm",
        SERVICES / "slurm" / "tests.lock",
        lambda: answers("sinfo", "-h"),
        slurm_submissions,
        ("scancel",),
    ),
    Scheduler(
        "SGE",
        "sge",
        SERVICES / "sge" / "tests.lock",
        lambda: answers("qstat"),
        sge_submissions,
        ("qdel",),
    ),
    Scheduler(
        "PBS",
        "slurm",
        SERVICES / "slurm" / "tests.lock",  # the PBS commands run over the Slurm cluster
        pbs_answers,
        pbs_submissions,
        ("scancel",),
    ),
]


@pytest.fixture(params=SCHEDULERS, ids=str)
def scheduler(request: pytest.FixtureRequest) -> Iterator[Scheduler]:
    """A scheduler started by its ``scripts/start-*`` (scripts/test does that, and exports its
    options); shared with its own tests, which may stop its daemon only while holding its lock."""
    sched: Scheduler = request.param
    with service_lock(sched.lock):  # not while one of its own tests has stopped it
        if not options(sched.job_type) or not sched.answers():
            reason = (
                f'no {sched.job_type} scheduler here: eval "$(bash scripts/start-{sched.start})"'
                f" (OFFLOAD_ENGINE_{sched.job_type} must be set and the scheduler must answer)"
            )
            engine_absent(reason, reason)
        yield sched


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite" and dbtools.database_kind() == "postgres":
        pytest.skip("the SQLite variant runs in the SQLite phase")
    url: str = request.getfixturevalue(f"fresh_{request.param}_url")
    return url


class Offload:
    """``python -m offload.cli`` on the test's database, with short intervals."""

    def __init__(self, database_url: str, home: Path) -> None:
        env = dbtools.portal_environment(database_url, home)
        env.pop("OFFLOAD_USER", None)
        env.pop("OFFLOAD_FAULT", None)
        env.update(
            {
                "OFFLOAD_POLL_INTERVAL": "0.3",
                "OFFLOAD_IDLE_INTERVAL": "0.1",
                # The killed monitor's claim on the intent is taken over when its lease expires.
                "OFFLOAD_LEASE_SECONDS": "4",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env = env

    def run(
        self, *args: str, timeout: float = 60, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "offload.cli", *args],
            env={**self.env, **extra_env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def show(self, job_id: int) -> dict[str, Any]:
        record: dict[str, Any] = json.loads(self.ok("jobs", "show", "--json", str(job_id)))
        return record

    def intent_outcome(self, job_id: int) -> str:
        code = (
            "import django, sys; django.setup()\n"
            "from offload.models import IntentAction, JobIntent\n"
            "intent = JobIntent.objects.get(job_id=int(sys.argv[1]), action=IntentAction.EXECUTE)\n"
            "print(intent.outcome)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(job_id)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.strip()


def native(native_id: str) -> str:
    """The scheduler's number: a PBS id may carry its server (``12.server``)."""
    return native_id.split(".", 1)[0]


def test_a_monitor_killed_after_submitting_is_adopted_not_submitted_twice(
    scheduler: Scheduler, database_url: str, tmp_path: Path
) -> None:
    offload = Offload(database_url, tmp_path / "home")
    name = f"crash-{uuid.uuid4().hex[:10]}"
    job_id = int(
        offload.ok("submit", "--type", scheduler.job_type, "--name", name, "-q", "--", *COMMAND)
    )
    before = offload.show(job_id)
    key, workspace = f"offload-{job_id}-1", before["workspace"]
    found: set[str] = set()
    try:
        # 1. The monitor submits, then dies by SIGKILL before writing anything down.
        crashed = offload.run(
            "monitor",
            "--name",
            "crashing",
            "--timeout",
            "60",
            timeout=90,
            OFFLOAD_FAULT="kill-after-submit",
        )
        assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stderr)
        after_crash = offload.show(job_id)
        assert after_crash["native_id"] == "" and after_crash["status"] == "Submitted"
        found = scheduler.submissions(key, workspace, name)
        assert len(found) == 1, f"{scheduler}: {found} carry {key} after the crash"
        [native_id] = found
        assert native_id in crashed.stderr + crashed.stdout, crashed.stderr  # the hook's last word

        # 2. A normal monitor adopts the submission and runs the job to the end.
        # The monitor's own limit comes first, so a slow scheduler fails the assertions below
        # with the monitor's output rather than a killed subprocess.
        resumed = offload.run(
            "monitor", "--name", "after", "--until-idle", "--timeout", "120", timeout=180
        )
        assert resumed.returncode == 0, resumed.stderr
        done = offload.show(job_id)
        assert done["status"] == "Complete", done
        assert native(done["native_id"]) == native_id
        assert offload.intent_outcome(job_id) == "adopted"
        assert (scheduler.folder(workspace) / "starts.txt").read_text() == "started\n"

        # 3. The scheduler's queue and history know exactly one submission of the attempt (the
        #    accounting of a job that just left the queue may take a moment to be written).
        deadline = time.monotonic() + 15
        while not (found := scheduler.submissions(key, workspace, name)):
            assert time.monotonic() < deadline, f"{scheduler}: {key} missing from its history"
            time.sleep(0.5)
        assert found == {native_id}
    finally:
        for stray in found:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                run(*scheduler.cancel, stray)
