"""The only writer of ``Job``, ``JobEvent`` and ``JobIntent`` rows.

App code (through ``Job`` methods and :class:`offload.manager.JobManager`), the web views, the CLI and
the monitors all change jobs through these functions, so the status rules of :mod:`offload.status`
hold whoever the caller is. Every status write is a conditional ``UPDATE … WHERE status = <old>``:
a change based on a stale read affects no row and is re-evaluated, never applied blindly.

Nothing here calls a scheduler except :func:`get_logs` (reading the job's own log files).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib
import inspect
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connection, connections, models, transaction
from django.db.models import CharField, Exists, OuterRef, Q, Value
from django.db.models.functions import Cast, Concat, Replace
from django.db.models.signals import post_save, pre_save
from django.utils import timezone

from offload import status as rules
from offload.conf import get_settings, workspace_root
from offload.engines.base import (
    INTERNAL_FOLDER,
    NativeReport,
    SubmitOutcome,
    SubmitResult,
    job_folder,
)
from offload.errors import (
    InvalidJobError,
    JobAlreadyExecutedError,
    JobNotFoundError,
    JobStateError,
    NotSupportedError,
)
from offload.loading import RawJSON, value_changed
from offload.models import (
    OTHER_CATEGORY_KEY,
    OTHER_STATUS_KEY,
    EventSource,
    IntentAction,
    Job,
    JobEvent,
    JobIntent,
    MonitorLease,
    loaded_values,
    snapshot_values,
)
from offload.status import Category, Status, Verdict

log = logging.getLogger("offload.store")

#: Fields only this module writes; ``Job.save()`` never writes them from a possibly stale object.
MANAGED_FIELDS = frozenset(
    {
        "_status",
        "native_id",
        "native_status",
        "attempt",
        "engine_state",
        "last_contact",
        "stale_since",
        "deleted_at",
        "execute_time",
        "start_time",
        "completion_time",
        "owns_workspace",
        "creation_time",
        "label",
        "user",
        "user_id",
        "job_type",
    }
)
#: Fields set once, when the job is created (attname → the attribute's name): saving a stored job
#: with another value in one of them raises InvalidJobError instead of being silently ignored.
FIXED_FIELDS = {
    "user_id": "user",
    "label": "label",
    "creation_time": "creation_time",
    "job_type": "job_type",
}
#: Where a new job keeps the status create_job was given until it is stored.
INITIAL_STATUS = "_initial_status"
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_.@+-]+$")

#: App label → {custom status text → category}, declared through JobManager.
_CUSTOM_STATUSES: dict[str, dict[str, Category]] = {}


# -- helpers ---------------------------------------------------------------------------------------
def function_path(function: Callable[..., Any] | str) -> str:
    """A dotted path for a callable (``package.module.function``); strings pass through."""
    if isinstance(function, str):
        if not re.match(r"^[A-Za-z_][\w.]*[.:][A-Za-z_]\w*$", function):
            raise InvalidJobError(
                "process_results_function", f"{function!r} is not a dotted path module.function"
            )
        return function
    module = inspect.getmodule(function)
    qualname = getattr(function, "__qualname__", getattr(function, "__name__", ""))
    if module is None or not qualname or "<" in qualname:
        raise InvalidJobError(
            "process_results_function",
            f"{function!r} is not importable by path; use a module-level function",
        )
    return f"{module.__name__}.{qualname}"


def resolve_function(path: str) -> Callable[..., Any]:
    """Import the callable named by ``path`` (``pkg.mod.func`` or ``pkg.mod:func``)."""
    if ":" in path:
        module_name, _, attr_path = path.partition(":")
        obj: Any = importlib.import_module(module_name)
    else:
        parts = path.split(".")
        for i in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            attr_path = ".".join(parts[i:])
            break
        else:
            raise ImportError(f"cannot import any module of {path!r}")
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    if not callable(obj):
        raise TypeError(f"{path!r} is not callable")
    return obj  # type: ignore[no-any-return]


def safe_segment(value: str, what: str) -> str:
    """``value`` as one folder name, or InvalidJobError: no separators, no ``..``."""
    if not value or not SAFE_SEGMENT.match(value) or set(value) == {"."}:
        raise InvalidJobError(
            what, f"{value!r} cannot be used as a folder name (letters, digits, _ . @ + - only)"
        )
    return value


def app_workspace(label: str) -> Path:
    return workspace_root() / safe_segment(label, "label") / "app"


def user_workspace(label: str, user: Any) -> Path:
    name = None if user is None else (getattr(user, "username", None) or str(user))
    return _user_folder(workspace_root(), label, name, None if user is None else user.pk)


@functools.lru_cache(maxsize=1024)
def _user_folder(root: Path, label: str, name: str | None, user_pk: Any) -> Path:
    """:func:`user_workspace` for a workspace root, app, user name and user id (remembered: it is
    on the path of every job creation, and the same few come back)."""
    folder = root / safe_segment(label, "label") / "users"
    if name is None:
        return folder / "_system"
    try:
        return folder / safe_segment(name, "user")
    except InvalidJobError:
        return folder / f"user-{user_pk}"


def declare_custom_status(label: str, text: str, category: Category | str) -> None:
    _CUSTOM_STATUSES.setdefault(label, {})[text] = Category.parse(category)


def custom_status_category(label: str, text: str) -> Category | None:
    return _CUSTOM_STATUSES.get(label, {}).get(text)


def engine_class_for(job: Job) -> Any:
    from offload.schedulers import engine_class_for_job

    return engine_class_for_job(job)


# -- creating and saving ---------------------------------------------------------------------------
def save_job(job: Job, *, super_save: Callable[..., None], args: Any, kwargs: Any) -> None:
    """Insert a new job (resolving ``{id}`` in its name and its default workspace), or save the
    fields app code may edit on an existing one — never the fields the monitor owns."""
    if job._state.adding:
        if not job.job_type:
            job.job_type = type(job).type_code or "BASIC"
        needs_id = "{id}" in job.name or not job.workspace
        name, workspace = job.name, job.workspace
        if needs_id and job.pk is None and _can_insert_in_one_statement(job, args, kwargs):
            _insert_job_and_event(job)
            job._loaded = _snapshot(job)
            return
        reserved: list[int] | None = None
        try:
            with transaction.atomic():
                if needs_id and job.pk is None and not args:
                    reserved = _reserve_ids(1)
                if reserved is not None:
                    # PostgreSQL: the id first, so the row is complete in its INSERT (no UPDATE,
                    # no dead row version).
                    job.id = reserved[0]
                    _fill_id_fields(job)
                    super_save(**{**kwargs, "force_insert": True})
                else:
                    super_save(*args, **kwargs)
                    updates = _fill_id_fields(job)
                    if updates:
                        Job.objects.filter(pk=job.pk).update(**updates)
                _finish_creation(job)
        except BaseException:
            if reserved is not None:
                job.id = None
            job.name, job.workspace = name, workspace
            if not workspace:
                job.owns_workspace = False
            raise
        job.__dict__.pop(INITIAL_STATUS, None)
        job._loaded = _snapshot(job)  # type: ignore[attr-defined]
        return
    loaded = loaded_values(job)
    _refuse_fixed_field_changes(job, loaded)
    fields = [
        f.attname
        for f in job._meta.concrete_fields
        if f.attname not in MANAGED_FIELDS
        and f.attname != "id"
        and f.attname in job.__dict__  # a deferred field never loaded is left as it is
        and (
            not loaded
            or f.attname not in loaded
            or value_changed(job, f.attname, loaded[f.attname])
        )
    ]
    if kwargs.get("update_fields") is not None:
        fields = [f for f in kwargs["update_fields"] if f not in MANAGED_FIELDS]
    if fields and "extended_properties" in fields:
        # The custom-status keys in extended_properties belong to the status, which only this
        # module writes: keep the stored ones, whatever a possibly stale object holds.
        with transaction.atomic():
            stored = (
                Job.objects.select_for_update()
                .filter(pk=job.pk)
                .values_list("extended_properties", flat=True)
                .first()
            )
            props = {
                k: v
                for k, v in (job.extended_properties or {}).items()
                if k not in (OTHER_STATUS_KEY, OTHER_CATEGORY_KEY)
            }
            for key in (OTHER_STATUS_KEY, OTHER_CATEGORY_KEY):
                if key in (stored or {}):
                    props[key] = stored[key]  # type: ignore[index]
            job.extended_properties = props
            super_save(update_fields=fields)
        job._loaded = _snapshot(job)  # type: ignore[attr-defined]
    elif fields:
        super_save(update_fields=fields)
        job._loaded = _snapshot(job)  # type: ignore[attr-defined]


def _refuse_fixed_field_changes(job: Job, loaded: Mapping[str, Any]) -> None:
    """InvalidJobError if app code changed a field fixed at creation (:data:`FIXED_FIELDS`) on a
    stored job. Compared with what the job was loaded with; a field loaded without a snapshot (a
    deferred field read on its own) is compared with the row, in one query."""
    data = job.__dict__
    unknown: list[str] = []
    for attname, name in FIXED_FIELDS.items():
        if attname not in data:
            continue  # deferred and never read: not changed
        if attname not in loaded:
            unknown.append(attname)
        elif value_changed(job, attname, loaded[attname]):
            raise _fixed_field_error(job, name, loaded[attname], data[attname])
    if unknown:
        stored = Job.objects.filter(pk=job.pk).values(*unknown).first()
        for attname in unknown:
            if stored is not None and stored[attname] != data[attname]:
                raise _fixed_field_error(job, FIXED_FIELDS[attname], stored[attname], data[attname])


def _fixed_field_error(job: Job, name: str, stored: Any, given: Any) -> InvalidJobError:
    what = "user id" if name == "user" else "value"
    return InvalidJobError(
        name,
        f"is read-only once a job is stored: job {job.pk} keeps {what} {stored!r}, "
        f"it cannot be changed to {given!r} (create a new job instead)",
    )


_MISSING = object()


def _jobs_folder(job: Job) -> str:
    """The folder (with a trailing separator) holding the default workspaces of the jobs of the
    job's app and user; a job's own is this plus its id."""
    return _jobs_folder_in(user_workspace(job.label, job.user))


@functools.lru_cache(maxsize=1024)
def _jobs_folder_in(user_folder: Path) -> str:
    return f"{user_folder / 'jobs'}{os.sep}"


def _fill_id_fields(job: Job) -> dict[str, Any]:
    """Put the job's id into ``{id}`` in its name, and give a job without a workspace a folder of
    its own named after its id. Returns the fields it set."""
    updates: dict[str, Any] = {}
    if "{id}" in job.name:
        job.name = job.name.replace("{id}", str(job.id))
        updates["name"] = job.name
    if not job.workspace:
        job.workspace = _jobs_folder(job) + str(job.id)
        job.owns_workspace = True
        updates["workspace"] = job.workspace
        updates["owns_workspace"] = True
    return updates


def _finish_creation(job: Job) -> None:
    """The groups create_job was given, the creation event, and the status create_job was given
    (in the creating transaction)."""
    pending_groups = job.__dict__.pop("_pending_groups", None)
    if pending_groups:
        job.groups.set(pending_groups)
    _insert_creation_events([job.pk])
    if INITIAL_STATUS in job.__dict__:
        _apply_initial_statuses([job])


def _snapshot(job: Job) -> dict[str, Any]:
    data = job.__dict__
    names = [f.attname for f in job._meta.concrete_fields if f.attname in data]  # not deferred
    return snapshot_values(names, [getattr(job, name) for name in names])


@functools.cache
def _field_plan() -> list[tuple[Any, str, tuple[type, ...], bool]]:
    """For each concrete field of a job (the primary key included): the field, its attname, the
    value types that its database preparation returns unchanged (so they go to the driver as
    they are: ``str`` for text, ``int`` for integers and foreign keys, ``bool`` for booleans, and
    None for these and for timestamps; JSON and everything else is always prepared), and whether
    its ``pre_save`` does more than read the attribute (``auto_now``; JSON fields are read
    through it, too)."""
    plan = []
    for field in Job._meta.concrete_fields:
        target = field.target_field if isinstance(field, models.ForeignKey) else field
        as_is: tuple[type, ...] = ()
        if isinstance(target, models.CharField | models.TextField):
            as_is = (str, type(None))
        elif isinstance(target, models.BooleanField):
            as_is = (bool, type(None))
        elif isinstance(target, models.IntegerField | models.AutoField):
            as_is = (int, type(None))
        elif isinstance(target, models.DateTimeField):
            as_is = (type(None),)  # a datetime may need its time zone
        # JSON too: its attribute decodes a value still in its loaded text.
        own_pre_save = isinstance(target, models.JSONField) or (
            type(field).pre_save is not models.Field.pre_save
            and bool(getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False))
        )
        plan.append((field, field.attname, as_is, own_pre_save))
    return plan


def bulk_create_jobs(jobs: Sequence[Job], batch_size: int = 1000) -> list[Job]:
    """Insert many new jobs at once (the fast path): ``{id}`` and default workspaces resolved, one
    creation event each, the groups and statuses create_job was given, and no query per job. On
    PostgreSQL the ids are taken from the sequence first, so each row is complete, and the jobs and
    their events are written with ``COPY``; elsewhere the ids come back from the INSERT and the
    database puts them into names and workspaces (at most two UPDATEs per batch), and writes the
    events from the job rows (one INSERT … SELECT per batch)."""
    jobs = list(jobs)
    names = [job.name for job in jobs]
    prefixes: dict[tuple[str, Any], str] = {}
    own_workspace: list[Job] = []
    for job in jobs:
        if not job.job_type:
            job.job_type = type(job).type_code or "BASIC"
        if not job.workspace:
            key = (job.label, job.user_id)
            if key not in prefixes:
                prefixes[key] = _jobs_folder(job)
            own_workspace.append(job)
    fresh = [job for job in jobs if job.pk is None]
    try:
        with transaction.atomic():
            reserved = _reserve_ids(len(fresh))
            if reserved is not None:
                for job, job_id in zip(fresh, reserved, strict=True):
                    job.id = job_id
            for job in own_workspace:
                # The job's own folder is named after its id (appended below when not yet known).
                job.workspace = prefixes[(job.label, job.user_id)]
                job.owns_workspace = True
                if job.pk is not None:
                    job.workspace += str(job.pk)
            for job in jobs:
                if job.pk is not None:
                    job.name = job.name.replace("{id}", str(job.pk))
            copied = reserved is not None and len(fresh) == len(jobs)
            if copied:
                # PostgreSQL, every row complete: COPY the jobs and their events.
                _copy_new_jobs(jobs)
                created = jobs
            else:
                created = Job.objects.bulk_create(jobs, batch_size=batch_size)
                if reserved is None:
                    _fill_ids_in_database(created, own_workspace, batch_size)
                for chunk in _chunks([job.pk for job in created], batch_size):
                    _insert_creation_events(chunk)
            _add_groups(created, batch_size)
            _apply_initial_statuses(created)
    except BaseException:
        for job, name in zip(jobs, names, strict=True):
            job.name = name
        for job in own_workspace:
            job.workspace = ""
            job.owns_workspace = False
        for job in fresh:
            job.id = None
        raise
    for job in created:
        job.__dict__.pop(INITIAL_STATUS, None)
        job.__dict__.pop("_pending_groups", None)
    if copied:
        return created  # saved with the row they were written from as their snapshot
    for job in created:
        job._state.adding = False
        job._loaded = _snapshot(job)  # type: ignore[attr-defined]
    return created


def _add_groups(jobs: Sequence[Job], batch_size: int) -> None:
    """The groups create_job was given to just-inserted jobs: their rows of the groups table in
    one INSERT per ``batch_size`` rows (fewer if the database's parameter limit asks for it)."""
    through = Job.groups.through
    rows = []
    for job in jobs:
        seen: set[int] = set()
        for group in job.__dict__.get("_pending_groups") or ():
            if group.pk is None:
                raise InvalidJobError("groups", f"group {group!r} is not saved")
            if group.pk not in seen:
                seen.add(group.pk)
                rows.append(through(job_id=job.pk, group_id=group.pk))
    if rows:
        through.objects.bulk_create(rows, batch_size=batch_size)


def _copy_new_jobs(jobs: list[Job]) -> None:
    """PostgreSQL: write complete new job rows (ids, names and workspaces filled in) and their
    creation events with two ``COPY … FROM STDIN``. Values of the usual types go to the driver as
    they are (what Django's preparation would return for them); anything else is prepared by
    its field as ``bulk_create`` would. Each job is left saved, with what was written as the
    snapshot ``save()`` compares against."""
    qn = connection.ops.quote_name
    conn = connections[connection.alias]  # not the proxy: it costs a lookup per attribute
    plan = _field_plan()
    fields = [field for field, *_ in plan]
    attnames = [attname for _, attname, *_ in plan]
    json_encoders = {i: f.encoder for i, f in enumerate(fields) if isinstance(f, models.JSONField)}
    as_is = [field_as_is for _, _, field_as_is, _ in plan]
    read_through = [
        i
        for i, (_, _, _, own_pre_save) in enumerate(plan)
        if own_pre_save and i not in json_encoders
    ]
    simple = [i for i in range(len(plan)) if i not in json_encoders and i not in read_through]
    job_sql = (
        f"COPY {qn(Job._meta.db_table)} ({', '.join(qn(str(f.column)) for f in fields)}) FROM STDIN"
    )
    event_fields, _, event_values = _creation_event()
    event_sql = f"COPY {qn(JobEvent._meta.db_table)} ({', '.join(qn(str(f.column)) for f in event_fields)}) FROM STDIN"
    event_template = [event_values.get(f.attname) for f in event_fields]
    event_slots = {f.attname: i for i, f in enumerate(event_fields)}
    db = connection.alias
    empty_json = {i: RawJSON(json.dumps({}, cls=encoder)) for i, encoder in json_encoders.items()}
    with connection.cursor() as cursor:
        raw = cursor.cursor  # the driver's cursor: COPY is not part of Django's cursor API
        started = time.monotonic()
        with raw.copy(job_sql) as copy:
            for job in jobs:
                data = job.__dict__
                row: list[Any] = [None] * len(plan)
                for i in simple:
                    value = data.get(attnames[i], _MISSING)
                    if value is _MISSING:
                        value = getattr(job, attnames[i])
                    if value.__class__ not in as_is[i]:
                        value = fields[i].get_db_prep_save(value, conn)
                    row[i] = value
                for i in read_through:
                    row[i] = fields[i].get_db_prep_save(fields[i].pre_save(job, True), conn)
                for i, encoder in json_encoders.items():
                    value = getattr(job, attnames[i])
                    if value.__class__ is dict and not value:
                        row[i] = empty_json[i]
                    else:
                        row[i] = RawJSON(json.dumps(value, cls=encoder))
                copy.write_row(row)
                state = job._state
                state.adding = False
                state.db = db
                data.pop("_loaded", None)
                data["_loaded_row"] = (attnames, row)
        _log_copy(job_sql, len(jobs), started)
        started = time.monotonic()
        with raw.copy(event_sql) as copy:
            for job in jobs:
                event = list(event_template)
                event[event_slots["job_id"]] = job.pk
                event[event_slots["attempt"]] = job.attempt
                event[event_slots["to_status"]] = job._status
                copy.write_row(event)
        _log_copy(event_sql, len(jobs), started)


def _log_copy(sql: str, rows: int, started: float) -> None:
    """Record a COPY where Django records queries (DEBUG, CaptureQueriesContext), as its cursor
    would for an ordinary statement, so COPY shows up in query counts."""
    if connection.queries_logged:
        connection.queries_log.append(
            {"sql": f"{sql} -- {rows} rows", "time": f"{time.monotonic() - started:.3f}"}
        )


def _reserve_ids(count: int) -> list[int] | None:
    """``count`` new job ids from the table's sequence (PostgreSQL), in ascending order; None on
    a database without sequences (SQLite), where ids are known only after the INSERT."""
    if connection.vendor != "postgresql" or count == 0:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(seq) FROM pg_get_serial_sequence(%s, %s) AS seq, "
            "generate_series(1, %s)",
            [
                connection.ops.quote_name(Job._meta.db_table),
                str(Job._meta.get_field("id").column),
                count,
            ],
        )
        return sorted(int(row[0]) for row in cursor.fetchall())


def _fill_ids_in_database(created: list[Job], own_workspace: list[Job], batch_size: int) -> None:
    """Put the ids the INSERT returned into ``{id}`` names and default workspaces, in the
    database (one UPDATE per batch and field) and on the objects."""
    id_text = Cast("id", output_field=CharField())
    named = [job.pk for job in created if "{id}" in job.name]
    for chunk in _chunks(named, batch_size):
        Job.objects.filter(pk__in=chunk).update(
            # Any expression can replace; the stubs only allow a Value.
            name=Replace("name", Value("{id}"), id_text)  # type: ignore[arg-type]
        )
    for chunk in _chunks([job.pk for job in own_workspace], batch_size):
        Job.objects.filter(pk__in=chunk).update(workspace=Concat("workspace", id_text))
    for job in created:
        job.name = job.name.replace("{id}", str(job.pk))
    for job in own_workspace:
        job.workspace += str(job.pk)


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


#: Per database vendor: the fields of a creation event, the job column each of ``job_id``,
#: ``attempt`` and ``to_status`` comes from, and the prepared values of the other fields but
#: ``time`` (see :func:`_creation_event`).
_EVENT_TEMPLATES: dict[str, tuple[list[Any], dict[str, str], dict[str, Any]]] = {}


def _creation_event() -> tuple[list[Any], dict[str, str], dict[str, Any]]:
    """What a creation event is made of: its fields (no primary key); for the three taken from
    the job row, the job column each comes from; and the prepared value of every other field —
    the row ``JobEvent(job=…, attempt=…, to_status=…, source=app, message="created")`` would be,
    other fields at their defaults, ``time`` now. All but the time is worked out once."""
    template = _EVENT_TEMPLATES.get(connection.vendor)
    if template is None:
        from_job = {
            "job_id": str(Job._meta.get_field("id").column),
            "attempt": str(Job._meta.get_field("attempt").column),
            "to_status": str(Job._meta.get_field("_status").column),
        }
        given: dict[str, Any] = {"source": EventSource.APP.value, "message": "created"}
        fields = [f for f in JobEvent._meta.concrete_fields if not f.primary_key]
        constant = {
            f.attname: f.get_db_prep_save(given.get(f.attname, f.get_default()), connection)
            for f in fields
            if f.attname not in from_job and f.attname != "time"
        }
        template = _EVENT_TEMPLATES[connection.vendor] = (fields, from_job, constant)
    fields, from_job, constant = template
    now = JobEvent._meta.get_field("time").get_db_prep_save(timezone.now(), connection)
    return fields, from_job, {**constant, "time": now}


def _creation_event_columns(source: str) -> tuple[list[str], list[str], list[Any]]:
    """The columns of a creation event, what to select for each from the job rows of ``source``
    (a table or CTE with the job's columns), and the query parameters that selection needs."""
    qn = connection.ops.quote_name
    fields, from_job, values = _creation_event()
    columns: list[str] = []
    selected: list[str] = []
    params: list[Any] = []
    for field in fields:
        columns.append(qn(str(field.column)))
        if field.attname in from_job:
            selected.append(f"{source}.{qn(from_job[field.attname])}")
        else:
            selected.append("%s")
            params.append(values[field.attname])
    return columns, selected, params


def _creation_event_params() -> list[Any]:
    """The query parameters of :func:`_creation_event_columns`, alone."""
    fields, from_job, values = _creation_event()
    return [values[f.attname] for f in fields if f.attname not in from_job]


def _insert_creation_events(job_ids: list[int]) -> None:
    """The creation event of each job in ``job_ids``, written by the database from the job rows
    (``INSERT … SELECT``)."""
    qn = connection.ops.quote_name
    job_table = qn(Job._meta.db_table)
    columns, selected, params = _creation_event_columns(job_table)
    job_id = qn(str(Job._meta.get_field("id").column))
    event_table = qn(JobEvent._meta.db_table)
    ids = ", ".join(["%s"] * len(job_ids))
    # Identifiers come from the models' metadata; every value is a query parameter.
    sql = f"INSERT INTO {event_table} ({', '.join(columns)}) SELECT {', '.join(selected)} FROM {job_table} WHERE {job_id} IN ({ids}) ORDER BY {job_id}"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *job_ids])


def _can_insert_in_one_statement(job: Job, args: Any, kwargs: Any) -> bool:
    """Whether a new job can be written by :func:`_insert_job_and_event`: on PostgreSQL, with no
    groups to add, no save() options and nobody listening to the model's save signals (which that
    path does not send)."""
    return (
        connection.vendor == "postgresql"
        and not args
        and not (set(kwargs) - {"force_insert"})
        and not job.__dict__.get("_pending_groups")
        and INITIAL_STATUS not in job.__dict__
        and not pre_save.has_listeners(type(job))
        and not post_save.has_listeners(type(job))
    )


def _insert_job_and_event(job: Job) -> None:
    """Write a new job and its creation event in one statement (PostgreSQL): the id comes from
    the sequence inside it, ``{id}`` in the name and the default workspace are filled in by the
    database, and the event is selected from the inserted row. Outside a transaction that is one
    round trip and one commit instead of five. The statement's text depends only on the models
    (and on whether the name has ``{id}`` and the workspace is the default one), so it is built
    once; its parameters are bound by the server, which lets psycopg prepare it (see
    :func:`_server_binding_cursor`)."""
    folder = "" if job.workspace else _jobs_folder(job)
    if folder:
        job.owns_workspace = True
    name_has_id = "{id}" in job.name
    sql, special = _insert_job_sql(name_has_id, bool(folder))
    params: list[Any] = [Job._meta.db_table, str(Job._meta.get_field("id").column)]
    conn = connections[connection.alias]  # not the proxy: it costs a lookup per attribute
    data = job.__dict__
    for field, attname, as_is, own_pre_save in _field_plan():
        if field.primary_key:
            continue
        value = field.pre_save(job, True) if own_pre_save else data.get(attname, _MISSING)
        if value is _MISSING:
            value = getattr(job, attname)
        if attname in special:
            params.append(folder if attname == "workspace" else value)
        elif value.__class__ in as_is:
            params.append(value)  # what its preparation would return
        else:
            params.append(field.get_db_prep_save(value, conn))
    params += _creation_event_params()
    with _server_binding_cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    assert row is not None
    job.id = int(row[0])
    _fill_id_fields(job)  # what the statement wrote into the name and workspace
    job._state.adding = False
    job._state.db = connection.alias


_INSERT_JOB_SQL: dict[tuple[bool, bool], tuple[str, frozenset[str]]] = {}


def _insert_job_sql(name_has_id: bool, own_workspace: bool) -> tuple[str, frozenset[str]]:
    """The statement of :func:`_insert_job_and_event`, and the fields whose parameter is not
    their prepared value (``name`` with ``{id}``: the raw name; ``workspace``: the folder)."""
    key = (name_has_id, own_workspace)
    cached = _INSERT_JOB_SQL.get(key)
    if cached is not None:
        return cached
    qn = connection.ops.quote_name
    columns: list[str] = []
    values: list[str] = []
    special: set[str] = set()
    for field in Job._meta.concrete_fields:
        columns.append(qn(str(field.column)))
        if field.primary_key:
            values.append("n.id")
        elif field.attname == "name" and name_has_id:
            values.append("replace(%s::text, '{id}', n.id::text)")
            special.add("name")
        elif field.attname == "workspace" and own_workspace:
            values.append("%s::text || n.id::text")
            special.add("workspace")
        else:
            values.append("%s")
    job_table, event_table = qn(Job._meta.db_table), qn(JobEvent._meta.db_table)
    id_column = qn(str(Job._meta.get_field("id").column))
    returned = ", ".join(
        [
            id_column,
            qn(str(Job._meta.get_field("attempt").column)),
            qn(str(Job._meta.get_field("_status").column)),
        ]
    )
    event_columns, event_selected, _ = _creation_event_columns("j")
    # Identifiers come from the models' metadata; every value is a query parameter.
    insert_job = f"INSERT INTO {job_table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM n RETURNING {returned}"  # noqa: S608
    insert_event = f"INSERT INTO {event_table} ({', '.join(event_columns)}) SELECT {', '.join(event_selected)} FROM j"  # noqa: S608
    sql = (
        "WITH n AS (SELECT nextval(pg_get_serial_sequence(%s::text, %s::text)) AS id), "  # noqa: S608
        f"j AS ({insert_job}), e AS ({insert_event}) SELECT {id_column} FROM j"
    )
    cached = _INSERT_JOB_SQL[key] = (sql, frozenset(special))
    return cached


def _server_binding_cursor() -> Any:
    """A Django cursor (query logging, execute wrappers, error translation as usual) whose
    parameters the server binds. Django's PostgreSQL cursors bind on the client unless the
    database's ``server_side_binding`` option is set; a server-binding psycopg cursor lets psycopg
    prepare a statement once it has run ``prepare_threshold`` times on the connection (5 by
    default; ``OPTIONS["prepare_threshold"] = None`` for a pooler that cannot keep prepared
    statements turns that off), so the server no longer parses and plans it each time. Any other
    driver, or while queries are logged: the usual cursor."""
    connection.ensure_connection()
    raw = connection.connection
    try:
        import psycopg
    except ImportError:  # psycopg2
        return connection.cursor()
    if not isinstance(raw, psycopg.Connection) or connection.queries_logged:
        # Logged queries (DEBUG, CaptureQueriesContext) show the statement with its values
        # only as a client-binding cursor runs it.
        return connection.cursor()
    connection.validate_thread_sharing()
    return connection.make_cursor(psycopg.Cursor(raw))  # type: ignore[arg-type]  # a DB-API cursor


# -- the one status-change primitive ---------------------------------------------------------------
@dataclass
class Change:
    """A proposed status change for one job."""

    status: Status
    source: str
    message: str | None = None
    native_status: str | None = None
    text: str = ""  # custom text when status is Other
    category: Category | None = None
    actor: str = ""
    fields: dict[str, Any] | None = None  # other managed fields to write with it


def _side_effects(job: Job, new: Status, now: datetime.datetime) -> dict[str, Any]:
    """Tethys's side effects: reaching Running sets start_time; a final status, completion_time."""
    fields: dict[str, Any] = {}
    if new in (Status.RUNNING, Status.VARIOUS) and job.start_time is None:
        fields["start_time"] = now
    if rules.is_final(new):
        fields["completion_time"] = now
    return fields


def apply_change(
    job: Job,
    change: Change,
    *,
    force: bool = False,
    attempt: int | None = None,
    visible_only: bool = False,
) -> bool:
    """Move ``job`` to ``change.status`` if the rules allow it. Returns True when a change was
    written (with one JobEvent). ``force`` is for resubmit only: it may leave a final status.
    With ``attempt``, a report about another attempt (one raced by a resubmit) is dropped.
    ``visible_only`` (app actions): a job whose row is gone or that was deleted is not changed
    but raises JobNotFoundError (found when the write matches no row: no query more)."""
    visible = Q(deleted_at__isnull=True) if visible_only else Q()
    for _ in range(3):
        if attempt is not None and job.attempt != attempt:
            return False
        planned = _decide(job, change, force=force)
        if planned is None:
            return False
        # No savepoint when called inside a transaction (a poll's batch): a failure there fails
        # the batch, which the next poll applies again.
        with transaction.atomic(savepoint=False):
            updated = (
                Job.objects.filter(visible, pk=job.pk, attempt=job.attempt)
                # The status is compared through an expression so that the primary key finds the
                # row: after many jobs changed status, stale statistics make PostgreSQL prefer the
                # (status, job_type) index, one scan of every job in that status per update.
                .alias(status_now=Concat("_status", Value("")))
                .filter(status_now=planned.current.value)
                .update(**planned.fields)
            )
            if updated:
                event, intent = _record(planned)
                _insert_events([event])
                if intent is not None:
                    intent.save(force_insert=True)
        if updated:
            return True
        # Someone else changed it first: decide again on fresh data.
        _reload(job, must_exist=visible_only)
    return False


@dataclass
class _Planned:
    """A status change the rules accept, before it is written: the job, the change, the status
    it moves from (the write's condition) and every field the write sets."""

    job: Job
    change: Change
    current: Status
    fields: dict[str, Any]
    now: datetime.datetime


def _decide(job: Job, change: Change, *, force: bool = False) -> _Planned | None:
    """What applying ``change`` to ``job`` (as loaded) writes, or None when the rules refuse it.
    A refused change may still update details: the same status with a new message or native
    status, or what the scheduler says of a job it moved back."""
    current = Status(job._status)
    cur_props = job.extended_properties or {}
    cur_text = str(cur_props.get(OTHER_STATUS_KEY, "")) if current == Status.OTHER else ""
    verdict = (
        Verdict.APPLY
        if force
        else rules.check_transition(
            current,
            change.status,
            current_category=job.other_category,
            new_category=change.category,
            current_text=cur_text,
            new_text=change.text,
        )
    )
    if verdict != Verdict.APPLY:
        if verdict == Verdict.SAME and (change.message or change.native_status or change.fields):
            _update_details(job, change)
        elif (
            verdict == Verdict.BACKWARD
            and change.source in (EventSource.POLL, EventSource.PUSH)
            and (change.native_status or change.fields)
        ):
            # The scheduler moved the job back (Slurm requeued it; an array task restarted):
            # the status stays, but what the scheduler says now is kept.
            _update_details(
                job,
                Change(
                    current,
                    change.source,
                    native_status=change.native_status,
                    fields=change.fields,
                ),
            )
        return None
    now = timezone.now()
    fields = _side_effects(job, change.status, now)
    props = dict(cur_props)
    if change.status == Status.OTHER:
        props[OTHER_STATUS_KEY] = change.text
        if change.category is not None:
            props[OTHER_CATEGORY_KEY] = change.category.value
        else:
            props.pop(OTHER_CATEGORY_KEY, None)
    else:
        props.pop(OTHER_STATUS_KEY, None)
        props.pop(OTHER_CATEGORY_KEY, None)
    if props != cur_props:
        fields["extended_properties"] = props
    fields["_status"] = change.status.value
    if change.message is not None:
        fields["status_message"] = change.message
    if change.native_status is not None:
        fields["native_status"] = change.native_status
    if change.source in (EventSource.POLL, EventSource.PUSH):
        fields["last_contact"] = now
        fields["stale_since"] = None
    if change.fields:
        fields.update(change.fields)
    return _Planned(job, change, current, fields, now)


def _record(planned: _Planned) -> tuple[dict[str, Any], JobIntent | None]:
    """After a change's row was written: the new values on the job object, and the rows to
    insert with it: its event (the values of every column but the id, see
    :func:`_insert_events`), and the result-processing intent a change to Results-Ready calls
    for."""
    job, change, fields = planned.job, planned.change, planned.fields
    event = {
        "job_id": job.pk,
        "attempt": fields.get("attempt", job.attempt),
        "time": planned.now,
        "from_status": str(planned.current.value),
        "to_status": str(change.status.value),
        "status_text": change.text if change.status == Status.OTHER else "",
        "source": str(change.source),
        "native_status": change.native_status or "",
        "message": change.message or "",
        "actor": change.actor,
    }
    intent = (
        JobIntent(
            job_id=job.pk,
            action=IntentAction.RESULTS,
            attempt=fields.get("attempt", job.attempt),
            payload={},
        )
        if change.status in rules.RESULTS_PENDING
        else None
    )
    for name, value in fields.items():
        setattr(job, name, value)
    return event, intent


def _write_together(plans: list[_Planned]) -> bool:
    """Write several accepted changes with one conditional UPDATE (each row only if it still has
    the attempt and status its change was decided on), then their events with one INSERT and
    their result intents with another. False, with nothing written, when any row no longer
    matched: the caller then applies them one by one."""
    if not plans:
        return True
    if connection.vendor == "postgresql":
        sql, params = _update_sql_postgres(plans)
    else:
        sql, params = _update_sql(plans)
    with transaction.atomic():  # a savepoint inside the batch's transaction
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            count = cursor.rowcount
        if count != len(plans):
            transaction.set_rollback(True)
            return False
    rows = [_record(planned) for planned in plans]
    _insert_events([event for event, _ in rows])
    intents = [intent for _, intent in rows if intent is not None]
    if intents:
        JobIntent.objects.bulk_create(intents)
    return True


def _update_sql(plans: list[_Planned]) -> tuple[str, list[Any]]:
    """The batch's conditional UPDATE with one ``CASE`` per written column: written out rather
    than built from ORM expressions, as compiling hundreds of When() objects costs far more than
    the UPDATEs it replaces. Every value is a parameter."""
    qn = connection.ops.quote_name
    table = qn(Job._meta.db_table)
    id_column = qn(str(Job._meta.get_field("id").column))
    attempt_column = qn(str(Job._meta.get_field("attempt").column))
    status_column = qn(str(Job._meta.get_field("_status").column))
    assignments: list[str] = []
    params: list[Any] = []
    for name in sorted({name for planned in plans for name in planned.fields}):
        model_field = Job._meta.get_field(name)
        assert isinstance(model_field, models.Field)
        column = qn(str(model_field.column))
        branches: list[str] = []
        for planned in plans:
            if name in planned.fields:
                branches.append("WHEN %s THEN %s")
                value = model_field.get_db_prep_save(planned.fields[name], connection)
                params += [planned.job.pk, value]
        assignments.append(f"{column} = CASE {id_column} {' '.join(branches)} ELSE {column} END")
    ids = ", ".join(["%s"] * len(plans))
    params += [planned.job.pk for planned in plans]
    conditions = " ".join(
        [f"WHEN %s THEN ({attempt_column} = %s AND {status_column} = %s)"] * len(plans)
    )
    for planned in plans:
        params += [planned.job.pk, planned.job.attempt, planned.current.value]
    sql = (
        f"UPDATE {table} SET {', '.join(assignments)} "  # noqa: S608
        f"WHERE {id_column} IN ({ids}) AND CASE {id_column} {conditions} ELSE FALSE END"
    )
    return sql, params


def _update_sql_postgres(plans: list[_Planned]) -> tuple[str, list[Any]]:
    """The batch's conditional UPDATE on PostgreSQL: the same effect as :func:`_update_sql`, with
    the values as one array per column joined through ``unnest``, so that the statement has a
    few dozen placeholders whatever the number of jobs (psycopg splits a statement's text at its
    placeholders before every run: for thousands of them that cost more than the UPDATE).
    Each written column comes with an array of flags: a job whose change does not set it keeps
    its value. JSON goes as text, cast back to jsonb."""
    qn = connection.ops.quote_name
    table = qn(Job._meta.db_table)
    id_column = qn(str(Job._meta.get_field("id").column))
    attempt_field = Job._meta.get_field("attempt")
    status_field = Job._meta.get_field("_status")
    assert isinstance(attempt_field, models.Field) and isinstance(status_field, models.Field)
    attempt_column, status_column = qn(str(attempt_field.column)), qn(str(status_field.column))
    arrays = [
        f"%s::{Job._meta.get_field('id').db_type(connection)}[]",
        f"%s::{attempt_field.db_type(connection)}[]",
        f"%s::{status_field.db_type(connection)}[]",
    ]
    params: list[Any] = [
        [planned.job.pk for planned in plans],
        [planned.job.attempt for planned in plans],
        [planned.current.value for planned in plans],
    ]
    aliases = ["id", "old_attempt", "old_status"]
    assignments: list[str] = []
    for i, name in enumerate(sorted({name for planned in plans for name in planned.fields})):
        model_field = Job._meta.get_field(name)
        assert isinstance(model_field, models.Field)
        column = qn(str(model_field.column))
        json_field = model_field if isinstance(model_field, models.JSONField) else None
        is_json = json_field is not None
        values: list[Any] = []
        for planned in plans:
            if name not in planned.fields:
                values.append(None)
            elif json_field is not None:
                value = planned.fields[name]
                text = (
                    value if type(value) is RawJSON else json.dumps(value, cls=json_field.encoder)
                )
                values.append(text)
            else:
                values.append(model_field.get_db_prep_save(planned.fields[name], connection))
        params += [[name in planned.fields for planned in plans], values]
        arrays += [
            "%s::boolean[]",
            f"%s::{'text' if is_json else model_field.db_type(connection)}[]",
        ]
        aliases += [f"set_{i}", f"value_{i}"]
        value = f"v.value_{i}::jsonb" if is_json else f"v.value_{i}"
        assignments.append(f"{column} = CASE WHEN v.set_{i} THEN {value} ELSE j.{column} END")
    sql = (
        f"UPDATE {table} AS j SET {', '.join(assignments)} "  # noqa: S608
        f"FROM unnest({', '.join(arrays)}) AS v({', '.join(aliases)}) "
        f"WHERE j.{id_column} = v.id AND j.{attempt_column} = v.old_attempt "
        f"AND j.{status_column} = v.old_status"
    )
    return sql, params


def _insert_events(events: list[dict[str, Any]]) -> None:
    """Insert events given as column values (all but the id, in :func:`_record`'s order) with
    as few multi-row INSERTs as the database's parameter limit allows. Written out rather than
    through ``bulk_create``: a poll applying 10,000 changes spent more on building and preparing
    10,000 ``JobEvent`` objects than on the INSERTs. Only the time needs the database's
    preparation; the rest are plain strings and integers."""
    if not events:
        return
    names = list(events[0])
    fields = [JobEvent._meta.get_field(name) for name in names]
    time_slot = names.index("time")
    time_field = fields[time_slot]
    assert isinstance(time_field, models.DateTimeField)
    qn = connection.ops.quote_name
    columns = ", ".join(qn(str(field.column)) for field in fields)  # type: ignore[union-attr]
    table = qn(JobEvent._meta.db_table)
    if connection.vendor == "postgresql":
        # One array per column and a statement of ten placeholders, whatever the number of
        # rows: psycopg splits a statement's text at its placeholders before every run, which
        # for 2,000 of them cost more than the INSERT.
        arrays = ", ".join(f"%s::{field.db_type(connection)}[]" for field in fields)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays})",  # noqa: S608
                [[event[name] for event in events] for name in names],
            )
        return
    row_sql = "(" + ", ".join(["%s"] * len(names)) + ")"
    per_statement = max(1, connection.ops.bulk_batch_size(fields, events))
    with connection.cursor() as cursor:
        for start in range(0, len(events), per_statement):
            chunk = events[start : start + per_statement]
            params: list[Any] = []
            for event in chunk:
                values = list(event.values())
                values[time_slot] = time_field.get_db_prep_save(values[time_slot], connection)
                params += values
            cursor.execute(
                f"INSERT INTO {table} ({columns}) "  # noqa: S608
                f"VALUES {', '.join([row_sql] * len(chunk))}",
                params,
            )


def _update_details(job: Job, change: Change) -> None:
    fields: dict[str, Any] = {}
    if change.message is not None and change.message != job.status_message:
        fields["status_message"] = change.message
    if change.native_status is not None and change.native_status != job.native_status:
        fields["native_status"] = change.native_status
    if change.fields:
        fields.update(change.fields)
    if fields:
        Job.objects.filter(pk=job.pk, attempt=job.attempt).update(**fields)
        for name, value in fields.items():
            setattr(job, name, value)


def _reload(job: Job, *, must_exist: bool = False) -> None:
    """Re-read what the monitor and other writers change. ``must_exist`` (app actions): a job
    whose row is gone, or that was deleted (hidden until a monitor removes it), raises
    JobNotFoundError; otherwise such a job is left as it is."""
    fresh = (
        Job.objects.filter(pk=job.pk)
        .values(
            "_status",
            "attempt",
            "extended_properties",
            "status_message",
            "native_id",
            "native_status",
            "engine_state",
            "start_time",
            "completion_time",
            "stale_since",
            "execute_time",
            "deleted_at",
            "last_contact",
        )
        .first()
    )
    if fresh is None or (must_exist and fresh["deleted_at"] is not None):
        if must_exist:
            raise JobNotFoundError(job.pk)
        return
    for name, value in fresh.items():
        setattr(job, name, value)


def _require_visible(job: Job) -> None:
    """JobNotFoundError unless the job's row exists and the job was not deleted."""
    if not Job.objects.filter(pk=job.pk, deleted_at__isnull=True).exists():
        raise JobNotFoundError(job.pk)


def _add_intent(
    job_id: int,
    action: str,
    attempt: int,
    payload: dict[str, Any] | None = None,
    requested_by: str = "",
) -> JobIntent:
    return JobIntent.objects.create(
        job_id=job_id,
        action=action,
        attempt=attempt,
        payload=payload or {},
        requested_by=requested_by,
    )


def _actor(user: Any) -> str:
    return str(getattr(user, "username", "") or "") if user is not None else ""


# -- actions ----------------------------------------------------------------------------------------
def execute(
    job: Job,
    *,
    source: str = EventSource.APP,
    actor: str = "",
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Submitted now; the monitor submits to the engine. Only a Pending job can be executed."""
    if job._state.adding and job.__dict__.get(INITIAL_STATUS) is not None:
        raise JobStateError(
            f"job {job.name!r} was created with status {job.__dict__[INITIAL_STATUS]!r}; "
            "only a Pending job can be executed"
        )
    # Validate first: bad parameters must not leave a half-made job behind.
    engine_cls = engine_class_for(job)
    params = engine_cls(None).validate(job.parameters or {})
    normalised = False
    if job._state.adding:
        job.parameters = params
        job.save()
    elif params != (job.parameters or {}):
        job.parameters = params
        normalised = True
    if Status(job._status) != Status.PENDING:
        _reload(job, must_exist=True)
    if Status(job._status) != Status.PENDING or job.attempt > 0:
        raise JobAlreadyExecutedError(
            f"job {job.id} was already executed (status {job.cached_status}); "
            "use resubmit() to run it again"
        )
    now = timezone.now()
    with transaction.atomic():
        changed = apply_change(
            job,
            Change(
                Status.SUBMITTED,
                source,
                message="" if engine_cls.executes else None,
                actor=actor,
                # Normalised parameters go in the same UPDATE: one statement, one commit.
                fields={"execute_time": now, "attempt": 1}
                | ({"parameters": params} if normalised else {}),
            ),
            visible_only=True,
        )
        if not changed:
            raise JobAlreadyExecutedError(f"job {job.id} was executed by someone else just now")
        # Only for a job that exists (a deleted one's folder is not made again).
        if job.owns_workspace or job.workspace:
            Path(job.workspace).mkdir(parents=True, exist_ok=True)
        if engine_cls.executes:
            _add_intent(
                job.pk, IntentAction.EXECUTE, 1, payload=dict(extra or {}), requested_by=actor
            )


def set_status(
    job: Job,
    value: str | Status,
    *,
    message: str | None = None,
    source: str = EventSource.APP,
    actor: str = "",
) -> bool:
    """An explicit status from app code: a display name, a code, or any text (stored as Other)."""
    change = _status_change(job, value, message=message, source=source, actor=actor)
    if job._state.adding:
        job.save()
    parsed, text, category = change.status, change.text, change.category
    current = Status(job._status)
    verdict = rules.check_transition(
        current,
        parsed,
        current_category=job.other_category,
        new_category=category,
        current_text=str((job.extended_properties or {}).get(OTHER_STATUS_KEY, "")),
        new_text=text,
    )
    if verdict != Verdict.APPLY:
        # Nothing is written below (a refusal, or the same status again): ask the row whether
        # the job still exists, which the write would otherwise have found out.
        _require_visible(job)
    if verdict == Verdict.FINAL:
        raise JobStateError(
            f"job {job.id} is {job.cached_status}, which is final; use resubmit() to run it again"
        )
    if verdict == Verdict.BACKWARD:
        raise JobStateError(
            f"job {job.id} cannot go back from {job.cached_status} to {text or parsed.display}"
        )
    return apply_change(job, change, visible_only=True)


def _status_change(
    job: Job,
    value: str | Status,
    *,
    message: str | None = None,
    source: str = EventSource.APP,
    actor: str = "",
) -> Change:
    """The change ``update_status(value)`` asks for: a status by display name or code, or any
    text as Other (in the category the job's app declared it in). InvalidJobError for a value
    that names no status and is no text."""
    if not isinstance(value, Status) and (not isinstance(value, str) or not value.strip()):
        raise InvalidJobError("status", f"must be a status name or non-empty text, not {value!r}")
    parsed = Status.parse(value)
    text = ""
    category = None
    if parsed is None or parsed == Status.OTHER:
        text = (
            str(value).strip()
            if parsed is None
            else str((job.extended_properties or {}).get(OTHER_STATUS_KEY, "Other"))
        )
        category = custom_status_category(job.label, text)
        parsed = Status.OTHER
    return Change(parsed, source, message=message, text=text, category=category, actor=actor)


def set_initial_status(job: Job, value: str | Status) -> None:
    """``create_job(..., status=value)``: the new job takes that status when it is first stored,
    as ``update_status(value)`` right after would set it (one more event, from Pending). Only a
    job whose status the app drives itself (an engine that does not execute, as BASIC's) may
    start in another status than Pending; InvalidJobError otherwise, or for a bad value."""
    change = _status_change(job, value)
    if change.status == Status.PENDING:
        job.__dict__.pop(INITIAL_STATUS, None)
        return
    engine_cls = engine_class_for(job)
    if engine_cls.executes:
        raise InvalidJobError(
            "status",
            f"a {type(job).__name__} is created Pending and execute() submits it; "
            f"{value!r} can be given only to a job whose status the app sets itself "
            "(BASIC), or set after execute()",
        )
    job.__dict__[INITIAL_STATUS] = value


def _apply_initial_statuses(jobs: Sequence[Job]) -> None:
    """Just-inserted jobs created with a status: move them to it, in the inserting transaction,
    with one UPDATE and one events INSERT per batch (as a poll's changes are written)."""
    plans: list[_Planned] = []
    for job in jobs:
        value = job.__dict__.get(INITIAL_STATUS)
        if value is not None:
            planned = _decide(job, _status_change(job, value))
            if planned is not None:
                plans.append(planned)
    for start in range(0, len(plans), APPLY_BATCH):
        batch = plans[start : start + APPLY_BATCH]
        if not _write_together(batch):  # not expected: the rows were inserted just now
            for planned in batch:
                apply_change(planned.job, planned.change)


def refresh(job: Job) -> None:
    """Reload the job's status and ask a monitor to poll its scheduler soon (no scheduler call)."""
    if job._state.adding:
        return
    _reload(job, must_exist=True)
    request_refresh(job.pk)


def request_refresh(job_id: int) -> bool:
    """Queue one refresh for an active job (duplicates are folded). False if the job is unknown."""
    job = Job.objects.visible().filter(pk=job_id).only("id", "_status", "attempt").first()
    if job is None:
        return False
    if (
        Status(job._status) in rules.POLLED
        and not JobIntent.objects.filter(
            job_id=job_id, action=IntentAction.REFRESH, done_at__isnull=True
        ).exists()
    ):
        _add_intent(job_id, IntentAction.REFRESH, job.attempt)
    return True


def _open_intent(job: Job, action: str) -> JobIntent | None:
    return (
        JobIntent.objects.filter(job_id=job.pk, action=action, done_at__isnull=True)
        .order_by("id")
        .first()
    )


def stop(job: Job, *, source: str = EventSource.APP, actor: str = "") -> None:
    """Stop the job. A job not yet handed to its engine is Aborted at once; a submitted one is
    stopped by the monitor on its scheduler."""
    _reload(job, must_exist=True)
    current = Status(job._status)
    if rules.is_final(current, job.other_category) or current in rules.RESULTS_PENDING:
        raise JobStateError(f"job {job.id} has already finished ({job.cached_status})")
    now = timezone.now()
    with transaction.atomic():
        if current == Status.PENDING:
            apply_change(
                job,
                Change(Status.ABORTED, source, "stopped before it was executed", actor=actor),
                visible_only=True,
            )
            return
        # Not yet submitted (queued, or deferred for a free slot): cancel the submission itself.
        pending = JobIntent.objects.filter(
            job_id=job.pk,
            action__in=[IntentAction.EXECUTE, IntentAction.RESUBMIT],
            done_at__isnull=True,
        ).filter(Q(lease_expires__isnull=True) | Q(lease_expires__lt=now))
        if not job.native_id and pending.update(done_at=now, outcome="cancelled by stop"):
            apply_change(
                job,
                Change(Status.ABORTED, source, "stopped before it was submitted", actor=actor),
                visible_only=True,
            )
            return
        if engine_class_for(job).executes:
            if _open_intent(job, IntentAction.STOP) is None:
                _add_intent(job.pk, IntentAction.STOP, job.attempt, requested_by=actor)
            _update_details(job, Change(current, source, message="stop requested"))
        else:
            apply_change(
                job, Change(Status.ABORTED, source, "stopped", actor=actor), visible_only=True
            )


def pause(job: Job, *, source: str = EventSource.APP, actor: str = "") -> None:
    engine_cls = engine_class_for(job)
    if not engine_cls.can_pause:
        raise NotSupportedError(
            f"job {job.id} runs on the {engine_cls.kind} engine, which cannot pause jobs"
        )
    _reload(job, must_exist=True)
    current = Status(job._status)
    if current not in (Status.RUNNING, Status.VARIOUS, Status.SUBMITTED, Status.OTHER) or (
        current == Status.SUBMITTED and not job.native_id and engine_cls.executes
    ):
        raise JobStateError(
            f"job {job.id} is {job.cached_status}; only a running job can be paused"
        )
    if not engine_cls.executes:
        apply_change(job, Change(Status.PAUSED, source, actor=actor), visible_only=True)
        return
    if _open_intent(job, IntentAction.PAUSE) is None:
        _add_intent(job.pk, IntentAction.PAUSE, job.attempt, requested_by=actor)


def resume(job: Job, *, source: str = EventSource.APP, actor: str = "") -> None:
    engine_cls = engine_class_for(job)
    if not engine_cls.can_pause:
        raise NotSupportedError(
            f"job {job.id} runs on the {engine_cls.kind} engine, which cannot pause or resume jobs"
        )
    _reload(job, must_exist=True)
    if Status(job._status) != Status.PAUSED and _open_intent(job, IntentAction.PAUSE) is None:
        raise JobStateError(
            f"job {job.id} is {job.cached_status}; only a paused job can be resumed"
        )
    if not engine_cls.executes:
        apply_change(job, Change(Status.RUNNING, source, actor=actor), visible_only=True)
        return
    if _open_intent(job, IntentAction.RESUME) is None:
        _add_intent(job.pk, IntentAction.RESUME, job.attempt, requested_by=actor)


def resubmit(job: Job, *, source: str = EventSource.APP, actor: str = "") -> None:
    """Run the job again as a new attempt; the history of earlier attempts is kept. A job still
    active on its scheduler is stopped there first."""
    if job._state.adding:
        raise JobStateError("an unsaved job cannot be resubmitted; execute() it first")
    _reload(job, must_exist=True)
    engine_cls = engine_class_for(job)
    engine_cls(None).validate(job.parameters or {})
    old_handle = job.handle().to_dict() if job.native_id or job.engine_state else None
    was_active = rules.is_active(Status(job._status), job.other_category)
    new_attempt = job.attempt + 1
    now = timezone.now()
    with transaction.atomic():
        JobIntent.objects.filter(
            job_id=job.pk,
            done_at__isnull=True,
            action__in=[
                IntentAction.EXECUTE,
                IntentAction.RESUBMIT,
                IntentAction.RESULTS,
                IntentAction.REFRESH,
                IntentAction.PAUSE,
                IntentAction.RESUME,
            ],
        ).filter(Q(lease_expires__isnull=True) | Q(lease_expires__lt=now)).update(
            done_at=now, outcome="superseded by resubmit"
        )
        changed = apply_change(
            job,
            Change(
                Status.SUBMITTED,
                source,
                message=f"resubmitted (attempt {new_attempt})",
                actor=actor,
                fields={
                    "attempt": new_attempt,
                    "native_id": "",
                    "native_status": "",
                    "engine_state": {},
                    "execute_time": now,
                    "start_time": None,
                    "completion_time": None,
                    "stale_since": None,
                },
            ),
            force=True,
            visible_only=True,
        )
        if not changed:
            raise JobStateError(f"job {job.id} changed while resubmitting; try again")
        if engine_cls.executes:
            _add_intent(
                job.pk,
                IntentAction.RESUBMIT,
                new_attempt,
                payload={"previous": old_handle if was_active else None},
                requested_by=actor,
            )


def delete(job: Job, *, actor: str = "") -> None:
    """Hide the job now; a monitor stops it on its scheduler, removes its own files and its row.
    A job that never reached an engine is removed at once."""
    if job._state.adding:
        return
    now = timezone.now()
    with transaction.atomic():
        hidden = Job.objects.filter(pk=job.pk, deleted_at__isnull=True).update(deleted_at=now)
        if not hidden:
            # Deleted already (its monitor finishes that) or gone: deleting again is harmless and
            # queues nothing more.
            job.deleted_at = job.deleted_at or now
            return
        job.deleted_at = now
        engine_cls = engine_class_for(job)
        if engine_cls.executes and (job.native_id or job.engine_state or job.attempt):
            _add_intent(
                job.pk,
                IntentAction.DELETE,
                job.attempt,
                payload={"handle": job.handle().to_dict()},
                requested_by=actor,
            )
            return
    remove_workspace(job)
    Job.objects.filter(pk=job.pk).delete()


def remove_workspace(job: Job) -> None:
    """Remove the job's own workspace folder; never a shared folder, never outside offload's home.
    For a workspace the app chose, only the job's own bookkeeping folder inside it
    (``.offload/job-<id>``) is removed: other jobs given the same workspace keep theirs."""
    if not job.workspace:
        return
    path = Path(job.workspace).resolve()
    if not job.owns_workspace:
        shutil.rmtree(job_folder(str(path), job.pk), ignore_errors=True)
        with contextlib.suppress(OSError):  # only when no other job's folder is left in it
            (path / INTERNAL_FOLDER).rmdir()
        return
    root = get_settings().workspace_root.resolve()
    expected_parent = user_workspace(job.label, job.user).resolve() / "jobs"
    if path.parent != expected_parent or not path.is_relative_to(root) or path.name != str(job.pk):
        log.warning("not removing workspace %s of job %s: not its own folder", path, job.pk)
        return
    shutil.rmtree(path, ignore_errors=True)


def get_logs(job: Job) -> dict[str, Any]:
    """The job's logs (name → text). Reads the files the engine keeps; no scheduler query."""
    if not job.attempt:
        return {}
    from offload.schedulers import engine_for_job

    engine = engine_for_job(job)
    return engine.get_logs(job.handle())


# -- result processing ------------------------------------------------------------------------------
def process_results_now(job: Job) -> None:
    """Run result processing in the caller, under the same database lock as the monitor's."""
    _reload(job, must_exist=True)
    current = Status(job._status)
    if current not in rules.RESULTS_PENDING and not (
        current == Status.ERROR and (job.engine_state or {}).get("results_error")
    ):
        raise JobStateError(
            f"job {job.id} is {job.cached_status}; results are processed once it is Results-Ready"
        )
    if current == Status.ERROR:
        # Retrying a failed result step is the one way out of Error besides resubmit.
        apply_change(
            job,
            Change(Status.RESULTS_READY, EventSource.APP, "retrying result processing"),
            force=True,
        )
    intent = _open_intent(job, IntentAction.RESULTS)
    if intent is None:
        intent = _add_intent(job.pk, IntentAction.RESULTS, job.attempt)
    token = f"app:{uuid.uuid4().hex}"
    if not _claim_one(intent.pk, token, seconds=get_settings().lease_seconds):
        raise JobStateError(f"results of job {job.id} are being processed by a monitor right now")
    intent.claimed_by = token
    run_results(job, intent, retries=0)


# -- staging a remote job's files back ----------------------------------------------------------------
#: The RESULTS intent's payload flag for a job that ended with no result processing to run but
#: whose files live on a remote cluster: the monitor only copies them back.
STAGE_OUT_ONLY = "stage_out"


def request_stage_out(job: Job) -> None:
    """A finished job of a remote scheduler: ask a monitor to copy its files back (a RESULTS
    intent, so it is retried with backoff like result processing, and survives restarts)."""
    if _open_intent(job, IntentAction.RESULTS) is None:
        _add_intent(job.pk, IntentAction.RESULTS, job.attempt, payload={STAGE_OUT_ONLY: True})


def record_stage_out(job: Job, copied: Sequence[str]) -> None:
    """Note in the job's engine state that its files were copied back (how many, when)."""
    state = dict(job.engine_state or {}) | {
        "staged_out": {
            "attempt": job.attempt,
            "files": len(copied),
            "at": timezone.now().isoformat(),
        }
    }
    Job.objects.filter(pk=job.pk, attempt=job.attempt).update(engine_state=state)
    job.engine_state = state


def stage_out_failed(job: Job, intent: JobIntent, problem: str) -> None:
    """Copying a finished job's files back failed: its status stays; the intent is retried."""
    message = f"copying its files back from the cluster failed (retrying): {problem}"
    log.warning("job %s: %s", job.pk, message)
    retry_intent(intent, message)
    _update_details(job, Change(Status(job._status), EventSource.MONITOR, message=message))


def run_results(job: Job, intent: JobIntent, *, retries: int = 3) -> None:
    """Call the job's result function once; Complete on success, Error (with the reason) after
    ``retries`` failed tries. The claimed intent is the lock that survives restarts."""
    function_name = job._process_results_function
    keep, returned = False, None
    try:
        if function_name:
            keep, returned = call_results_function(job, resolve_function(function_name))
    except Exception as exc:  # the app's code: any failure is reported, not raised into the loop
        message = f"result processing failed: {type(exc).__name__}: {exc}"
        log.warning("job %s: %s", job.pk, message)
        if intent.tries + 1 < retries:
            retry_intent(intent, message)
            _update_details(job, Change(Status(job._status), EventSource.MONITOR, message=message))
            return
        _results_failed(job, intent, message)
        return
    if keep:
        try:
            job.store_result(returned)  # type: ignore[attr-defined]
        except Exception as exc:  # e.g. a value Dask cannot serialize: calling again won't help
            message = (
                "result processing failed: what it returned could not be stored as the job's "
                f"result: {type(exc).__name__}: {exc}"
            )
            log.warning("job %s: %s", job.pk, message)
            _results_failed(job, intent, message)
            return
    apply_change(
        job,
        Change(
            Status.COMPLETE,
            EventSource.MONITOR,
            message="results processed" if function_name else "",
        ),
    )
    finish_intent(intent, "done")


def _results_failed(job: Job, intent: JobIntent, message: str) -> None:
    """The result step failed for good: Error with the reason, kept as ``results_error`` (so the
    step can be retried), and the intent done."""
    state = dict(job.engine_state or {}) | {"results_error": message}
    apply_change(
        job, Change(Status.ERROR, EventSource.MONITOR, message, fields={"engine_state": state})
    )
    finish_intent(intent, message)


def call_results_function(job: Any, function: Callable[..., Any]) -> tuple[bool, Any]:
    """Call a finished job's ``process_results_function`` the way its type is called. Returns
    whether what it returned is to be stored as the job's result, and what it returned.

    - A job type that keeps a result of its own (DaskJob: ``results_argument`` loads it,
      ``store_result`` stores it), as Tethys's DaskJob calls it: ``function(result)``, and what it
      returns becomes the job's result (None too). A function of two positional arguments is
      offload's ``function(job, result)``: what it returns replaces the result unless it is None.
    - Any other job: ``function(job)``, or ``function(job, engine_state["result"])`` for a
      function of two positional arguments; what it returns is not kept.
    """
    loader = getattr(job, "results_argument", None)
    if not callable(loader):
        loader = None
    keeps_result = loader is not None and callable(getattr(job, "store_result", None))
    if _wants_two(function):
        result = loader() if loader is not None else (job.engine_state or {}).get("result")
        returned = function(job, result)
        return keeps_result and returned is not None, returned
    if keeps_result and loader is not None:
        return True, function(loader())
    return False, function(job)


def _wants_two(function: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


# -- what monitors use ------------------------------------------------------------------------------
def claim_intents(owner: str, limit: int, *, seconds: float) -> list[JobIntent]:
    """Claim up to ``limit`` due intents, at most one per job (the oldest open one), with a lease.
    ``FOR UPDATE SKIP LOCKED`` on PostgreSQL lets any number of monitors claim side by side."""
    now = timezone.now()
    token = f"{owner}:{uuid.uuid4().hex[:12]}"
    earlier = JobIntent.objects.filter(
        job_id=OuterRef("job_id"), done_at__isnull=True, id__lt=OuterRef("id")
    )
    with transaction.atomic():
        due = (
            JobIntent.objects.filter(done_at__isnull=True, not_before__lte=now)
            .filter(Q(lease_expires__isnull=True) | Q(lease_expires__lt=now))
            .exclude(Exists(earlier))
            .order_by("id")
        )
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        ids = list(due.values_list("id", flat=True)[:limit])
        if not ids:
            return []
        JobIntent.objects.filter(id__in=ids).filter(
            Q(lease_expires__isnull=True) | Q(lease_expires__lt=now)
        ).update(claimed_by=token, lease_expires=now + datetime.timedelta(seconds=seconds))
    return list(
        JobIntent.objects.filter(id__in=ids, claimed_by=token)
        .select_related("job", "job__scheduler", "job__user")
        .order_by("id")
    )


def _claim_one(intent_id: int, token: str, *, seconds: float) -> bool:
    now = timezone.now()
    return bool(
        JobIntent.objects.filter(pk=intent_id, done_at__isnull=True)
        .filter(Q(lease_expires__isnull=True) | Q(lease_expires__lt=now))
        .update(claimed_by=token, lease_expires=now + datetime.timedelta(seconds=seconds))
    )


def finish_intent(intent: JobIntent, outcome: str) -> None:
    JobIntent.objects.filter(pk=intent.pk, claimed_by=intent.claimed_by).update(
        done_at=timezone.now(), outcome=outcome[:4000], lease_expires=None
    )


def retry_intent(
    intent: JobIntent, outcome: str, *, count_try: bool = True, delay: float | None = None
) -> None:
    settings = get_settings()
    tries = intent.tries + (1 if count_try else 0)
    if delay is None:
        delay = min(
            settings.retry_initial * settings.retry_factor ** max(tries - 1, 0), settings.retry_max
        )
    JobIntent.objects.filter(pk=intent.pk, claimed_by=intent.claimed_by).update(
        tries=tries,
        not_before=timezone.now() + datetime.timedelta(seconds=delay),
        lease_expires=None,
        claimed_by="",
        outcome=outcome[:4000],
    )


def release_intents(owner: str) -> int:
    """Give back every lease ``owner`` holds (SIGTERM), so another monitor takes over at once."""
    return JobIntent.objects.filter(
        done_at__isnull=True, claimed_by__startswith=f"{owner}:"
    ).update(claimed_by="", lease_expires=None)


def claim_lease(name: str, owner: str, *, seconds: float) -> bool:
    """Take or renew the named lease; False while another monitor holds it."""
    now = timezone.now()
    expires = now + datetime.timedelta(seconds=seconds)
    taken = (
        MonitorLease.objects.filter(name=name)
        .filter(Q(owner=owner) | Q(expires__lt=now) | Q(owner=""))
        .update(owner=owner, expires=expires)
    )
    if taken:
        return True
    try:
        with transaction.atomic():
            MonitorLease.objects.create(name=name, owner=owner, expires=expires)
        return True
    except Exception:  # IntegrityError: another monitor created it first
        return False


def release_leases(owner: str) -> None:
    MonitorLease.objects.filter(owner=owner).update(owner="", expires=timezone.now())


def record_submission(job: Job, intent: JobIntent, result: SubmitResult) -> None:
    """Apply an engine's answer to a submission."""
    if result.outcome == SubmitOutcome.SUBMITTED:
        now = timezone.now()
        with transaction.atomic():
            Job.objects.filter(pk=job.pk, attempt=intent.attempt).update(
                native_id=result.native_id,
                engine_state=dict(result.state),
                last_contact=now,
                stale_since=None,
            )
            job.native_id = result.native_id
            job.engine_state = dict(result.state)
            job.stale_since = None
            message = "adopted an existing submission" if result.adopted else ""
            if result.status != Status(job._status):
                apply_change(
                    job,
                    Change(
                        result.status,
                        EventSource.MONITOR,
                        message or "",
                        native_status=result.native_status or None,
                    ),
                )
            else:
                _update_details(
                    job,
                    Change(
                        result.status,
                        EventSource.MONITOR,
                        message,
                        native_status=result.native_status or None,
                    ),
                )
            finish_intent(
                intent, "adopted" if result.adopted else f"submitted as {result.native_id}"
            )
    elif result.outcome == SubmitOutcome.DEFERRED:
        _update_details(job, Change(Status(job._status), EventSource.MONITOR, result.message))
        retry_intent(intent, result.message, count_try=False, delay=get_settings().idle_interval)
    elif result.outcome == SubmitOutcome.REJECTED:
        with transaction.atomic():
            apply_change(job, Change(Status.ERROR, EventSource.MONITOR, result.message))
            finish_intent(intent, result.message)
    else:  # UNAVAILABLE: the scheduler could not be reached; the job waits, flagged stale
        mark_stale([job.pk], reason=result.message)
        _update_details(
            job,
            Change(
                Status(job._status),
                EventSource.MONITOR,
                f"waiting for the scheduler: {result.message}",
            ),
        )
        retry_intent(intent, result.message)


def mark_stale(
    job_ids: Iterable[int], *, reason: str = "", last_contact: datetime.datetime | None = None
) -> int:
    """Flag jobs whose scheduler did not answer. Their status is kept: stale is not Error."""
    ids = list(job_ids)
    if not ids:
        return 0
    now = timezone.now()
    fields: dict[str, Any] = {"stale_since": now}
    if last_contact is not None:
        fields["last_contact"] = last_contact
    count = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        count += Job.objects.filter(pk__in=chunk, stale_since__isnull=True).update(**fields)
    if reason:
        log.info("%d job(s) stale: %s", count, reason)
    return count


def record_poll_success(lease_name: str) -> None:
    """Remember when a scheduler last answered (shown as the last contact of jobs gone stale)."""
    MonitorLease.objects.filter(name=lease_name).update(last_run=timezone.now())


def last_poll_success(lease_name: str) -> datetime.datetime | None:
    return MonitorLease.objects.filter(name=lease_name).values_list("last_run", flat=True).first()


def clear_stale(job_ids: Iterable[int]) -> int:
    ids = list(job_ids)
    now = timezone.now()
    count = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        count += Job.objects.filter(pk__in=chunk, stale_since__isnull=False).update(
            stale_since=None, last_contact=now
        )
    return count


def apply_reports(
    jobs: Mapping[int, Job],
    reports: Mapping[int, NativeReport],
    *,
    source: str = EventSource.POLL,
    last_contact: datetime.datetime | None = None,
) -> dict[str, int]:
    """Apply one poll's answers. Jobs the engine did not answer for go stale; jobs it answered
    for lose their stale flag. Only real changes write (one conditional UPDATE and one event)."""
    counts = {"changed": 0, "same": 0, "stale": 0}
    unknown: list[int] = []
    answered: list[int] = []
    known: list[tuple[Job, NativeReport]] = []
    for job_id, job in jobs.items():
        report = reports.get(job_id)
        if report is None or report.status is None:
            unknown.append(job_id)
            continue
        answered.append(job_id)
        known.append((job, report))
    # The changes are written in transactions of APPLY_BATCH jobs: one commit per batch instead
    # of one per job (a commit waits for the disk), and a batch holds its locks only briefly.
    # A batch's changes are one UPDATE, their events one INSERT (see _write_together).
    for start in range(0, len(known), APPLY_BATCH):
        with transaction.atomic():
            plans: list[_Planned] = []
            for job, report in known[start : start + APPLY_BATCH]:
                change = _report_change(job, report, source)
                planned = None if change is None else _decide(job, change)
                if planned is None:
                    counts["same"] += 1
                else:
                    plans.append(planned)
            if _write_together(plans):
                counts["changed"] += len(plans)
            else:
                # Another writer changed one of these jobs meanwhile: each on its own, decided
                # again on fresh data where its row moved.
                for planned in plans:
                    if apply_change(planned.job, planned.change):
                        counts["changed"] += 1
                    else:
                        counts["same"] += 1
    counts["stale"] = mark_stale(
        unknown, reason="unknown to the scheduler", last_contact=last_contact
    )
    clear_stale([j for j in answered if jobs[j].stale_since is not None])
    return counts


#: Jobs whose poll answers are written in one transaction.
APPLY_BATCH = 200


def _report_change(job: Job, report: NativeReport, source: str) -> Change | None:
    """One job's poll answer as a change (None when the engine gave no status)."""
    new = report.status
    if new is None:
        return None
    if new == Status.COMPLETE and job._process_results_function:
        new = Status.RESULTS_READY
    fields: dict[str, Any] | None = None
    if report.state:
        fields = {"engine_state": dict(job.engine_state or {}) | dict(report.state)}
    return Change(
        new,
        source,
        message=report.message if report.message else None,
        native_status=report.native_status or None,
        fields=fields,
    )


def note_intent_job_changed(job: Job) -> None:
    """Re-read a job the monitor holds (after an action on it)."""
    _reload(job)


def purge_deleted(job: Job) -> None:
    remove_workspace(job)
    Job.objects.filter(pk=job.pk).delete()


__all__ = [
    "Change",
    "apply_change",
    "apply_reports",
    "bulk_create_jobs",
    "claim_intents",
    "claim_lease",
    "delete",
    "execute",
    "finish_intent",
    "mark_stale",
    "pause",
    "record_submission",
    "refresh",
    "resubmit",
    "resume",
    "retry_intent",
    "set_status",
    "stop",
]
