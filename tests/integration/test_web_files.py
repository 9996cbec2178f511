"""A job's result files and logs on the web: the listing on the job page and in the REST API,
streamed downloads with HTTP Range (206, 416, If-Range), path traversal and symlink escapes
refused, 404 for other users on every route, and the live log tail (offsets, stop when final)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from offload import JobManager
from offload.engines.base import attempt_subpath
from offload.models import Job
from offload.monitor import Monitor
from offload.web import files
from offload.web.access import create_api_token

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]

CONTENT = bytes(range(256)) * 40  # 10,240 bytes, every byte value


def _job_with_files(user: Any, *, execute: bool = False) -> Job:
    job = JobManager("files_app").create_job("with files", user, job_type="BASIC")
    job.save()
    if execute:
        job.execute()
    root = Path(job.workspace)
    (root / "out").mkdir(parents=True, exist_ok=True)
    (root / "result.bin").write_bytes(CONTENT)
    (root / "out" / "table.csv").write_text("a,b\n1,2\n")
    (root / "ünï code.txt").write_text("text")
    return job


def _body(response: Any) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return bytes(response.content)


@pytest.fixture
def alice(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


@pytest.fixture
def bob(other_user: Any) -> Client:
    other = Client()
    other.force_login(other_user)
    return other


# -- listing --------------------------------------------------------------------------------------
def test_job_page_lists_the_workspace_files(alice: Client, user: Any) -> None:
    job = _job_with_files(user)
    internal = Path(job.workspace) / attempt_subpath(job.pk, 1)
    internal.mkdir(parents=True)
    (internal / "runner.json").write_text("{}")
    response = alice.get(f"/jobs/{job.pk}/")
    assert response.status_code == 200
    paths = [f.path for f in response.context["files"]]
    assert paths == ["out/table.csv", "result.bin", "ünï code.txt"]  # no .offload
    html = response.content.decode()
    assert f'href="/jobs/{job.pk}/files/out/table.csv"' in html
    assert "10.0\xa0KB" in html


def test_symlinks_out_of_the_workspace_are_not_listed_or_served(
    alice: Client, user: Any, tmp_path: Path
) -> None:
    job = _job_with_files(user)
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    root = Path(job.workspace)
    os.symlink(secret, root / "escape.txt")
    os.symlink(tmp_path, root / "escape-dir")
    os.symlink(root / "result.bin", root / "inside-link.bin")
    paths = [f.path for f in files.list_files(job).files]
    assert "escape.txt" not in paths and not any(p.startswith("escape-dir") for p in paths)
    assert "inside-link.bin" in paths  # a link that stays inside is that file
    assert alice.get(f"/jobs/{job.pk}/files/escape.txt").status_code == 404
    assert alice.get(f"/jobs/{job.pk}/files/escape-dir/secret.txt").status_code == 404
    assert _body(alice.get(f"/jobs/{job.pk}/files/inside-link.bin")) == CONTENT


@pytest.mark.parametrize(
    "path",
    [
        "../secret.txt",
        "out/../../secret.txt",
        "out/%2e%2e/%2e%2e/secret.txt",
        "%2e%2e/secret.txt",
        "..%2fsecret.txt",
        "out/./table.csv",
        ".offload/attempt-1/stdout.log",
        "out",
        "missing.txt",
        "a%00b",
        "..\\secret.txt",
    ],
)
def test_traversal_is_refused(alice: Client, user: Any, path: str) -> None:
    job = _job_with_files(user)
    (Path(job.workspace).parent / "secret.txt").write_text("sibling")
    assert alice.get(f"/jobs/{job.pk}/files/{path}").status_code == 404
    assert alice.get(f"/jobs/api/jobs/{job.pk}/files/{path}").status_code == 404


def test_check_relative_path_rejects_escapes() -> None:
    from django.http import Http404

    for bad in ("", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\b", ".offload/x"):
        with pytest.raises(Http404):
            files.check_relative_path(bad)
    assert files.check_relative_path("a/b.txt") == "a/b.txt"


# -- downloads and ranges -------------------------------------------------------------------------
def test_download_is_streamed_whole(alice: Client, user: Any) -> None:
    job = _job_with_files(user)
    response = alice.get(f"/jobs/{job.pk}/files/result.bin")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Length"] == str(len(CONTENT))
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Disposition"].startswith('attachment; filename="result.bin"')
    assert _body(response) == CONTENT
    unicode = alice.get(f"/jobs/{job.pk}/files/%C3%BCn%C3%AF%20code.txt")
    assert _body(unicode) == b"text"
    assert "filename*=UTF-8''%C3%BCn%C3%AF%20code.txt" in unicode["Content-Disposition"]


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),  # the first bytes
        ("bytes=-100", len(CONTENT) - 100, len(CONTENT) - 1),  # a suffix
        ("bytes=10000-", 10000, len(CONTENT) - 1),  # open-ended
        ("bytes=10200-99999", 10200, len(CONTENT) - 1),  # past the end: clipped
        ("bytes=-999999", 0, len(CONTENT) - 1),  # a suffix longer than the file
        ("bytes=5-5", 5, 5),
    ],
)
@pytest.mark.parametrize("base", ["/jobs/{id}/files/", "/jobs/api/jobs/{id}/files/"])
def test_ranges(alice: Client, user: Any, header: str, first: int, last: int, base: str) -> None:
    job = _job_with_files(user)
    url = base.format(id=job.pk) + "result.bin"
    response = alice.get(url, HTTP_RANGE=header)
    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes {first}-{last}/{len(CONTENT)}"
    assert response["Content-Length"] == str(last - first + 1)
    assert _body(response) == CONTENT[first : last + 1]


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=999999-", "bytes=-0"])
def test_unsatisfiable_range_is_416(alice: Client, user: Any, header: str) -> None:
    job = _job_with_files(user)
    for url in (f"/jobs/{job.pk}/files/result.bin", f"/jobs/api/jobs/{job.pk}/files/result.bin"):
        response = alice.get(url, HTTP_RANGE=header)
        assert response.status_code == 416
        assert response["Content-Range"] == f"bytes */{len(CONTENT)}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=9-3", "bytes=x-"])
def test_ranges_we_do_not_serve_get_the_whole_file(alice: Client, user: Any, header: str) -> None:
    job = _job_with_files(user)
    response = alice.get(f"/jobs/{job.pk}/files/result.bin", HTTP_RANGE=header)
    assert response.status_code == 200
    assert _body(response) == CONTENT


def test_if_range(alice: Client, user: Any) -> None:
    job = _job_with_files(user)
    url = f"/jobs/{job.pk}/files/result.bin"
    first = alice.get(url)
    etag, modified = first["ETag"], first["Last-Modified"]
    same = alice.get(url, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=etag)
    assert same.status_code == 206 and _body(same) == CONTENT[:10]
    by_date = alice.get(url, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=modified)
    assert by_date.status_code == 206
    changed = alice.get(url, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE='"other"')
    assert changed.status_code == 200 and _body(changed) == CONTENT


def test_head_sends_headers_only(alice: Client, user: Any) -> None:
    job = _job_with_files(user)
    response = alice.head(f"/jobs/{job.pk}/files/result.bin", HTTP_RANGE="bytes=0-9")
    assert response.status_code == 206
    assert response["Content-Length"] == "10"
    assert response.content == b""


# -- REST -----------------------------------------------------------------------------------------
def test_rest_lists_files_with_a_token(user: Any, client: Client) -> None:
    job = _job_with_files(user)
    _, token = create_api_token(user)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    response = client.get(f"/jobs/api/jobs/{job.pk}/files", **auth)
    assert response.status_code == 200
    data = response.json()
    assert [f["path"] for f in data["files"]] == ["out/table.csv", "result.bin", "ünï code.txt"]
    assert data["files"][1]["size"] == len(CONTENT)
    url = data["files"][0]["url"]
    assert url.endswith(f"/jobs/api/jobs/{job.pk}/files/out/table.csv")
    download = client.get(url.split("testserver", 1)[1], **auth)
    assert _body(download) == b"a,b\n1,2\n"
    spec = client.get("/jobs/api/openapi.json").json()
    assert "/jobs/api/jobs/{job_id}/files/{path}" in spec["paths"]


# -- other users ----------------------------------------------------------------------------------
def test_other_users_get_404_on_every_file_and_log_route(
    bob: Client, client: Client, user: Any, other_user: Any
) -> None:
    job = _job_with_files(user, execute=True)
    for url in (
        f"/jobs/{job.pk}/files/result.bin",
        f"/jobs/{job.pk}/logs/",
        f"/jobs/api/jobs/{job.pk}/files",
        f"/jobs/api/jobs/{job.pk}/files/result.bin",
    ):
        assert bob.get(url).status_code == 404, url
        assert bob.get(url, HTTP_RANGE="bytes=0-1").status_code == 404, url
    _, token = create_api_token(other_user)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert client.get(f"/jobs/api/jobs/{job.pk}/files", **auth).status_code == 404
    assert client.get(f"/jobs/api/jobs/{job.pk}/files/result.bin", **auth).status_code == 404
    # Not signed in: the pages send to the login page, the API says 401.
    anonymous = Client()
    assert anonymous.get(f"/jobs/{job.pk}/files/result.bin").status_code == 302
    assert anonymous.get(f"/jobs/{job.pk}/logs/").status_code == 302
    assert anonymous.get(f"/jobs/api/jobs/{job.pk}/files").status_code == 401


# -- logs -----------------------------------------------------------------------------------------
def _write_log(job: Job, name: str, data: bytes, mode: str = "ab") -> None:
    folder = Path(job.workspace) / attempt_subpath(job.pk, job.attempt)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, mode) as handle:
        handle.write(data)


def test_log_tail_returns_what_is_new_and_stops_when_final(alice: Client, user: Any) -> None:
    job = _job_with_files(user, execute=True)
    assert job.attempt == 1
    _write_log(job, "stdout.log", b"line 1\n")
    page = alice.get(f"/jobs/{job.pk}/")
    assert page.context["follow_logs"] is True
    stdout = {log.name: log for log in page.context["logs"]}["stdout"]
    assert stdout.text == "line 1\n" and stdout.offset == 7
    assert 'data-follow="1"' in page.content.decode()

    _write_log(job, "stdout.log", "line 2 — é\n".encode())
    _write_log(job, "stderr.log", b"warn\n")
    data = alice.get(f"/jobs/{job.pk}/logs/?stdout=7").json()
    assert data["follow"] is True and data["status"] == "Submitted"
    logs = {log["name"]: log for log in data["logs"]}
    assert logs["stdout"]["text"] == "line 2 — é\n"
    assert logs["stdout"]["offset"] == 7 and logs["stdout"]["next_offset"] == logs["stdout"]["size"]
    assert logs["stderr"]["text"] == "warn\n"  # not named: from its start (last 200 KB)
    again = alice.get(f"/jobs/{job.pk}/logs/?stdout={logs['stdout']['next_offset']}").json()
    assert {log["name"]: log["text"] for log in again["logs"]}["stdout"] == ""

    job.update_status("Complete")
    final = alice.get(f"/jobs/{job.pk}/logs/?stdout=0").json()
    assert final["follow"] is False and final["status"] == "Complete"
    assert 'data-follow="0"' in alice.get(f"/jobs/{job.pk}/").content.decode()


def test_log_tail_bad_offsets_are_400(alice: Client, user: Any) -> None:
    job = _job_with_files(user, execute=True)
    _write_log(job, "stdout.log", b"x\n")
    response = alice.get(f"/jobs/{job.pk}/logs/?stdout=abc")
    assert response.status_code == 400
    assert response.json()["field"] == "stdout"
    assert alice.get(f"/jobs/{job.pk}/logs/?stdout=99999999999999999999999").status_code == 400
    # Past the end (a truncated log): starts over.
    data = alice.get(f"/jobs/{job.pk}/logs/?stdout=1000").json()
    assert data["logs"][0]["offset"] == 0 and data["logs"][0]["text"] == "x\n"


def test_read_log_never_splits_a_character(tmp_path: Path) -> None:
    path = tmp_path / "stdout.log"
    path.write_bytes("aé".encode())  # 3 bytes
    chunk = files.read_log(path, "stdout", 0, limit=2)
    assert chunk.text == "a" and chunk.next_offset == 1
    rest = files.read_log(path, "stdout", chunk.next_offset, limit=2)
    assert rest.text == "é" and rest.next_offset == 3


def test_logs_are_read_from_files_not_the_engine(
    alice: Client, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A web request reads the workspace; it never builds an engine (which may call a scheduler)."""
    import offload.schedulers

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a web request asked an engine")

    monkeypatch.setattr(offload.schedulers, "engine_for_job", refuse)
    job = JobManager("files_app").create_job("slurmish", user, job_type="SLURM", executable="true")
    job.save()
    Job.objects.filter(pk=job.pk).update(attempt=1, _status="RUN")
    job.refresh_from_db()
    Path(job.workspace).mkdir(parents=True, exist_ok=True)
    _write_log(job, "stdout.log", b"from slurm\n")
    page = alice.get(f"/jobs/{job.pk}/")
    assert "from slurm" in page.content.decode()
    data = alice.get(f"/jobs/{job.pk}/logs/").json()
    assert data["logs"][0]["text"] == "from slurm\n"
    assert alice.get(f"/jobs/api/jobs/{job.pk}/logs").json()["logs"][0]["text"] == "from slurm\n"


def test_live_tail_of_a_running_local_job(alice: Client, user: Any, until: Any) -> None:
    script = (
        "import sys, time\n"
        "for i in range(3):\n"
        "    print(f'tick {i}', flush=True)\n"
        "    time.sleep(0.4)\n"
    )
    job = JobManager("files_app").create_job(
        "ticker", user, job_type="LOCAL", executable=sys.executable, arguments=["-c", script]
    )
    job.execute()
    monitor = Monitor(name="tail-test")
    seen = ""
    offset = 0
    try:

        def read() -> bool:
            nonlocal seen, offset
            data = json.loads(alice.get(f"/jobs/{job.pk}/logs/?stdout={offset}").content)
            for log in data["logs"]:
                if log["name"] == "stdout":
                    seen += log["text"]
                    offset = log["next_offset"]
            return not data["follow"]

        until(read, step=monitor.run_cycle, timeout=60, what="the job to finish")
    finally:
        monitor.shutdown()
    assert seen == "tick 0\ntick 1\ntick 2\n"
