"""Several monitors against one PostgreSQL database: every job is submitted exactly once, the work
is shared, and a killed monitor's claims are taken over when its lease expires.

The monitors are real ``offload monitor`` processes with the portal's settings, on a fresh migrated
database of this test alone; the jobs are real local processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests import dbtools

pytestmark = pytest.mark.postgres

#: Each job appends one line to a file in its workspace: two starts of one job would show.
JOB_ARGUMENTS = ["-c", "echo started >> starts.txt"]

CREATE_JOBS = """
import sys
import django
django.setup()
from django.contrib.auth import get_user_model
from offload import JobManager
count = int(sys.argv[1])
user = get_user_model().objects.create_user("multi")
manager = JobManager("multi_app")
for i in range(count):
    job = manager.create_job(
        f"job {i}", user, job_type="LOCAL", executable="sh", arguments=sys.argv[2:]
    )
    job.execute()
print("created", count)
"""


def environment(url: str, home: Path, **extra: str) -> dict[str, str]:
    return {
        **dbtools.portal_environment(url, home),
        "OFFLOAD_POLL_INTERVAL": "0.2",
        "OFFLOAD_IDLE_INTERVAL": "0.1",
        "OFFLOAD_LOCAL_MAX_JOBS": "64",
        **extra,
    }


def create_jobs(env: dict[str, str], count: int, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-c", CREATE_JOBS, str(count), *JOB_ARGUMENTS],
        env=env,
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=120,
    )


def start_monitor(
    env: dict[str, str], name: str, cwd: Path, *extra: str
) -> subprocess.Popen[bytes]:
    log = open(cwd / f"{name}.log", "wb")  # noqa: SIM115
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "offload.cli", "monitor", "--name", name, *extra],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, params).fetchall())  # type: ignore[arg-type]


def check_every_job_ran_once(url: str, count: int) -> dict[str, int]:
    """Every job Complete, started once (one line in its starts file, one attempt folder), with
    exactly one step out of Submitted. Returns the number of execute intents each monitor
    carried out."""
    jobs = query(url, "SELECT id, status, workspace, attempt FROM offload_job ORDER BY id")
    assert len(jobs) == count
    statuses = Counter(status for _, status, _, _ in jobs)
    assert statuses == {"COM": count}, statuses
    for job_id, _, workspace, attempt in jobs:
        assert attempt == 1
        starts = (Path(workspace) / "starts.txt").read_text()
        assert starts == "started\n", f"job {job_id} started {starts.count('started')} times"
        own = Path(workspace) / ".offload" / f"job-{job_id}"
        folders = sorted(p.name for p in own.iterdir())
        assert folders == ["attempt-1"], (job_id, folders)
        assert [p.name for p in own.parent.iterdir()] == [own.name]
        runner_files = list((Path(workspace) / ".offload").rglob("runner.json"))
        assert len(runner_files) == 1
    # One step out of Submitted per job: to Running, or straight to Complete when the whole run
    # fell between two looks (the runner had not reported yet when submit returned).
    transitions = query(
        url,
        "SELECT job_id, count(*), min(to_status), max(to_status) FROM offload_jobevent "
        "WHERE from_status = 'SUB' GROUP BY job_id",
    )
    assert len(transitions) == count
    odd = [t for t in transitions if t[1] != 1 or t[2] not in ("RUN", "COM")]
    assert odd == [], odd
    submitted = query(
        url,
        "SELECT count(*) FROM offload_jobevent WHERE from_status = 'PEN' AND to_status = 'SUB'",
    )
    assert submitted == [(count,)]
    intents = query(
        url,
        "SELECT claimed_by, done_at IS NOT NULL FROM offload_jobintent WHERE action = 'execute'",
    )
    assert len(intents) == count
    assert all(done for _, done in intents)
    return dict(Counter(claimed_by.split(":", 1)[0] for claimed_by, _ in intents))


def test_two_monitors_share_the_work_and_submit_each_job_once(
    fresh_postgres_url: str, tmp_path: Path
) -> None:
    count = 300
    env = environment(fresh_postgres_url, tmp_path / "home")
    create_jobs(env, count, tmp_path)
    monitors = [
        start_monitor(env, name, tmp_path, "--until-idle", "--timeout", "120")
        for name in ("mon-a", "mon-b")
    ]
    try:
        for proc, name in zip(monitors, ("mon-a", "mon-b"), strict=True):
            code = proc.wait(timeout=150)
            assert code == 0, (tmp_path / f"{name}.log").read_text()
    finally:
        for proc in monitors:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    by_monitor = check_every_job_ran_once(fresh_postgres_url, count)
    assert set(by_monitor) == {"mon-a", "mon-b"}, by_monitor
    assert sum(by_monitor.values()) == count
    assert min(by_monitor.values()) > 0


def test_killed_monitors_claims_are_taken_over_after_its_lease(
    fresh_postgres_url: str, tmp_path: Path
) -> None:
    count = 100
    lease = 2.0
    env = environment(fresh_postgres_url, tmp_path / "home", OFFLOAD_LEASE_SECONDS=str(lease))
    create_jobs(env, count, tmp_path)
    doomed = start_monitor(env, "mon-a", tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            [(held, done)] = query(
                fresh_postgres_url,
                "SELECT count(*) FILTER (WHERE done_at IS NULL), "
                "count(*) FILTER (WHERE done_at IS NOT NULL) "
                "FROM offload_jobintent WHERE claimed_by LIKE 'mon-a:%%'",
            )
            if held >= 10 and done >= 5:
                break
            assert time.monotonic() < deadline, (tmp_path / "mon-a.log").read_text()
            time.sleep(0.02)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()
    left_behind = {
        job_id
        for (job_id,) in query(
            fresh_postgres_url,
            "SELECT job_id FROM offload_jobintent "
            "WHERE claimed_by LIKE 'mon-a:%%' AND done_at IS NULL",
        )
    }
    assert left_behind

    successor = start_monitor(env, "mon-b", tmp_path, "--until-idle", "--timeout", "120")
    try:
        assert successor.wait(timeout=150) == 0, (tmp_path / "mon-b.log").read_text()
    finally:
        if successor.poll() is None:
            successor.kill()
            successor.wait()
    by_monitor = check_every_job_ran_once(fresh_postgres_url, count)
    assert by_monitor.get("mon-a", 0) > 0 and by_monitor.get("mon-b", 0) > 0
    taken_over = {
        job_id
        for job_id, claimed_by in query(
            fresh_postgres_url,
            "SELECT job_id, claimed_by FROM offload_jobintent WHERE action = 'execute'",
        )
        if claimed_by.startswith("mon-b:")
    }
    assert left_behind <= taken_over
