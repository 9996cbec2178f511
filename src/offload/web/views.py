"""The web part: the signed-in user's jobs, one job's page (fields, history, logs with a live
tail, result files, the workflow's DAG, actions), file downloads with ``Range``, and the
Tethys-compatible ``/update-job-status/<id>/`` endpoint.

Pages are server-rendered and read rows and files only: no request talks to a scheduler or an
engine. Actions (cancel, resubmit, delete) go through :mod:`offload.store`, which records intents
for a monitor to carry out; logs and result files are read from the job's workspace
(:mod:`offload.web.files`).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any
from urllib.parse import urlencode

from django.apps import apps
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import RequestDataTooBig
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect
from django.template import TemplateDoesNotExist, loader
from django.template.backends.django import DjangoTemplates
from django.utils.functional import cached_property
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from offload import store
from offload.errors import InvalidJobError, JobNotFoundError, JobStateError, NotSupportedError
from offload.models import JOB_TYPES, EventSource, Job, JobEvent
from offload.status import FINAL, RESULTS_PENDING, STATUS_CHOICES, Status
from offload.web import TEMPLATES_DIR, access, detailed_status, files, listing
from offload.web.jobs_table import TERMINAL, JobsTable
from offload.web.tokens import check_status_token

#: Jobs per page of the list.
PAGE_SIZE = 50
#: The jobs page counts at most this many jobs (so its first page costs the same for a user with
#: 100,000 jobs as for one with 100); beyond it the pager says "more than …".
COUNT_CAP = 10_000
#: A text search matching at most this many jobs is answered matches first (see jobs_page).
FEW_MATCHES = 2_000


class CappedPaginator(Paginator):  # type: ignore[type-arg]
    """A paginator whose count stops at :data:`COUNT_CAP` jobs, or just past the page asked for
    when that is further (a ``COUNT(*)`` over a ``LIMIT``): the first page costs the same for a
    user with 100,000 jobs as for one with 100, and a deep page costs what its offset costs."""

    def __init__(self, object_list: Any, per_page: int, wanted_page: Any = 1) -> None:
        super().__init__(object_list, per_page)
        try:
            wanted = max(1, int(wanted_page))
        except (TypeError, ValueError):
            wanted = 1
        self.cap = max(COUNT_CAP, wanted * per_page)

    @cached_property
    def count(self) -> int:
        return int(self.object_list[: self.cap + 1].count())  # type: ignore[attr-defined]

    @property
    def count_is_capped(self) -> bool:
        return self.count > self.cap


#: How much of each log the job page shows (the end of it).
LOG_TAIL_BYTES = 200 * 1024
#: Longest pushed ``message`` accepted (characters).
MAX_PUSH_MESSAGE = 65_536
#: Longest pushed ``native_status`` (the column's size).
MAX_NATIVE_STATUS = 255

#: Status code → the CSS class of its badge.
BADGE_CLASSES: dict[str, str] = {
    Status.PENDING.value: "badge-pending",
    Status.SUBMITTED.value: "badge-submitted",
    Status.RUNNING.value: "badge-running",
    Status.PAUSED.value: "badge-paused",
    Status.VARIOUS.value: "badge-running",
    Status.RESULTS_READY.value: "badge-results",
    Status.COMPLETE.value: "badge-complete",
    Status.VARIOUS_COMPLETE.value: "badge-complete",
    Status.ERROR.value: "badge-error",
    Status.ABORTED.value: "badge-aborted",
    Status.OTHER.value: "badge-other",
}


# -- rendering --------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _own_templates() -> DjangoTemplates:
    """A template engine over offload's own templates, for projects whose TEMPLATES settings do
    not list them (``APP_DIRS`` looks in ``offload/templates``, which is a module here)."""
    processors = [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
    ]
    if apps.is_installed("django.contrib.messages"):
        processors.append("django.contrib.messages.context_processors.messages")
    return DjangoTemplates(
        {
            "NAME": "offload-web",
            "DIRS": [str(TEMPLATES_DIR)],
            "APP_DIRS": False,
            "OPTIONS": {"context_processors": processors},
        }
    )


def render_page(
    request: HttpRequest, name: str, context: dict[str, Any], *, status: int = 200
) -> HttpResponse:
    """Render one of offload's pages: the project's template engines first (so a project can
    override ``offload/*.html``), else offload's own templates."""
    try:
        template: Any = loader.get_template(name)
    except TemplateDoesNotExist:
        template = _own_templates().get_template(name)
    return HttpResponse(template.render(context, request), status=status)


# -- helpers ----------------------------------------------------------------------------------------
def _username(request: HttpRequest) -> str:
    return str(getattr(request.user, "username", "") or "")


def _is_staff(request: HttpRequest) -> bool:
    return access.can_manage_all(request.user)


def _may_act(request: HttpRequest, job: Job) -> bool:
    """Whether the user may act on the job (:mod:`offload.web.access`: view-only groups may not)."""
    return access.may_act(request.user, job, anonymous_jobs=access.anonymous_jobs_of(request))


def signed_in_or_anonymous_app(view: Callable[..., HttpResponseBase]) -> Callable[..., Any]:
    """Like ``login_required``, except that where an app opts in (``OFFLOAD["ANONYMOUS_JOBS"]``)
    an anonymous visitor gets through, to see only their own session's jobs."""

    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if access.is_signed_in(request.user) or access.anonymous_jobs_of(request):
            return view(request, *args, **kwargs)
        return redirect_to_login(request.get_full_path())

    return checked


def format_duration(value: datetime.timedelta | str | None) -> str:
    """``1:02:03`` (``2d 1:02:03`` past a day); empty for no duration."""
    if not isinstance(value, datetime.timedelta):
        return ""
    seconds = max(int(value.total_seconds()), 0)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{days}d {text}" if days else text


@dataclass(frozen=True)
class JobRow:
    """What a row of the jobs table shows beyond the job's own fields."""

    job: Job
    badge: str
    run_time: str


def _row(job: Job) -> JobRow:
    return JobRow(
        job=job, badge=BADGE_CLASSES.get(job._status, ""), run_time=format_duration(job.run_time)
    )


@dataclass(frozen=True)
class LogView:
    name: str
    text: str
    truncated: bool
    size: int
    #: Where the live tail continues reading (bytes).
    offset: int = 0


def tail(text: str, limit: int = LOG_TAIL_BYTES) -> tuple[str, bool, int]:
    """The last ``limit`` bytes of ``text`` (UTF-8), whether it was cut, and its full size."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text, False, len(data)
    cut = data[-limit:].decode("utf-8", errors="ignore")
    newline = cut.find("\n")
    if 0 <= newline < 4096:  # start at a whole line when one begins near the cut
        cut = cut[newline + 1 :]
    return cut, True, len(data)


def _read_logs(job: Job) -> tuple[list[LogView], str]:
    """The job's logs (each cut to its last LOG_TAIL_BYTES), read from the files the engine keeps
    in the workspace (never through the engine: a web request does not call a scheduler)."""
    views: list[LogView] = []
    for name, path in files.log_files(job).items():
        chunk = files.read_log(path, name, -LOG_TAIL_BYTES, limit=LOG_TAIL_BYTES)
        text = chunk.text
        if chunk.offset > 0:
            newline = text.find("\n")
            if 0 <= newline < 4096:  # start at a whole line when one begins near the cut
                text = text[newline + 1 :]
        views.append(
            LogView(
                name=name,
                text=text,
                truncated=chunk.offset > 0,
                size=chunk.size,
                offset=chunk.next_offset,
            )
        )
    return views, ""


def _get_job(request: HttpRequest, job_id: int) -> Job:
    """The job if the user may see it (:mod:`offload.web.access`), else a 404."""
    qs = Job.objects.visible().select_related("user", "scheduler")
    return access.get_job_or_404(
        request.user, job_id, qs, anonymous_jobs=access.anonymous_jobs_of(request)
    )


#: Column field of the jobs page → its sort key (offload.web.listing.SORTS).
TABLE_SORT_KEYS: dict[str, str] = {
    "id": "id",
    "name": "name",
    "label": "app",
    "job_type": "type",
    "status": "status",
    "creation_time": "created",
    "start_time": "started",
    "completion_time": "finished",
}


# -- pages ------------------------------------------------------------------------------------------
@signed_in_or_anonymous_app
@require_GET
def jobs(request: HttpRequest) -> HttpResponse:
    """The signed-in user's jobs and those shared with their groups (of every app), newest
    first, 50 a page. Staff and holders of ``offload.manage_all_jobs`` may add ``?all=1`` to see
    everyone's. Filters (``status``, ``type``, ``q``) and ``sort`` run in the database: a count
    and the page, whatever the number of jobs."""
    show_all = _is_staff(request) and request.GET.get("all") == "1"
    qs: QuerySet[Job] = (
        Job.objects.visible().select_related("user").defer("engine_state", "parameters")
    )
    if not show_all and access.is_signed_in(request.user):
        qs = qs.filter(access.shared_with(request.user))  # a manager's own page: theirs too
    elif not show_all:
        qs = access.visible_jobs(request.user, qs, anonymous_jobs=access.anonymous_jobs_of(request))
    active = {
        key: request.GET.get(key, "").strip()[: listing.MAX_SEARCH]
        for key in ("status", "type", "q", "sort")
    }
    active = {key: value for key, value in active.items() if value}
    sort = active.get("sort", listing.DEFAULT_SORT)
    error = ""
    try:
        qs = listing.filter_jobs(
            qs,
            status=active.get("status"),
            job_type=active.get("type"),
            q=active.get("q"),
            sort=sort,
        )
    except InvalidJobError as exc:
        error, active, sort = str(exc), {}, listing.DEFAULT_SORT
        qs = qs.order_by("-id")
    wanted = request.GET.get("page")
    paginator = CappedPaginator(qs, PAGE_SIZE, wanted)
    if active.get("q") and sort in ("id", "-id") and paginator.count <= FEW_MATCHES:
        # Few jobs match the search (counted through the name index): take them first and sort
        # them, rather than walk the user's jobs newest first hoping to meet matches soon.
        paginator.object_list = listing.matches_first(qs, descending=sort == "-id")
    page = paginator.get_page(wanted)
    base = {"all": "1"} if show_all else {}
    query = urlencode({**base, **active})
    sort_urls, sort_marks = {}, {}
    for key in listing.SORTS:
        if sort == "-" + key:
            following, sort_marks[key] = key, "descending"
        elif sort == key:
            following, sort_marks[key] = "-" + key, "ascending"
        else:
            following = "-" + key if key in ("id", "created", "started", "finished") else key
        sort_urls[key] = "?" + urlencode({**base, **active, "sort": following})
    rows = [_row(job) for job in page.object_list]
    columns: list[tuple[str, str]] = [("ID", "id"), ("Name", "name")]
    if show_all:
        columns.append(("User", "user"))
    columns += [
        ("App", "label"),
        ("Type", "job_type"),
        ("Created", "creation_time"),
        ("Started", "start_time"),
        ("Finished", "completion_time"),
        ("Run time", "run_time"),
    ]
    sort_links = {
        field: (sort_urls[key], sort_marks.get(key, "")) for field, key in TABLE_SORT_KEYS.items()
    }
    table = JobsTable(
        jobs=[row.job for row in rows],
        column_fields=columns,
        sort=False,  # sorted (and paged) in the database
        sort_links=sort_links,
        hover=True,
        caption=("All jobs" if show_all else "My jobs") + ", newest first",
        show_detailed_status=True,
        user=request.user,
        anonymous_jobs=tuple(access.anonymous_jobs_of(request)),
    )
    context = {
        "page": page,
        "rows": rows,
        "jobs_table": table,
        "show_all": show_all,
        "is_staff": _is_staff(request),
        "query_prefix": f"{query}&" if query else "",
        "filters": active,
        "filter_error": error,
        "sort_urls": sort_urls,
        "sort_marks": sort_marks,
        "status_choices": STATUS_CHOICES,
        "job_types": sorted(JOB_TYPES),
        "all_url": "?" + urlencode({"all": "1", **active}),
        "mine_url": "?" + urlencode(active),
    }
    return render_page(request, "offload/jobs.html", context)


def _detail(request: HttpRequest, job: Job, *, error: str = "", status: int = 200) -> HttpResponse:
    current = Status(job._status)
    events = list(JobEvent.objects.filter(job_id=job.pk).order_by("id"))
    logs, logs_error = _read_logs(job)
    may_act = _may_act(request, job)
    listing_ = files.list_files(job)
    context = {
        "job": job,
        "row": _row(job),
        "events": events,
        "logs": logs,
        "logs_error": logs_error,
        "log_limit_kb": LOG_TAIL_BYTES // 1024,
        "follow_logs": follows_logs(job),
        "badge_classes": BADGE_CLASSES,
        "files": listing_.files,
        "files_more": listing_.more,
        "files_problem": listing_.problem,
        "detailed": detailed_status.for_job(job),
        "error": error,
        "may_act": may_act,
        "can_cancel": may_act and current not in FINAL and current not in RESULTS_PENDING,
        "can_resubmit": may_act and current != Status.PENDING,
        "can_delete": may_act,
        "status_names": dict(STATUS_CHOICES),
    }
    return render_page(request, "offload/job_detail.html", context, status=status)


def follows_logs(job: Job) -> bool:
    """Whether the job's logs may still grow: it was executed and is not finished."""
    current = Status(job._status)
    if current == Status.OTHER:
        return job.other_category is None or job.other_category.value != "terminal"
    return bool(job.attempt) and current != Status.PENDING and current not in TERMINAL


@signed_in_or_anonymous_app
@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    """One job: its fields, its history, its logs (followed while it runs), its result files, its
    DAG, and buttons to act on it. Someone else's job is a 404 unless it is shared with one of
    the user's groups or the user is staff."""
    return _detail(request, _get_job(request, job_id))


#: Largest offset a log-tail request may name.
MAX_OFFSET = 2**62


@signed_in_or_anonymous_app
@require_GET
def job_logs_tail(request: HttpRequest, job_id: int) -> JsonResponse:
    """``GET /jobs/<id>/logs/?stdout=<offset>&stderr=<offset>``: what each log gained since
    ``offset`` (bytes; a log not named starts with its last 200 KB), the job's status, and
    ``follow``: false once the job is finished (the page then stops asking). Reads the log files
    in the workspace only."""
    job = _get_job(request, job_id)
    logs = []
    for name, path in files.log_files(job).items():
        raw = request.GET.get(name)
        try:
            offset = int(raw) if raw is not None else -LOG_TAIL_BYTES
        except ValueError:
            return _json_error(400, f"{name}: expected a byte offset, not {str(raw)[:40]!r}", name)
        if not -MAX_OFFSET < offset < MAX_OFFSET:
            return _json_error(400, f"{name}: offset out of range", name)
        chunk = files.read_log(path, name, offset)
        logs.append(
            {
                "name": chunk.name,
                "offset": chunk.offset,
                "next_offset": chunk.next_offset,
                "size": chunk.size,
                "text": chunk.text,
            }
        )
    response = JsonResponse(
        {
            "job": job.pk,
            "attempt": job.attempt,
            "status": job.cached_status,
            "status_code": job._status,
            "follow": follows_logs(job),
            "logs": logs,
        }
    )
    response["Cache-Control"] = "no-store"
    return response


@signed_in_or_anonymous_app
@require_http_methods(["GET", "HEAD"])
def job_file(request: HttpRequest, job_id: int, path: str) -> HttpResponse:
    """Download one of the job's result files (streamed; ``Range`` gives 206 or 416). Paths that
    leave the workspace, and the engines' own folder, are 404 like another user's job."""
    job = _get_job(request, job_id)
    real = files.result_file(job, path)
    return files.download_response(request, real, filename=path.rsplit("/", 1)[-1])


def _cancel(job: Job, actor: str) -> str:
    store.stop(job, source=EventSource.USER, actor=actor)
    if job._status == Status.ABORTED.value:
        return f"Job {job.pk} cancelled."
    return f"Cancel requested for job {job.pk}: a monitor stops it shortly."


def _run(job: Job, actor: str) -> str:
    store.execute(job, source=EventSource.USER, actor=actor)
    return f"Job {job.pk} submitted: a monitor starts it shortly."


def _pause(job: Job, actor: str) -> str:
    store.pause(job, source=EventSource.USER, actor=actor)
    if job._status == Status.PAUSED.value:
        return f"Job {job.pk} paused."
    return f"Pause requested for job {job.pk}: a monitor pauses it shortly."


def _resume(job: Job, actor: str) -> str:
    store.resume(job, source=EventSource.USER, actor=actor)
    if job._status == Status.RUNNING.value:
        return f"Job {job.pk} resumed."
    return f"Resume requested for job {job.pk}: a monitor resumes it shortly."


def _resubmit(job: Job, actor: str) -> str:
    store.resubmit(job, source=EventSource.USER, actor=actor)
    return f"Job {job.pk} resubmitted (attempt {job.attempt})."


def _delete(job: Job, actor: str) -> str:
    store.delete(job, actor=actor)
    return f"Job {job.pk} deleted."


ACTIONS: dict[str, Callable[[Job, str], str]] = {
    "run": _run,
    "pause": _pause,
    "resume": _resume,
    "cancel": _cancel,
    "resubmit": _resubmit,
    "delete": _delete,
}


@signed_in_or_anonymous_app
@require_POST
def job_action(request: HttpRequest, job_id: int, action: str) -> HttpResponse:
    """Run, pause, resume, cancel, resubmit or delete a job (a POST form with CSRF). With a
    ``next`` field (the jobs table sends its page) the user returns there, with the outcome as a
    message; without, to the job's page. What the job's state does not allow is shown (400/409
    on the job's page, or a message on ``next``), never a server error."""
    job = _get_job(request, job_id)
    perform = ACTIONS.get(action)
    if perform is None:
        raise Http404(f"no action {action!r}")
    back = _safe_next(request)
    if not _may_act(request, job):
        refusal = f"You may see job {job.pk} but not act on it (it is shared with you view-only)."
        if back:
            messages.error(request, refusal, fail_silently=True)
            return redirect(back)
        return _detail(request, job, error=refusal, status=403)
    try:
        done = perform(job, _username(request))
    except (InvalidJobError, JobStateError, NotSupportedError, JobNotFoundError) as exc:
        if back:
            messages.error(request, str(exc), fail_silently=True)
            return redirect(back)
        if isinstance(exc, JobNotFoundError):  # deleted since the page was read
            raise Http404(str(exc)) from None
        code = 400 if isinstance(exc, InvalidJobError) else 409
        return _detail(request, job, error=str(exc), status=code)
    messages.success(request, done, fail_silently=True)
    if back:
        return redirect(back)
    if action == "delete":
        return redirect("offload:jobs")
    return redirect("offload:job_detail", job_id=job.pk)


def _safe_next(request: HttpRequest) -> str:
    """The ``next`` field if it is a path on this site, else empty."""
    value = str(request.POST.get("next", "") or "")[:2000]
    if value and url_has_allowed_host_and_scheme(
        value, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return value
    return ""


# -- the status endpoint ----------------------------------------------------------------------------
def _json_error(status: int, error: str, field: str | None = None) -> JsonResponse:
    body: dict[str, Any] = {"success": False, "error": error}
    if field:
        body["field"] = field
    return JsonResponse(body, status=status)


@csrf_exempt  # GET has no side effect CSRF could abuse; POST is authorised by a signed token
def update_job_status(request: HttpRequest, job_id: int) -> HttpResponse:
    """``GET``: ask a monitor to refresh the job soon (Tethys compatible, no login, no scheduler
    call). ``POST``: a status report pushed by the job itself, with a signed token."""
    if request.method in ("GET", "HEAD"):
        if not store.request_refresh(job_id):
            return _json_error(404, f"job {job_id} does not exist")
        return JsonResponse({"success": True})
    if request.method == "POST":
        return _push_status(request, job_id)
    response = _json_error(405, f"method {request.method} is not allowed; use GET or POST")
    response["Allow"] = "GET, HEAD, POST"
    return response


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _parse_body(request: HttpRequest) -> tuple[dict[str, Any], str]:
    try:
        raw = request.body
    except RequestDataTooBig:
        return {}, "body: too large"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}, "body: not valid JSON"
    if not isinstance(data, dict):
        return {}, "body: expected a JSON object"
    return data, ""


def _optional_text(data: dict[str, Any], field: str, limit: int) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidJobError(field, "must be a string")
    if len(value) > limit:
        raise InvalidJobError(field, f"longer than {limit} characters")
    return value


def _push_status(request: HttpRequest, job_id: int) -> JsonResponse:
    job = Job.objects.visible().filter(pk=job_id).first()
    if job is None:
        return _json_error(404, f"job {job_id} does not exist")
    data, body_error = _parse_body(request)
    token = _bearer(request) or data.get("token")
    attempt = check_status_token(token, job_id) if isinstance(token, str) else None
    if attempt is None:
        return _json_error(403, "token: missing or invalid status token", "token")
    if attempt != job.attempt:
        return _json_error(
            403,
            f"token: made for attempt {attempt}; job {job_id} is on attempt {job.attempt}",
            "token",
        )
    if body_error:
        return _json_error(400, body_error, "body")
    value = data.get("status")
    if not isinstance(value, str) or not value.strip():
        return _json_error(400, "status: required, a status name or code", "status")
    status = Status.parse(value)
    if status is None or status == Status.OTHER:
        names = ", ".join(s.display for s in Status if s != Status.OTHER)
        return _json_error(400, f"status: {value!r} is not a status (one of {names})", "status")
    try:
        message = _optional_text(data, "message", MAX_PUSH_MESSAGE)
        native_status = _optional_text(data, "native_status", MAX_NATIVE_STATUS)
    except InvalidJobError as exc:
        return _json_error(400, str(exc), exc.field)
    if status == Status.COMPLETE and job._process_results_function:
        status = Status.RESULTS_READY  # result processing runs first, as for polled reports
    applied = store.apply_change(
        job,
        store.Change(status, EventSource.PUSH, message=message, native_status=native_status),
        attempt=job.attempt,  # the attempt the token was checked against
    )
    return JsonResponse({"success": True, "applied": applied, "status": job.cached_status})
