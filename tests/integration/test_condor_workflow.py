"""CONDORWORKFLOW jobs (HTCondor DAGMan) through the monitor, on the pool of scripts/start-htcondor:
a diamond A → (B, C) → D with scripts, variables, a throttle and retries that succeeds; one whose
node fails beyond its retries; graphs refused before anything is submitted.

Like test_condor.py, these run in the SQLite phase only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_condor import condor_lock, condor_pool, remote_folder  # noqa: F401 (fixtures)
from tests import dbtools

from offload import CondorWorkflow, CondorWorkflowJobNode, JobManager
from offload.engines.base import attempt_subpath
from offload.errors import InvalidJobError
from offload.models import Job, JobIntent
from offload.monitor import Monitor

pytestmark = [
    pytest.mark.usefixtures("offload_home", "condor_pool"),
    pytest.mark.skipif(
        dbtools.database_kind() == "postgres",
        reason="HTCondor tests run once, in the SQLite phase (they test the engine, not the database)",
    ),
]


def fresh(job: Job) -> Job:
    return Job.objects.get(pk=job.pk)


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    m = Monitor("condor-dag-test-monitor")
    yield m
    m.shutdown()


def workflow(user: Any) -> CondorWorkflow:
    job = JobManager("condor_dag_app").create_job("dag {id}", user, job_type="CONDORWORKFLOW")
    assert isinstance(job, CondorWorkflow)
    job.save()
    return job


def step(text: str, code: int = 0) -> dict[str, Any]:
    return {
        "executable": "/bin/sh",
        "arguments": ["-c", f"echo {text}; echo {text} >> order.txt; exit {code}"],
    }


def run_until(
    monitor: Monitor, until: Callable[..., Any], job: Job, *statuses: str, seen: set[str]
) -> Job:
    def reached() -> bool:
        status = fresh(job).status
        seen.add(status)
        return status in statuses

    until(reached, step=monitor.run_cycle, timeout=120, interval=0.3, what=f"workflow {job.pk}")
    return fresh(job)


@pytest.mark.django_db
def test_a_diamond_workflow_runs_its_nodes_in_order(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    dag = workflow(user)
    a = CondorWorkflowJobNode("A", dag, **step("A"), variables={"greeting": 'say "hi"'})
    a.save()
    b = CondorWorkflowJobNode("B", dag, **step("B"), category="middle", retry=1)
    b.add_parent(a)
    b.save()
    c = CondorWorkflowJobNode(
        "C",
        dag,
        **step("C"),
        category="middle",
        pre_script="/bin/true",
        post_script="/bin/sh",
        post_script_args=["-c", "exit", "$RETURN"],
    )
    c.add_parent(a)
    c.save()
    d = CondorWorkflowJobNode("D", dag, **step("D"), parents=["B", "C"])
    d.save()
    dag.add_max_jobs_throttle("middle", 1)
    assert [n.name for n in fresh(dag).nodes] == ["A", "B", "C", "D"]  # type: ignore[attr-defined]
    assert fresh(dag).get_job("D").parents == ["B", "C"]  # type: ignore[attr-defined]
    dag.execute()
    seen: set[str] = set()
    done = run_until(
        monitor, until, dag, "Various-Complete", "Complete", "Error", "Aborted", seen=seen
    )
    assert done.status in ("Various-Complete", "Complete"), done.status_message
    assert "Various" in seen
    nodes = done.engine_state["nodes"]
    assert {name: node["status"] for name, node in nodes.items()} == dict.fromkeys("ABCD", "COM")
    assert nodes["D"]["parents"] == ["B", "C"]
    order = (remote_folder(dag) / "order.txt").read_text().split()
    assert order[0] == "A" and order[-1] == "D" and sorted(order[1:3]) == ["B", "C"]
    logs = done.get_logs()
    assert "EXITING WITH STATUS 0" in logs["dagman.out"]
    assert logs["A.stdout"] == "A\n" and logs["D.stdout"] == "D\n"
    folder = remote_folder(dag) / attempt_subpath(dag.pk, 1)
    text = (folder / "workflow.dag").read_text()
    assert "MAXJOBS middle 1\n" in text and "PARENT B C CHILD D\n" in text
    assert 'VARS A greeting="say \\"hi\\""\n' in text


@pytest.mark.django_db
def test_a_node_that_fails_beyond_its_retries_is_an_error_naming_it(
    user: Any, monitor: Monitor, until: Callable[..., Any]
) -> None:
    dag = workflow(user)
    CondorWorkflowJobNode("first", dag, **step("first")).save()
    CondorWorkflowJobNode("broken", dag, **step("broken", 3), retry=1, parents=["first"]).save()
    CondorWorkflowJobNode("never", dag, **step("never"), parents=["broken"]).save()
    dag.execute()
    done = run_until(monitor, until, dag, "Error", "Complete", "Various-Complete", seen=set())
    assert done.status == "Error", done.status_message
    assert "broken" in done.status_message
    nodes = done.engine_state["nodes"]
    assert nodes["broken"]["status"] == "ERR" and nodes["broken"]["retries"] == 1
    assert nodes["first"]["status"] == "COM"
    assert nodes["never"]["status"] != "COM"
    assert (remote_folder(dag) / "order.txt").read_text().split() == ["first", "broken", "broken"]


@pytest.mark.django_db
def test_cycles_and_unknown_parents_are_refused_naming_the_nodes(user: Any) -> None:
    dag = workflow(user)
    CondorWorkflowJobNode("A", dag, **step("A"), parents=["C"]).save()
    CondorWorkflowJobNode("B", dag, **step("B"), parents=["A"]).save()
    CondorWorkflowJobNode("C", dag, **step("C"), parents=["B"]).save()
    with pytest.raises(InvalidJobError) as info:
        dag.execute()
    assert info.value.field == "nodes"
    assert "cycle" in str(info.value) and all(n in str(info.value) for n in "ABC")

    other = workflow(user)
    CondorWorkflowJobNode("A", other, **step("A"), parents=["ghost"]).save()
    with pytest.raises(InvalidJobError) as info:
        other.execute()
    assert info.value.field == "nodes.A.parents" and "ghost" in str(info.value)

    empty = workflow(user)
    with pytest.raises(InvalidJobError) as info:
        empty.execute()
    assert info.value.field == "nodes"

    bad = workflow(user)
    CondorWorkflowJobNode(
        "A", bad, **step("A"), pre_script="/bin/echo", pre_script_args=["a b"]
    ).save()
    with pytest.raises(InvalidJobError) as info:
        bad.execute()
    assert info.value.field == "nodes.A.pre_script_args[0]"
    for job in (dag, other, empty, bad):
        assert not JobIntent.objects.filter(job_id=job.pk).exists()
