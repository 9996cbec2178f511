"""HTCondor workflows, the pure parts: node and graph checks, the DAG file, and DAGMan's node status
file (captured from the test pool, HTCondor 23.9)."""

from __future__ import annotations

from typing import Any

import pytest

from offload.engines.base import JobSpec
from offload.engines.condor import CondorEngine
from offload.engines.condor_dag import find_cycle, parse_node_status, validate_nodes
from offload.errors import InvalidJobError
from offload.workflow_nodes import CondorWorkflowJobNode


def node(name: str, **settings: Any) -> dict[str, Any]:
    return {"name": name, "executable": "/bin/true", **settings}


def test_cycles_are_found_with_their_nodes() -> None:
    assert find_cycle({"A": [], "B": ["A"], "C": ["A", "B"]}) == []
    cycle = find_cycle({"A": ["C"], "B": ["A"], "C": ["B"]})
    assert cycle[0] == cycle[-1] and set(cycle) == {"A", "B", "C"}
    assert find_cycle({"A": ["A"]}) == ["A", "A"]


@pytest.mark.parametrize(
    ("nodes", "field", "words"),
    [
        ([], "nodes", ["at least one"]),
        ([node("A", parents=["B"]), node("B", parents=["A"])], "nodes", ["cycle", "A", "B"]),
        ([node("A", parents=["ghost"])], "nodes.A.parents", ["ghost"]),
        ([node("A"), node("A")], "nodes.A", ["two nodes"]),
        ([node("a b")], "nodes[0].name", []),
        ([node("PARENT")], "nodes[0].name", []),
        (
            [node("A", pre_script="/bin/x", pre_script_args=["two words"])],
            "nodes.A.pre_script_args[0]",
            [],
        ),
        ([node("A", post_script="/bin/x\nJOB B b.sub")], "nodes.A.post_script", []),
        ([node("A", pre_script_args=["x"])], "nodes.A.pre_script_args", []),
        ([node("A", variables={"queue_x": "1"})], "nodes.A.variables", []),
        ([node("A", variables={"x": "a\nJOB B b"})], "nodes.A.variables.x", []),
        ([node("A", retry="twice")], "nodes.A.retry", []),
        ([node("A", retry_unless_exit_value=3)], "nodes.A.retry_unless_exit_value", []),
        ([node("A", category="a b")], "nodes.A.category", []),
    ],
)
def test_bad_graphs_and_nodes_are_refused(
    nodes: list[dict[str, Any]], field: str, words: list[str]
) -> None:
    with pytest.raises(InvalidJobError) as info:
        validate_nodes(nodes, None)
    assert info.value.field == field
    assert all(w in str(info.value) for w in words)


def test_a_node_job_is_checked_as_a_condor_job() -> None:
    with pytest.raises(InvalidJobError) as info:
        CondorEngine({}).validate({"nodes": [node("A", attributes={"queue": "2"})]})
    assert info.value.field == "nodes.A.attributes.queue"


def test_the_dag_file_and_node_submit_files() -> None:
    engine = CondorEngine({})
    params = engine.validate(
        {
            "nodes": [
                node("A", variables={"msg": 'say "hi" \\ bye'}, retry=2, retry_unless_exit_value=9),
                node("B", parents=["A"], pre_script="/bin/pre", pre_script_args=["$JOB", 1]),
                node("C", parents=["A"], category="io", priority=5, noop=True),
                node("D", parents=["B", "C"], abort_dag_on=3, abort_dag_on_return_value=1),
            ],
            "max_jobs": {"io": 2},
        }
    )
    # Checking again changes nothing (the monitor checks what the store kept).
    assert engine.validate(params) == params
    spec = JobSpec(5, 2, "CONDORWORKFLOW", "wf", "/w/5", params)
    files = engine.render_workflow(spec, params)
    dag = files["/w/5/.offload/job-5/attempt-2/workflow.dag"]
    for line in (
        "JOB A /w/5/.offload/job-5/attempt-2/A.sub",
        'VARS A msg="say \\"hi\\" \\\\ bye"',
        "RETRY A 2 UNLESS-EXIT 9",
        "SCRIPT PRE B /bin/pre $JOB 1",
        "JOB C /w/5/.offload/job-5/attempt-2/C.sub NOOP",
        "CATEGORY C io",
        "PRIORITY C 5",
        "ABORT-DAG-ON D 3 RETURN 1",
        "PARENT A CHILD B",
        "PARENT B C CHILD D",
        "MAXJOBS io 2",
        "NODE_STATUS_FILE /w/5/.offload/job-5/attempt-2/workflow.status 2",
    ):
        assert line + "\n" in dag
    submit = files["/w/5/.offload/job-5/attempt-2/B.sub"]
    assert "output = /w/5/.offload/job-5/attempt-2/B.stdout.$(Process).log\n" in submit
    assert "+OffloadKey" not in submit and '+OffloadNode = "offload-5-2/B"' in submit
    command = engine.submit_command(spec, "/w/5/.offload/job-5/attempt-2/workflow.dag")
    assert command[0] == "condor_submit_dag"
    assert '+OffloadKey = "offload-5-2"' in command
    with pytest.raises(InvalidJobError):
        engine.render_workflow(
            JobSpec(5, 1, "CONDORWORKFLOW", "wf", "/w/my folder", params), params
        )


# Written by DAGMan for a workflow first → broken (retry 1, fails) → never.
NODE_STATUS = """[
  Type = "DagStatus";
  DagFiles = {
    "/w/1/.offload/job-1/attempt-1/workflow.dag"
  };
  Timestamp = 1795278826; /* "Sat Nov 21 16:33:46 2026" */
  DagStatus = 6; /* "STATUS_ERROR (failed)" */
  NodesTotal = 3;
  NodesDone = 1;
  NodesFailed = 1;
  JobProcsIdle = 0; /* includes held */
]
[
  Type = "NodeStatus";
  Node = "first";
  NodeStatus = 5; /* "STATUS_DONE" */
  StatusDetails = "";
  RetryCount = 0;
  JobProcsQueued = 0;
  JobProcsHeld = 0;
]
[
  Type = "NodeStatus";
  Node = "broken";
  NodeStatus = 6; /* "STATUS_ERROR" */
  StatusDetails = "Job proc (45.0.0) failed with status 3 (after 1 node retries)";
  RetryCount = 1;
  JobProcsQueued = 0;
  JobProcsHeld = 0;
]
[
  Type = "NodeStatus";
  Node = "never";
  NodeStatus = 7; /* "STATUS_FUTILE" */
  StatusDetails = "Had an ancestor node fail";
  RetryCount = 0;
  JobProcsQueued = 0;
  JobProcsHeld = 0;
]
[
  Type = "StatusEnd";
  EndTime = 1795278826; /* "Sat Nov 21 16:33:46 2026" */
  NextUpdate = 0; /* "none" */
]
"""


def test_node_status_file_is_read() -> None:
    nodes = parse_node_status(NODE_STATUS, {"broken": ["first"], "never": ["broken"]})
    assert nodes["first"] == {
        "status": "COM",
        "native_status": "DONE",
        "parents": [],
        "exit_code": 0,
        "retries": 0,
    }
    assert nodes["broken"]["status"] == "ERR" and nodes["broken"]["exit_code"] == 3
    assert nodes["broken"]["retries"] == 1 and nodes["broken"]["parents"] == ["first"]
    assert nodes["never"]["status"] == "ABT"
    assert nodes["never"]["native_status"] == "FUTILE (Had an ancestor node fail)"
    assert parse_node_status("", {}) == {}


def test_nodes_without_a_workflow_keep_their_settings() -> None:
    a = CondorWorkflowJobNode("A", executable="/bin/true", retry=2)
    b = CondorWorkflowJobNode("B", parents=["A"])
    b.add_parent(a)
    b.set_attribute("request_memory", 10)
    assert b.parents == ["A"] and b.get_attribute("request_memory") == 10
    assert a.retry == 2 and a.pre_script is None
    assert CondorWorkflowJobNode.from_dict(b.to_dict()).to_dict() == b.to_dict()
    with pytest.raises(TypeError):
        CondorWorkflowJobNode("C", retries=2)
    with pytest.raises(ValueError):
        a.save()


def test_a_submitted_workflow_starts_with_every_node_pending() -> None:
    engine = CondorEngine({})
    spec = JobSpec(
        1, 1, "CONDORWORKFLOW", "w", "/w", {"nodes": [node("A"), node("B", parents=["A"])]}
    )
    state = engine.submission_state(spec)
    assert state["workflow"] is True and state["graph"] == {"A": [], "B": ["A"]}
    assert {n: s["status"] for n, s in state["nodes"].items()} == {"A": "PEN", "B": "PEN"}
    assert engine.submission_state(
        JobSpec(2, 1, "CONDOR", "j", "/w", {"executable": "/x", "num_jobs": 4})
    ) == {"procs": 4}
