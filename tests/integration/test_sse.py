"""``GET /jobs/events/stream``: Server-Sent Events of the jobs a user may see, read through
Django's async test client (the view is asynchronous, as it runs under uvicorn)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.test import AsyncClient

from offload import JobManager
from offload.models import Job, JobEvent
from offload.web import sse
from offload.web.access import create_api_token

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]

URL = "/jobs/events/stream"


@pytest.fixture(autouse=True)
def fast_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "POLL_SECONDS", 0.02)
    monkeypatch.setattr(sse, "MAX_SECONDS", 3.0)


def _job(user: Any, name: str = "job") -> Job:
    job = JobManager("sse_app").create_job(name, user, job_type="BASIC")
    job.save()
    return job


def parse(chunks: list[bytes]) -> list[dict[str, Any]]:
    """The events (``id`` + ``data``) in the stream's chunks."""
    events = []
    for block in b"".join(chunks).decode().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if "data" in fields:
            data = json.loads(fields["data"])
            assert int(fields["id"]) == data["id"]
            events.append(data)
    return events


async def read(
    client: AsyncClient, *, count: int, headers: dict[str, str] | None = None, path: str = URL
) -> tuple[Any, list[bytes]]:
    """The response and its first ``count`` chunks; the stream is then closed."""
    response = await client.get(path, headers=headers or {})
    chunks: list[bytes] = []
    if response.status_code != 200:
        return response, chunks
    stream: AsyncIterator[bytes] = response.streaming_content
    try:
        async for chunk in stream:
            chunks.append(chunk)
            if len(chunks) >= count:
                break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return response, chunks


def test_resumes_after_last_event_id_with_only_visible_jobs(user: Any, other_user: Any) -> None:
    mine = _job(user, "mine")
    theirs = _job(other_user, "theirs")
    first = JobEvent.objects.get(job_id=mine.pk)
    mine.execute()
    theirs.execute()
    mine.update_status("Running")
    client = AsyncClient()
    client.force_login(user)

    response, chunks = async_to_sync(read)(
        client, count=2, headers={"Last-Event-ID": str(first.pk)}
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert chunks[0].startswith(b"retry: ")
    events = parse(chunks)
    assert [(e["job"], e["status"]) for e in events] == [
        (mine.pk, "Submitted"),
        (mine.pk, "Running"),
    ]
    assert all(e["id"] > first.pk for e in events)
    # ?since= does the same; resuming after the last one gives nothing old.
    _, chunks = async_to_sync(read)(client, count=2, path=f"{URL}?since={events[0]['id']}")
    assert [e["status"] for e in parse(chunks)] == ["Running"]


def test_live_changes_arrive_without_reconnecting(user: Any) -> None:
    job = _job(user)
    client = AsyncClient()
    client.force_login(user)

    async def scenario() -> list[dict[str, Any]]:
        response = await client.get(URL)
        assert response.status_code == 200
        stream = response.streaming_content
        got: list[bytes] = [await stream.__anext__()]  # the opening (from now on)
        assert parse(got) == []
        await sync_to_async(job.execute)()
        while not parse(got):
            got.append(await stream.__anext__())
        await sync_to_async(job.update_status)("Complete")
        while len(parse(got)) < 2:
            got.append(await stream.__anext__())
        await stream.aclose()
        return parse(got)

    events = async_to_sync(scenario)()
    assert [(e["job"], e["status"], e["status_code"]) for e in events] == [
        (job.pk, "Submitted", "SUB"),
        (job.pk, "Complete", "COM"),
    ]


def test_heartbeats_and_the_stream_ends(user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(sse, "MAX_SECONDS", 0.5)
    client = AsyncClient()
    client.force_login(user)

    async def everything() -> list[bytes]:
        response = await client.get(URL)
        return [chunk async for chunk in response.streaming_content]

    chunks = async_to_sync(everything)()  # ends by itself after MAX_SECONDS
    assert b": heartbeat\n\n" in chunks


def test_token_auth_and_refusals(user: Any, other_user: Any) -> None:
    _job(other_user)
    token = create_api_token(user)[1]
    client = AsyncClient()
    response, chunks = async_to_sync(read)(
        client, count=1, headers={"Authorization": f"Bearer {token}", "Last-Event-ID": "0"}
    )
    assert response.status_code == 200
    assert parse(chunks) == []  # bob's job's events are not alice's business
    anonymous, _ = async_to_sync(read)(client, count=1)
    assert anonymous.status_code == 401
    bad, _ = async_to_sync(read)(client, count=1, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    client.force_login(user)
    for value in ("abc", "-1", str(2**70)):
        response, _ = async_to_sync(read)(client, count=1, headers={"Last-Event-ID": value})
        assert response.status_code == 400
        assert json.loads(response.content)["field"] == "since"


def test_managers_see_every_job(user: Any, other_user: Any, django_user_model: Any) -> None:
    theirs = _job(other_user, "theirs")
    staff = django_user_model.objects.create_user("carol", is_staff=True)
    client = AsyncClient()
    client.force_login(staff)
    _, chunks = async_to_sync(read)(client, count=2, headers={"Last-Event-ID": "0"})
    assert [e["job"] for e in parse(chunks)] == [theirs.pk]
