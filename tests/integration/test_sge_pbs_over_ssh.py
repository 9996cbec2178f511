"""The Grid Engine and PBS engines driven over SSH (the sshd of scripts/start-sshd, user offload-ssh)
by the monitor: a command with shell metacharacters runs verbatim as the SSH user, its exit code
and logs come back, and every command of the run shares one connection.

Like test_sge.py and test_pbs.py, these run in the SQLite phase only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_pbs import pbs_bin, pbs_commands, slurm_lock  # noqa: F401 (fixtures)
from test_sge import sge_cluster, sge_lock  # noqa: F401 (fixtures)
from test_ssh import sshd  # noqa: F401 (fixture)
from tests import dbtools

from offload import JobManager
from offload.engines.base import BatchSchedulerEngine, attempt_folder
from offload.models import Job
from offload.monitor import Monitor
from offload.schedulers import create_scheduler
from offload.transport.ssh import SSHRunner

pytestmark = [
    pytest.mark.usefixtures("offload_home"),
    pytest.mark.skipif(
        dbtools.database_kind() == "postgres",
        reason="engine tests run once, in the SQLite phase (they test the engine, not the database)",
    ),
]

ARGUMENTS = [
    "a b",
    "$(id)",
    "`id`",
    "'q'",
    '"dq"',
    "x;y|z&",
    "*",
    "~",
    "#c",
    "%j",
    "",
    "line\nbreak",
]


def ssh_options(sshd: dict[str, str]) -> dict[str, Any]:  # noqa: F811
    return {
        "host": sshd["host"],
        "username": sshd["user"],
        "private_key_path": sshd["key"],
        "port": int(sshd["port"]),
        "known_hosts": sshd["known_hosts"],
        # Its own folder: job ids (so workspace paths) start again in every test database.
        "remote_workspace_root": f"{sshd['workspace_root']}/{uuid.uuid4().hex}",
    }


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    m = Monitor("batch-ssh-test-monitor")
    yield m
    m.shutdown()


def fresh(job: Job) -> Job:
    return Job.objects.get(pk=job.pk)


def run_both(
    monitor: Monitor, until: Callable[..., Any], user: Any, scheduler: Any, job_type: str
) -> tuple[Job, Job]:
    manager = JobManager("ssh_app")
    jobs = [
        manager.create_job(
            "odd `id` $(whoami); name\n#$ -u root\n#PBS -u root",
            user,
            job_type=job_type,
            scheduler=scheduler,
            executable="sh",
            arguments=["-c", 'printf "%s\\0" "$@"; whoami >&2; exit "$EXIT"', "sh", *ARGUMENTS],
            environment={"EXIT": str(code)},
        )
        for code in (0, 3)
    ]
    for job in jobs:
        job.execute()
    for job in jobs:
        until(
            lambda job=job: fresh(job).status in ("Complete", "Error", "Aborted"),
            step=monitor.run_cycle,
            timeout=40,
            interval=0.2,
            what=lambda job=job: f"job {job.pk} to finish (is {fresh(job).status})",
        )
    return fresh(jobs[0]), fresh(jobs[1])


def check_run(monitor: Monitor, ok: Job, bad: Job, key: str) -> None:
    assert ok.status == "Complete", ok.status_message
    assert bad.status == "Error" and "exited with code 3" in bad.status_message
    logs = ok.get_logs()
    assert logs["stdout"].split("\0")[:-1] == ARGUMENTS
    assert logs["stderr"] == "offload-ssh\n"
    engine = monitor.engines[key]
    assert isinstance(engine, BatchSchedulerEngine) and isinstance(engine.runner, SSHRunner)
    script = engine.runner.read_text(
        f"{attempt_folder(engine.remote_workspace(ok.workspace), ok.pk, 1)}/job.sh"
    )
    assert script and "\n#$ -u" not in script and "\n#PBS -u" not in script
    assert engine.runner.connections_opened == 1


@pytest.mark.django_db
def test_sge_over_ssh_runs_jobs_verbatim_on_one_connection(
    user: Any,
    monitor: Monitor,
    until: Callable[..., Any],
    sshd: dict[str, str],  # noqa: F811
    sge_cluster: None,  # noqa: F811
    sge_lock: None,  # noqa: F811
) -> None:
    scheduler = create_scheduler(
        "sge-over-ssh",
        scheduler_type="sge",
        **ssh_options(sshd),
        # The remote commands need to know the cell.
        remote_environment={"SGE_ROOT": os.environ["SGE_ROOT"], "SGE_CELL": os.environ["SGE_CELL"]},
        queue="offload.q",
    )
    ok, bad = run_both(monitor, until, user, scheduler, "SGE")
    check_run(monitor, ok, bad, f"sge:{scheduler.pk}")
    assert ok.native_status == "exit 0" and bad.native_status == "exit 3"


@pytest.mark.django_db
def test_pbs_over_ssh_runs_jobs_verbatim_on_one_connection(
    user: Any,
    monitor: Monitor,
    until: Callable[..., Any],
    sshd: dict[str, str],  # noqa: F811
    pbs_commands: None,  # noqa: F811
    slurm_lock: None,  # noqa: F811
) -> None:
    scheduler = create_scheduler(
        "pbs-over-ssh",
        scheduler_type="pbs",
        **ssh_options(sshd),
        remote_environment={"SLURM_CONF": os.environ["SLURM_CONF"]},
        bin=pbs_bin(),
        slurm_wrappers=True,
    )
    ok, bad = run_both(monitor, until, user, scheduler, "PBS")
    check_run(monitor, ok, bad, f"pbs:{scheduler.pk}")
    assert ok.native_status == "C (exit 0)" and bad.native_status == "C (exit 3)"
