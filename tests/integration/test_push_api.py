"""``POST /jobs/api/push``: batched pushed status changes (what the Dask scheduler plugin sends),
through the real URL configuration with an API token. No scheduler is needed: the endpoint only
writes through offload.store."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from offload import JobManager
from offload.models import IntentAction, Job, JobIntent
from offload.web.access import create_api_token

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]

URL = "/jobs/api/push"


def submitted(user: Any, native_id: str = "", name: str = "job") -> Job:
    """A DaskJob as the monitor leaves it after submitting (no scheduler is involved here)."""
    job = JobManager("push_app").create_job(name, user, job_type="DASK")
    job.save()
    Job.objects.filter(pk=job.pk).update(_status="SUB", attempt=1, native_id=native_id)
    return Job.objects.get(pk=job.pk)


def post(token: str, body: Any) -> Any:
    return Client().post(
        URL,
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.fixture
def token(user: Any) -> str:
    return create_api_token(user, "dask plugin")[1]


def test_running_is_applied_as_a_push_by_offload_key_and_by_native_id(
    user: Any, token: str
) -> None:
    one = submitted(user)
    two = submitted(user, native_id="add-5f1c")
    response = post(
        token,
        {
            "engine": "dask",
            "changes": [
                {"key": f"offload-{one.pk}-1", "native_status": "processing", "status": "Running"},
                {"key": "add-5f1c", "native_status": "processing", "status": "RUN"},
            ],
        },
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["applied"] == 2
    assert [r["outcome"] for r in body["results"]] == ["applied", "applied"]
    for job in (one, two):
        fresh = Job.objects.get(pk=job.pk)
        assert fresh.status == "Running"
        assert fresh.native_status == "processing"
        assert fresh.start_time is not None
        assert fresh.events[-1].source == "push"


def test_an_ending_is_left_to_the_monitor_one_refresh_per_scheduler(user: Any, token: str) -> None:
    jobs = [submitted(user, name=f"job {i}") for i in range(3)]
    Job.objects.filter(pk=jobs[0].pk).update(_status="RUN")
    changes = [
        {"key": f"offload-{jobs[0].pk}-1", "native_status": "memory"},
        {"key": f"offload-{jobs[1].pk}-1", "native_status": "erred", "message": "ValueError: x"},
        {"key": f"offload-{jobs[2].pk}-1", "native_status": "forgotten"},
    ]
    response = post(token, {"changes": changes})
    assert response.status_code == 200, response.content
    assert [r["outcome"] for r in response.json()["results"]] == ["refresh"] * 3
    assert Job.objects.get(pk=jobs[0].pk).status == "Running"  # never Complete from a push
    erred = Job.objects.get(pk=jobs[1].pk)
    assert erred.status == "Submitted"
    assert (erred.native_status, erred.status_message) == ("erred", "ValueError: x")
    # All three run on one scheduler: one refresh makes the monitor poll it.
    refreshes = JobIntent.objects.filter(action=IntentAction.REFRESH, done_at__isnull=True)
    assert refreshes.count() == 1


def test_a_push_never_takes_a_job_back_or_reports_an_earlier_attempt(user: Any, token: str) -> None:
    done = submitted(user, name="done")
    Job.objects.filter(pk=done.pk).update(_status="COM")
    again = submitted(user, name="resubmitted")
    Job.objects.filter(pk=again.pk).update(attempt=2)
    response = post(
        token,
        {
            "changes": [
                {"key": f"offload-{done.pk}-1", "native_status": "processing", "status": "Running"},
                {"key": f"offload-{done.pk}-1", "native_status": "memory"},
                {
                    "key": f"offload-{again.pk}-1",
                    "native_status": "processing",
                    "status": "Running",
                },
            ]
        },
    )
    assert response.status_code == 200, response.content
    assert [r["outcome"] for r in response.json()["results"]] == ["same", "same", "superseded"]
    assert Job.objects.get(pk=done.pk).status == "Complete"
    assert Job.objects.get(pk=again.pk).status == "Submitted"
    assert not JobIntent.objects.filter(action=IntentAction.REFRESH).exists()


def test_other_users_jobs_read_as_unknown_and_a_request_naming_none_is_404(
    user: Any, other_user: Any, token: str
) -> None:
    theirs = submitted(other_user, native_id="their-key")
    mine = submitted(user)
    unknown_body = None
    for key in (f"offload-{theirs.pk}-1", "their-key", "offload-999999-1", "no-such-key"):
        response = post(token, {"changes": [{"key": key, "native_status": "processing"}]})
        assert response.status_code == 404
        if unknown_body is None:
            unknown_body = response.json()
        assert response.json() == unknown_body  # nothing tells "not yours" from "not there"
    mixed = post(
        token,
        {
            "changes": [
                {
                    "key": f"offload-{theirs.pk}-1",
                    "native_status": "processing",
                    "status": "Running",
                },
                {"key": f"offload-{mine.pk}-1", "native_status": "processing", "status": "Running"},
            ]
        },
    )
    assert mixed.status_code == 200
    assert mixed.json()["results"][0] == {
        "key": f"offload-{theirs.pk}-1",
        "job": None,
        "outcome": "unknown",
    }
    assert Job.objects.get(pk=theirs.pk).status == "Submitted"
    assert Job.objects.get(pk=mine.pk).status == "Running"


def test_a_view_only_share_may_not_push_but_an_acting_one_may(user: Any, other_user: Any) -> None:
    from django.contrib.auth.models import Group

    from offload.web import access

    for name in ("viewers", "actors"):
        Group.objects.create(name=name).user_set.add(other_user)
    viewed = submitted(user, name="viewed")
    access.set_group_permissions(viewed, {"viewers": "view"})
    acted = submitted(user, name="acted")
    access.set_group_permissions(acted, {"actors": "act"})
    token = create_api_token(other_user, "theirs")[1]
    change = {"native_status": "processing", "status": "Running"}
    assert (
        post(token, {"changes": [{"key": f"offload-{viewed.pk}-1", **change}]}).status_code == 404
    )
    response = post(token, {"changes": [{"key": f"offload-{acted.pk}-1", **change}]})
    assert response.status_code == 200
    assert Job.objects.get(pk=viewed.pk).status == "Submitted"
    assert Job.objects.get(pk=acted.pk).status == "Running"


def test_authentication_is_required(user: Any) -> None:
    job = submitted(user)
    body = {"changes": [{"key": f"offload-{job.pk}-1", "native_status": "processing"}]}
    assert post("ofl_not-a-token", body).status_code == 401
    response = Client().post(URL, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ([], "changes"),
        ([{"native_status": "processing"}], "changes.0.key"),
        ([{"key": "offload-1-1"}], "changes.0.native_status"),
        ([{"key": "x" * 256, "native_status": "memory"}], "changes.0.key"),
        ([{"key": "k", "native_status": "memory", "status": "Complete"}], "changes.0.status"),
        ([{"key": "k", "native_status": "memory", "status": "Results-Ready"}], "changes.0.status"),
        ([{"key": "k", "native_status": "memory", "status": "no such"}], "changes.0.status"),
        ([{"key": "k\x00", "native_status": "memory"}], "changes.0.key"),
        ([{"key": "k", "native_status": "m", "message": 5}], "changes.0.message"),
    ],
)
def test_bad_input_is_422_naming_the_field(token: str, changes: Any, field: str) -> None:
    response = post(token, {"changes": changes})
    assert response.status_code == 422, response.content
    assert response.json()["field"] == field
    assert field in response.json()["detail"]


def test_too_many_changes_and_an_unknown_engine_are_refused(token: str) -> None:
    many = [{"key": f"k{i}", "native_status": "memory"} for i in range(1001)]
    response = post(token, {"changes": many})
    assert response.status_code == 422
    assert response.json()["field"] == "changes"
    response = post(token, {"engine": "nope", "changes": many[:1]})
    assert response.status_code == 422
    assert response.json()["field"] == "engine"
