"""The REST API (django-ninja) under ``/jobs/api/``, with its OpenAPI document at
``/jobs/api/openapi.json`` and interactive docs at ``/jobs/api/docs``.

Authentication: ``Authorization: Bearer <token>`` (an :class:`offload.models.ApiToken`, for
scripts) or the browser's session (unsafe methods then need the CSRF token, as forms do). Who
sees which job is :mod:`offload.web.access`: another user's job is a 404 on every route.

Every write goes through :mod:`offload.store` and :class:`offload.manager.JobManager`. Errors are
JSON ``{"detail": "<field>: <problem>", "field": "<field>"}``: 422 for bad input (naming the
field), 409 for an action the job's state does not allow, 404 for a job the caller may not see.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal
from urllib.parse import quote

from django.contrib.auth.models import Group
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from ninja import Field, NinjaAPI, Query, Schema
from ninja import Path as PathParam
from ninja import Status as Reply
from ninja.errors import ValidationError
from ninja.security import HttpBearer, SessionAuth

from offload import schedulers as scheduler_registry
from offload import store
from offload.errors import (
    InvalidJobError,
    JobNotFoundError,
    JobStateError,
    NotSupportedError,
    TemplateNotFoundError,
)
from offload.manager import get_job_manager, resolve_job_class
from offload.models import JOB_TYPES, EventSource, Job, JobEvent, Scheduler, SchedulerType
from offload.web import access, listing, push

#: Largest id a path or query may name (a signed 64-bit integer, the column's range).
MAX_ID = 2**63 - 1
#: Most jobs (or events) one page may hold.
MAX_LIMIT = 500
SortKey = Literal[
    "id",
    "-id",
    "name",
    "-name",
    "status",
    "-status",
    "type",
    "-type",
    "app",
    "-app",
    "created",
    "-created",
    "started",
    "-started",
    "finished",
    "-finished",
]


class TokenAuth(HttpBearer):
    """``Authorization: Bearer <token>`` with an API token (``offload tokens create USER``)."""

    def authenticate(self, request: HttpRequest, token: str) -> Any | None:
        user = access.user_for_token(token)
        if user is not None:
            request.user = user
        return user


class SessionCookieAuth(SessionAuth):
    """The browser's session; unsafe methods need the CSRF token. Without a session cookie the
    caller is simply not signed in (a 401, not a CSRF 403)."""

    def _get_key(self, request: HttpRequest) -> str | None:
        if self.param_name not in request.COOKIES:
            return None
        return super()._get_key(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any | None:
        return super().authenticate(request, key) if key else None


api = NinjaAPI(
    title="offload",
    version="1",
    description=(
        "Jobs: list, create, act on, read logs and history. Authenticate with "
        "`Authorization: Bearer <token>` (`offload tokens create USER`) or a session (with CSRF)."
    ),
    urls_namespace="offload:api",
    auth=[TokenAuth(), SessionCookieAuth()],
)
# POST /push: many pushed status changes at once (offload.web.push), with this API's auth.
api.add_router("", push.router)


# -- errors -----------------------------------------------------------------------------------------
def error(request: HttpRequest, status: int, detail: str, field: str | None = None) -> HttpResponse:
    body: dict[str, Any] = {"detail": detail}
    if field:
        body["field"] = field
    return api.create_response(request, body, status=status)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    problems = []
    fields = []
    for item in exc.errors:
        loc = [str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path")]
        if loc and loc[0] in ("payload", "filters", "params"):
            loc = loc[1:]
        name = ".".join(loc) or "body"
        fields.append(name)
        problems.append(f"{name}: {item.get('msg', 'invalid')}")
    return api.create_response(
        request,
        {
            "detail": "; ".join(problems),
            "field": fields[0] if fields else "body",
            "errors": problems,
        },
        status=422,
    )


@api.exception_handler(InvalidJobError)
def _invalid(request: HttpRequest, exc: InvalidJobError) -> HttpResponse:
    return error(request, 422, str(exc), exc.field)


@api.exception_handler(TemplateNotFoundError)
def _no_template(request: HttpRequest, exc: TemplateNotFoundError) -> HttpResponse:
    return error(request, 422, f"template: {exc}", "template")


@api.exception_handler(JobNotFoundError)
def _gone(request: HttpRequest, exc: JobNotFoundError) -> HttpResponse:
    """The job went (deleted, or its row purged) between reading it and acting on it."""
    return error(request, 404, str(exc))


@api.exception_handler(JobStateError)
def _state(request: HttpRequest, exc: JobStateError) -> HttpResponse:
    return error(request, 409, str(exc))


@api.exception_handler(NotSupportedError)
def _unsupported(request: HttpRequest, exc: NotSupportedError) -> HttpResponse:
    return error(request, 409, str(exc))


class Forbidden(Exception):
    """The caller is known but lacks a permission (only for non-job resources)."""


@api.exception_handler(Forbidden)
def _forbidden(request: HttpRequest, exc: Forbidden) -> HttpResponse:
    return error(request, 403, str(exc))


def _clean_text(value: Any, field: str) -> None:
    """Reject NUL characters anywhere in a JSON value (PostgreSQL cannot store them)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidJobError(field, "must not contain NUL characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            _clean_text(key, field)
            _clean_text(item, field)
    elif isinstance(value, list):
        for item in value:
            _clean_text(item, field)


# -- schemas ----------------------------------------------------------------------------------------
class ErrorOut(Schema):
    detail: str
    field: str | None = None


class JobOut(Schema):
    id: int
    name: str
    description: str
    user: str | None
    app: str
    type: str
    status: str
    status_code: str
    status_message: str
    attempt: int
    native_id: str
    native_status: str
    stale: bool
    stale_since: datetime.datetime | None
    last_contact: datetime.datetime | None
    creation_time: datetime.datetime | None
    execute_time: datetime.datetime | None
    start_time: datetime.datetime | None
    completion_time: datetime.datetime | None
    extended_properties: dict[str, Any]
    parameters: dict[str, Any]


def job_out(job: Job) -> dict[str, Any]:
    user = job.user if job.user_id is not None else None
    return {
        "id": job.pk,
        "name": job.name,
        "description": job.description,
        "user": user.get_username() if user is not None else None,
        "app": job.label,
        "type": job.job_type,
        "status": job.cached_status,
        "status_code": job._status,
        "status_message": job.status_message,
        "attempt": job.attempt,
        "native_id": job.native_id,
        "native_status": job.native_status,
        "stale": job.stale_since is not None,
        "stale_since": job.stale_since,
        "last_contact": job.last_contact,
        "creation_time": job.creation_time,
        "execute_time": job.execute_time,
        "start_time": job.start_time,
        "completion_time": job.completion_time,
        "extended_properties": job.extended_properties or {},
        "parameters": job.parameters or {},
    }


class JobPage(Schema):
    count: int
    limit: int
    offset: int
    items: list[JobOut]


class JobFilters(Schema):
    limit: int = Field(50, ge=1, le=MAX_LIMIT, description="jobs per page")
    offset: int = Field(0, ge=0, le=10**9, description="jobs to skip")
    status: str | None = Field(
        None, max_length=200, description="status names or codes, comma-separated"
    )
    type: str | None = Field(None, max_length=32, description="job type, e.g. LOCAL")
    app: str | None = Field(None, max_length=1024, description="the app (label)")
    q: str | None = Field(None, max_length=200, description="text in the job's name")
    sort: SortKey = Field("-id", description="sort key; '-' for descending")
    mine: bool = Field(False, description="only the caller's own jobs")


class JobCreate(Schema):
    name: str = Field(..., min_length=1, max_length=1024)
    app: str = Field("api", min_length=1, max_length=255, description="the app (label)")
    job_type: str | None = Field(None, max_length=32, description="BASIC, LOCAL …")
    template: str | None = Field(None, max_length=255, description="a template of the app")
    description: str = Field("", max_length=2048)
    parameters: dict[str, Any] = Field(default_factory=dict)
    extended_properties: dict[str, Any] = Field(default_factory=dict)
    groups: list[str] = Field(default_factory=list, max_length=50)
    scheduler: str | None = Field(None, max_length=255, description="a scheduler's name")
    execute: bool = Field(False, description="submit it right away")


class LogOut(Schema):
    name: str
    text: str
    truncated: bool
    size: int


class LogsOut(Schema):
    logs: list[LogOut]
    error: str


class EventOut(Schema):
    id: int
    job: int
    attempt: int
    time: datetime.datetime
    from_status: str
    to_status: str
    status: str
    source: str
    actor: str
    native_status: str
    message: str


def event_out(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        "job": event.job_id,
        "attempt": event.attempt,
        "time": event.time,
        "from_status": event.from_status,
        "to_status": event.to_status,
        "status": event.to_display,
        "source": event.source,
        "actor": event.actor,
        "native_status": event.native_status,
        "message": event.message,
    }


class SchedulerOut(Schema):
    name: str
    scheduler_type: str
    host: str
    port: int | None
    username: str
    options: dict[str, Any]
    secrets_stored: list[str]
    jobs: int


class SchedulerCreate(Schema):
    name: str = Field(..., min_length=1, max_length=255)
    scheduler_type: Literal[tuple(SchedulerType.values)] = "local"  # type: ignore[valid-type]
    host: str = Field("", max_length=1024)
    port: int | None = Field(None, ge=1, le=65535)
    username: str = Field("", max_length=255)
    password: str | None = Field(None, max_length=4096)
    private_key_pass: str | None = Field(None, max_length=4096)
    options: dict[str, Any] = Field(default_factory=dict)


def scheduler_out(scheduler: Scheduler) -> dict[str, Any]:
    try:
        stored = sorted(scheduler.get_secrets())
    except Exception:  # unreadable after a SECRET_KEY change: say so without failing
        stored = ["(unreadable)"]
    return {
        "name": scheduler.name,
        "scheduler_type": scheduler.scheduler_type,
        "host": scheduler.host,
        "port": scheduler.port,
        "username": scheduler.username,
        "options": scheduler.options or {},
        "secrets_stored": stored,
        "jobs": scheduler.jobs.count(),
    }


# -- helpers ----------------------------------------------------------------------------------------
def _user(request: HttpRequest) -> Any:
    return request.auth  # type: ignore[attr-defined]


def _actor(request: HttpRequest) -> str:
    return str(_user(request).get_username())


def _job(request: HttpRequest, job_id: int) -> Job:
    qs = Job.objects.visible().select_related("user")
    return access.get_job_or_404(_user(request), job_id, qs)


JobId: Any = PathParam(  # type: ignore[type-arg]
    ..., ge=1, le=MAX_ID, description="the job's id"
)


# -- jobs -------------------------------------------------------------------------------------------
@api.get("/jobs", response=JobPage, tags=["jobs"], summary="List the jobs the caller may see")
def list_jobs(request: HttpRequest, filters: Query[JobFilters]) -> dict[str, Any]:
    user = _user(request)
    qs = access.visible_jobs(user).select_related("user")
    if filters.mine:
        qs = qs.filter(user=user.pk)
    qs = listing.filter_jobs(
        qs,
        status=filters.status,
        job_type=filters.type,
        app=filters.app,
        q=filters.q,
        sort=filters.sort,
    )
    count = qs.count()
    page = list(qs[filters.offset : filters.offset + filters.limit])
    return {
        "count": count,
        "limit": filters.limit,
        "offset": filters.offset,
        "items": [job_out(job) for job in page],
    }


def _may_create_by_type(user: Any) -> bool:
    return bool(getattr(user, "is_staff", False) or user.has_perm("offload.add_job"))


@api.post(
    "/jobs",
    response={201: JobOut, 403: ErrorOut, 409: ErrorOut, 422: ErrorOut},
    tags=["jobs"],
    summary="Create a job from a job type or an app's template",
)
def create_job(request: HttpRequest, payload: JobCreate) -> Reply[dict[str, Any]]:
    user = _user(request)
    for field in ("name", "app", "job_type", "template", "description", "scheduler"):
        _clean_text(getattr(payload, field), field)
    _clean_text(payload.parameters, "parameters")
    _clean_text(payload.extended_properties, "extended_properties")
    _clean_text(payload.groups, "groups")
    if payload.template is None and payload.job_type is None:
        raise InvalidJobError("job_type", "give a job_type or a template")
    if payload.template is not None and payload.job_type is not None:
        raise InvalidJobError("template", "give a job_type or a template, not both")
    # Choosing what runs (a type's executable, a template's parameters) needs offload.add_job.
    if (payload.job_type is not None or payload.parameters) and not _may_create_by_type(user):
        raise Forbidden("creating a job from a type or with parameters needs offload.add_job")
    if payload.job_type is not None:
        try:
            resolve_job_class(payload.job_type)
        except ValueError as exc:
            raise InvalidJobError("job_type", str(exc)) from None
    store.safe_segment(payload.app, "app")
    groups: list[Group] = []
    if payload.groups:
        mine = Group.objects.filter(name__in=payload.groups)
        if not access.can_manage_all(user):
            mine = mine.filter(user=user.pk)
        found = {g.name: g for g in mine}
        missing = sorted(set(payload.groups) - set(found))
        if missing:
            raise InvalidJobError("groups", f"not a group of yours: {', '.join(missing)}")
        groups = [found[name] for name in payload.groups]
    kwargs: dict[str, Any] = {}
    if payload.description:
        kwargs["description"] = payload.description
    if payload.extended_properties:
        kwargs["extended_properties"] = payload.extended_properties
    if payload.scheduler is not None:
        scheduler = Scheduler.objects.filter(name=payload.scheduler).first()
        if scheduler is None:
            raise InvalidJobError("scheduler", f"no scheduler named {payload.scheduler!r}")
        kwargs["scheduler"] = scheduler
    manager = get_job_manager(payload.app)
    try:
        if payload.template is not None:
            params = dict(payload.parameters)
            job = manager.create_job(
                payload.name, user, groups=groups or None, template_name=payload.template, **kwargs
            )
            if params:
                job.parameters = {**(job.parameters or {}), **params}
        else:
            cls = JOB_TYPES[payload.job_type.upper()]  # type: ignore[union-attr]
            type_params = {k: v for k, v in payload.parameters.items() if k in cls.parameter_names}
            unknown = sorted(set(payload.parameters) - set(cls.parameter_names))
            if unknown:
                accepted = ", ".join(cls.parameter_names) or "none"
                raise InvalidJobError(
                    "parameters",
                    f"{', '.join(unknown)} not accepted by {cls.type_code} (accepted: {accepted})",
                )
            job = manager.create_job(
                payload.name,
                user,
                groups=groups or None,
                job_type=cls.type_code,
                **kwargs,
                **type_params,
            )
    except InvalidJobError:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidJobError("parameters", str(exc)) from None
    with transaction.atomic():
        if payload.execute:
            store.execute(job, source=EventSource.USER, actor=_actor(request))
        else:
            # Validate before saving, as execute does: bad parameters leave no job behind.
            params = store.engine_class_for(job)(None).validate(job.parameters or {})
            job.parameters = params
            job.save()
    return Reply(201, job_out(_job(request, job.pk)))


@api.get("/jobs/{job_id}", response={200: JobOut, 404: ErrorOut}, tags=["jobs"])
def get_job(request: HttpRequest, job_id: int = JobId) -> dict[str, Any]:
    return job_out(_job(request, job_id))


def _job_to_act_on(request: HttpRequest, job_id: int) -> Job:
    """The job if the caller may act on it; 404 if they may not see it, 403 if they may only
    see it (a group it is shared with view-only)."""
    job = _job(request, job_id)
    if not access.may_act(_user(request), job):
        raise Forbidden(f"job {job.pk} is shared with you to view only; you may not act on it")
    return job


def _act(request: HttpRequest, job_id: int, action: str) -> dict[str, Any]:
    job = _job_to_act_on(request, job_id)
    actor = _actor(request)
    if action == "execute":
        store.execute(job, source=EventSource.USER, actor=actor)
    elif action == "cancel":
        store.stop(job, source=EventSource.USER, actor=actor)
    elif action == "pause":
        store.pause(job, source=EventSource.USER, actor=actor)
    elif action == "resume":
        store.resume(job, source=EventSource.USER, actor=actor)
    elif action == "resubmit":
        store.resubmit(job, source=EventSource.USER, actor=actor)
    return job_out(_job(request, job_id))


ACTION_RESPONSES = {200: JobOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut}


@api.post("/jobs/{job_id}/execute", response=ACTION_RESPONSES, tags=["actions"])
def execute_job(request: HttpRequest, job_id: int = JobId) -> dict[str, Any]:
    """Submit a Pending job (a monitor hands it to its engine)."""
    return _act(request, job_id, "execute")


@api.post("/jobs/{job_id}/cancel", response=ACTION_RESPONSES, tags=["actions"])
def cancel_job(request: HttpRequest, job_id: int = JobId) -> dict[str, Any]:
    """Stop the job (Aborted at once if it never reached its engine)."""
    return _act(request, job_id, "cancel")


@api.post("/jobs/{job_id}/pause", response=ACTION_RESPONSES, tags=["actions"])
def pause_job(request: HttpRequest, job_id: int = JobId) -> dict[str, Any]:
    return _act(request, job_id, "pause")


@api.post("/jobs/{job_id}/resume", response=ACTION_RESPONSES, tags=["actions"])
def resume_job(request: HttpRequest, job_id: int = JobId) -> dict[str, Any]:
    return _act(request, job_id, "resume")


@api.post("/jobs/{job_id}/resubmit", response=ACTION_RESPONSES, tags=["actions"])
def resubmit_job(request: HttpRequest, job_id: int = JobId) -> dict[str, Any]:
    """Run the job again as a new attempt."""
    return _act(request, job_id, "resubmit")


@api.delete("/jobs/{job_id}", response={204: None, 403: ErrorOut, 404: ErrorOut}, tags=["actions"])
def delete_job(request: HttpRequest, job_id: int = JobId) -> Reply[None]:
    """Hide the job now; a monitor stops it and removes its files."""
    job = _job_to_act_on(request, job_id)
    store.delete(job, actor=_actor(request))
    return Reply(204, None)


@api.get("/jobs/{job_id}/logs", response={200: LogsOut, 404: ErrorOut}, tags=["jobs"])
def job_logs(request: HttpRequest, job_id: int = JobId) -> dict[str, Any]:
    """The job's logs, each cut to its last 200 KB."""
    from offload.web.views import _read_logs

    logs, problem = _read_logs(_job(request, job_id))
    return {
        "logs": [
            {"name": log.name, "text": log.text, "truncated": log.truncated, "size": log.size}
            for log in logs
        ],
        "error": problem,
    }


@api.get("/jobs/{job_id}/events", response={200: list[EventOut], 404: ErrorOut}, tags=["jobs"])
def job_events(
    request: HttpRequest,
    job_id: int = JobId,
    since: int = Query(0, ge=0, le=MAX_ID, description="only events after this id"),  # type: ignore[type-arg]
    limit: int = Query(MAX_LIMIT, ge=1, le=MAX_LIMIT),  # type: ignore[type-arg]
) -> list[dict[str, Any]]:
    """The job's history, oldest first."""
    job = _job(request, job_id)
    events = JobEvent.objects.filter(job_id=job.pk, id__gt=since).order_by("id")[:limit]
    return [event_out(event) for event in events]


# -- result files -----------------------------------------------------------------------------------
class FileOut(Schema):
    path: str = Field(..., description="relative to the job's workspace")
    size: int
    modified: datetime.datetime
    url: str = Field(..., description="where to download it (GET, with Range support)")


class FilesOut(Schema):
    files: list[FileOut]
    more: int = Field(..., description="files found but not listed (over the limit)")
    problem: str = Field(..., description="why there are no files, if there are none")


@api.get("/jobs/{job_id}/files", response={200: FilesOut, 404: ErrorOut}, tags=["files"])
def job_files(request: HttpRequest, job_id: int = JobId) -> dict[str, Any]:
    """The regular files in the job's workspace (without the engines' ``.offload`` folder; a
    symlink that leads out of the workspace is left out)."""
    from offload.web import files

    job = _job(request, job_id)
    found = files.list_files(job)
    base = request.build_absolute_uri(f"{request.path.rstrip('/')}/")
    return {
        "files": [
            {"path": f.path, "size": f.size, "modified": f.modified, "url": base + quote(f.path)}
            for f in found.files
        ],
        "more": found.more,
        "problem": found.problem,
    }


@api.api_operation(
    ["GET", "HEAD"],
    "/jobs/{job_id}/files/{path:path}",
    response={200: None, 206: None, 404: ErrorOut, 416: None},
    tags=["files"],
    summary="Download a result file",
)
def download_job_file(request: HttpRequest, path: str, job_id: int = JobId) -> HttpResponse:
    """The file's bytes, streamed. ``Range: bytes=first-last`` (or ``first-``, or ``-suffix``)
    answers 206 with ``Content-Range``; a range past the end answers 416; ``If-Range`` with the
    ETag or date sent earlier is honoured. A path leaving the workspace is a 404."""
    from offload.web import files

    job = _job(request, job_id)
    real = files.result_file(job, path)
    return files.download_response(request, real, filename=path.rsplit("/", 1)[-1])


# -- schedulers (staff only) ------------------------------------------------------------------------
def _staff(request: HttpRequest) -> None:
    if not getattr(_user(request), "is_staff", False):
        raise Forbidden("scheduler records are for staff only")


@api.get("/schedulers", response={200: list[SchedulerOut], 403: ErrorOut}, tags=["schedulers"])
def list_schedulers(request: HttpRequest) -> list[dict[str, Any]]:
    _staff(request)
    return [scheduler_out(s) for s in scheduler_registry.list_schedulers()]


@api.post(
    "/schedulers",
    response={201: SchedulerOut, 403: ErrorOut, 422: ErrorOut},
    tags=["schedulers"],
)
def create_scheduler(request: HttpRequest, payload: SchedulerCreate) -> Reply[dict[str, Any]]:
    """Register a scheduler. Secrets are encrypted at rest and never returned."""
    _staff(request)
    for field in ("name", "host", "username", "password", "private_key_pass"):
        _clean_text(getattr(payload, field), field)
    _clean_text(payload.options, "options")
    reserved = {"host", "port", "username", "password", "private_key_pass", "name"}
    clash = sorted(reserved & set(payload.options))
    if clash:
        raise InvalidJobError("options", f"{', '.join(clash)} are fields, not options")
    scheduler = scheduler_registry.create_scheduler(
        payload.name,
        host=payload.host,
        scheduler_type=payload.scheduler_type,
        username=payload.username,
        password=payload.password,
        private_key_pass=payload.private_key_pass,
        port=payload.port,
        **payload.options,
    )
    return Reply(201, scheduler_out(scheduler))


@api.delete(
    "/schedulers/{name}",
    response={204: None, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    tags=["schedulers"],
)
def delete_scheduler(request: HttpRequest, name: str) -> Any:
    """Remove a scheduler record; refused (409) while jobs use it."""
    _staff(request)
    if "\x00" in name or Scheduler.objects.filter(name=name).first() is None:
        return error(request, 404, f"no scheduler named {name!r}", "name")
    try:
        scheduler_registry.remove_scheduler(name)
    except InvalidJobError as exc:
        return error(request, 409, str(exc), exc.field)
    return Reply(204, None)
