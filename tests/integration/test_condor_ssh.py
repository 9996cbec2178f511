"""The CONDOR engine over SSH: a scheduler record made with ``create_condor_scheduler`` whose HTCondor
commands run as offload-ssh through the sshd of scripts/start-sshd, in front of the pool of
scripts/start-htcondor (its client-bin/ commands, on the remote PATH). Workspaces are staged below
the pool's ssh/ folder and outputs come back when the job ends; a CondorWorkflow (DAGMan) too.

Like test_condor.py, these run in the SQLite phase only.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_condor import condor_lock, condor_pool, run_to, start_htcondor  # noqa: F401 (fixtures)
from test_ssh import sshd  # noqa: F401 (fixture)
from tests import dbtools
from tests.integration import engine_support
from tests.integration.engine_support import fresh

from offload import CondorWorkflow, CondorWorkflowJobNode, JobManager
from offload.engines.condor import CondorEngine
from offload.monitor import Monitor
from offload.schedulers import create_condor_scheduler, get_scheduler
from offload.transport.ssh import SSHRunner

pytestmark = [
    pytest.mark.skipif(
        dbtools.database_kind() == "postgres",
        reason="HTCondor tests run once, in the SQLite phase (they test the engine, not the database)",
    ),
]


@pytest.fixture
def condor_over_ssh(sshd: dict[str, str], condor_pool: None) -> Any:  # noqa: F811
    """A condor scheduler record reached over SSH as offload-ssh."""
    # Again, now that offload-ssh exists: the pool learns its uid, its client commands are written.
    start_htcondor()
    return create_condor_scheduler(
        "condor-over-ssh",
        host=sshd["host"],
        username=sshd["user"],
        private_key_path=sshd["key"],
        port=int(sshd["port"]),
        known_hosts=sshd["known_hosts"],
        # Its own folder: job ids (so workspace paths) start again in every test database.
        remote_workspace_root=f"{os.environ['OFFLOAD_CONDOR_SSH_ROOT']}/{uuid.uuid4().hex}",
        remote_environment={"PATH": f"{os.environ['OFFLOAD_CONDOR_CLIENT_BIN']}:/usr/bin:/bin"},
    )


monitor = engine_support.monitor_fixture("condor-ssh-test-monitor")


@pytest.mark.django_db
@pytest.mark.usefixtures("offload_home")
def test_condor_over_ssh_runs_jobs_stages_files_on_one_connection(
    user: Any, monitor: Monitor, until: Callable[..., Any], condor_over_ssh: Any
) -> None:
    assert get_scheduler("condor-over-ssh") == condor_over_ssh
    assert condor_over_ssh.scheduler_type == "condor"
    manager = JobManager("condor_ssh_app")
    args = ["a b", "it's", '"dq"', "$HOME", "$(whoami)", "`id`", ";", ""]
    jobs = []
    for code in (0, 3):
        job = manager.create_job(
            "over ssh {id}",
            user,
            job_type="CONDOR",
            scheduler=condor_over_ssh,
            executable="/bin/sh",
            arguments=[
                "-c",
                'cat input.txt; printf "%s|" "$@"; echo; echo result > output.txt; exit "$EXIT"',
                "sh",
                *args,
            ],
            environment={"EXIT": str(code)},
        )
        job.save()
        Path(job.workspace).mkdir(parents=True, exist_ok=True)
        (Path(job.workspace) / "input.txt").write_text(f"input of {job.pk}\n")
        jobs.append(job)
    started = time.monotonic()
    for job in jobs:
        job.execute()
    ok = run_to(monitor, until, jobs[0], "Complete", "Error")
    bad = run_to(monitor, until, jobs[1], "Complete", "Error")
    elapsed = time.monotonic() - started
    assert ok.status == "Complete", ok.status_message
    assert bad.status == "Error" and "exited with code 3" in bad.status_message
    logs = ok.get_logs()
    assert logs["stdout"] == f"input of {ok.pk}\n" + "".join(f"{a}|" for a in args) + "\n"
    assert "Job terminated" in logs["condor_log"]
    # The job ran in the remote workspace; its output came back into the local one.
    engine = monitor.engines[f"condor:{condor_over_ssh.pk}"]
    assert isinstance(engine, CondorEngine) and isinstance(engine.runner, SSHRunner)
    remote = engine.remote_workspace(ok.workspace)
    assert remote.startswith(os.environ["OFFLOAD_CONDOR_SSH_ROOT"] + "/")
    until(
        lambda: (Path(ok.workspace) / "output.txt").exists(),
        step=monitor.run_cycle,
        timeout=30,
        what="the output to be copied back",
    )
    assert (Path(ok.workspace) / "output.txt").read_text() == "result\n"
    # Submissions, polls, staging and log reads of the whole run shared one connection.
    assert engine.runner.connections_opened == 1
    assert elapsed < 60


@pytest.mark.django_db
@pytest.mark.usefixtures("offload_home")
def test_condor_over_ssh_remove_and_hold(
    user: Any, monitor: Monitor, until: Callable[..., Any], condor_over_ssh: Any
) -> None:
    manager = JobManager("condor_ssh_app")
    job = manager.create_job(
        "sleeper {id}",
        user,
        job_type="CONDOR",
        scheduler=condor_over_ssh,
        executable="/bin/sleep",
        arguments=["120"],
    )
    job.execute()
    run_to(monitor, until, job, "Submitted", "Running")
    until(lambda: fresh(job).native_id, step=monitor.run_cycle, what="the job to be queued")
    job.pause()
    run_to(monitor, until, job, "Paused")
    job.resume()
    run_to(monitor, until, job, "Submitted", "Running")
    job.stop()
    done = run_to(monitor, until, job, "Aborted", "Error", "Complete")
    assert done.status == "Aborted"


@pytest.mark.django_db
@pytest.mark.usefixtures("offload_home")
def test_a_workflow_over_ssh_runs_its_nodes_in_order_and_its_files_come_back(
    user: Any, monitor: Monitor, until: Callable[..., Any], condor_over_ssh: Any
) -> None:
    """condor_submit_dag from client-bin, as the SSH user, outside the chroot; the schedd starts
    DAGMan inside it with the chroot's configuration (scripts/start-htcondor's dagman-bin shim)."""
    dag = JobManager("condor_ssh_app").create_job(
        "dag over ssh {id}", user, job_type="CONDORWORKFLOW", scheduler=condor_over_ssh
    )
    assert isinstance(dag, CondorWorkflow)
    dag.save()

    def step(text: str) -> dict[str, Any]:
        return {
            "executable": "/bin/sh",
            "arguments": ["-c", f"echo {text}; echo {text} >> order.txt"],
        }

    CondorWorkflowJobNode("A", dag, **step("A")).save()
    CondorWorkflowJobNode("B", dag, **step("B"), parents=["A"]).save()
    CondorWorkflowJobNode("C", dag, **step("C"), parents=["A"]).save()
    CondorWorkflowJobNode("D", dag, **step("D"), parents=["B", "C"]).save()
    dag.execute()
    until(
        lambda: fresh(dag).status in ("Various-Complete", "Complete", "Error", "Aborted"),
        step=monitor.run_cycle,
        timeout=90,
        interval=0.3,
        what=lambda: f"workflow {dag.pk} to end (is {fresh(dag).status})",
    )
    done = fresh(dag)
    assert done.status in ("Various-Complete", "Complete"), done.status_message
    nodes = done.engine_state["nodes"]
    assert {name: node["status"] for name, node in nodes.items()} == dict.fromkeys("ABCD", "COM")
    engine = monitor.engines[f"condor:{condor_over_ssh.pk}"]
    assert isinstance(engine, CondorEngine) and isinstance(engine.runner, SSHRunner)
    assert engine.remote_workspace(done.workspace).startswith(
        os.environ["OFFLOAD_CONDOR_SSH_ROOT"] + "/"
    )
    # The nodes' outputs and DAGMan's logs come back into the local workspace.
    order_file = Path(done.workspace) / "order.txt"
    until(
        lambda: order_file.exists(),
        step=monitor.run_cycle,
        timeout=30,
        what="the workflow's files to be copied back",
    )
    order = order_file.read_text().split()
    assert order[0] == "A" and order[-1] == "D" and sorted(order[1:3]) == ["B", "C"]
    logs = fresh(dag).get_logs()
    assert "EXITING WITH STATUS 0" in logs["dagman.out"]
    assert logs["D.stdout"] == "D\n"
    assert engine.runner.connections_opened == 1
