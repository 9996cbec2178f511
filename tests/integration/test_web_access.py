"""Who may see and who may act, on every route: the owner, a group the job is shared with (may
act, the default), a group it is shared with view-only, someone else (404), staff and holders of
``offload.manage_all_jobs`` (everything), and anonymous visitors (nothing, unless the app opts in
with ``OFFLOAD["ANONYMOUS_JOBS"]``, and then only their own session's jobs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client, RequestFactory

from offload import JobManager
from offload.errors import InvalidJobError
from offload.models import Job
from offload.web import access, sse

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]

#: Routes that only look (GET). ``{id}`` is the job's id.
VIEW_ROUTES = [
    "/jobs/{id}/",
    "/jobs/{id}/logs/",
    "/jobs/{id}/files/result.txt",
    "/jobs/api/jobs/{id}",
    "/jobs/api/jobs/{id}/logs",
    "/jobs/api/jobs/{id}/events",
    "/jobs/api/jobs/{id}/files",
    "/jobs/api/jobs/{id}/files/result.txt",
]
#: Routes that act (POST, or DELETE for the API's delete).
PAGE_ACTIONS = ["run", "pause", "resume", "cancel", "resubmit", "delete"]
API_ACTIONS = ["execute", "cancel", "pause", "resume", "resubmit"]


def _job(owner: Any, *, app: str = "access_app", executed: bool = True) -> Job:
    job = JobManager(app).create_job("shared job", owner, job_type="BASIC")
    job.save()
    if executed:
        job.execute()
    Path(job.workspace).mkdir(parents=True, exist_ok=True)
    (Path(job.workspace) / "result.txt").write_text("result")
    return job


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _views(client: Client, job: Job) -> dict[str, int]:
    return {url: client.get(url.format(id=job.pk)).status_code for url in VIEW_ROUTES}


def _page_actions(client: Client, job: Job) -> dict[str, int]:
    return {a: client.post(f"/jobs/{job.pk}/{a}/").status_code for a in PAGE_ACTIONS}


def _api_actions(client: Client, job: Job) -> dict[str, int]:
    codes = {a: client.post(f"/jobs/api/jobs/{job.pk}/{a}").status_code for a in API_ACTIONS}
    codes["delete"] = client.delete(f"/jobs/api/jobs/{job.pk}").status_code
    return codes


def _streamed_job_ids(user: Any, anonymous_jobs: list[int] | None = None) -> set[int]:
    return {event["job"] for event in sse._events_after(user, 0, anonymous_jobs or [])}


@pytest.fixture
def team(user: Any, django_user_model: Any) -> tuple[Group, Any]:
    group = Group.objects.create(name="team")
    member = django_user_model.objects.create_user("dora", password="pw")
    member.groups.add(group)
    return group, member


def test_a_group_may_act_by_default(user: Any, team: tuple[Group, Any]) -> None:
    group, member = team
    job = _job(user)
    job.groups.add(group)
    client = _client(member)
    assert set(_views(client, job).values()) == {200}
    assert access.may_act(member, job)
    assert _streamed_job_ids(member) == {job.pk}
    # Every page action gets through the access check (the job's state may still refuse it).
    assert 403 not in _page_actions(client, job).values()


def test_a_view_only_group_sees_but_may_not_act(user: Any, team: tuple[Group, Any]) -> None:
    group, member = team
    job = _job(user)
    access.set_group_permissions(job, {"team": "view"})
    job.refresh_from_db()
    assert list(job.groups.all()) == [group]
    assert job.extended_properties[access.GROUP_PERMISSIONS_KEY] == {str(group.pk): "view"}
    assert access.group_permissions(job) == {group.pk: "view"}
    client = _client(member)
    assert set(_views(client, job).values()) == {200}
    assert _streamed_job_ids(member) == {job.pk}
    assert not access.may_act(member, job)
    assert set(_page_actions(client, job).values()) == {403}
    assert set(_api_actions(client, job).values()) == {403}
    page = client.post(f"/jobs/{job.pk}/cancel/")
    assert "not act on it" in page.content.decode()
    # With ``next`` (the jobs table) the refusal is a message on the page it came from.
    back = client.post(f"/jobs/{job.pk}/cancel/", {"next": "/jobs/"}, follow=True)
    assert "view-only" in back.content.decode()
    job.refresh_from_db()
    assert job.status == "Submitted" and job.deleted_at is None
    # The jobs table does not offer actions on it; the job page shows no buttons.
    html = client.get("/jobs/").content.decode()
    row = html[html.index(f'id="job-{job.pk}"') :]
    assert 'data-action="terminate"' not in row[: row.index("</tr>")]
    assert ">Cancel</button>" not in client.get(f"/jobs/{job.pk}/").content.decode()
    # The owner still acts.
    owner = _client(user)
    owner_html = owner.get("/jobs/").content.decode()
    owner_row = owner_html[owner_html.index(f'id="job-{job.pk}"') :]
    assert 'data-action="terminate"' in owner_row[: owner_row.index("</tr>")]


def test_act_in_one_group_wins_over_view_in_another(
    user: Any, team: tuple[Group, Any], django_user_model: Any
) -> None:
    _group, member = team
    other = Group.objects.create(name="reviewers")
    member.groups.add(other)
    job = _job(user)
    access.set_group_permissions(job, {"team": "act", "reviewers": "view"})
    assert access.may_act(member, job)
    assert access.actable_job_ids(member, [job]) == {job.pk}
    access.set_group_permissions(job, {"team": "view"})
    job.refresh_from_db()
    assert not access.may_act(member, job)
    assert access.actable_job_ids(member, [job]) == set()
    access.set_group_permissions(job, {"team": "act", "reviewers": "act"})
    job.refresh_from_db()
    assert access.GROUP_PERMISSIONS_KEY not in job.extended_properties
    assert access.may_act(member, job)


def test_set_group_permissions_validates(user: Any) -> None:
    job = _job(user)
    with pytest.raises(InvalidJobError, match="'edit' is not 'view' or 'act'"):
        access.set_group_permissions(job, {"team": "edit"})  # type: ignore[dict-item]
    with pytest.raises(InvalidJobError, match="no group 'nobody'"):
        access.set_group_permissions(job, {"nobody": "view"})


def test_someone_else_gets_404_everywhere(user: Any, other_user: Any) -> None:
    job = _job(user)
    client = _client(other_user)
    assert set(_views(client, job).values()) == {404}
    assert set(_page_actions(client, job).values()) == {404}
    assert set(_api_actions(client, job).values()) == {404}
    assert _streamed_job_ids(other_user) == set()
    assert job.pk not in [r.job.pk for r in client.get("/jobs/").context["rows"]]


@pytest.mark.parametrize("kind", ["staff", "permission"])
def test_staff_and_managers_see_and_act(user: Any, django_user_model: Any, kind: str) -> None:
    manager = django_user_model.objects.create_user("mona", is_staff=kind == "staff")
    if kind == "permission":
        manager.user_permissions.add(
            Permission.objects.get(codename="manage_all_jobs", content_type__app_label="offload")
        )
        manager = django_user_model.objects.get(pk=manager.pk)
    job = _job(user)
    client = _client(manager)
    assert set(_views(client, job).values()) == {200}
    assert access.may_act(manager, job)
    assert _streamed_job_ids(manager) == {job.pk}
    assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 302
    assert client.delete(f"/jobs/api/jobs/{job.pk}").status_code == 204


# -- anonymous visitors ---------------------------------------------------------------------------
def _anonymous_with(jobs: list[Job]) -> Client:
    client = Client()
    session = client.session
    session[access.ANONYMOUS_SESSION_KEY] = [job.pk for job in jobs]
    session.save()
    return client


def test_anonymous_sees_nothing_without_opt_in() -> None:
    job = _job(None, app="public_app")
    client = _anonymous_with([job])
    for url in VIEW_ROUTES:
        code = client.get(url.format(id=job.pk)).status_code
        assert code == (401 if "/api/" in url else 302), url
    assert set(_page_actions(client, job).values()) == {302}
    assert client.get("/jobs/").status_code == 302
    assert client.get("/jobs/events/stream").status_code == 401
    assert _streamed_job_ids(None, [job.pk]) == set()


def test_anonymous_uses_its_own_session_jobs_where_the_app_opts_in(
    offload_settings: Any, user: Any
) -> None:
    offload_settings(ANONYMOUS_JOBS=["public_app"])
    mine = _job(None, app="public_app")
    someone_elses = _job(None, app="public_app")
    other_app = _job(None, app="private_app")
    owned = _job(user, app="public_app")
    client = _anonymous_with([mine, other_app, owned])
    pages = [url for url in VIEW_ROUTES if "/api/" not in url]
    for url in pages:
        assert client.get(url.format(id=mine.pk)).status_code == 200, url
        for job in (someone_elses, other_app, owned):
            assert client.get(url.format(id=job.pk)).status_code == 404, url
    # The REST API stays for signed-in users and tokens.
    assert client.get(f"/jobs/api/jobs/{mine.pk}").status_code == 401
    rows = [r.job.pk for r in client.get("/jobs/").context["rows"]]
    assert rows == [mine.pk]
    assert _streamed_job_ids(None, [mine.pk, other_app.pk, owned.pk]) == {mine.pk}
    assert client.post(f"/jobs/{someone_elses.pk}/cancel/").status_code == 404
    assert client.post(f"/jobs/{mine.pk}/cancel/").status_code == 302
    mine.refresh_from_db()
    assert mine.status == "Aborted"


def test_anonymous_view_only_app(offload_settings: Any) -> None:
    offload_settings(ANONYMOUS_JOBS={"public_app": "view"})
    mine = _job(None, app="public_app")
    client = _anonymous_with([mine])
    assert client.get(f"/jobs/{mine.pk}/").status_code == 200
    assert set(_page_actions(client, mine).values()) == {403}


def test_remember_anonymous_job(offload_settings: Any, user: Any) -> None:
    from django.contrib.auth.models import AnonymousUser
    from django.contrib.sessions.backends.db import SessionStore

    request = RequestFactory().get("/")
    request.session = SessionStore()
    request.user = AnonymousUser()
    job = _job(None, app="public_app")
    with pytest.raises(InvalidJobError, match="ANONYMOUS_JOBS"):
        access.remember_anonymous_job(request, job)
    offload_settings(ANONYMOUS_JOBS=["public_app"])
    access.remember_anonymous_job(request, job)
    access.remember_anonymous_job(request, job)
    assert access.anonymous_jobs_of(request) == [job.pk]
    with pytest.raises(InvalidJobError, match="without a user"):
        access.remember_anonymous_job(request, _job(user, app="public_app"))
