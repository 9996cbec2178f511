"""Filtering and sorting of job lists, shared by the jobs page and the REST API (server-side, so
the first page of 100,000 jobs costs what the first page of 10 does: a count and one page)."""

from __future__ import annotations

from django.db.models import BigIntegerField, ExpressionWrapper, F, QuerySet

from offload.errors import InvalidJobError
from offload.models import Job
from offload.status import Status

#: Sort keys (``-`` prefix for descending) → the ordering they mean (``id`` breaks ties).
SORTS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "name": ("name", "id"),
    "status": ("_status", "id"),
    "type": ("job_type", "id"),
    "app": ("label", "id"),
    "created": ("creation_time", "id"),
    "started": ("start_time", "id"),
    "finished": ("completion_time", "id"),
}
#: Every accepted value of ``sort``.
SORT_VALUES: tuple[str, ...] = tuple(v for key in SORTS for v in (key, "-" + key))
#: The default: newest first.
DEFAULT_SORT = "-id"
#: Longest text search accepted.
MAX_SEARCH = 200


def no_nul(value: str, field: str) -> str:
    if "\x00" in value:
        raise InvalidJobError(field, "must not contain NUL characters")
    return value


def parse_statuses(value: str) -> list[str]:
    """Status codes of a comma-separated list of names or codes; InvalidJobError naming
    ``status`` for an unknown one."""
    codes = []
    for part in value.split(","):
        if not part.strip():
            continue
        status = Status.parse(part.strip())
        if status is None:
            names = ", ".join(s.display for s in Status)
            raise InvalidJobError("status", f"{part.strip()!r} is not a status (one of {names})")
        codes.append(status.value)
    return codes


def order_for(sort: str) -> tuple[str, ...]:
    if sort not in SORT_VALUES:
        raise InvalidJobError("sort", f"{sort!r} is not one of {', '.join(SORT_VALUES)}")
    order = SORTS[sort.lstrip("-")]
    if sort.startswith("-"):
        order = tuple("-" + name for name in order)
    return order


def filter_jobs(
    qs: QuerySet[Job],
    *,
    status: str | None = None,
    job_type: str | None = None,
    app: str | None = None,
    q: str | None = None,
    sort: str = DEFAULT_SORT,
) -> QuerySet[Job]:
    """``qs`` filtered and ordered; InvalidJobError naming the field for a bad value."""
    if status:
        qs = qs.filter(_status__in=parse_statuses(no_nul(status, "status")))
    if job_type:
        qs = qs.filter(job_type=no_nul(job_type, "type").upper())
    if app:
        qs = qs.filter(label=no_nul(app, "app"))
    if q:
        if len(q) > MAX_SEARCH:
            raise InvalidJobError("q", f"longer than {MAX_SEARCH} characters")
        qs = qs.filter(name__icontains=no_nul(q, "q"))
    return qs.order_by(*order_for(sort))


def matches_first(qs: QuerySet[Job], *, descending: bool) -> QuerySet[Job]:
    """``qs`` in id order through an expression (``id + 0``), so the database cannot walk the
    primary key to sort: it finds the matching rows first (by the name's trigram index), then sorts
    them. Right when few rows match; when most do, the plain id order finds a page sooner."""
    key = ExpressionWrapper(F("id") + 0, output_field=BigIntegerField())
    return qs.order_by(key.desc() if descending else key.asc())
