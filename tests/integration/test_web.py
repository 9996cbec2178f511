"""The minimal web part on the real database: login, the jobs list, a job's page (history, logs,
actions), the Tethys-compatible ``/update-job-status/<id>/`` endpoint with signed push reports,
the admin, and both URL set-ups (the portal, and a project that only includes ``offload.urls``)."""

from __future__ import annotations

import datetime
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core import signing
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from django.utils import timezone

from offload import JobManager
from offload.models import EventSource, IntentAction, Job, JobEvent, JobIntent, Scheduler
from offload.monitor import Monitor
from offload.status import Status
from offload.web import TEMPLATES_DIR
from offload.web.tokens import check_status_token, make_status_token
from offload.web.views import LOG_TAIL_BYTES, PAGE_SIZE, format_duration, tail

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]

#: A project that uses offload as a reusable app: only ``offload.urls``, under ``jobs/``.
urlpatterns = [
    path("accounts/", include("django.contrib.auth.urls")),
    path("jobs/", include("offload.urls")),
]


def _job(user: Any, name: str = "job", *, app: str = "web_app", execute: bool = False) -> Job:
    job = JobManager(app).create_job(name, user, job_type="BASIC")
    job.save()
    if execute:
        job.execute()
    return job


def _reload(job: Job) -> Job:
    return Job.objects.get(pk=job.pk)


def _json(response: Any) -> Any:
    assert response["Content-Type"] == "application/json"
    return json.loads(response.content)


@pytest.fixture
def alice(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("carol", password="pw-carol", is_staff=True)


# -- login ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["/jobs/", "/jobs/1/"])
def test_pages_need_login(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url}"


def test_root_redirects_to_jobs(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/jobs/"


def test_login_page_signs_in(client: Client, user: Any, settings: Any) -> None:
    # The portal lists offload's templates; here they are listed the same way.
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [TEMPLATES_DIR]}]
    page = client.get("/accounts/login/?next=/jobs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<h1>Sign in</h1>" in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert 'value="/jobs/"' in html
    bad = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert bad.status_code == 200
    assert 'role="alert"' in bad.content.decode()
    good = client.post(
        "/accounts/login/", {"username": "alice", "password": "pw-alice", "next": "/jobs/"}
    )
    assert good.status_code == 302
    assert good["Location"] == "/jobs/"
    assert client.get("/jobs/").status_code == 200


# -- the list ---------------------------------------------------------------------------------------
def test_list_shows_only_own_jobs_newest_first(alice: Client, user: Any, other_user: Any) -> None:
    first = _job(user, "alice first", app="app_a")
    second = _job(user, "alice second", app="app_b", execute=True)
    _job(other_user, "bob's job")
    response = alice.get("/jobs/")
    assert response.status_code == 200
    assert [row.job.pk for row in response.context["rows"]] == [second.pk, first.pk]
    html = response.content.decode()
    assert "alice first" in html and "alice second" in html
    assert "bob&#x27;s job" not in html and "bob's job" not in html
    assert "app_a" in html and "app_b" in html  # every app's jobs
    assert 'class="badge badge-submitted" data-status>Submitted<' in html
    assert f'href="/jobs/{second.pk}/"' in html
    assert ">User<" not in html


def test_list_marks_stale_jobs_with_last_contact(alice: Client, user: Any) -> None:
    job = _job(user, "stale one", execute=True)
    contact = timezone.now() - datetime.timedelta(minutes=5)
    Job.objects.filter(pk=job.pk).update(stale_since=timezone.now(), last_contact=contact)
    html = alice.get("/jobs/").content.decode()
    assert 'class="badge badge-stale"' in html
    assert contact.strftime("%Y-%m-%d %H:%M") in html


def test_staff_sees_everyone_with_all(
    client: Client, user: Any, other_user: Any, staff: Any
) -> None:
    _job(user, "alice job")
    _job(other_user, "bob job")
    client.force_login(staff)
    assert client.get("/jobs/").context["rows"] == []
    response = client.get("/jobs/?all=1")
    names = {row.job.name for row in response.context["rows"]}
    assert names == {"alice job", "bob job"}
    html = response.content.decode()
    assert ">User<" in html and ">alice<" in html and ">bob<" in html


def test_all_is_ignored_for_non_staff(alice: Client, user: Any, other_user: Any) -> None:
    _job(other_user, "bob job")
    response = alice.get("/jobs/?all=1")
    assert response.context["rows"] == []
    assert "No jobs yet." in response.content.decode()


def test_list_is_paginated(alice: Client, user: Any) -> None:
    jobs = [JobManager("pages").create_job(f"p{i}", user) for i in range(PAGE_SIZE + 5)]
    JobManager("pages").bulk_create(jobs)
    first = alice.get("/jobs/")
    assert len(first.context["rows"]) == PAGE_SIZE
    newest = max(j.pk for j in jobs)
    assert first.context["rows"][0].job.pk == newest
    assert 'href="?page=2"' in first.content.decode()
    second = alice.get("/jobs/?page=2")
    assert len(second.context["rows"]) == 5
    assert alice.get("/jobs/?page=nonsense").status_code == 200
    assert len(alice.get("/jobs/?page=999").context["rows"]) == 5  # the last page


def test_the_pager_counts_only_up_to_its_cap(
    alice: Client, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count under the jobs table is bounded (a COUNT over a LIMIT), so the first page costs
    the same however many jobs a user has; past the cap the pager says so and still pages."""
    from offload.web import views

    monkeypatch.setattr(views, "COUNT_CAP", 2 * PAGE_SIZE)
    manager = JobManager("capped")
    manager.bulk_create([manager.create_job(f"c{i}", user) for i in range(2 * PAGE_SIZE + 3)])
    first = alice.get("/jobs/")
    page = first.context["page"]
    assert page.paginator.count_is_capped
    assert f"more than {2 * PAGE_SIZE} jobs" in first.content.decode()
    assert 'href="?page=2"' in first.content.decode()
    deep = alice.get("/jobs/?page=3")  # past the cap: counted just past the page asked for
    assert len(deep.context["rows"]) == 3
    assert not deep.context["page"].paginator.count_is_capped
    monkeypatch.setattr(views, "COUNT_CAP", 10 * PAGE_SIZE)
    exact = alice.get("/jobs/")
    assert not exact.context["page"].paginator.count_is_capped
    assert f"({2 * PAGE_SIZE + 3} jobs)" in exact.content.decode()


def test_a_search_with_few_matches_keeps_the_order(alice: Client, user: Any) -> None:
    manager = JobManager("searching")
    made = manager.bulk_create(
        [manager.create_job(f"{word} {i}", user) for i in range(4) for word in ("alpha", "beta")]
    )
    alphas = sorted(j.pk for j in made if j.name.startswith("alpha"))
    newest_first = alice.get("/jobs/?q=alpha")
    assert [row.job.pk for row in newest_first.context["rows"]] == alphas[::-1]
    oldest_first = alice.get("/jobs/?q=ALPHA&sort=id")
    assert [row.job.pk for row in oldest_first.context["rows"]] == alphas


def test_list_filters_and_sorts_in_the_database(alice: Client, user: Any) -> None:
    manager = JobManager("filtering")
    manager.bulk_create([manager.create_job(f"batch {i}", user) for i in range(3)])
    runner = _job(user, "the runner", execute=True)
    runner.update_status("Running")
    local = JobManager("filtering").create_job(
        "a local one", user, job_type="LOCAL", executable="true"
    )
    local.save()

    def ids(url: str) -> list[int]:
        response = alice.get(url)
        assert response.status_code == 200
        return [row.job.pk for row in response.context["rows"]]

    assert ids("/jobs/?status=RUN") == [runner.pk]
    assert ids("/jobs/?status=Running") == [runner.pk]
    assert ids("/jobs/?type=LOCAL") == [local.pk]
    assert ids("/jobs/?q=RUNNER") == [runner.pk]
    names = [r.job.name for r in alice.get("/jobs/?sort=name").context["rows"]]
    assert names == sorted(names)
    assert ids("/jobs/?sort=id")[0] < ids("/jobs/?sort=-id")[0]
    html = alice.get("/jobs/?status=PEN&sort=name").content.decode()
    assert 'aria-sort="ascending"' in html
    assert 'href="?status=PEN&amp;sort=-name"' in html  # a second click reverses
    assert '<option value="PEN" selected>' in html
    assert "No jobs match these filters." in alice.get("/jobs/?q=nothing-like-it").content.decode()
    bad = alice.get("/jobs/?status=Sleeping&sort=owner")
    assert bad.status_code == 200
    assert "is not a status" in bad.content.decode()
    assert len(bad.context["rows"]) == 5  # the filters are dropped, the page still works
    assert alice.get("/jobs/?q=a%00b").status_code == 200


def test_filters_keep_the_page_links(alice: Client, user: Any) -> None:
    manager = JobManager("pages")
    manager.bulk_create([manager.create_job(f"p{i}", user) for i in range(PAGE_SIZE + 1)])
    html = alice.get("/jobs/?q=p&status=PEN").content.decode()
    assert 'href="?status=PEN&amp;q=p&amp;page=2"' in html


def _queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


def test_list_query_count_does_not_grow_with_the_page(
    client: Client, staff: Any, django_user_model: Any
) -> None:
    client.force_login(staff)
    owners = [django_user_model.objects.create_user(f"u{i}") for i in range(PAGE_SIZE)]
    manager = JobManager("counted")
    manager.bulk_create([manager.create_job("j", owners[0])])
    small = _queries(client, "/jobs/?all=1")
    manager.bulk_create([manager.create_job(f"j{i}", owner) for i, owner in enumerate(owners * 2)])
    assert len(client.get("/jobs/?all=1").context["rows"]) == PAGE_SIZE
    assert _queries(client, "/jobs/?all=1") == small
    # Session and user, then the page: a count and one select with the users joined, the open
    # intents of the jobs shown (one query), and the newest event id (where the stream starts).
    assert small == 6


# -- a job's page -----------------------------------------------------------------------------------
def test_detail_shows_fields_and_history(alice: Client, user: Any) -> None:
    job = _job(user, "detailed <job>", execute=True)
    job.update_status("Running", message="started <now>")
    response = alice.get(f"/jobs/{job.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "detailed &lt;job&gt;" in html and "<job>" not in html
    assert "started &lt;now&gt;" in html
    events = response.context["events"]
    assert [(e.from_status, e.to_status) for e in events] == [
        ("", "PEN"),
        ("PEN", "SUB"),
        ("SUB", "RUN"),
    ]
    assert "Submitted → Running" in html
    assert ">Cancel<" in html and ">Resubmit<" in html and ">Delete<" in html
    assert "No logs" in html  # a BASIC job has none


def test_detail_of_someone_elses_job_is_404(alice: Client, other_user: Any) -> None:
    job = _job(other_user, "bob private")
    assert alice.get(f"/jobs/{job.pk}/").status_code == 404
    assert alice.get("/jobs/999999/").status_code == 404


def test_group_members_and_staff_see_and_act_on_a_shared_job(
    client: Client, user: Any, other_user: Any, staff: Any, django_user_model: Any
) -> None:
    # Access rules (offload.web.access): owner, group members and managers see and act;
    # everyone else gets a 404 on the page and on every action.
    team = Group.objects.create(name="team")
    job = JobManager("shared").create_job("shared job", other_user, groups="team")
    job.save()
    client.force_login(user)
    assert client.get(f"/jobs/{job.pk}/").status_code == 404
    assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 404
    assert client.get("/jobs/").context["rows"] == []
    user.groups.add(team)
    page = client.get(f"/jobs/{job.pk}/")
    assert page.status_code == 200
    assert ">Cancel<" in page.content.decode()
    assert [row.job.pk for row in client.get("/jobs/").context["rows"]] == [job.pk]
    response = client.post(f"/jobs/{job.pk}/cancel/")
    assert response.status_code == 302
    assert _reload(job).status == "Aborted"
    client.force_login(staff)
    assert client.get(f"/jobs/{job.pk}/").status_code == 200


def test_manage_all_jobs_permission_sees_everything(
    client: Client, user: Any, other_user: Any
) -> None:
    from django.contrib.auth.models import Permission

    job = _job(other_user, "bob's", execute=True)
    client.force_login(user)
    assert client.get(f"/jobs/{job.pk}/").status_code == 404
    user.user_permissions.add(Permission.objects.get(codename="manage_all_jobs"))
    client.force_login(type(user).objects.get(pk=user.pk))  # a fresh permission cache
    assert client.get(f"/jobs/{job.pk}/").status_code == 200
    assert client.get("/jobs/").context["rows"] == []  # own (and groups') by default
    rows = client.get("/jobs/?all=1").context["rows"]
    assert [row.job.pk for row in rows] == [job.pk]
    assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 302
    assert _reload(job).status == "Aborted"


def test_huge_job_ids_are_404_not_500(alice: Client) -> None:
    assert alice.get(f"/jobs/{2**70}/").status_code == 404
    assert alice.post(f"/jobs/{2**70}/cancel/").status_code == 404


def test_deleted_jobs_are_gone(alice: Client, user: Any) -> None:
    job = _job(user, "to hide")
    Job.objects.filter(pk=job.pk).update(deleted_at=timezone.now())
    assert alice.get(f"/jobs/{job.pk}/").status_code == 404
    assert alice.get("/jobs/").context["rows"] == []


# -- actions ----------------------------------------------------------------------------------------
def test_cancel_resubmit_delete(alice: Client, user: Any) -> None:
    job = _job(user, "acted on", execute=True)
    response = alice.post(f"/jobs/{job.pk}/cancel/", follow=True)
    assert response.redirect_chain == [(f"/jobs/{job.pk}/", 302)]
    assert f"Job {job.pk} cancelled." in response.content.decode()
    assert _reload(job).status == "Aborted"
    event = JobEvent.objects.filter(job_id=job.pk).latest("id")
    assert (event.to_status, event.source, event.actor) == ("ABT", EventSource.USER, "alice")

    again = alice.post(f"/jobs/{job.pk}/cancel/")
    assert again.status_code == 409
    assert "has already finished" in again.content.decode()
    assert 'role="alert"' in again.content.decode()

    response = alice.post(f"/jobs/{job.pk}/resubmit/", follow=True)
    assert response.status_code == 200
    fresh = _reload(job)
    assert (fresh.status, fresh.attempt) == ("Submitted", 2)
    assert "resubmitted (attempt 2)" in response.content.decode()

    response = alice.post(f"/jobs/{job.pk}/delete/")
    assert response.status_code == 302
    assert response["Location"] == "/jobs/"
    assert not Job.objects.visible().filter(pk=job.pk).exists()
    assert alice.get(f"/jobs/{job.pk}/").status_code == 404


def test_action_errors_are_shown_on_the_page(alice: Client, user: Any) -> None:
    job = JobManager("bad").create_job("broken", user, job_type="LOCAL", executable="true")
    job.save()
    Job.objects.filter(pk=job.pk).update(parameters={})  # no executable any more
    response = alice.post(f"/jobs/{job.pk}/resubmit/")
    assert response.status_code == 400
    html = response.content.decode()
    assert 'role="alert"' in html and "executable: required" in html
    assert _reload(job).attempt == 0


def test_actions_need_post_and_csrf(user: Any) -> None:
    job = _job(user, "csrf", execute=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get(f"/jobs/{job.pk}/cancel/").status_code == 405
    assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 403
    assert _reload(job).status == "Submitted"
    page = client.get(f"/jobs/{job.pk}/")
    token = page.cookies["csrftoken"].value
    response = client.post(f"/jobs/{job.pk}/cancel/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert _reload(job).status == "Aborted"


def test_actions_on_someone_elses_job_are_404(alice: Client, other_user: Any) -> None:
    job = _job(other_user, "bob's", execute=True)
    for action in ("cancel", "resubmit", "delete"):
        assert alice.post(f"/jobs/{job.pk}/{action}/").status_code == 404
    assert _reload(job).status == "Submitted"


# -- GET /update-job-status/<id>/ -------------------------------------------------------------------
def test_update_job_status_get(client: Client, user: Any) -> None:
    job = _job(user, execute=True)
    response = client.get(f"/update-job-status/{job.pk}/")
    assert response.status_code == 200
    assert _json(response) == {"success": True}
    assert JobIntent.objects.filter(job_id=job.pk, action=IntentAction.REFRESH).count() == 1
    assert _reload(job).status == "Submitted"  # no status change, no scheduler call


def test_update_job_status_get_queues_one_refresh(client: Client, user: Any) -> None:
    job = JobManager("refresh").create_job("r", user, job_type="LOCAL", executable="true")
    job.execute()
    for _ in range(3):
        assert _json(client.get(f"/update-job-status/{job.pk}/")) == {"success": True}
    assert JobIntent.objects.filter(job_id=job.pk, action=IntentAction.REFRESH).count() == 1


def test_update_job_status_unknown_job(client: Client) -> None:
    response = client.get("/update-job-status/12/")
    assert response.status_code == 404
    assert _json(response) == {"success": False, "error": "job 12 does not exist"}


# -- POST /update-job-status/<id>/ (push) -----------------------------------------------------------
def _push(client: Client, job_id: int, body: Any, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(
        f"/update-job-status/{job_id}/", data, content_type="application/json", headers=headers
    )


@pytest.fixture
def csrf_client() -> Client:
    return Client(enforce_csrf_checks=True)  # pushes need no CSRF token


def test_push_with_a_valid_token(csrf_client: Client, user: Any) -> None:
    job = _job(user, execute=True)
    token = make_status_token(job.pk, job.attempt)
    response = _push(
        csrf_client, job.pk, {"status": "RUN", "message": "step 1", "native_status": "R"}, token
    )
    assert response.status_code == 200
    assert _json(response) == {"success": True, "applied": True, "status": "Running"}
    fresh = _reload(job)
    assert (fresh.status, fresh.status_message, fresh.native_status) == ("Running", "step 1", "R")
    assert fresh.start_time is not None and fresh.last_contact is not None
    event = JobEvent.objects.filter(job_id=job.pk).latest("id")
    assert (event.source, event.to_status, event.native_status) == (EventSource.PUSH, "RUN", "R")
    # The token may also come in the body; display names work too.
    response = _push(csrf_client, job.pk, {"status": "Complete", "token": token})
    assert _json(response)["applied"] is True
    assert _reload(job).status == "Complete"


def test_push_complete_goes_through_results_when_the_job_has_a_function(
    client: Client, user: Any
) -> None:
    job = JobManager("results").create_job(
        "r", user, process_results_function="tests.integration.test_web.tail"
    )
    job.save()
    job.execute()
    response = _push(client, job.pk, {"status": "Complete"}, make_status_token(job.pk, 1))
    assert _json(response)["status"] == "Results-Ready"
    assert JobIntent.objects.filter(job_id=job.pk, action=IntentAction.RESULTS).exists()


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "nonsense",
        signing.dumps({"job": 1, "attempt": 1}),  # signed, but without the tokens' salt
    ],
)
def test_push_without_a_valid_token_is_403(client: Client, user: Any, token: str | None) -> None:
    job = _job(user, execute=True)
    response = _push(client, job.pk, {"status": "RUN"}, token)
    assert response.status_code == 403
    assert _json(response)["success"] is False
    assert _json(response)["field"] == "token"
    assert _reload(job).status == "Submitted"


def test_push_with_another_jobs_token_is_403(client: Client, user: Any) -> None:
    job, other = _job(user, execute=True), _job(user, execute=True)
    response = _push(client, job.pk, {"status": "RUN"}, make_status_token(other.pk, 1))
    assert response.status_code == 403


def test_push_for_an_older_attempt_is_403(client: Client, user: Any) -> None:
    job = _job(user, execute=True)
    old = make_status_token(job.pk, job.attempt)
    job.stop()
    job.resubmit()
    assert _reload(job).attempt == 2
    response = _push(client, job.pk, {"status": "Error", "message": "late"}, old)
    assert response.status_code == 403
    assert "attempt 1" in _json(response)["error"]
    assert _reload(job).status == "Submitted"
    ok = _push(client, job.pk, {"status": "RUN"}, make_status_token(job.pk, 2))
    assert _json(ok)["applied"] is True


def test_push_backwards_is_accepted_but_not_applied(client: Client, user: Any) -> None:
    job = _job(user, execute=True)
    token = make_status_token(job.pk, 1)
    assert _json(_push(client, job.pk, {"status": "Running"}, token))["applied"] is True
    response = _push(client, job.pk, {"status": "Submitted"}, token)
    assert response.status_code == 200
    assert _json(response) == {"success": True, "applied": False, "status": "Running"}
    assert _json(_push(client, job.pk, {"status": "COM"}, token))["applied"] is True
    late = _push(client, job.pk, {"status": "RUN"}, token)
    assert _json(late) == {"success": True, "applied": False, "status": "Complete"}
    assert _reload(job).status == "Complete"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{not json", "body"),
        ("[1, 2]", "body"),
        ("", "body"),
        ({}, "status"),
        ({"status": 3}, "status"),
        ({"status": "Sleeping"}, "status"),
        ({"status": "Other"}, "status"),
        ({"status": "RUN", "message": 5}, "message"),
        ({"status": "RUN", "native_status": "x" * 256}, "native_status"),
    ],
)
def test_push_bad_body_is_400_naming_the_field(
    client: Client, user: Any, body: Any, field: str
) -> None:
    job = _job(user, execute=True)
    response = _push(client, job.pk, body, make_status_token(job.pk, 1))
    assert response.status_code == 400
    data = _json(response)
    assert data["success"] is False
    assert data["field"] == field
    assert data["error"].startswith(f"{field}:")
    assert _reload(job).status == "Submitted"


def test_push_to_unknown_job_is_404(client: Client) -> None:
    response = _push(client, 4242, {"status": "RUN"}, make_status_token(4242, 1))
    assert response.status_code == 404
    assert _json(response) == {"success": False, "error": "job 4242 does not exist"}


def test_other_methods_are_405(client: Client, user: Any) -> None:
    job = _job(user)
    response = client.put(f"/update-job-status/{job.pk}/")
    assert response.status_code == 405
    assert _json(response)["success"] is False


# -- tokens -----------------------------------------------------------------------------------------
def test_tokens() -> None:
    token = make_status_token(7, 3)
    assert check_status_token(token, 7) == 3
    assert check_status_token(token, 8) is None
    assert check_status_token(token[:-2] + "xx", 7) is None
    assert check_status_token("", 7) is None
    assert check_status_token(signing.dumps([7, 3], salt="offload.web.tokens.status"), 7) is None


# -- logs of a real local job, run by the monitor ---------------------------------------------------
def test_local_job_run_by_the_monitor_shows_its_logs(
    alice: Client, user: Any, until: Callable[..., Any]
) -> None:
    script = (
        "import sys\n"
        "print('hello <b>from</b> the job')\n"
        "print('x' * 300_000)\n"
        "print('the end')\n"
        "print('a warning & more', file=sys.stderr)\n"
    )
    job = JobManager("logs").create_job(
        "local run", user, job_type="LOCAL", executable=sys.executable, arguments=["-c", script]
    )
    job.execute()
    monitor = Monitor(name="web-test")
    try:
        until(
            lambda: _reload(job).status in ("Complete", "Error"),
            step=monitor.run_cycle,
            timeout=60,
            what="the local job to finish",
        )
    finally:
        monitor.shutdown()
    assert _reload(job).status == "Complete"

    html = alice.get("/jobs/").content.decode()
    assert "badge-complete" in html
    response = alice.get(f"/jobs/{job.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    logs = {log.name: log for log in response.context["logs"]}
    assert logs["stdout"].truncated and not logs["stderr"].truncated
    assert len(logs["stdout"].text.encode()) <= LOG_TAIL_BYTES
    assert logs["stdout"].text.endswith("the end\n")
    assert f"Showing the last {LOG_TAIL_BYTES // 1024} KB of" in html
    assert "hello" not in html  # cut off with the start of the log
    assert "a warning &amp; more" in html
    assert "→ Complete" in html


def test_the_list_links_each_job_to_its_logs(
    alice: Client, user: Any, until: Callable[..., Any]
) -> None:
    done = JobManager("logs").create_job(
        "talks", user, job_type="LOCAL", executable=sys.executable, arguments=["-c", "print('hi')"]
    )
    done.execute()
    monitor = Monitor(name="web-test-logs-link")
    try:
        until(
            lambda: _reload(done).status in ("Complete", "Error"),
            step=monitor.run_cycle,
            timeout=60,
            what="the local job to finish",
        )
    finally:
        monitor.shutdown()
    waiting = _job(user, "not run yet")
    html = alice.get("/jobs/").content.decode()

    def row(job: Job) -> str:
        found = re.search(rf'<tr id="job-{job.pk}".*?</tr>', html, re.S)
        assert found, html
        return found.group(0)

    # A link of its own in the row (not only the name's link to the job's page), named in words.
    link = re.search(r'<a class="act"[^>]*data-action="logs"[^>]*>Logs</a>', row(done))
    assert link, row(done)
    assert f'href="/jobs/{done.pk}/#logs"' in link.group(0)
    assert f'aria-label="Logs of job {done.pk}"' in link.group(0)
    assert "aria-disabled" not in link.group(0)
    page = alice.get(f"/jobs/{done.pk}/")  # where it leads: the logs section of the job's page
    assert page.status_code == 200
    target = page.content.decode()
    assert '<h2 id="logs">Logs</h2>' in target
    assert "hi\n" in [log.text for log in page.context["logs"]]
    # A job that has not run has no logs yet: the link is there but disabled (and hidden), until
    # the live stream says the job started.
    before = re.search(
        r'<a class="act disabled"[^>]*data-action="logs"[^>]*>Logs</a>', row(waiting)
    )
    assert before, row(waiting)
    assert 'aria-disabled="true" tabindex="-1"' in before.group(0)


def test_short_logs_are_escaped(alice: Client, user: Any, until: Callable[..., Any]) -> None:
    job = JobManager("logs").create_job(
        "escaped",
        user,
        job_type="LOCAL",
        executable=sys.executable,
        arguments=["-c", "print('<script>alert(1)</script>')"],
    )
    job.execute()
    monitor = Monitor(name="web-test-2")
    try:
        until(
            lambda: _reload(job).status in ("Complete", "Error"),
            step=monitor.run_cycle,
            timeout=60,
            what="the local job to finish",
        )
    finally:
        monitor.shutdown()
    html = alice.get(f"/jobs/{job.pk}/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html


def test_tail_and_durations() -> None:
    assert tail("short") == ("short", False, 5)
    text = "line\n" * 100_000
    cut, truncated, size = tail(text, 1000)
    assert truncated and size == 500_000
    assert cut.startswith("line\n") and len(cut) <= 1000
    multibyte, _, _ = tail("é" * 1000, 101)
    assert set(multibyte) == {"é"}
    assert format_duration(datetime.timedelta(seconds=3723)) == "1:02:03"
    assert format_duration(datetime.timedelta(days=2, seconds=5)) == "2d 0:00:05"
    assert format_duration("") == ""


# -- URL set-ups ------------------------------------------------------------------------------------
def test_callback_url_in_the_portal(rf: Any, user: Any) -> None:
    job = _job(user)
    url = JobManager("web_app").get_job_status_callback_url(rf.get("/"), job.pk)
    assert url == f"http://testserver/update-job-status/{job.pk}/"


@pytest.mark.urls(__name__)
def test_reusable_app_urls(client: Client, rf: Any, user: Any) -> None:
    job = _job(user, execute=True)
    url = JobManager("web_app").get_job_status_callback_url(rf.get("/"), job.pk)
    assert url == f"http://testserver/jobs/update-job-status/{job.pk}/"
    assert client.get("/update-job-status/1/").status_code == 404  # not at the root here
    assert _json(client.get(f"/jobs/update-job-status/{job.pk}/")) == {"success": True}
    response = _push(
        client,
        job.pk,
        {"status": "RUN"},
        make_status_token(job.pk, 1),
    )
    assert response.status_code == 404  # the push URL lives under jobs/ too
    response = client.post(
        f"/jobs/update-job-status/{job.pk}/",
        json.dumps({"status": "RUN", "token": make_status_token(job.pk, 1)}),
        content_type="application/json",
    )
    assert _json(response)["applied"] is True
    client.force_login(user)
    assert client.get("/jobs/").status_code == 200
    assert client.get(f"/jobs/{job.pk}/").status_code == 200


# -- admin ------------------------------------------------------------------------------------------
def test_admin_pages_and_scheduler_secrets(
    client: Client, django_user_model: Any, user: Any
) -> None:
    admin_user = django_user_model.objects.create_superuser("root", password="pw-root")
    client.force_login(admin_user)
    job = _job(user, "admin job", execute=True)
    scheduler = Scheduler(name="cluster", scheduler_type="slurm", host="hpc.example.org")
    scheduler.set_secrets({"password": "hunter2-secret"})
    scheduler.save()
    for url in (
        "/admin/offload/job/",
        f"/admin/offload/job/{job.pk}/change/",
        "/admin/offload/jobevent/",
        "/admin/offload/jobintent/",
        "/admin/offload/scheduler/",
        f"/admin/offload/scheduler/{scheduler.pk}/change/",
        "/admin/offload/scheduler/add/",
        "/admin/offload/job/?stale=yes",
        "/admin/offload/job/?q=admin",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert "hunter2" not in html
        assert scheduler.secrets_encrypted not in html
    assert "admin job" in client.get("/admin/offload/job/").content.decode()
    assert client.get("/admin/offload/job/add/").status_code == 403
    assert client.get("/admin/offload/jobevent/add/").status_code == 403
    # Saving the scheduler without typing a password keeps it; typing one replaces it.
    form = {
        "name": "cluster",
        "scheduler_type": "slurm",
        "host": "hpc2.example.org",
        "port": "",
        "username": "me",
        "options": "{}",
        "password": "",
        "private_key_pass": "",
    }
    url = f"/admin/offload/scheduler/{scheduler.pk}/change/"
    assert client.post(url, form).status_code == 302
    scheduler.refresh_from_db()
    assert scheduler.host == "hpc2.example.org"
    assert scheduler.get_secrets() == {"password": "hunter2-secret"}
    assert client.post(url, {**form, "private_key_pass": "pp"}).status_code == 302
    scheduler.refresh_from_db()
    assert scheduler.get_secrets() == {"password": "hunter2-secret", "private_key_pass": "pp"}
    # A job's name and description can be edited; nothing else is in the form.
    job_url = f"/admin/offload/job/{job.pk}/change/"
    inline = {"event_set-TOTAL_FORMS": "0", "event_set-INITIAL_FORMS": "0"}
    edit = client.post(job_url, {"name": "renamed", "description": "d", "_status": "COM", **inline})
    assert edit.status_code == 302
    assert (_reload(job).name, _reload(job).status) == ("renamed", "Submitted")
    # The cancel action goes through the store, recording the admin as the actor.
    response = client.post(
        "/admin/offload/job/", {"action": "cancel_jobs", "_selected_action": [job.pk]}
    )
    assert response.status_code == 302
    assert _reload(job).status == "Aborted"
    assert JobEvent.objects.filter(job_id=job.pk).latest("id").actor == "root"
    assert Status.ABORTED.value == _reload(job)._status


def test_an_action_racing_a_delete_is_404_not_a_server_error(
    alice: Client, user: Any, django_user_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job is deleted between the page reading it and the action: a real delete, then the real
    store.stop, which finds no job."""
    from offload import store

    real_stop = store.stop

    def racing(job: Job, **kwargs: Any) -> None:
        Job.objects.filter(pk=job.pk).delete()
        real_stop(job, **kwargs)

    monkeypatch.setattr(store, "stop", racing)
    job = _job(user, "racing", execute=True)
    assert alice.post(f"/jobs/{job.pk}/cancel/").status_code == 404
    other = _job(user, "racing too", execute=True)
    response = alice.post(f"/jobs/{other.pk}/cancel/", {"next": "/jobs/"})
    assert response.status_code == 302 and response["Location"] == "/jobs/"
    assert f"job {other.pk} does not exist" in alice.get("/jobs/").content.decode()
    # The admin's bulk cancel reports it among the jobs it could not act on.
    root = django_user_model.objects.create_superuser("root", password="pw-root")
    admin = Client()
    admin.force_login(root)
    third = _job(user, "racing in the admin", execute=True)
    response = admin.post(
        "/admin/offload/job/",
        {"action": "cancel_jobs", "_selected_action": [third.pk]},
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert f"job {third.pk} does not exist" in shown, shown
