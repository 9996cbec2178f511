"""``show_detailed_status``: Various jobs show a progress bar of their tasks' statuses and workflows
their DAG (a server-rendered SVG, each node coloured by its status), in the jobs table and on the
job page, from a fabricated ``engine_state`` (what the monitor stores)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from offload import JobManager
from offload.models import Job
from offload.web import detailed_status

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]

TASKS = {
    "0": {"status": "COM", "native_status": "COMPLETED", "exit_code": 0},
    "1": {"status": "COM", "native_status": "COMPLETED", "exit_code": 0},
    "2": {"status": "RUN", "native_status": "RUNNING", "exit_code": None},
    "3": {"status": "ERR", "native_status": "FAILED", "exit_code": 1},
}
NODES = {
    "prepare": {"status": "COM", "parents": [], "native_status": "done", "retries": 0},
    "left": {"status": "RUN", "parents": ["prepare"], "native_status": "running"},
    "right": {"status": "ERR", "parents": ["prepare"], "native_status": "failed"},
    "merge <&>": {"status": "PEN", "parents": ["left", "right"]},
    "report": {"status": "PEN", "parents": ["merge <&>", "prepare"]},
}


def _job(user: Any, status: str, state: dict[str, Any], job_type: str = "BASIC") -> Job:
    job = JobManager("detail_app").create_job(f"{job_type} job", user, job_type=job_type)
    job.save()
    Job.objects.filter(pk=job.pk).update(_status=status, engine_state=state)
    return Job.objects.get(pk=job.pk)


@pytest.fixture
def alice(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


def test_bar_counts_statuses_in_order() -> None:
    segments = detailed_status.bar(TASKS)
    assert [(s.code, s.count) for s in segments] == [("COM", 2), ("RUN", 1), ("ERR", 1)]
    assert [s.percent for s in segments] == [50.0, 25.0, 25.0]
    odd = detailed_status.bar({"a": {"status": "weird"}, "b": {}, "c": {"status": "Complete"}})
    assert [(s.code, s.count) for s in odd] == [("COM", 1), ("OTH", 2)]


def test_layers_of_a_dag() -> None:
    rows = detailed_status.layers(NODES)
    assert rows == [["prepare"], ["left", "right"], ["merge <&>"], ["report"]]


def test_layers_survive_cycles_and_unknown_parents() -> None:
    nodes = {
        "a": {"parents": ["ghost"]},
        "b": {"parents": ["c"]},
        "c": {"parents": ["b"]},
        "d": {"parents": ["a", "a"]},
    }
    rows = detailed_status.layers(nodes)
    assert rows[0] == ["a"] and rows[1] == ["d"] and sorted(rows[2]) == ["b", "c"]
    svg = str(detailed_status.dag_svg(nodes))
    assert svg.count('class="node"') == 4 and "stroke-dasharray" in svg


def test_dag_svg_escapes_and_colours() -> None:
    svg = str(detailed_status.dag_svg(NODES, title="Workflow <x>"))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<x>" not in svg and "Workflow &lt;x&gt;" in svg
    assert 'data-node="merge &lt;&amp;&gt;"' in svg and "merge <&>" not in svg
    fills = dict(re.findall(r'data-node="([^"]+)" data-status-code="(\w+)"', svg))
    assert fills == {
        "left": "RUN",
        "merge &lt;&amp;&gt;": "PEN",
        "prepare": "COM",
        "report": "PEN",
        "right": "ERR",
    }
    assert svg.count("marker-end") == 6  # one arrow per edge
    assert detailed_status.COLOURS["ERR"][0] in svg
    assert "<script" not in svg and "http" not in svg.replace("http://www.w3.org/2000/svg", "")


def test_table_shows_a_bar_for_various_jobs_only(alice: Client, user: Any) -> None:
    various = _job(user, "VAR", {"tasks": TASKS})
    running = _job(user, "RUN", {"tasks": TASKS})
    html = alice.get("/jobs/").content.decode()
    row = html[html.index(f'id="job-{various.pk}"') :]
    row = row[: row.index("</tr>")]
    assert 'class="offload-progress"' in row
    assert 'aria-label="4 tasks: 2 Complete, 1 Running, 1 Error"' in row
    assert "width: 50.0%" in row
    other = html[html.index(f'id="job-{running.pk}"') :]
    assert "offload-progress" not in other[: other.index("</tr>")]


def test_table_draws_a_workflows_dag(alice: Client, user: Any) -> None:
    flow = _job(user, "RUN", {"nodes": NODES}, job_type="CONDORWORKFLOW")
    html = alice.get("/jobs/").content.decode()
    row = html[html.index(f'id="job-{flow.pk}"') :]
    row = row[: row.index("</tr>")]
    assert "<svg" in row and "Workflow (5 nodes)" in row


def test_table_loads_engine_states_in_one_query(alice: Client, user: Any) -> None:
    for _ in range(3):
        _job(user, "VAR", {"tasks": TASKS})
    with CaptureQueriesContext(connection) as few:
        alice.get("/jobs/")
    for _ in range(20):
        _job(user, "VAR", {"tasks": TASKS})
        _job(user, "RUN", {"nodes": NODES}, job_type="CONDORWORKFLOW")
    with CaptureQueriesContext(connection) as many:
        html = alice.get("/jobs/").content.decode()
    assert html.count('class="offload-progress"') == 43
    assert len(many.captured_queries) == len(few.captured_queries)


def test_job_page_shows_tasks_and_dag(alice: Client, user: Any) -> None:
    tasks = _job(user, "RUN", {"tasks": TASKS})
    html = alice.get(f"/jobs/{tasks.pk}/").content.decode()
    assert '<h2 id="sub-jobs">Tasks</h2>' in html and "2 Complete" in html
    flow = _job(user, "VAR", {"nodes": NODES}, job_type="CONDORWORKFLOW")
    html = alice.get(f"/jobs/{flow.pk}/").content.decode()
    assert '<h2 id="sub-jobs">Workflow</h2>' in html
    assert '<div class="dag" id="dag"><svg' in html
    assert "right: Error (failed)" in html
    plain = _job(user, "RUN", {})
    assert 'id="sub-jobs"' not in alice.get(f"/jobs/{plain.pk}/").content.decode()


def test_a_huge_workflow_is_summarised(alice: Client, user: Any) -> None:
    nodes = {f"n{i}": {"status": "COM", "parents": [f"n{i - 1}"] if i else []} for i in range(500)}
    flow = _job(user, "RUN", {"nodes": nodes}, job_type="CONDORWORKFLOW")
    html = alice.get(f"/jobs/{flow.pk}/").content.decode()
    assert "too many nodes to draw (500)" in html and "<svg" not in html
