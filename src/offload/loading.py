"""Loading job rows fast: a jobs table of 10,000 rows must not cost 10,000 trips through Django's
``Model.__init__`` and 30,000 ``json.loads`` calls nobody reads.

Two pieces, used by :class:`offload.models.Job`:

- :class:`LazyJSONField`: a ``JSONField`` whose value, when it comes from a row loaded by
  :class:`JobIterable`, stays the database's JSON text until the attribute is first read. The
  instance keeps the row it was loaded from (``_loaded_row``, for ``save()``), so a JSON text is
  known as undecoded by being the very object of that row (and never assigned since): no copy or
  wrapper per value while loading. The text is immutable, so a value nobody read is unchanged
  without a copy or a comparison.
- :class:`JobIterable`: the queryset iterable for jobs. For a plain query of whole rows (the
  common case: lists, tables, the monitor) it builds each typed job object straight from the row
  (the proxy class for its ``job_type``, the instance dictionary filled in one step, no
  ``__init__``), ``only()``/``defer()`` queries included; ``pre_init``/``post_init`` receivers
  take Django's own path. ``select_related``, annotations and the known related object of a
  reverse relation (``user.offload_jobs``) are handled as Django's ``ModelIterable`` handles them.
- :class:`Peers`: the jobs one query loaded with some fields deferred. Reading a deferred field
  of one of them loads that field for all of them in one query (what Django 6.1 calls the
  ``FETCH_PEERS`` fetch mode), not one query per job.
"""

from __future__ import annotations

import gc
import json
import operator
import weakref
from collections.abc import Iterator
from itertools import chain, islice
from typing import Any

from django.db import connections, models
from django.db.models.base import ModelState
from django.db.models.query import ModelIterable, get_related_populators
from django.db.models.query_utils import DeferredAttribute
from django.db.models.signals import post_init, pre_init
from django.db.models.sql.constants import CURSOR

#: Rows turned into objects at a time by ``iterator()`` (see :class:`JobIterable`).
BATCH_ROWS = 1000


class RawJSON(str):
    """JSON text, not decoded: what a job was loaded or written with, in the snapshots ``save()``
    compares against (:func:`offload.models.loaded_values`)."""

    __slots__ = ()


def json_copy(value: Any) -> Any:
    """A copy of a JSON value deep enough that in-place edits of the original show as changes."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value


def is_raw_json(data: dict[str, Any], name: str) -> bool:
    """Whether ``data[name]`` (an instance's dictionary) is still the JSON text of the row the
    instance was loaded from: the same object, never assigned since."""
    row = data.get("_loaded_row")
    if row is None or name in data.get("_json_assigned", ()):
        return False
    value = data.get(name)
    if value.__class__ is not str:
        return False
    names, values = row
    try:
        return values[names.index(name)] is value
    except ValueError:  # a deferred field, loaded later with its peers
        more = data.get("_loaded_more")
        return more is not None and more.get(name) is value


class LazyJSONAttribute(DeferredAttribute):
    """The attribute of a :class:`LazyJSONField`: decodes the loaded JSON text on first read."""

    def __get__(self, instance: Any, cls: Any = None) -> Any:
        if instance is None:
            return self
        data = instance.__dict__
        name = self.field.attname
        try:
            value = data[name]
        except KeyError:  # a deferred field: loaded now (with its peers, if it has any)
            value = super().__get__(instance, cls)
        if value.__class__ is str and is_raw_json(data, name):
            value = json.loads(value, cls=getattr(self.field, "decoder", None))
            data[name] = value
        return value

    def __set__(self, instance: Any, value: Any) -> None:
        data = instance.__dict__
        data[self.field.attname] = value
        if "_loaded_row" in data:
            # An assigned string is a value, even if it is the row's own (interned) object.
            assigned = data.get("_json_assigned")
            if assigned is None:
                assigned = data["_json_assigned"] = set()
            assigned.add(self.field.attname)


class LazyJSONField(models.JSONField):
    """A ``JSONField`` decoded on first read when its row was loaded by :class:`JobIterable`."""

    descriptor_class = LazyJSONAttribute


def value_changed(instance: Any, attname: str, loaded: Any) -> bool:
    """Whether ``instance.<attname>`` differs from the value it was ``loaded`` with (a
    :class:`RawJSON` when it was loaded as JSON text)."""
    if type(loaded) is RawJSON:
        if is_raw_json(instance.__dict__, attname):
            return False  # never read, so never changed
        return bool(json.loads(loaded) != getattr(instance, attname))
    return bool(loaded != getattr(instance, attname))


def fetch_all_rows(compiler: Any) -> list[Any]:
    """The rows of ``compiler``'s query, all at once (what ``execute_sql()`` returns, as one
    list of rows instead of a list of 100-row chunks)."""
    cursor = compiler.execute_sql(CURSOR)
    if cursor is None:
        return []  # a query that can match nothing (pk__in=[]) is not run
    try:
        rows: list[Any] = cursor.fetchall()
    finally:
        cursor.close()
    if compiler.has_extra_select:
        count = compiler.col_count
        rows = [row[:count] for row in rows]
    return rows


class Peers:
    """The jobs one query (or one batch of ``iterator()``) loaded with fields deferred, held
    weakly: reading a deferred field of one loads it for every one that lacks it
    (:func:`load_for_peers`). A ``copy.copy()`` of a job shares its original's peers; an
    unpickled job has none."""

    __slots__ = ("refs",)

    def __init__(self) -> None:
        self.refs: list[weakref.ReferenceType[Any]] = []

    def __reduce__(self) -> tuple[type[Peers], tuple[()]]:
        return (Peers, ())


def load_for_peers(instance: Any, peers: Peers, attnames: Any) -> bool:
    """Load the deferred fields ``attnames`` of ``instance`` and of its peers that lack them, in
    one query per ``max_query_params`` ids. False (nothing done) unless every name is a field
    ``instance`` has not loaded. As ``refresh_from_db`` does, a job whose row is gone raises
    ``DoesNotExist``; peers whose rows are gone keep the field unloaded."""
    data = instance.__dict__
    names = list(attnames)
    fields = {f.attname: f for f in instance._meta.concrete_fields}
    if not names or any(name not in fields or name in data for name in names):
        return False
    targets = [instance]
    for ref in peers.refs:
        peer = ref()
        if (
            peer is not None
            and peer is not instance
            and peer.pk is not None
            and any(name not in peer.__dict__ for name in names)
        ):
            targets.append(peer)
    db = instance._state.db or "default"
    chunk = min(connections[db].features.max_query_params or 10_000, 10_000)
    pks = list({job.pk for job in targets})
    rows: dict[Any, dict[str, Any]] = {}
    base = instance._meta.concrete_model._base_manager.db_manager(db).only(*names)
    base._iterable_class = JobIterable  # the base manager's plain QuerySet, loaded fast
    for start in range(0, len(pks), chunk):
        for fresh in base.filter(pk__in=pks[start : start + chunk]):
            rows[fresh.pk] = fresh.__dict__
    if instance.pk not in rows:
        raise type(instance).DoesNotExist(
            f"{type(instance).__name__} {instance.pk} no longer exists"
        )
    for job in targets:
        row = rows.get(job.pk)
        if row is None:
            continue
        job_data = job.__dict__
        # New dictionaries, not edits: a copy.copy() of the job shares the old ones.
        more = dict(job_data.get("_loaded_more") or {})
        snapshot = job_data.get("_loaded")  # what save() compares with, if already taken
        if snapshot is not None:
            snapshot = dict(snapshot)
        for name in names:
            if name in job_data:
                continue
            value = row[name]
            job_data[name] = more[name] = value
            if snapshot is not None:
                if not isinstance(fields[name], models.JSONField):
                    snapshot[name] = value
                elif value.__class__ is str:
                    snapshot[name] = RawJSON(value)  # the undecoded text, immutable
                else:
                    snapshot[name] = json_copy(value)
        job_data["_loaded_more"] = more
        if snapshot is not None:
            job_data["_loaded"] = snapshot
    return True


def _loading_also(query: Any, fields: list[Any]) -> Any:
    """``query``, loading ``fields`` even if ``only()``/``defer()`` left them out."""
    names, defer = query.deferred_loading
    if defer:
        # Deferred by name or by attname (user or user_id).
        kept = names - {f.name for f in fields} - {f.attname for f in fields}
        if kept != names:
            query = query.clone()
            query.deferred_loading = (frozenset(kept), True)
    elif not {f.name for f in fields} <= names:
        query = query.clone()
        query.deferred_loading = (names | {f.name for f in fields}, False)
    return query


class JobIterable(ModelIterable):  # type: ignore[type-arg]
    """Yields a typed job object per row (see the module's docstring)."""

    def __iter__(self) -> Iterator[Any]:
        queryset = self.queryset
        model = queryset.model
        if pre_init.has_listeners(model) or post_init.has_listeners(model):
            # Django's own iterable (Job.from_db still gives each row its class).
            yield from super().__iter__()
            return
        db = queryset.db
        query = queryset.query
        if query.deferred_loading != (frozenset(), True):  # only() or defer()
            # Still loaded: job_type, which gives each row its class, and the foreign key of a
            # reverse relation (user.offload_jobs), which its known object is attached by.
            needed = [model._meta.get_field("job_type")]
            needed += list(queryset._known_related_objects)  # type: ignore[attr-defined]
            query = _loading_also(query, needed)
        compiler = query.get_compiler(using=db)
        if self.chunked_fetch:  # iterator(): rows as the database streams them
            rows: Any = chain.from_iterable(
                compiler.execute_sql(chunked_fetch=True, chunk_size=self.chunk_size)
            )
        else:  # every row at once, as Django would, in one fetch instead of one per 100 rows
            rows = fetch_all_rows(compiler)
        select, klass_info, annotation_col_map = (
            compiler.select,
            compiler.klass_info,
            compiler.annotation_col_map,
        )
        model_cls = klass_info["model"]
        select_fields = klass_info["select_fields"]
        start, end = select_fields[0], select_fields[-1] + 1
        init_list = [f[0].target.attname for f in select[start:end]]
        fields = [s[0] for s in select[0 : compiler.col_count]]
        converters = compiler.get_converters(fields)
        # JSON columns stay text until read: no converter for them.
        for i, column in enumerate(select[start:end]):
            if isinstance(column[0].target, LazyJSONField):
                converters.pop(start + i, None)
        if converters:
            rows = compiler.apply_converters(rows, converters)
        related_populators = get_related_populators(klass_info, select, db)  # type: ignore[call-arg]
        known_related_objects = [
            (
                field,
                related_objs,
                operator.attrgetter(
                    *[
                        (
                            field.attname
                            if from_field == "self"
                            else queryset.model._meta.get_field(from_field).attname  # type: ignore[union-attr]
                        )
                        for from_field in field.from_fields
                    ]
                ),
            )
            for field, related_objs in queryset._known_related_objects.items()  # type: ignore[attr-defined]
        ]
        whole_row = start == 0 and end == compiler.col_count
        # Some fields deferred: each batch's jobs load them together, when first read.
        deferring = len(init_list) < len(model_cls._meta.concrete_fields)
        type_index = init_list.index("job_type")
        classes = model_cls.loaded_classes()
        # The usual reverse relation (user.offload_jobs): its object goes straight into the
        # cache of each row whose foreign key matches, as Django's iterable would put it.
        known_fast: tuple[str, dict[Any, Any], int] | None = None
        if len(known_related_objects) == 1 and not related_populators:
            field, rel_objs, _ = known_related_objects[0]
            if len(field.from_fields) == 1 and field.attname in init_list:
                known_fast = (field.cache_name, rel_objs, init_list.index(field.attname))
                known_related_objects = []
        new_state = ModelState
        rows = iter(rows)
        # A queryset's own evaluation (list(), for …, len()) has every row already and runs no
        # caller code until all objects exist: one batch. iterator() streams: batches.
        batch_rows = BATCH_ROWS if self.chunked_fetch else None
        while batch := list(islice(rows, batch_rows)):
            built: list[Any] = []
            peers = Peers() if deferring else None
            # The objects of a batch are made with the cyclic garbage collector paused: they
            # create no garbage, and otherwise it walks the growing result over and over.
            collecting = gc.isenabled()
            gc.disable()
            try:
                for row in batch:
                    values: Any = row if whole_row else row[start:end]
                    cls = classes.get(values[type_index], model_cls)
                    obj = cls.__new__(cls)
                    data = dict(zip(init_list, values, strict=False))
                    obj.__dict__ = data
                    state = new_state()
                    state.adding = False
                    state.db = db
                    if known_fast is not None:
                        rel_obj = known_fast[1].get(values[known_fast[2]])
                        if rel_obj is not None:
                            state.fields_cache = {known_fast[0]: rel_obj}
                    data["_state"] = state
                    # What was loaded, for save(): the names are shared, the values are this row's.
                    data["_loaded_row"] = (init_list, values)
                    if peers is not None:
                        data["_peers"] = peers
                        peers.refs.append(weakref.ref(obj))
                    if related_populators or annotation_col_map:
                        self._populate(obj, row, related_populators, annotation_col_map)
                    if known_related_objects:
                        self._attach_known(obj, known_related_objects)
                    built.append(obj)
            finally:
                if collecting:
                    gc.enable()
            yield from built

    @staticmethod
    def _populate(
        obj: Any, row: Any, related_populators: Any, annotation_col_map: dict[str, int]
    ) -> None:
        for rel_populator in related_populators:
            rel_populator.populate(row, obj)
        for attr_name, col_pos in annotation_col_map.items():
            setattr(obj, attr_name, row[col_pos])

    @staticmethod
    def _attach_known(obj: Any, known_related_objects: Any) -> None:
        for field, rel_objs, rel_getter in known_related_objects:
            if field.is_cached(obj):
                continue  # select_related loaded it
            try:
                rel_obj = rel_objs[rel_getter(obj)]
            except KeyError:
                pass  # may happen with qs1 | qs2
            else:
                setattr(obj, field.name, rel_obj)
