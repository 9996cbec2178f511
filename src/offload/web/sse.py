"""``GET /jobs/events/stream``: the status changes of the jobs a user may see, as Server-Sent
Events, for the jobs page to update its rows without a request per row.

Each :class:`offload.models.JobEvent` becomes::

    id: 1234
    data: {"id": 1234, "job": 42, "status": "Running", "status_code": "RUN", ...}

The stream resumes after the ``Last-Event-ID`` header (what ``EventSource`` sends when it
reconnects) or ``?since=<id>``; without either it starts at the newest event (only changes from
now on). It polls the database (an indexed ``id > last`` query) every :data:`POLL_SECONDS`,
sends a comment line as heartbeat every :data:`HEARTBEAT_SECONDS`, and ends after
:data:`MAX_SECONDS` so the browser reconnects (and proxies recycle connections).

Under ASGI the view is asynchronous: it holds no thread and no database connection while it
waits; each poll runs in a worker thread (``sync_to_async``) that closes its connection after.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from offload.models import JobEvent
from offload.web import access

#: How often the database is asked for new events (seconds).
POLL_SECONDS = 0.5
#: How often a heartbeat comment is sent when nothing happens (seconds).
HEARTBEAT_SECONDS = 15.0
#: How long one stream lasts before the client is asked to reconnect (seconds).
MAX_SECONDS = 300.0
#: Most events sent per poll.
BATCH = 500
#: The browser's reconnection delay (milliseconds), sent once at the start.
RETRY_MS = 2000
#: Largest event id accepted from a client.
MAX_ID = 2**63 - 1


def _release_connection() -> None:
    """Close this thread's connection between polls, unless a transaction holds it (tests)."""
    if not connection.in_atomic_block:
        connection.close()


def _authenticate(request: HttpRequest) -> tuple[Any | None, list[int]]:
    """The caller, and for an anonymous visitor where an app opts in, their session's jobs."""
    token = access.bearer_token(request)
    if token is not None:
        return access.user_for_token(token), []
    user = request.user
    if access.is_signed_in(user):
        return user, []
    return user, access.anonymous_jobs_of(request)


def _start_after(request: HttpRequest) -> int | None:
    """The event id to resume after, None for "from now on", or -1 if the value is bad."""
    raw = request.headers.get("Last-Event-ID") or request.GET.get("since")
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        return -1
    return value if 0 <= value <= MAX_ID else -1


def event_data(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        "job": event.job_id,
        "attempt": event.attempt,
        "time": event.time.isoformat(),
        "from_status": event.from_status,
        "status_code": event.to_status,
        "status": event.to_display,
        "source": event.source,
        "message": event.message,
        "native_status": event.native_status,
    }


def _latest_id() -> int:
    try:
        return int(JobEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0)
    finally:
        _release_connection()


def _events_after(user: Any, last: int, anonymous_jobs: list[int]) -> list[dict[str, Any]]:
    try:
        qs = JobEvent.objects.filter(id__gt=last).order_by("id")
        if not access.can_manage_all(user):
            visible = access.visible_jobs(user, anonymous_jobs=anonymous_jobs)
            qs = qs.filter(job__in=visible.values("pk"))
        else:
            qs = qs.filter(job__deleted_at__isnull=True)
        return [event_data(event) for event in qs[:BATCH]]
    finally:
        _release_connection()


def format_event(data: dict[str, Any]) -> bytes:
    return f"id: {data['id']}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream(user: Any, after: int | None, anonymous_jobs: list[int]) -> AsyncIterator[bytes]:
    started = time.monotonic()
    last = after if after is not None else await sync_to_async(_latest_id)()
    yield f"retry: {RETRY_MS}\n: offload events after {last}\n\n".encode()
    quiet_since = time.monotonic()
    while time.monotonic() - started < MAX_SECONDS:
        events = await sync_to_async(_events_after)(user, last, anonymous_jobs)
        if events:
            last = events[-1]["id"]
            yield b"".join(format_event(data) for data in events)
            quiet_since = time.monotonic()
            if len(events) == BATCH:
                continue  # more are waiting
        elif time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
            yield b": heartbeat\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)


async def events_stream(request: HttpRequest) -> HttpResponseBase:
    """The stream (asynchronous under ASGI). Anonymous callers get a 401 JSON error."""
    if request.method not in ("GET", "HEAD"):
        refused = JsonResponse({"detail": "use GET"}, status=405)
        refused["Allow"] = "GET, HEAD"
        return refused
    user, anonymous_jobs = await sync_to_async(_authenticate)(request)
    if user is None or (not access.is_signed_in(user) and not anonymous_jobs):
        return JsonResponse({"detail": "sign in or send an API token"}, status=401)
    after = _start_after(request)
    if after == -1:
        return JsonResponse(
            {"detail": "Last-Event-ID/since: must be a non-negative event id", "field": "since"},
            status=400,
        )
    response = StreamingHttpResponse(
        _stream(user, after, anonymous_jobs), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through at once
    return response
