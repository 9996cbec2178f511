"""A job's result files and logs as the web reads them: the files in its workspace (listed without
following a symlink out of it, never a path outside it), downloads streamed with HTTP ``Range``
support, and the log files the engines keep in the workspace, read from an offset for a live tail.

Everything here reads the local file system only: no request calls a scheduler or an engine.
Where a job's logs live: ``<workspace>/.offload/job-<id>/attempt-<n>/`` (the local, Slurm and batch
engines write ``stdout.log`` and ``stderr.log`` there; the Dask engine ``error.txt``; the local
engine may name its folder in ``engine_state["dir"]``). An engine that runs on another machine
must stage its logs back into that folder to have them shown.
"""

from __future__ import annotations

import codecs
import datetime
import mimetypes
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.http import http_date, parse_http_date_safe, quote_etag

from offload.engines.base import INTERNAL_FOLDER, attempt_subpath
from offload.models import Job

#: Most files a listing shows (deeper or later files are counted, not listed).
MAX_LISTED = 1000
#: Deepest folder level a listing walks into.
MAX_DEPTH = 12
#: Bytes read per chunk of a download.
CHUNK = 64 * 1024
#: Most bytes one log-tail answer carries.
MAX_TAIL_CHUNK = 256 * 1024
#: Log file names read for a tail, in the order shown (other ``*.log`` files follow).
LOG_NAMES: tuple[str, ...] = ("stdout.log", "stderr.log", "error.txt")
#: Longest relative path accepted in a URL.
MAX_PATH = 4096

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ResultFile:
    """One file of a job's workspace: its path relative to the workspace, size and time."""

    path: str
    size: int
    modified: datetime.datetime


@dataclass(frozen=True)
class Listing:
    files: list[ResultFile]
    #: Files found beyond MAX_LISTED (or below MAX_DEPTH) that are not listed.
    more: int
    #: Why there is nothing to list ("" when there is).
    problem: str = ""


def workspace_root(job: Job) -> Path | None:
    """The job's workspace, resolved (symlinks in its own path are the operator's business), or
    None when it has none or it does not exist (yet)."""
    if not job.workspace:
        return None
    try:
        root = Path(job.workspace).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return root if root.is_dir() else None


def list_files(job: Job, *, limit: int = MAX_LISTED) -> Listing:
    """The regular files in the job's workspace, sorted by path, without the engines' folder.

    Symlinks are not followed: a link to a file inside the workspace is listed (it downloads as
    that file), a link that leads out of it, or to a folder, is left out."""
    root = workspace_root(job)
    if root is None:
        return Listing([], 0, "the job has no workspace yet" if job.workspace else "no workspace")
    found: list[ResultFile] = []
    more = 0
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if depth == 0 and entry.name == INTERNAL_FOLDER:
                continue
            try:
                if entry.is_symlink():
                    target = _inside(root, Path(entry.path))
                    if target is None or not target.is_file():
                        continue
                    info = target.stat()
                elif entry.is_dir(follow_symlinks=False):
                    if depth + 1 < MAX_DEPTH:
                        stack.append((Path(entry.path), depth + 1))
                    else:
                        more += 1
                    continue
                elif entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                else:
                    continue  # sockets, fifos, devices
            except OSError:
                continue
            if len(found) >= limit:
                more += 1
                continue
            found.append(
                ResultFile(
                    path=Path(entry.path).relative_to(root).as_posix(),
                    size=info.st_size,
                    modified=datetime.datetime.fromtimestamp(info.st_mtime, tz=datetime.UTC),
                )
            )
    found.sort(key=lambda item: item.path)
    return Listing(found, more)


def _inside(root: Path, path: Path) -> Path | None:
    """``path`` with every symlink resolved, if it is still inside ``root``; else None."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real == root or root in real.parents else None


def check_relative_path(value: str) -> str:
    """A relative path of a result file, or Http404 for anything that could leave the workspace
    (absolute, ``..``, NUL, backslashes, the engines' folder)."""
    if not isinstance(value, str) or not value or len(value) > MAX_PATH or "\x00" in value:
        raise Http404("no such file")
    if value.startswith("/") or "\\" in value:
        raise Http404("no such file")
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts) or parts[0] == INTERNAL_FOLDER:
        raise Http404("no such file")
    return value


def result_file(job: Job, relative: str) -> Path:
    """The real path of the job's result file ``relative``; Http404 if it is not a regular file
    inside the workspace (after resolving every symlink)."""
    relative = check_relative_path(relative)
    root = workspace_root(job)
    if root is None:
        raise Http404("no such file")
    real = _inside(root, root / relative)
    if real is None or real == root or not real.is_file():
        raise Http404("no such file")
    if real.relative_to(root).parts[0] == INTERNAL_FOLDER:
        raise Http404("no such file")
    return real


# -- downloads with Range -----------------------------------------------------------------------
def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """One ``bytes=`` range → ``(first, last)`` inclusive; None to send the whole file (no
    header, a form we do not serve such as several ranges: allowed by RFC 9110); False when it
    cannot be satisfied (416)."""
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None  # several ranges or another unit: the whole file, as RFC 9110 allows
    start_text, end_text = match.groups()
    if not start_text and not end_text:
        return None
    if not start_text:  # a suffix: the last N bytes
        length = int(end_text)
        if length == 0 or size == 0:
            return False
        return max(size - length, 0), size - 1
    first = int(start_text)
    last = int(end_text) if end_text else size - 1
    if end_text and last < first:
        return None  # syntactically invalid: ignored
    if first >= size:
        return False
    return first, min(last, size - 1)


def _etag(info: os.stat_result) -> str:
    return quote_etag(f"{info.st_ino:x}-{info.st_size:x}-{int(info.st_mtime_ns):x}")


def _if_range_matches(request: HttpRequest, etag: str, modified: float) -> bool:
    """Whether the ``If-Range`` precondition (if any) lets the range through."""
    value = request.headers.get("If-Range", "").strip()
    if not value:
        return True
    if value.startswith(('"', 'W/"')):
        return value == etag  # strong comparison only
    since = parse_http_date_safe(value)
    return since is not None and int(modified) <= since


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)


def _chunks(path: Path, identity: tuple[int, int], first: int, length: int) -> Iterator[bytes]:
    """The bytes, read when the response is sent (a response never sent holds no open file).
    A file replaced since the headers were made ends the body early rather than mixing two."""
    try:
        handle = os.fdopen(os.open(path, _OPEN_FLAGS), "rb")
    except OSError:
        return
    try:
        info = os.fstat(handle.fileno())
        if (info.st_dev, info.st_ino) != identity:
            return
        handle.seek(first)
        left = length
        while left > 0:
            data = handle.read(min(CHUNK, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        handle.close()


def download_response(request: HttpRequest, path: Path, *, filename: str) -> HttpResponse:
    """A streamed download of ``path``: 200 with the whole file, 206 with one range (and
    ``Content-Range``), or 416 with ``Content-Range: bytes */<size>``. ``HEAD`` sends headers
    only. The file is opened without following a symlink in its last component."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        raise Http404("no such file") from None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(info.st_mode):
        raise Http404("no such file")
    size = info.st_size
    etag = _etag(info)
    selected: tuple[int, int] | bool | None = None
    header = request.headers.get("Range", "")
    if header and _if_range_matches(request, etag, info.st_mtime):
        selected = parse_range(header, size)
    common = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": http_date(info.st_mtime),
    }
    if selected is False:
        refused = HttpResponse(status=416)
        refused["Content-Range"] = f"bytes */{size}"
        for key, value in common.items():
            refused[key] = value
        return refused
    if isinstance(selected, tuple):
        first, last = selected
        status = 206
    else:
        first, last, status = 0, size - 1, 200
    length = max(last - first + 1, 0)
    content_type, encoding = mimetypes.guess_type(filename)
    if encoding or not content_type:
        content_type = "application/octet-stream"
    if request.method == "HEAD":
        response: HttpResponse | StreamingHttpResponse = HttpResponse(
            status=status, content_type=content_type
        )
    else:
        response = StreamingHttpResponse(
            _chunks(path, (info.st_dev, info.st_ino), first, length),
            status=status,
            content_type=content_type,
        )
    response["Content-Length"] = str(length)
    if status == 206:
        response["Content-Range"] = f"bytes {first}-{last}/{size}"
    for key, value in common.items():
        response[key] = value
    response["Content-Disposition"] = _disposition(filename)
    response["X-Content-Type-Options"] = "nosniff"
    return response  # type: ignore[return-value]


def _disposition(filename: str) -> str:
    from urllib.parse import quote

    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


# -- logs ---------------------------------------------------------------------------------------
def log_folder(job: Job) -> Path | None:
    """Where the current attempt's logs are: ``engine_state["dir"]`` when an engine named it
    (and it is inside the workspace), else ``<workspace>/.offload/job-<id>/attempt-<n>``."""
    if not job.attempt:
        return None
    root = workspace_root(job)
    if root is None:
        return None
    named = (job.engine_state or {}).get("dir")
    if isinstance(named, str) and named:
        folder = _inside(root, Path(named))
        if folder is not None and folder.is_dir():
            return folder
    folder = _inside(root, root / attempt_subpath(job.pk, job.attempt))
    return folder if folder is not None and folder.is_dir() else None


def log_files(job: Job) -> dict[str, Path]:
    """Log name (``stdout``, ``stderr``, ``error`` …) → file, for the current attempt."""
    folder = log_folder(job)
    if folder is None:
        return {}
    files: dict[str, Path] = {}
    try:
        others = sorted(p.name for p in folder.iterdir() if p.name.endswith(".log"))
    except OSError:
        others = []
    for name in [*LOG_NAMES, *others]:
        path = folder / name
        key = name.rsplit(".", 1)[0]
        if key in files or path.is_symlink() or not path.is_file():
            continue
        files[key] = path
    return files


@dataclass(frozen=True)
class LogChunk:
    name: str
    #: Where ``text`` starts in the file (bytes) and where the next read should start.
    offset: int
    next_offset: int
    size: int
    text: str


def read_log(path: Path, name: str, offset: int, limit: int = MAX_TAIL_CHUNK) -> LogChunk:
    """The bytes of a log from ``offset`` (at most ``limit``). A negative offset means "the last
    ``-offset`` bytes"; an offset past the end (the file was truncated, a new attempt) starts
    over. A chunk ends at a whole UTF-8 character."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if offset < 0:
                offset = max(size + offset, 0)
            if offset > size:
                offset = 0
            handle.seek(offset)
            data = handle.read(min(limit, size - offset))
    except OSError:
        return LogChunk(name, 0, 0, 0, "")
    # Stop before a character cut in two (it comes whole with the next read).
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(data, final=False)
    pending = len(decoder.getstate()[0])
    if pending and pending == len(data):  # only a broken character: give it up as it is
        text, pending = decoder.decode(b"", final=True), 0
    return LogChunk(name, offset, offset + len(data) - pending, size, text)
