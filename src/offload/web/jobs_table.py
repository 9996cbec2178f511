"""The jobs table: Tethys's ``JobsTable`` gizmo as a Django template tag (``{% jobs_table %}`` in
:mod:`offload.templatetags.offload_tags`) that an app drops into its own page, and that the
portal's jobs page uses.

This module builds what the template ``offload/jobs_table.html`` shows: the columns, one row per
job with its status badge, the pending intent ("cancelling…") and the actions enabled by the
job's status. Building a table costs a constant number of queries, whatever the number of rows:
one for the open intents of the jobs shown, one for their schedulers' types (only for jobs whose
scheduler is not already loaded), and one for the newest event id (where the live stream starts).
Nothing here calls a scheduler.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from django.db.models import QuerySet
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.safestring import mark_safe

from offload.errors import InvalidJobError
from offload.models import IntentAction, Job, JobEvent, JobIntent, Scheduler
from offload.status import Category, Status

log = logging.getLogger(__name__)

#: Separates groups of actions in ``actions``.
SEPARATOR = "|"
#: The built-in actions, in Tethys's names.
BUILTIN_ACTIONS: tuple[str, ...] = (
    "run",
    "pause",
    "resume",
    "resubmit",
    "logs",
    "monitor",
    "results",
    "terminate",
    "delete",
)
#: What ``actions=None`` means (``monitor`` and ``results`` only appear with their URL).
DEFAULT_ACTIONS: tuple[str, ...] = (
    "run",
    "pause",
    "resume",
    "resubmit",
    SEPARATOR,
    "logs",
    "monitor",
    "results",
    SEPARATOR,
    "terminate",
    "delete",
)
#: Tethys's default columns.
DEFAULT_COLUMNS: tuple[str, ...] = ("id", "name", "description", "creation_time", "execute_time")

_PRE_RUNNING = frozenset({Status.PENDING, Status.SUBMITTED})
_RUNNING = frozenset({Status.RUNNING, Status.VARIOUS})
_ACTIVE = frozenset({Status.SUBMITTED, Status.RUNNING, Status.VARIOUS, Status.PAUSED})
_TERMINAL = frozenset(
    {
        Status.COMPLETE,
        Status.ERROR,
        Status.ABORTED,
        Status.VARIOUS_COMPLETE,
        Status.RESULTS_READY,
    }
)
_KNOWN = frozenset(Status) - {Status.OTHER}
#: The terminal statuses (nothing runs any more).
TERMINAL = _TERMINAL

#: Status codes in which each built-in action is enabled (as in Tethys). The browser uses the
#: same sets to enable and disable buttons when a status arrives on the live stream.
ENABLED_WHEN: dict[str, frozenset[Status]] = {
    "run": frozenset({Status.PENDING}),
    "pause": _RUNNING,
    "resume": frozenset({Status.PAUSED}),
    "resubmit": _TERMINAL,
    "results": _TERMINAL,
    "monitor": _RUNNING,
    "logs": _KNOWN - _PRE_RUNNING,
    "terminate": _ACTIVE,
    "delete": _KNOWN - _ACTIVE,
}
#: The same rule for a custom ("Other") status, by its declared category.
_ENABLED_BY_CATEGORY: dict[str, frozenset[Category | None]] = {
    "run": frozenset(),
    "pause": frozenset({Category.RUNNING}),
    "resume": frozenset(),
    "resubmit": frozenset({Category.TERMINAL}),
    "results": frozenset({Category.TERMINAL}),
    "monitor": frozenset({Category.RUNNING}),
    "logs": frozenset({Category.RUNNING, Category.ACTIVE, Category.TERMINAL, None}),
    "terminate": frozenset({Category.RUNNING, Category.ACTIVE, None}),
    "delete": frozenset({Category.TERMINAL, Category.PRE_RUNNING}),
}
#: Built-in actions that change the job: a POST form (with CSRF) to a view of offload.urls.
POST_ACTIONS: dict[str, str] = {
    "run": "offload:job_run",
    "pause": "offload:job_pause",
    "resume": "offload:job_resume",
    "resubmit": "offload:job_resubmit",
    "terminate": "offload:job_cancel",
    "delete": "offload:job_delete",
}
LABELS: dict[str, str] = {
    "run": "Run",
    "pause": "Pause",
    "resume": "Resume",
    "resubmit": "Resubmit",
    "logs": "Logs",
    "monitor": "Monitor",
    "results": "Results",
    "terminate": "Terminate",
    "delete": "Delete",
}
#: Confirmation asked before the destructive actions.
CONFIRMATIONS: dict[str, str] = {
    "terminate": "Terminate job {id} ({name})?",
    "delete": "Delete job {id} ({name}) and its files?",
}
#: An open intent → what the row shows until the monitor confirms, and the status codes that
#: confirm it (the browser clears the note when one of them arrives on the stream).
PENDING_INTENTS: dict[str, tuple[str, frozenset[Status]]] = {
    IntentAction.STOP: ("cancelling…", _TERMINAL),
    IntentAction.PAUSE: ("pausing…", frozenset({Status.PAUSED}) | _TERMINAL),
    IntentAction.RESUME: ("resuming…", _RUNNING | _TERMINAL),
    IntentAction.EXECUTE: ("submitting…", _RUNNING | {Status.PAUSED} | _TERMINAL),
    IntentAction.RESUBMIT: ("resubmitting…", _RUNNING | {Status.PAUSED} | _TERMINAL),
    IntentAction.DELETE: ("deleting…", frozenset()),
}
#: Statuses whose run time is still growing (the browser ticks it every ``refresh_interval``).
_TICKING = _RUNNING | {Status.SUBMITTED}


@dataclasses.dataclass(frozen=True)
class CustomJobAction:
    """An app's own action in the table (Tethys's ``CustomJobAction``).

    ``callback_or_url`` is either a URL name (reversed with ``job_id=<id>``, else with the id as
    the only argument), a path containing ``{job_id}`` (or ending in ``/``, the id is not added),
    or the name of a JavaScript function on ``window`` called as ``fn(jobId, button)``.
    ``enabled_callback(job)`` decides whether it is enabled (default: always);
    ``confirmation_message`` (``{id}`` and ``{name}`` are filled in) is asked first; ``method``
    ``"post"`` makes a URL action a POST form with the CSRF token (default ``"get"``: a link);
    ``job_type`` limits it to jobs of that type; ``danger`` styles it as destructive.
    """

    label: str
    callback_or_url: str
    enabled_callback: Callable[[Job], bool] | None = None
    confirmation_message: str = ""
    method: str = "get"
    job_type: str | None = None
    danger: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip():
            raise InvalidJobError("label", "a custom action needs a label")
        if not isinstance(self.callback_or_url, str) or not self.callback_or_url.strip():
            raise InvalidJobError("callback_or_url", "a custom action needs a URL or a callback")
        if self.method.lower() not in ("get", "post"):
            raise InvalidJobError("method", f"{self.method!r} is not 'get' or 'post'")


@dataclasses.dataclass(frozen=True)
class Column:
    label: str
    field: str
    #: ``(url, "ascending" | "descending" | "")`` when the header is a sort link.
    sort_link: tuple[str, str] | None = None


@dataclasses.dataclass(frozen=True)
class Cell:
    field: str
    value: Any
    kind: str  # "text", "time", "duration", "name"
    since: str = ""  # ISO start time of a ticking run time


@dataclasses.dataclass(frozen=True)
class Action:
    name: str
    label: str
    enabled: bool
    kind: str  # "post", "link", "callback", "separator"
    url: str = ""
    callback: str = ""
    confirm: str = ""
    danger: bool = False
    #: Status codes enabling it (built-in actions), for the browser; None: fixed.
    enabled_when: str | None = None


@dataclasses.dataclass(frozen=True)
class Row:
    job: Job
    cells: list[Cell]
    badge: str
    pending: str
    pending_until: str
    actions: list[Action]
    detail_url: str = ""
    status_code: str = ""
    #: The sub-jobs' progress bar or the workflow's DAG (``show_detailed_status``).
    detailed: Any = None
    #: The actions cell's markup (:func:`actions_html`), filled in by the template tag.
    actions_html: str = ""


@dataclasses.dataclass
class JobsTable:
    """Tethys's ``JobsTable`` options. Build one in a view and render it with
    ``{% jobs_table options %}``, or pass the same options to the tag as keywords."""

    jobs: Iterable[Job] | QuerySet[Job]
    column_fields: Sequence[str | tuple[str, str]] = DEFAULT_COLUMNS
    show_status: bool = True
    show_actions: bool = True
    actions: Sequence[str | CustomJobAction] | None = None
    monitor_url: str = ""
    results_url: str = ""
    refresh_interval: int = 5000
    sort: bool | str = True
    reverse_sort: bool = False
    hover: bool = False
    striped: bool = False
    bordered: bool = False
    condensed: bool = False
    classes: str = ""
    attributes: Mapping[str, Any] | None = None
    #: Open the live event stream (offload.web.sse) to update statuses without reloading.
    live: bool = True
    #: Link the ``name`` column to the job's page (when ``offload.urls`` is included).
    detail_links: bool = True
    #: Field → (url, aria-sort) to make a header a (server-side) sort link.
    sort_links: Mapping[str, tuple[str, str]] | None = None
    #: Where a POST action returns to (default: the current page).
    next_url: str = ""
    caption: str = ""
    #: Various jobs: a progress bar of their tasks' statuses; workflows: their DAG, coloured by
    #: node status (from the engine state the monitor stored).
    show_detailed_status: bool = False
    #: Who looks at the table: actions on jobs they may only view are not offered. The tag takes
    #: it from the request when not given; None shows every action (the POST views still check).
    user: Any = None
    #: An anonymous visitor's session jobs (:func:`offload.web.access.anonymous_jobs_of`).
    anonymous_jobs: tuple[int, ...] = ()


OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(JobsTable)) - {"jobs"}


def make_options(jobs_or_options: Any, **options: Any) -> JobsTable:
    """A :class:`JobsTable` from the tag's arguments; InvalidJobError naming a bad option."""
    unknown = sorted(set(options) - OPTION_NAMES)
    if unknown:
        raise InvalidJobError(
            unknown[0], f"not a jobs_table option (one of {sorted(OPTION_NAMES)})"
        )
    if isinstance(jobs_or_options, JobsTable):
        return dataclasses.replace(jobs_or_options, **options)
    if jobs_or_options is None or isinstance(jobs_or_options, str | bytes | Mapping):
        raise InvalidJobError("jobs", "expected a queryset or a list of jobs")
    return JobsTable(jobs=jobs_or_options, **options)


# -- columns ----------------------------------------------------------------------------------------
def _label_for(field: str) -> str:
    if field == "id":
        return "ID"
    return field.rsplit(".", 1)[-1].replace("_", " ").strip().title()


def parse_columns(
    fields: Sequence[str | tuple[str, str]] | str,
    sort_links: Mapping[str, tuple[str, str]] | None = None,
) -> list[Column]:
    if isinstance(fields, str):
        fields = [part.strip() for part in fields.split(",") if part.strip()]
    columns = []
    for item in fields:
        if isinstance(item, list | tuple) and len(item) == 2:
            label, field = str(item[0]), str(item[1])
        elif isinstance(item, str):
            label, field = _label_for(item), item
        else:
            raise InvalidJobError("column_fields", f"{item!r} is not a name or a (label, field)")
        if not field or any(part.startswith("_") or not part for part in field.split(".")):
            raise InvalidJobError("column_fields", f"{field!r} is not a field of a job")
        columns.append(Column(label, field, (sort_links or {}).get(field)))
    return columns


_MISSING = object()


def field_value(job: Job, field: str) -> Any:
    """``job.<field>``; dotted paths go into dicts (``extended_properties.a.b``) and attributes.
    Missing → empty. Methods are not called."""
    value: Any = job
    for part in field.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        else:
            value = getattr(value, part, _MISSING)
        if value is _MISSING or value is None:
            return ""
        if callable(value) and not isinstance(value, type):
            return ""
    return value


def _cell(job: Job, field: str, status: Status) -> Cell:
    from offload.web.views import format_duration

    if field == "run_time":
        start = job.start_time or job.execute_time
        ticking = status in _TICKING and start is not None and not job.completion_time
        since = start.isoformat() if ticking and start is not None else ""
        return Cell(field, format_duration(job.run_time), "duration", since=since)
    if field == "user":
        user = getattr(job, "user", None)
        return Cell(field, user.get_username() if user is not None else "", "text")
    value = field_value(job, field)
    if field == "name":
        return Cell(field, value, "name")
    if isinstance(value, datetime.datetime):
        return Cell(field, value, "time")
    if isinstance(value, datetime.timedelta):
        return Cell(field, format_duration(value), "duration")
    return Cell(field, value, "text")


# -- actions ----------------------------------------------------------------------------------------
def is_enabled(action: str, job: Job) -> bool:
    """Whether the built-in ``action`` is enabled for ``job``'s status (Tethys's rules)."""
    status = Status(job._status)
    if status == Status.OTHER:
        return job.other_category in _ENABLED_BY_CATEGORY[action]
    return status in ENABLED_WHEN[action]


def _reverse_with_id(name: str, job_id: int) -> str:
    try:
        return reverse(name, kwargs={"job_id": job_id})
    except NoReverseMatch:
        return reverse(name, args=[job_id])


def _custom_url(target: str, job_id: int) -> str | None:
    """The URL of a custom action, or None when ``target`` is a JavaScript callback name."""
    if "{job_id}" in target:
        return target.replace("{job_id}", str(job_id))
    if "/" in target:
        return target
    if ":" in target or "." not in target:
        try:
            return _reverse_with_id(target, job_id)
        except NoReverseMatch:
            if ":" in target:
                raise InvalidJobError(
                    "callback_or_url", f"{target!r}: no URL of that name takes a job id"
                ) from None
    return None


def _confirm(template: str, job: Job) -> str:
    return template.replace("{id}", str(job.pk)).replace("{name}", str(job.name))


def _codes(statuses: frozenset[Status]) -> str:
    return " ".join(sorted(s.value for s in statuses))


def _action_list(options: JobsTable) -> list[str | CustomJobAction]:
    chosen = list(DEFAULT_ACTIONS if options.actions is None else options.actions)
    result: list[str | CustomJobAction] = []
    for item in chosen:
        if isinstance(item, CustomJobAction):
            result.append(item)
            continue
        if not isinstance(item, str):
            raise InvalidJobError("actions", f"{item!r} is not an action name or a CustomJobAction")
        name = item.strip().lower()
        if name != SEPARATOR and name not in BUILTIN_ACTIONS:
            raise InvalidJobError(
                "actions", f"{item!r} is not one of {', '.join(BUILTIN_ACTIONS)} or '|'"
            )
        if name == "monitor" and not options.monitor_url:
            continue
        if name == "results" and not options.results_url:
            continue
        result.append(name)
    # No separator first, last or twice in a row.
    cleaned: list[str | CustomJobAction] = []
    for item in result:
        if item == SEPARATOR and (not cleaned or cleaned[-1] == SEPARATOR):
            continue
        cleaned.append(item)
    while cleaned and cleaned[-1] == SEPARATOR:
        cleaned.pop()
    return cleaned


def _can_pause(job: Job, scheduler_types: Mapping[int, str]) -> bool:
    from offload.engines import engine_class
    from offload.models import JOB_TYPES

    try:
        if job.scheduler_id is not None:
            kind = scheduler_types.get(job.scheduler_id, "")
        else:
            cls = JOB_TYPES.get(job.job_type)
            kind = cls.engine_kind if cls is not None else ""
        return bool(kind) and bool(engine_class(kind).can_pause)
    except Exception:  # an unknown engine: the action is shown disabled, never a 500
        return False


#: An id no job has, reversed once per URL name and then replaced by each row's id (a reverse()
#: per action and row was a third of the table's build time).
_SENTINEL_ID = 987_654_321_987


class _JobUrls:
    """``reverse(name, kwargs={"job_id": id})`` for many ids, reversing each name once."""

    def __init__(self) -> None:
        self._patterns: dict[str, tuple[str, ...]] = {}

    def __call__(self, name: str, job_id: int) -> str:
        parts = self._patterns.get(name)
        if parts is None:
            parts = tuple(reverse(name, kwargs={"job_id": _SENTINEL_ID}).split(str(_SENTINEL_ID)))
            self._patterns[name] = parts
        return str(job_id).join(parts)


def _builtin(
    name: str,
    job: Job,
    options: JobsTable,
    can_pause: bool,
    detail: Callable[[int], str],
    job_url: Callable[[str, int], str] = lambda name, pk: reverse(name, kwargs={"job_id": pk}),
) -> Action:
    enabled = is_enabled(name, job)
    when: str | None = _codes(ENABLED_WHEN[name])
    if name in ("pause", "resume") and not can_pause:
        enabled, when = False, None
    if Status(job._status) == Status.OTHER:
        when = None  # a custom status: the server's answer stands
    if name in POST_ACTIONS:
        try:
            url = job_url(POST_ACTIONS[name], job.pk)
        except NoReverseMatch:
            return Action(name, LABELS[name], False, "post", enabled_when=None)
        confirm = _confirm(CONFIRMATIONS[name], job) if name in CONFIRMATIONS else ""
        return Action(
            name,
            LABELS[name],
            enabled,
            "post",
            url=url,
            confirm=confirm,
            danger=name in CONFIRMATIONS,
            enabled_when=when,
        )
    if name == "logs":
        url = detail(job.pk)
        return Action(
            name,
            LABELS[name],
            enabled and bool(url),
            "link",
            url=url + "#logs" if url else "",
            enabled_when=when if url else None,
        )
    option = "monitor_url" if name == "monitor" else "results_url"
    target = str(getattr(options, option))
    try:
        url = _reverse_with_id(target, job.pk)
    except NoReverseMatch:
        raise InvalidJobError(option, f"{target!r}: no URL of that name takes a job id") from None
    return Action(name, LABELS[name], enabled, "link", url=url, enabled_when=when)


def _custom(action: CustomJobAction, job: Job) -> Action | None:
    if action.job_type and action.job_type.upper() != job.job_type:
        return None
    enabled = True if action.enabled_callback is None else bool(action.enabled_callback(job))
    confirm = _confirm(action.confirmation_message, job) if action.confirmation_message else ""
    url = _custom_url(action.callback_or_url, job.pk)
    if url is None:
        kind, callback = "callback", action.callback_or_url
    else:
        kind, callback = ("post" if action.method.lower() == "post" else "link"), ""
    return Action(
        "custom",
        action.label,
        enabled,
        kind,
        url=url or "",
        callback=callback,
        confirm=confirm,
        danger=action.danger,
    )


def _tidy_separators(actions: list[Action]) -> None:
    """Hide the separators that would stand first, last or next to another one once the
    disabled actions are hidden (the page hides those)."""
    seen_enabled = False
    last_sep: int | None = None
    for index, action in enumerate(actions):
        if action.kind == "separator":
            if not seen_enabled or last_sep is not None:
                actions[index] = dataclasses.replace(action, enabled=False)
            else:
                actions[index] = dataclasses.replace(action, enabled=True)
                last_sep = index
        elif action.enabled:
            seen_enabled = True
            last_sep = None
    if last_sep is not None:
        actions[last_sep] = dataclasses.replace(actions[last_sep], enabled=False)


def actions_html(actions: Sequence[Action], job_id: int, csrf_input: str, next_url: str) -> str:
    """The markup of a row's actions, built in Python: the same for every row but the values, and
    rendering it through the template language cost more than the rest of the table together.
    ``csrf_input`` is markup (the tag makes it); every other value is escaped here."""
    out: list[str] = []
    pk = str(int(job_id))
    nxt = _esc(next_url)
    for action in actions:
        danger = " danger" if action.danger else ""
        when = (
            f' data-enabled-when="{_esc(action.enabled_when)}"'
            if action.enabled_when is not None
            else ""
        )
        confirm = f' data-confirm="{_esc(action.confirm)}"' if action.confirm else ""
        label = _esc(action.label)
        if action.kind == "separator":
            out.append(
                f'<span class="sep" aria-hidden="true"{"" if action.enabled else " hidden"}></span>'
            )
        elif action.kind == "post":
            out.append(
                f'<form method="post" action="{_esc(action.url)}"{confirm}>{csrf_input}'
                f'<input type="hidden" name="next" value="{nxt}"><button type="submit" '
                f'class="act{danger}" data-action="{_esc(action.name)}"{when} '
                f'aria-label="{label} job {pk}"{"" if action.enabled else " disabled"}>{label}'
                "</button></form>"
            )
        elif action.kind == "link":
            off = "" if action.enabled else ' aria-disabled="true" tabindex="-1"'
            out.append(
                f'<a class="act{danger}{"" if action.enabled else " disabled"}" '
                f'href="{_esc(action.url)}" data-action="{_esc(action.name)}"{when}{confirm} '
                f'aria-label="{label} of job {pk}"{off}>{label}</a>'
            )
        else:
            out.append(
                f'<button type="button" class="act{danger}" data-action="custom" '
                f'data-callback="{_esc(action.callback)}" data-job="{pk}"{confirm} '
                f'aria-label="{label} job {pk}"{"" if action.enabled else " disabled"}>{label}'
                "</button>"
            )
    return mark_safe("\n".join(out))  # noqa: S308 (every value above is escaped)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


# -- the table --------------------------------------------------------------------------------------
def _sorted_jobs(options: JobsTable) -> list[Job]:
    jobs = options.jobs
    sort = options.sort
    if isinstance(jobs, QuerySet) and not jobs.query.is_sliced:
        if isinstance(sort, str) and sort:
            jobs = jobs.order_by(sort if not options.reverse_sort else _flip(sort), "id")
        elif sort is True:
            jobs = jobs.order_by("-id" if options.reverse_sort else "id")
        return list(jobs)
    items = list(jobs)
    if isinstance(sort, str) and sort:
        key = sort.lstrip("-")
        descending = sort.startswith("-") != options.reverse_sort
        items.sort(key=lambda job: _sort_key(field_value(job, key)), reverse=descending)
    elif sort is True:
        items.sort(key=lambda job: job.pk or 0, reverse=options.reverse_sort)
    return items


def _flip(order: str) -> str:
    return order[1:] if order.startswith("-") else "-" + order


def _sort_key(value: Any) -> tuple[int, Any]:
    if value in ("", None):
        return (0, "")
    if isinstance(value, datetime.datetime | datetime.timedelta | int | float):
        return (1, value)
    return (2, str(value))


def _open_intents(job_ids: list[int]) -> dict[int, str]:
    """Each job's oldest open user intent, in ONE query."""
    if not job_ids:
        return {}
    pending: dict[int, str] = {}
    rows = (
        JobIntent.objects.filter(
            job_id__in=job_ids, done_at__isnull=True, action__in=list(PENDING_INTENTS)
        )
        .order_by("id")
        .values_list("job_id", "action")
    )
    for job_id, action in rows:
        # A stop or delete outranks what it supersedes.
        if job_id not in pending or action in (IntentAction.STOP, IntentAction.DELETE):
            pending[job_id] = action
    return pending


def _scheduler_types(jobs: list[Job]) -> dict[int, str]:
    types: dict[int, str] = {}
    missing = set()
    for job in jobs:
        if job.scheduler_id is None:
            continue
        if Job.scheduler.is_cached(job):
            scheduler = job.scheduler
            if scheduler is not None:
                types[job.scheduler_id] = scheduler.scheduler_type
        else:
            missing.add(job.scheduler_id)
    if missing:
        types.update(Scheduler.objects.filter(pk__in=missing).values_list("pk", "scheduler_type"))
    return types


def _detailed(jobs: list[Job]) -> dict[int, Any]:
    """Each job's bar or DAG; engine states not loaded with the jobs (a deferred field) come in
    ONE query, for the jobs that can have one (Various, Various-Complete, workflows)."""
    from offload.web import detailed_status

    wanted = [
        job
        for job in jobs
        if Status(job._status) in detailed_status.BAR_STATUSES
        or job.job_type in WORKFLOW_TYPES
        or "engine_state" not in job.get_deferred_fields()
    ]
    missing = [job.pk for job in wanted if "engine_state" in job.get_deferred_fields()]
    states: dict[int, Any] = {}
    if missing:
        states = dict(Job.objects.filter(pk__in=missing).values_list("pk", "engine_state"))
    found: dict[int, Any] = {}
    for job in wanted:
        # Not states.get(pk, job.engine_state): that would load a deferred field (a query).
        state = states[job.pk] if job.pk in states else job.engine_state  # noqa: SIM401
        drawn = detailed_status.for_job(job, in_table=True, state=state)
        if drawn is not None:
            found[job.pk] = drawn
    return found


#: Job types whose DAG the table draws whatever their status.
WORKFLOW_TYPES = frozenset({"CONDORWORKFLOW"})


def build(options: JobsTable, badge_classes: Mapping[str, str]) -> dict[str, Any]:
    """The template context of ``offload/jobs_table.html``."""
    jobs = _sorted_jobs(options)
    columns = parse_columns(options.column_fields, options.sort_links)
    actions = _action_list(options) if options.show_actions else []
    try:
        reverse("offload:job_detail", kwargs={"job_id": 1})
        has_pages = True
    except NoReverseMatch:
        has_pages = False

    job_url = _JobUrls()

    def detail(job_id: int) -> str:
        return job_url("offload:job_detail", job_id) if has_pages else ""

    pending = _open_intents([job.pk for job in jobs]) if options.show_status else {}
    actable: set[int] | None = None
    if actions and options.user is not None:
        from offload.web.access import actable_job_ids

        actable = actable_job_ids(options.user, jobs, anonymous_jobs=options.anonymous_jobs)
    detailed = _detailed(jobs) if options.show_detailed_status else {}
    wants_pause = any(a in ("pause", "resume") for a in actions)
    scheduler_types = _scheduler_types(jobs) if wants_pause else {}
    rows = []
    for job in jobs:
        status = Status(job._status)
        row_actions: list[Action] = []
        can_pause = wants_pause and _can_pause(job, scheduler_types)
        for item in actions if actable is None or job.pk in actable else ():
            if item == SEPARATOR:
                row_actions.append(Action("separator", "", False, "separator"))
            elif isinstance(item, CustomJobAction):
                custom = _custom(item, job)
                if custom is not None:
                    row_actions.append(custom)
            else:
                row_actions.append(_builtin(item, job, options, can_pause, detail, job_url))
        _tidy_separators(row_actions)
        intent = pending.get(job.pk, "")
        label, until = PENDING_INTENTS.get(intent, ("", frozenset()))
        rows.append(
            Row(
                job=job,
                cells=[_cell(job, column.field, status) for column in columns],
                badge=badge_classes.get(job._status, ""),
                pending=label,
                pending_until=_codes(until),
                actions=row_actions,
                detail_url=detail(job.pk) if options.detail_links else "",
                status_code=job._status,
                detailed=detailed.get(job.pk),
            )
        )
    stream_url = ""
    last_event_id = 0
    if options.live and options.show_status:
        try:
            stream_url = reverse("offload:events_stream")
        except NoReverseMatch:
            stream_url = ""
        if stream_url:
            last_event_id = (
                JobEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
            )
    classes = ["jobs", "offload-jobs-table"]
    for flag in ("hover", "striped", "bordered", "condensed"):
        if getattr(options, flag):
            classes.append(f"table-{flag}")
    if options.classes:
        classes.append(str(options.classes))
    return {
        "options": options,
        "columns": columns,
        "rows": rows,
        "num_cols": len(columns) + int(options.show_status) + int(bool(actions)),
        "show_actions": bool(actions),
        "table_classes": " ".join(classes),
        "attributes": dict(options.attributes or {}),
        "stream_url": stream_url,
        "last_event_id": last_event_id,
        "refresh_interval": max(int(options.refresh_interval or 0), 0),
        "has_pages": has_pages,
        "status_sort_link": (options.sort_links or {}).get("status"),
        "terminal_codes": _codes(_TERMINAL),
        "ticking_codes": _codes(_TICKING),
        "now": timezone.now(),
    }
