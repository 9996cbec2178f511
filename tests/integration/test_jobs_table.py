"""The ``{% jobs_table %}`` tag (Tethys's JobsTable) on the real database: each option, the
actions each status enables, custom actions, pending intents, a constant number of queries, and
the run/pause/resume/cancel/resubmit/delete views it posts to (404 for other people's jobs)."""

from __future__ import annotations

import re
import sys
import types
from typing import Any

import pytest
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.template import Context, RequestContext, Template
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import include, path

from offload import JobManager, store
from offload.errors import InvalidJobError
from offload.models import OTHER_CATEGORY_KEY, EventSource, IntentAction, Job, JobEvent, JobIntent
from offload.monitor import Monitor
from offload.status import Category, Status
from offload.web.jobs_table import (
    BUILTIN_ACTIONS,
    CustomJobAction,
    JobsTable,
    is_enabled,
    make_options,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]


def _results(request: HttpRequest, job_id: int) -> HttpResponse:
    return HttpResponse(f"results of {job_id}")


#: A project with its own results and monitor pages next to offload's.
urlpatterns = [
    path("accounts/", include("django.contrib.auth.urls")),
    path("jobs/", include("offload.urls")),
    path("app/results/<int:job_id>/", _results, name="app_results"),
    path("app/monitor/<int:job_id>/", _results, name="app_monitor"),
    path("app/rerun/<int:job_id>/", _results, name="app_rerun"),
]
use_urls = pytest.mark.urls(__name__)


def _job(user: Any, name: str = "job", *, app: str = "tbl", **kwargs: Any) -> Job:
    job = JobManager(app).create_job(name, user, job_type="BASIC", **kwargs)
    job.save()
    return job


def _in(user: Any, job: Job, status: str) -> Job:
    """A BASIC job moved to ``status`` through the store, as an app would."""
    if status == "Pending":
        return job
    job.execute()
    if status in ("Submitted",):
        return job
    if status == "Aborted":
        job.stop()
        return job
    job.update_status("Running")
    if status == "Paused":
        job.pause()
    elif status != "Running":
        job.update_status(status)
    return job


def render(user: Any, template: str, rf: Any, **context: Any) -> str:
    request = rf.get("/somewhere/?page=2")
    request.user = user
    text = "{% load offload_tags %}" + template
    return Template(text).render(RequestContext(request, context))


def _row(html: str, job: Job) -> str:
    match = re.search(rf'<tr id="job-{job.pk}".*?</tr>', html, re.S)
    assert match, f"no row for job {job.pk}"
    return match.group(0)


def _enabled(row: str) -> set[str]:
    """Names of the enabled actions of a rendered row."""
    names = set()
    for tag in re.findall(r"<(?:button|a) [^>]*data-action=\"[^\"]+\"[^>]*>", row):
        name = re.search(r'data-action="([^"]+)"', tag)
        assert name
        if " disabled" not in tag and "aria-disabled" not in tag:
            names.add(name.group(1))
    return names


# -- rules ------------------------------------------------------------------------------------------
EXPECTED: dict[Status, set[str]] = {
    Status.PENDING: {"run", "delete"},
    Status.SUBMITTED: {"terminate"},  # pre-running: no logs yet
    Status.RUNNING: {"pause", "monitor", "logs", "terminate"},
    Status.VARIOUS: {"pause", "monitor", "logs", "terminate"},
    Status.PAUSED: {"resume", "logs", "terminate"},
    Status.RESULTS_READY: {"resubmit", "results", "logs", "delete"},
    Status.VARIOUS_COMPLETE: {"resubmit", "results", "logs", "delete"},
    Status.COMPLETE: {"resubmit", "results", "logs", "delete"},
    Status.ERROR: {"resubmit", "results", "logs", "delete"},
    Status.ABORTED: {"resubmit", "results", "logs", "delete"},
}


@pytest.mark.parametrize("status", list(EXPECTED), ids=lambda s: s.value)
def test_actions_enabled_by_status_as_in_tethys(status: Status) -> None:
    job = Job(_status=status.value)
    assert {a for a in BUILTIN_ACTIONS if is_enabled(a, job)} == EXPECTED[status]


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        (Category.RUNNING, {"pause", "monitor", "logs", "terminate"}),
        (Category.TERMINAL, {"resubmit", "results", "logs", "delete"}),
        (Category.PRE_RUNNING, {"delete"}),
    ],
)
def test_custom_statuses_follow_their_category(category: Category, expected: set[str]) -> None:
    job = Job(_status=Status.OTHER.value, extended_properties={OTHER_CATEGORY_KEY: category.value})
    assert {a for a in BUILTIN_ACTIONS if is_enabled(a, job)} == expected


# -- rendering --------------------------------------------------------------------------------------
@use_urls
@pytest.mark.parametrize(
    "status",
    ["Pending", "Submitted", "Running", "Paused", "Complete", "Error", "Aborted"],
)
def test_rendered_actions_follow_the_status(user: Any, rf: Any, status: str) -> None:
    job = _in(user, _job(user, f"in {status}"), status)
    html = render(
        user,
        "{% jobs_table jobs results_url='app_results' monitor_url='app_monitor' %}",
        rf,
        jobs=[job],
    )
    row = _row(html, job)
    assert _enabled(row) == EXPECTED[Status.parse(status) or Status.OTHER]
    assert f'class="badge badge-{_badge(status)}" data-status>{status}</span>' in row
    # Every built-in action is on the page (hidden when disabled) for the live stream to enable.
    for name in ("run", "pause", "resume", "resubmit", "logs", "monitor", "results", "terminate"):
        assert f'data-action="{name}"' in row


def _badge(status: str) -> str:
    return {"Complete": "complete", "Error": "error", "Aborted": "aborted"}.get(
        status, status.lower()
    )


@use_urls
def test_post_actions_are_forms_with_csrf_and_a_way_back(user: Any, rf: Any) -> None:
    job = _job(user, "p")
    html = render(user, "{% jobs_table jobs %}", rf, jobs=[job])
    row = _row(html, job)
    form = re.search(rf'<form method="post" action="/jobs/{job.pk}/run/">.*?</form>', row, re.S)
    assert form, row
    assert 'name="csrfmiddlewaretoken"' in form.group(0)
    assert 'name="next" value="/somewhere/?page=2"' in form.group(0)
    assert f'action="/jobs/{job.pk}/delete/" data-confirm="Delete job {job.pk} (p)' in row
    terminate = re.search(r'<form [^>]*action="[^"]*/cancel/"[^>]*>', row)
    assert terminate and "data-confirm=" in terminate.group(0)
    assert f'href="/jobs/{job.pk}/#logs"' in row  # logs: the job's page
    assert f'<a href="/jobs/{job.pk}/">p</a>' in row  # the name links to the job's page


@use_urls
def test_results_and_monitor_urls_are_reversed_with_the_job_id(user: Any, rf: Any) -> None:
    done = _in(user, _job(user, "done"), "Complete")
    html = render(
        user,
        "{% jobs_table jobs results_url='app_results' monitor_url='app_monitor' %}",
        rf,
        jobs=[done],
    )
    assert f'href="/app/results/{done.pk}/" data-action="results"' in html
    assert f'href="/app/monitor/{done.pk}/" data-action="monitor"' in html
    plain = render(user, "{% jobs_table jobs %}", rf, jobs=[done])
    assert 'data-action="results"' not in plain and 'data-action="monitor"' not in plain


@use_urls
def test_column_fields_names_pairs_and_extended_property_paths(user: Any, rf: Any) -> None:
    job = _job(
        user,
        "with props",
        description="<b>described</b>",
        extended_properties={"model": {"grid": "1 km"}, "flat": 7},
    )
    html = render(
        user,
        "{% jobs_table jobs column_fields=fields %}",
        rf,
        jobs=[job],
        fields=[
            "id",
            "description",
            ("Grid", "extended_properties.model.grid"),
            "extended_properties.flat",
            "extended_properties.missing.deep",
            "creation_time",
        ],
    )
    headers = re.findall(r'<th scope="col"[^>]*>(.*?)</th>', html)
    assert headers == [
        "ID",
        "Description",
        "Grid",
        "Flat",
        "Deep",
        "Creation Time",
        "Status",
        "Actions",
    ]
    row = _row(html, job)
    assert "&lt;b&gt;described&lt;/b&gt;" in row and "<b>described" not in row
    assert "<td>1 km</td>" in row and "<td>7</td>" in row
    assert '<span class="muted">—</span>' in row  # the missing path
    assert f'datetime="{job.creation_time.isoformat()}"' in row or "<time datetime=" in row


@pytest.mark.parametrize(
    "fields",
    [["_status"], ["name._meta"], [("a", "b", "c")], ["ok", ""]],
)
def test_bad_column_fields_name_the_option(fields: Any, user: Any) -> None:
    options = make_options([], column_fields=fields)
    from offload.web import jobs_table

    with pytest.raises(InvalidJobError) as caught:
        jobs_table.build(options, {})
    assert caught.value.field == "column_fields"


@use_urls
def test_bad_urls_name_the_option(user: Any) -> None:
    from offload.web import jobs_table

    job = _job(user, "u")
    for option in ("results_url", "monitor_url"):
        with pytest.raises(InvalidJobError) as caught:
            jobs_table.build(make_options([job], **{option: "nowhere:at_all"}), {})
        assert caught.value.field == option
    bad = CustomJobAction("Go", "nowhere:at_all")
    with pytest.raises(InvalidJobError) as caught:
        jobs_table.build(make_options([job], actions=[bad]), {})
    assert caught.value.field == "callback_or_url"


@use_urls
def test_a_page_of_a_paginator_is_sorted_without_a_new_query_order(user: Any, rf: Any) -> None:
    from django.core.paginator import Paginator

    jobs = [_job(user, f"p{i}") for i in range(5)]
    page = Paginator(Job.objects.order_by("-id"), 2).get_page(1)
    html = render(user, "{% jobs_table jobs %}", rf, jobs=page.object_list)
    assert [int(x) for x in re.findall(r'<tr id="job-(\d+)"', html)] == [jobs[3].pk, jobs[4].pk]


def test_bad_options_name_the_option() -> None:
    with pytest.raises(InvalidJobError) as caught:
        make_options([], colour="red")
    assert caught.value.field == "colour"
    with pytest.raises(InvalidJobError) as caught:
        make_options("not jobs")
    assert caught.value.field == "jobs"
    from offload.web import jobs_table

    with pytest.raises(InvalidJobError) as caught:
        jobs_table.build(make_options([], actions=["run", "explode"]), {})
    assert caught.value.field == "actions"


@use_urls
def test_show_status_show_actions_and_styling_flags(user: Any, rf: Any) -> None:
    job = _job(user, "s")
    bare = render(
        user,
        "{% jobs_table jobs show_status=False show_actions=False column_fields=cols %}",
        rf,
        jobs=[job],
        cols=["name"],
    )
    assert "data-status>" not in bare and "data-action" not in bare
    assert ">Status<" not in bare and ">Actions<" not in bare
    assert "data-stream" not in bare  # nothing to update without a status column
    styled = render(
        user,
        "{% jobs_table jobs hover=True striped=True bordered=True condensed=True "
        "classes='mine' refresh_interval=2500 attributes=attrs %}",
        rf,
        jobs=[job],
        attrs={"data-app": "x<y"},
    )
    table = re.search(r"<table [^>]*>", styled)
    assert table
    tag = table.group(0)
    for name in ("table-hover", "table-striped", "table-bordered", "table-condensed", "mine"):
        assert name in tag
    assert 'data-refresh-interval="2500"' in tag
    assert 'data-app="x&lt;y"' in tag
    assert 'data-stream="/jobs/events/stream?since=' in tag


@use_urls
def test_sort_and_reverse_sort(user: Any, rf: Any) -> None:
    a, b, c = (_job(user, name) for name in ("b-second", "c-third", "a-first"))

    def ids(html: str) -> list[int]:
        return [int(x) for x in re.findall(r'<tr id="job-(\d+)"', html)]

    shuffled = [b, c, a]
    assert ids(render(user, "{% jobs_table jobs %}", rf, jobs=shuffled)) == [a.pk, b.pk, c.pk]
    assert ids(render(user, "{% jobs_table jobs reverse_sort=True %}", rf, jobs=shuffled)) == [
        c.pk,
        b.pk,
        a.pk,
    ]
    assert ids(render(user, "{% jobs_table jobs sort=False %}", rf, jobs=shuffled)) == [
        b.pk,
        c.pk,
        a.pk,
    ]
    by_name = render(user, "{% jobs_table jobs sort='name' %}", rf, jobs=shuffled)
    assert ids(by_name) == [c.pk, a.pk, b.pk]
    qs = Job.objects.filter(pk__in=[a.pk, b.pk, c.pk])
    assert ids(render(user, "{% jobs_table jobs sort='-name' %}", rf, jobs=qs)) == [
        b.pk,
        a.pk,
        c.pk,
    ]
    assert ids(render(user, "{% jobs_table jobs reverse_sort=True %}", rf, jobs=qs)) == [
        c.pk,
        b.pk,
        a.pk,
    ]


@use_urls
def test_options_object_and_empty_table(user: Any, rf: Any) -> None:
    job = _job(user, "from options")
    options = JobsTable(jobs=[job], column_fields=["name"], actions=["run", "|", "delete"])
    html = render(user, "{% jobs_table options %}", rf, options=options)
    assert "from options" in html
    assert 'data-action="run"' in html and 'data-action="delete"' in html
    assert 'data-action="logs"' not in html
    assert html.count('class="sep"') == 1
    empty = render(user, "{% jobs_table jobs %}", rf, jobs=[])
    assert "No jobs." in empty


@use_urls
def test_separators_are_tidied_around_hidden_actions(user: Any, rf: Any) -> None:
    job = _job(user, "pending")
    html = render(
        user,
        "{% jobs_table jobs actions=actions %}",
        rf,
        jobs=[job],
        actions=["|", "run", "|", "|", "resubmit", "|", "delete", "|"],
    )
    seps = re.findall(r'<span class="sep"[^>]*>', _row(html, job))
    # Leading, doubled and trailing ones are gone; of the two left, the one after "run" shows
    # and the one that would follow it (with "resubmit" hidden) is hidden.
    assert len(seps) == 2
    assert [s.endswith(" hidden>") for s in seps] == [False, True]


@use_urls
def test_custom_actions(user: Any, rf: Any) -> None:
    pending = _job(user, "pending one")
    done = _in(user, _job(user, "done one"), "Complete")
    actions = [
        "run",
        "|",
        CustomJobAction("Rerun", "app_rerun", method="post", confirmation_message="Rerun {name}?"),
        CustomJobAction(
            "Plot",
            "/app/plot/{job_id}/",
            enabled_callback=lambda job: job.status == "Complete",
        ),
        CustomJobAction("Share", "shareJob", job_type="BASIC", danger=True),
        CustomJobAction("Condor only", "/x/{job_id}/", job_type="CONDOR"),
    ]
    html = render(
        user, "{% jobs_table jobs actions=actions %}", rf, jobs=[pending, done], actions=actions
    )
    row = _row(html, pending)
    rerun = re.search(
        rf'<form method="post" action="/app/rerun/{pending.pk}/"[^>]*>.*?</form>', row, re.S
    )
    assert rerun, row
    assert 'data-confirm="Rerun pending one?"' in rerun.group(0)
    assert "csrfmiddlewaretoken" in rerun.group(0)
    plot = re.search(rf'<a [^>]*href="/app/plot/{pending.pk}/"[^>]*>', row)
    assert plot and 'aria-disabled="true"' in plot.group(0)  # enabled only when Complete
    done_plot = re.search(rf'<a [^>]*href="/app/plot/{done.pk}/"[^>]*>', _row(html, done))
    assert done_plot and "aria-disabled" not in done_plot.group(0)
    share = re.search(r'<button type="button" class="act danger" [^>]*>Share</button>', row)
    assert share and 'data-callback="shareJob"' in share.group(0)
    assert f'data-job="{pending.pk}"' in share.group(0)
    assert "Condor only" not in html
    with pytest.raises(InvalidJobError):
        CustomJobAction("", "x")
    with pytest.raises(InvalidJobError):
        CustomJobAction("x", "y", method="delete")


@use_urls
def test_pending_intent_shows_until_the_monitor_confirms(
    user: Any, rf: Any, keep_signal_handlers: None, until: Any
) -> None:
    job = JobManager("tbl").create_job(
        "sleeper",
        user,
        job_type="LOCAL",
        executable=sys.executable,
        arguments=["-c", "import time; time.sleep(60)"],
    )
    job.execute()
    html = render(user, "{% jobs_table jobs %}", rf, jobs=Job.objects.filter(pk=job.pk))
    assert re.search(
        r'<span class="pending" data-pending data-until="[A-Z ]+">submitting…</span>', html
    )
    monitor = Monitor(name="tbl-test")
    try:
        until(
            lambda: Job.objects.get(pk=job.pk).status == "Running",
            step=monitor.run_cycle,
            timeout=60,
            what="the local job to run",
        )
        job = Job.objects.get(pk=job.pk)
        store.stop(job, source=EventSource.USER, actor="alice")
        assert JobIntent.objects.filter(job=job, action=IntentAction.STOP, done_at=None).exists()
        html = render(user, "{% jobs_table jobs %}", rf, jobs=Job.objects.filter(pk=job.pk))
        row = _row(html, job)
        assert ">Running</span>" in row
        pending = re.search(
            r'<span class="pending" data-pending data-until="([A-Z ]+)">cancelling…</span>', row
        )
        assert pending and "ABT" in pending.group(1).split()
        until(
            lambda: Job.objects.get(pk=job.pk).status == "Aborted",
            step=monitor.run_cycle,
            timeout=60,
            what="the monitor to cancel it",
        )
    finally:
        monitor.shutdown()
    html = render(user, "{% jobs_table jobs %}", rf, jobs=Job.objects.filter(pk=job.pk))
    assert "cancelling…" not in html and ">Aborted</span>" in html
    assert '<span class="pending" data-pending hidden></span>' in html


@use_urls
def test_query_count_is_constant_in_the_number_of_rows(user: Any, rf: Any) -> None:
    manager = JobManager("counted")

    def queries(count: int) -> int:
        Job.objects.all().delete()
        jobs = manager.bulk_create([manager.create_job(f"j{i}", user) for i in range(count)])
        for job in jobs[: count // 2]:
            job.execute()
        qs = Job.objects.filter(label="counted").select_related("user")
        with CaptureQueriesContext(connection) as ctx:
            render(
                user,
                "{% jobs_table jobs column_fields=cols %}",
                rf,
                jobs=qs,
                cols=["id", "name", "user", "run_time"],
            )
        return len(ctx.captured_queries)

    small = queries(2)
    assert queries(40) == small
    # The jobs, their open intents (one query), the newest event id.
    assert small == 3


def test_the_tag_works_without_a_request_or_offload_urls(user: Any, settings: Any) -> None:
    bare = types.ModuleType("no_offload_urls")  # a project without offload.urls
    bare.urlpatterns = []  # type: ignore[attr-defined]
    settings.ROOT_URLCONF = bare
    job = _job(user, "plain")
    html = Template("{% load offload_tags %}{% jobs_table jobs %}").render(Context({"jobs": [job]}))
    row = _row(html, job)
    assert "<td>plain</td>" in row  # no job page to link to
    assert 'data-stream="' not in html
    assert _enabled(row) == set()  # no views to post to


# -- the portal's page uses the tag -----------------------------------------------------------------
def test_portal_jobs_page_uses_the_tag(client: Client, user: Any) -> None:
    client.force_login(user)
    job = _job(user, "on the portal")
    html = client.get("/jobs/").content.decode()
    assert 'id="offload-jobs"' in html and 'class="jobs offload-jobs-table table-hover"' in html
    assert 'id="live-state"' in html
    assert 'data-stream="/jobs/events/stream?since=' in html
    row = _row(html, job)
    assert _enabled(row) == {"run", "delete"}
    assert 'name="next" value="/jobs/"' in row


# -- the action views -------------------------------------------------------------------------------
def test_run_pause_resume_from_the_table_return_to_it(client: Client, user: Any) -> None:
    client.force_login(user)
    job = _job(user, "acted on")
    back = "/jobs/?status=PEN"
    response = client.post(f"/jobs/{job.pk}/run/", {"next": back})
    assert response.status_code == 302 and response["Location"] == back
    job.refresh_from_db()
    assert job.status == "Submitted"
    job.update_status("Running")
    assert client.post(f"/jobs/{job.pk}/pause/", {"next": back})["Location"] == back
    assert Job.objects.get(pk=job.pk).status == "Paused"
    assert client.post(f"/jobs/{job.pk}/resume/", {"next": back})["Location"] == back
    assert Job.objects.get(pk=job.pk).status == "Running"
    latest = JobEvent.objects.filter(job_id=job.pk).order_by("-id").first()
    assert latest is not None and latest.actor == "alice" and latest.source == EventSource.USER
    # Refused: a message on the page it came from, never a 500.
    refused = client.post(f"/jobs/{job.pk}/run/", {"next": back}, follow=True)
    assert refused.status_code == 200
    assert "already executed" in refused.content.decode()
    # Without next: the job's page, with the error and a 409.
    assert client.post(f"/jobs/{job.pk}/resume/").status_code == 409


def test_an_unsafe_next_is_ignored(client: Client, user: Any) -> None:
    client.force_login(user)
    job = _job(user, "n")
    response = client.post(f"/jobs/{job.pk}/run/", {"next": "https://evil.example/"})
    assert response.status_code == 302
    assert response["Location"] == f"/jobs/{job.pk}/"


@pytest.mark.parametrize("action", ["run", "pause", "resume", "cancel", "resubmit", "delete"])
def test_actions_on_other_peoples_jobs_are_404(
    client: Client, user: Any, other_user: Any, action: str
) -> None:
    theirs = _job(other_user, "theirs")
    client.force_login(user)
    assert client.post(f"/jobs/{theirs.pk}/{action}/", {"next": "/jobs/"}).status_code == 404
    assert client.post(f"/jobs/999999/{action}/").status_code == 404
    assert client.get(f"/jobs/{_job(user).pk}/{action}/").status_code == 405
    assert Job.objects.get(pk=theirs.pk).status == "Pending"


def test_actions_need_login_and_csrf(user: Any) -> None:
    job = _job(user, "c")
    anonymous = Client()
    response = anonymous.post(f"/jobs/{job.pk}/run/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post(f"/jobs/{job.pk}/run/").status_code == 403
    assert Job.objects.get(pk=job.pk).status == "Pending"
