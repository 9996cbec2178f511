"""``POST /jobs/api/push``: many pushed status changes in one request, from a scheduler plugin
(:mod:`offload.engines.dask_plugin`) or any script holding an API token.

Each change names a job by its native key: ``offload-<job>-<attempt>`` (the tag every submission
carries) or the job's ``native_id`` (a Dask Future's key, say). What a change does:

- with a ``status`` (Submitted, Running, Paused or Various: progress only), the status is applied
  through :mod:`offload.store`'s rules as a pushed report (``EventSource.PUSH``): a push of Running
  never takes a job back from Complete, and a report about an earlier attempt is dropped;
- without one (a task finished, failed or was forgotten), its ``native_status`` (and ``message``)
  are noted on the job and the monitor is asked to poll that scheduler now, as
  ``/update-job-status/<id>/`` does. Endings are never taken from a push: results must be gathered,
  and an error or a cancel confirmed, by the monitor.

Authentication is the API's (``Authorization: Bearer <token>``, or a session with CSRF). A change
naming a job the caller may not act on (not theirs, or shared with them view-only) reads exactly
like one naming no job (``"unknown"``); a request none of whose changes names such a job is a 404. Bad input is a 422 naming the field
(``changes.3.status``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.db.models import Q
from django.http import HttpRequest
from ninja import Field, Router, Schema
from ninja import Status as Reply

from offload import store
from offload.engines import engine_class
from offload.errors import InvalidJobError
from offload.models import JOB_TYPES, EventSource, Job
from offload.schedulers import group_key
from offload.status import POLLED, Status
from offload.web import access

router = Router(tags=["push"])

#: Most changes one request may carry.
MAX_CHANGES = 1000
#: Statuses a push may set (progress); anything else is left to the monitor.
PUSHABLE = (Status.SUBMITTED, Status.RUNNING, Status.PAUSED, Status.VARIOUS)
OFFLOAD_KEY = re.compile(r"offload-([0-9]{1,18})-([0-9]{1,9})")


class PushChange(Schema):
    key: str = Field(
        ...,
        min_length=1,
        max_length=255,
        description="offload-<job>-<attempt> or the job's native id",
    )
    native_status: str = Field(
        ..., min_length=1, max_length=255, description="the scheduler's state"
    )
    status: str | None = Field(
        None, max_length=32, description="Submitted, Running, Paused or Various; omit for an ending"
    )
    message: str | None = Field(None, max_length=65_536)
    time: float | None = Field(None, description="when it happened (seconds since the epoch)")


class PushIn(Schema):
    engine: str | None = Field(None, max_length=32, description="only jobs of this engine (dask …)")
    changes: list[PushChange] = Field(..., min_length=1, max_length=MAX_CHANGES)


class PushResult(Schema):
    key: str
    job: int | None
    outcome: str = Field(
        ...,
        description="applied, same (no status change), refresh (the monitor polls now), "
        "superseded (an earlier attempt), ambiguous (several jobs have this native id) or unknown",
    )


class PushOut(Schema):
    applied: int
    refresh: int
    ignored: int
    results: list[PushResult]


class PushError(Schema):
    detail: str
    field: str | None = None


def _no_nul(value: str | None, field: str) -> None:
    if value is not None and "\x00" in value:
        raise InvalidJobError(field, "must not contain NUL characters")


def _validate(payload: PushIn) -> list[Status | None]:
    """The status of each change (None: leave it to the monitor); InvalidJobError naming the field."""
    if payload.engine is not None:
        try:
            engine_class(payload.engine)
        except Exception:
            raise InvalidJobError("engine", f"{payload.engine!r} is not an engine") from None
    statuses: list[Status | None] = []
    for i, change in enumerate(payload.changes):
        _no_nul(change.key, f"changes.{i}.key")
        _no_nul(change.native_status, f"changes.{i}.native_status")
        _no_nul(change.message, f"changes.{i}.message")
        if change.status is None:
            statuses.append(None)
            continue
        status = Status.parse(change.status)
        if status not in PUSHABLE:
            names = ", ".join(s.display for s in PUSHABLE)
            raise InvalidJobError(
                f"changes.{i}.status",
                f"{change.status!r}: a push may report {names}; send an ending without a status "
                "and the monitor confirms it",
            )
        statuses.append(status)
    return statuses


def _types_of(engine: str | None) -> list[str] | None:
    if engine is None:
        return None
    return [code for code, cls in JOB_TYPES.items() if cls.engine_kind == engine]


def _find(
    user: Any, keys: Iterable[str], engine: str | None
) -> tuple[dict[int, Job], dict[str, list[Job]]]:
    """The jobs the keys name that ``user`` may act on: by id (offload keys) and by native id."""
    ids: set[int] = set()
    natives: set[str] = set()
    for key in keys:
        match = OFFLOAD_KEY.fullmatch(key)
        if match:
            ids.add(int(match.group(1)))
        natives.add(key)
    qs = access.visible_jobs(user).filter(Q(pk__in=ids) | Q(native_id__in=natives))
    types = _types_of(engine)
    if types is not None:
        qs = qs.filter(job_type__in=types)
    found = list(qs)
    actable = access.actable_job_ids(user, found)  # a view-only share may not report status
    by_id: dict[int, Job] = {}
    by_native: dict[str, list[Job]] = {}
    for job in found:
        if job.pk not in actable:
            continue
        by_id[job.pk] = job
        if job.native_id in natives:
            by_native.setdefault(job.native_id, []).append(job)
    return by_id, by_native


@router.post(
    "/push",
    response={200: PushOut, 404: PushError, 422: PushError},
    summary="Pushed status changes of many jobs (a scheduler plugin's reports)",
)
def push(request: HttpRequest, payload: PushIn) -> Any:
    user = request.auth  # type: ignore[attr-defined]
    statuses = _validate(payload)
    by_id, by_native = _find(user, (c.key for c in payload.changes), payload.engine)
    results: list[dict[str, Any]] = []
    counts = {"applied": 0, "refresh": 0, "ignored": 0}
    to_refresh: dict[str, int] = {}  # one refresh per scheduler: the poll covers all its jobs
    for change, status in zip(payload.changes, statuses, strict=True):
        job: Job | None = None
        attempt: int | None = None
        outcome = "unknown"
        match = OFFLOAD_KEY.fullmatch(change.key)
        if match and int(match.group(1)) in by_id:
            job, attempt = by_id[int(match.group(1))], int(match.group(2))
        else:
            named = by_native.get(change.key, [])
            if len(named) == 1:
                job = named[0]
                attempt = job.attempt
            elif len(named) > 1:
                outcome = "ambiguous"
        if job is not None and attempt is not None:
            outcome = _apply(job, attempt, change, status, to_refresh)
        counts[
            "applied" if outcome == "applied" else "refresh" if outcome == "refresh" else "ignored"
        ] += 1
        results.append(
            {"key": change.key, "job": job.pk if job is not None else None, "outcome": outcome}
        )
    if all(r["outcome"] == "unknown" for r in results):
        return Reply(
            404,
            {"detail": "changes: no job the caller may see has these keys", "field": "changes"},
        )
    for job_id in to_refresh.values():
        store.request_refresh(job_id)
    return {**counts, "results": results}


def _apply(
    job: Job, attempt: int, change: PushChange, status: Status | None, to_refresh: dict[str, int]
) -> str:
    if job.attempt != attempt or job.attempt == 0:
        return "superseded"
    current = Status(job._status)
    if status is not None:
        applied = store.apply_change(
            job,
            store.Change(
                status, EventSource.PUSH, message=change.message, native_status=change.native_status
            ),
            attempt=attempt,
        )
        return "applied" if applied else "same"
    if current not in POLLED:
        return "same"  # already ended (or not yet submitted): nothing for the monitor to do
    # Noted on the job (same status: details only), then the monitor polls its scheduler.
    store.apply_change(
        job,
        store.Change(
            current, EventSource.PUSH, message=change.message, native_status=change.native_status
        ),
        attempt=attempt,
    )
    to_refresh.setdefault(group_key(job), job.pk)
    return "refresh"
