"""The REST API (``/jobs/api/``) on the real database: every endpoint, token and session auth,
the access rules (another user's job is a 404 everywhere), bad input naming the field, the
CLI's ``offload tokens create`` and the admin's token page."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.utils import timezone

from offload import JobManager
from offload.cli import run as cli_run
from offload.models import ApiToken, EventSource, IntentAction, Job, JobEvent, JobIntent, Scheduler
from offload.web.access import create_api_token, hash_token, user_for_token

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]

API = "/jobs/api"


def _job(user: Any, name: str = "job", *, app: str = "api_app", execute: bool = False) -> Job:
    job = JobManager(app).create_job(name, user, job_type="BASIC")
    job.save()
    if execute:
        job.execute()
    return job


class Api:
    """A client that sends a bearer token and JSON."""

    def __init__(self, token: str) -> None:
        self.client = Client(enforce_csrf_checks=True)
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, url: str, **params: Any) -> Any:
        return self.client.get(API + url, params, headers=self.headers)

    def post(self, url: str, body: Any = None) -> Any:
        data = json.dumps(body if body is not None else {})
        return self.client.post(
            API + url, data, content_type="application/json", headers=self.headers
        )

    def delete(self, url: str) -> Any:
        return self.client.delete(API + url, headers=self.headers)


def _api(user: Any) -> Api:
    return Api(create_api_token(user, "tests")[1])


@pytest.fixture
def alice_api(user: Any) -> Api:
    return _api(user)


@pytest.fixture
def bob_api(other_user: Any) -> Api:
    return _api(other_user)


@pytest.fixture
def staff_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("carol", password="pw-carol", is_staff=True)


@pytest.fixture
def creator(user: Any) -> Any:
    """alice, allowed to create jobs from a type (offload.add_job)."""
    user.user_permissions.add(
        Permission.objects.get(codename="add_job", content_type__app_label="offload")
    )
    return type(user).objects.get(pk=user.pk)


# -- authentication ---------------------------------------------------------------------------------
def test_tokens_are_stored_hashed_and_note_their_use(user: Any) -> None:
    record, token = create_api_token(user, "laptop")
    assert token.startswith("ofl_") and len(token) > 40
    assert record.key_hash == hash_token(token) and token not in record.key_hash
    assert record.last_used is None
    assert user_for_token(token) == user
    assert ApiToken.objects.get(pk=record.pk).last_used is not None
    assert user_for_token(token + "x") is None
    user.is_active = False
    user.save()
    assert user_for_token(token) is None


def test_no_or_bad_credentials_are_401(client: Client, user: Any) -> None:
    job = _job(user)
    assert client.get(f"{API}/jobs").status_code == 401
    bad = Api("ofl_not-a-token")
    for response in (
        bad.get("/jobs"),
        bad.get(f"/jobs/{job.pk}"),
        bad.post(f"/jobs/{job.pk}/cancel"),
    ):
        assert response.status_code == 401
    assert Job.objects.get(pk=job.pk).status == "Pending"


def test_session_auth_needs_csrf_for_unsafe_methods(user: Any) -> None:
    job = _job(user, execute=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    listing = client.get(f"{API}/jobs")
    assert listing.status_code == 200
    assert [item["id"] for item in listing.json()["items"]] == [job.pk]
    refused = client.post(f"{API}/jobs/{job.pk}/cancel")
    assert refused.status_code == 403
    assert Job.objects.get(pk=job.pk).status == "Submitted"
    client.get("/jobs/")  # the page sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    done = client.post(f"{API}/jobs/{job.pk}/cancel", headers={"X-CSRFToken": token})
    assert done.status_code == 200
    assert done.json()["status"] == "Aborted"


def test_cli_creates_tokens(user: Any, capsys: Any) -> None:
    assert cli_run(["tokens", "create", "alice", "--name", "ci", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["user"] == "alice" and out["name"] == "ci"
    assert user_for_token(out["token"]) == user
    assert cli_run(["tokens", "create", "nobody"]) == 1
    assert "user 'nobody' does not exist" in capsys.readouterr().err


def test_admin_creates_a_token_shown_once(
    client: Client, user: Any, django_user_model: Any
) -> None:
    admin = django_user_model.objects.create_superuser("root", password="pw-root")
    client.force_login(admin)
    assert client.get("/admin/offload/apitoken/add/").status_code == 200
    response = client.post(
        "/admin/offload/apitoken/add/", {"user": user.pk, "name": "from admin"}, follow=True
    )
    assert response.status_code == 200
    record = ApiToken.objects.get(name="from admin")
    text = response.content.decode()
    start = text.index("ofl_")
    token = text[start : start + 47]
    assert hash_token(token) == record.key_hash
    assert client.get("/admin/offload/apitoken/").status_code == 200


# -- access -----------------------------------------------------------------------------------------
def test_another_users_job_is_404_everywhere(alice_api: Api, other_user: Any) -> None:
    job = _job(other_user, "bob's", execute=True)
    for response in (
        alice_api.get(f"/jobs/{job.pk}"),
        alice_api.get(f"/jobs/{job.pk}/logs"),
        alice_api.get(f"/jobs/{job.pk}/events"),
        *(
            alice_api.post(f"/jobs/{job.pk}/{a}")
            for a in ("execute", "cancel", "pause", "resume", "resubmit")
        ),
        alice_api.delete(f"/jobs/{job.pk}"),
    ):
        assert response.status_code == 404, response.content
    assert alice_api.get("/jobs").json()["count"] == 0
    fresh = Job.objects.get(pk=job.pk)
    assert (fresh.status, fresh.deleted_at) == ("Submitted", None)
    # A job that does not exist looks the same.
    assert alice_api.get("/jobs/999999").status_code == 404


def test_group_members_see_and_act(alice_api: Api, user: Any, other_user: Any) -> None:
    team = Group.objects.create(name="team")
    job = JobManager("shared").create_job("shared", other_user, groups="team")
    job.save()
    assert alice_api.get(f"/jobs/{job.pk}").status_code == 404
    user.groups.add(team)
    assert alice_api.get(f"/jobs/{job.pk}").json()["user"] == "bob"
    assert alice_api.get("/jobs").json()["count"] == 1
    assert alice_api.get("/jobs", mine="true").json()["count"] == 0
    response = alice_api.post(f"/jobs/{job.pk}/cancel")
    assert response.status_code == 200
    event = JobEvent.objects.filter(job_id=job.pk).latest("id")
    assert (event.to_status, event.source, event.actor) == ("ABT", EventSource.USER, "alice")


def test_manage_all_jobs_and_staff_see_all(user: Any, other_user: Any, staff_user: Any) -> None:
    _job(user, "a")
    _job(other_user, "b")
    user.user_permissions.add(Permission.objects.get(codename="manage_all_jobs"))
    assert _api(user).get("/jobs").json()["count"] == 2
    assert _api(staff_user).get("/jobs").json()["count"] == 2
    assert _api(other_user).get("/jobs").json()["count"] == 1


# -- listing ----------------------------------------------------------------------------------------
def test_list_pages_filters_and_sorts(alice_api: Api, user: Any) -> None:
    manager = JobManager("listing")
    jobs = [manager.create_job(f"job {i:02d}", user) for i in range(12)]
    manager.bulk_create(jobs)
    running = _job(user, "special runner", app="other_app", execute=True)
    running.update_status("Running")
    page = alice_api.get("/jobs", limit=5, offset=0).json()
    assert page["count"] == 13 and page["limit"] == 5 and len(page["items"]) == 5
    assert page["items"][0]["id"] == running.pk  # newest first by default
    second = alice_api.get("/jobs", limit=5, offset=5).json()
    assert {i["id"] for i in second["items"]}.isdisjoint({i["id"] for i in page["items"]})
    assert alice_api.get("/jobs", status="Running").json()["count"] == 1
    assert alice_api.get("/jobs", status="RUN,PEN").json()["count"] == 13
    assert alice_api.get("/jobs", app="listing").json()["count"] == 12
    assert alice_api.get("/jobs", type="basic").json()["count"] == 13
    assert alice_api.get("/jobs", q="RUNNER").json()["items"][0]["id"] == running.pk
    names = [i["name"] for i in alice_api.get("/jobs", sort="name", limit=3).json()["items"]]
    assert names == ["job 00", "job 01", "job 02"]
    item = alice_api.get("/jobs", q="runner").json()["items"][0]
    assert item["status"] == "Running" and item["status_code"] == "RUN"
    assert item["app"] == "other_app" and item["type"] == "BASIC" and item["user"] == "alice"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10_000}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "Sleeping"}, "status"),
        ({"sort": "owner"}, "sort"),
        ({"q": "a\x00b"}, "q"),
    ],
)
def test_list_bad_input_is_422_naming_the_field(
    alice_api: Api, params: dict[str, Any], field: str
) -> None:
    response = alice_api.get("/jobs", **params)
    assert response.status_code == 422, response.content
    assert response.json()["field"] == field
    assert field in response.json()["detail"]


# -- create -----------------------------------------------------------------------------------------
def test_create_from_a_type_and_execute(creator: Any) -> None:
    api = _api(creator)
    response = api.post(
        "/jobs",
        {
            "name": "made by api {id}",
            "app": "scripts",
            "job_type": "LOCAL",
            "parameters": {"executable": "true", "arguments": ["--flag"]},
            "description": "via REST",
            "extended_properties": {"a": {"b": 1}},
            "execute": True,
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    job = Job.objects.get(pk=body["id"])
    assert body["name"] == f"made by api {job.pk}"
    assert (body["status"], body["type"], body["app"], body["user"]) == (
        "Submitted",
        "LOCAL",
        "scripts",
        "alice",
    )
    assert job.parameters["arguments"] == ["--flag"]
    intent = JobIntent.objects.get(job_id=job.pk)
    assert (intent.action, intent.requested_by) == (IntentAction.EXECUTE, "alice")
    saved_only = api.post("/jobs", {"name": "later", "job_type": "BASIC"})
    assert saved_only.status_code == 201 and saved_only.json()["status"] == "Pending"


def test_create_from_a_template(user: Any) -> None:
    from offload.manager import get_job_manager
    from offload.templates import JobTemplate

    manager = get_job_manager("templated")
    manager.register_template(JobTemplate("hello", "BASIC"))
    api = _api(user)
    response = api.post("/jobs", {"name": "from template", "app": "templated", "template": "hello"})
    assert response.status_code == 201, response.content
    assert response.json()["app"] == "templated"
    missing = api.post("/jobs", {"name": "x", "app": "templated", "template": "nope"})
    assert missing.status_code == 422 and missing.json()["field"] == "template"
    # Choosing what runs (a type, or parameters) needs offload.add_job.
    assert api.post("/jobs", {"name": "x", "job_type": "LOCAL"}).status_code == 403
    forced = api.post(
        "/jobs", {"name": "x", "app": "templated", "template": "hello", "parameters": {"a": 1}}
    )
    assert forced.status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 2000, "job_type": "BASIC"}, "name"),
        ({"name": "x"}, "job_type"),
        ({"name": "x", "job_type": "NOPE"}, "job_type"),
        ({"name": "x", "job_type": "BASIC", "template": "t"}, "template"),
        ({"name": "x", "job_type": "BASIC", "app": "../etc"}, "app"),
        ({"name": "x", "job_type": "LOCAL", "parameters": {"nope": 1}}, "parameters"),
        ({"name": "x", "job_type": "LOCAL", "parameters": {}}, "executable"),
        ({"name": "x", "job_type": "LOCAL", "parameters": {"executable": 5}}, "executable"),
        ({"name": "x", "job_type": "BASIC", "groups": ["not-mine"]}, "groups"),
        ({"name": "x", "job_type": "BASIC", "scheduler": "nowhere"}, "scheduler"),
        ({"name": "a\x00b", "job_type": "BASIC"}, "name"),
        (
            {"name": "x", "job_type": "BASIC", "extended_properties": {"k": "\x00"}},
            "extended_properties",
        ),
        ({"name": "x", "job_type": "BASIC", "execute": "maybe"}, "execute"),
    ],
)
def test_create_bad_input_is_422_naming_the_field(
    creator: Any, body: dict[str, Any], field: str
) -> None:
    before = Job.objects.count()
    response = _api(creator).post("/jobs", body)
    assert response.status_code == 422, response.content
    assert response.json()["field"] == field, response.json()
    assert Job.objects.count() == before


def test_create_with_own_group(creator: Any, other_user: Any) -> None:
    team = Group.objects.create(name="team")
    creator.groups.add(team)
    response = _api(creator).post("/jobs", {"name": "g", "job_type": "BASIC", "groups": ["team"]})
    assert response.status_code == 201
    other_user.groups.add(team)
    assert _api(other_user).get(f"/jobs/{response.json()['id']}").status_code == 200


def test_malformed_json_is_an_error_not_a_500(alice_api: Api) -> None:
    response = alice_api.client.post(
        f"{API}/jobs", "{not json", content_type="application/json", headers=alice_api.headers
    )
    assert response.status_code in (400, 422)


# -- get, actions, logs, events ---------------------------------------------------------------------
def test_get_and_actions(alice_api: Api, user: Any) -> None:
    job = _job(user, "acted")
    assert alice_api.get(f"/jobs/{job.pk}").json()["status"] == "Pending"
    assert alice_api.post(f"/jobs/{job.pk}/execute").json()["status"] == "Submitted"
    again = alice_api.post(f"/jobs/{job.pk}/execute")
    assert again.status_code == 409 and "already executed" in again.json()["detail"]
    job.update_status("Running")
    paused = alice_api.post(f"/jobs/{job.pk}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "Paused"
    assert alice_api.post(f"/jobs/{job.pk}/resume").json()["status"] == "Running"
    assert alice_api.post(f"/jobs/{job.pk}/resume").status_code == 409
    assert alice_api.post(f"/jobs/{job.pk}/cancel").json()["status"] == "Aborted"
    assert alice_api.post(f"/jobs/{job.pk}/cancel").status_code == 409
    resubmitted = alice_api.post(f"/jobs/{job.pk}/resubmit").json()
    assert (resubmitted["status"], resubmitted["attempt"]) == ("Submitted", 2)
    events = alice_api.get(f"/jobs/{job.pk}/events").json()
    assert [e["status"] for e in events][:3] == ["Pending", "Submitted", "Running"]
    assert events[-1]["status"] == "Submitted"
    later = alice_api.get(f"/jobs/{job.pk}/events", since=events[1]["id"]).json()
    assert [e["id"] for e in later] == [e["id"] for e in events[2:]]
    assert alice_api.delete(f"/jobs/{job.pk}").status_code == 204
    assert alice_api.get(f"/jobs/{job.pk}").status_code == 404
    assert not Job.objects.visible().filter(pk=job.pk).exists()


def test_pause_on_an_engine_that_cannot_is_409(alice_api: Api, user: Any) -> None:
    job = JobManager("p").create_job("local", user, job_type="LOCAL", executable="true")
    job.execute()
    response = alice_api.post(f"/jobs/{job.pk}/pause")
    assert response.status_code in (200, 409)  # LOCAL may pause; a 409 explains when it cannot
    if response.status_code == 409:
        assert "pause" in response.json()["detail"]


def test_logs(alice_api: Api, user: Any) -> None:
    job = _job(user)
    body = alice_api.get(f"/jobs/{job.pk}/logs").json()
    assert body == {"logs": [], "error": ""}


def test_huge_ids_are_rejected_not_500(alice_api: Api) -> None:
    assert alice_api.get(f"/jobs/{2**70}").status_code == 422
    assert alice_api.get("/jobs/0").status_code == 422


# -- schedulers -------------------------------------------------------------------------------------
def test_schedulers_are_for_staff_and_never_show_secrets(alice_api: Api, staff_user: Any) -> None:
    assert alice_api.get("/schedulers").status_code == 403
    assert alice_api.post("/schedulers", {"name": "x"}).status_code == 403
    staff = _api(staff_user)
    created = staff.post(
        "/schedulers",
        {
            "name": "cluster",
            "scheduler_type": "slurm",
            "host": "login.example.org",
            "port": 22,
            "username": "svc",
            "password": "hunter2-secret",
            "options": {"partition": "short"},
        },
    )
    assert created.status_code == 201, created.content
    assert "hunter2-secret" not in created.content.decode()
    assert created.json()["secrets_stored"] == ["password"]
    listing = staff.get("/schedulers")
    assert [s["name"] for s in listing.json()] == ["cluster"]
    assert "hunter2-secret" not in listing.content.decode()
    assert Scheduler.objects.get(name="cluster").get_secrets() == {"password": "hunter2-secret"}
    dup = staff.post("/schedulers", {"name": "cluster"})
    assert dup.status_code == 422 and dup.json()["field"] == "name"
    bad_type = staff.post("/schedulers", {"name": "y", "scheduler_type": "nope"})
    assert bad_type.status_code == 422 and bad_type.json()["field"] == "scheduler_type"
    assert alice_api.delete("/schedulers/cluster").status_code == 403
    job = JobManager("s").create_job("on cluster", staff_user, scheduler=Scheduler.objects.get())
    job.save()
    assert staff.delete("/schedulers/cluster").status_code == 409
    Job.objects.filter(pk=job.pk).delete()
    assert staff.delete("/schedulers/cluster").status_code == 204
    assert staff.delete("/schedulers/cluster").status_code == 404


def test_openapi_document_is_served(client: Client) -> None:
    response = client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    assert f"{API}/jobs/{{job_id}}/cancel" in doc["paths"]
    assert {"TokenAuth", "SessionCookieAuth"} <= set(doc["components"]["securitySchemes"])
    docs = client.get(f"{API}/docs")
    assert docs.status_code == 200
    assert b"openapi.json" in docs.content


def test_deleted_jobs_are_404(alice_api: Api, user: Any) -> None:
    job = _job(user)
    Job.objects.filter(pk=job.pk).update(deleted_at=timezone.now())
    assert alice_api.get(f"/jobs/{job.pk}").status_code == 404


def test_an_action_racing_a_delete_is_404(
    alice_api: Api, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleted between the API reading the job and acting on it: 404 with the reason, not a 500."""
    from offload import store

    real_stop = store.stop

    def racing(job: Job, **kwargs: Any) -> None:
        Job.objects.filter(pk=job.pk).delete()
        real_stop(job, **kwargs)

    monkeypatch.setattr(store, "stop", racing)
    job = _job(user, "racing")
    job.execute()
    response = alice_api.post(f"/jobs/{job.pk}/cancel")
    assert response.status_code == 404
    assert f"job {job.pk} does not exist" in response.json()["detail"]
