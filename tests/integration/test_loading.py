"""Loading jobs fast (offload.loading): typed objects straight from rows, JSON decoded on first
read, and save() still writing exactly what app code changed — on the real database."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count, F
from django.db.models.query import ModelIterable
from django.db.models.signals import post_init
from django.test.utils import CaptureQueriesContext

from offload import BasicJob, Job, JobManager, LocalJob, SlurmJob
from offload.loading import is_raw_json

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]


def _jobs(user: Any) -> list[Job]:
    manager = JobManager("loading")
    jobs = [
        manager.create_job("basic {id}", user, job_type="BASIC", extended_properties={"a": 1}),
        manager.create_job("local {id}", user, job_type="LOCAL", executable="python"),
        manager.create_job("slurm {id}", user, job_type="SLURM", executable="hostname"),
    ]
    for job in jobs:
        job.save()
    return jobs


def test_rows_become_typed_jobs_equal_to_what_django_builds(user: Any) -> None:
    made = _jobs(user)
    fast = list(Job.objects.filter(label="loading").order_by("id"))
    slow_qs = Job.objects.filter(label="loading").order_by("id")
    slow_qs._iterable_class = ModelIterable
    slow = list(slow_qs)
    assert [type(j) for j in fast] == [BasicJob, LocalJob, SlurmJob]
    assert [type(j) for j in slow] == [BasicJob, LocalJob, SlurmJob]
    for a, b, original in zip(fast, slow, made, strict=True):
        assert a.pk == b.pk == original.pk
        assert not a._state.adding
        assert a._state.db == "default"
        for field in Job._meta.concrete_fields:
            assert getattr(a, field.attname) == getattr(b, field.attname), field.attname
    assert fast[0].extended_properties == {"a": 1}
    assert fast[1].executable == "python"
    assert fast[1].parameters == {"executable": "python"}


def test_json_stays_text_until_read_and_values_list_still_decodes(user: Any) -> None:
    _jobs(user)
    job = Job.objects.filter(label="loading").order_by("id").first()
    assert job is not None
    assert is_raw_json(job.__dict__, "extended_properties")
    assert json.loads(job.__dict__["extended_properties"]) == {"a": 1}
    assert job.extended_properties == {"a": 1}
    assert type(job.__dict__["extended_properties"]) is dict
    assert not is_raw_json(job.__dict__, "extended_properties")
    props = Job.objects.filter(pk=job.pk).values_list("extended_properties", flat=True).get()
    assert props == {"a": 1}
    assert Job.objects.filter(pk=job.pk).values("parameters").get() == {"parameters": {}}


def test_an_assigned_string_is_a_value_even_when_it_is_the_loaded_text(user: Any) -> None:
    """JSON text is known undecoded by being the row's own object. A one-character text such as
    ``5`` is a string Python shares, so assigning the string "5" must not be taken for it."""
    job = JobManager("loading").create_job("digit", user, extended_properties={"a": 1})
    job.save()
    Job.objects.filter(pk=job.pk).update(engine_state=5)
    loaded = Job.objects.get(pk=job.pk)
    assert loaded.__dict__["engine_state"] == "5" and is_raw_json(loaded.__dict__, "engine_state")
    loaded.engine_state = "5"  # the same (shared) string object, now a JSON string
    assert loaded.engine_state == "5"
    again = Job.objects.get(pk=job.pk)
    assert again.engine_state == 5


def test_pickled_and_copied_jobs_keep_their_json(user: Any) -> None:
    job = JobManager("loading").create_job("pickled", user, parameters={"p": [1, 2]})
    job.save()
    loaded = Job.objects.get(pk=job.pk)
    for other in (pickle.loads(pickle.dumps(loaded)), copy.copy(loaded)):
        assert other.parameters == {"p": [1, 2]}
        assert other.extended_properties == {}
        other.description = "changed"
        with CaptureQueriesContext(connection) as queries:
            other.save()
        updates = [q["sql"] for q in queries.captured_queries if "UPDATE" in q["sql"]]
        assert len(updates) == 1 and "parameters" not in updates[0]
    assert loaded.parameters == {"p": [1, 2]}


@pytest.mark.parametrize("read_first", [False, True])
def test_save_writes_only_what_changed(user: Any, read_first: bool) -> None:
    _jobs(user)
    job = Job.objects.filter(label="loading").order_by("id").first()
    assert job is not None
    if read_first:
        assert job.extended_properties == {"a": 1}
    with CaptureQueriesContext(connection) as queries:
        job.save()
    assert [q["sql"] for q in queries.captured_queries if "UPDATE" in q["sql"]] == []
    job.description = "changed"
    with CaptureQueriesContext(connection) as queries:
        job.save()
    updates = [q["sql"] for q in queries.captured_queries if "UPDATE" in q["sql"]]
    assert len(updates) == 1
    assert "description" in updates[0]
    assert "extended_properties" not in updates[0]


def test_in_place_edit_of_lazy_json_is_saved(user: Any) -> None:
    _jobs(user)
    job = Job.objects.filter(label="loading").order_by("id").first()
    assert job is not None
    job.extended_properties["b"] = 2
    job.save()
    assert Job.objects.get(pk=job.pk).extended_properties == {"a": 1, "b": 2}
    # A stale object that never read the field does not write it back.
    stale = Job.objects.get(pk=job.pk)
    other = Job.objects.get(pk=job.pk)
    other.extended_properties = {"c": 3}
    other.save()
    stale.name = "renamed"
    stale.save()
    fresh = Job.objects.get(pk=job.pk)
    assert fresh.extended_properties == {"c": 3}
    assert fresh.name == "renamed"


def test_reverse_relation_reuses_the_user_object(user: Any) -> None:
    _jobs(user)
    jobs = list(user.offload_jobs.all())
    with CaptureQueriesContext(connection) as queries:
        assert all(job.user is user for job in jobs)
    assert len(queries) == 0


def test_select_related_deferred_fields_annotations_and_signals(user: Any) -> None:
    _jobs(user)
    with CaptureQueriesContext(connection) as queries:
        jobs = list(Job.objects.filter(label="loading").select_related("user").order_by("id"))
        assert [job.user.username for job in jobs] == [user.username] * 3
    assert len(queries) == 1
    only = list(Job.objects.filter(label="loading").only("id", "name", "job_type").order_by("id"))
    assert [type(j) for j in only] == [BasicJob, LocalJob, SlurmJob]
    assert only[0].get_deferred_fields() >= {"extended_properties", "workspace"}
    assert only[0].extended_properties == {"a": 1}  # loaded on demand, as Django does
    annotated = list(
        Job.objects.filter(label="loading")
        .annotate(n_groups=Count("groups"), twice=F("attempt") * 2)
        .order_by("id")
    )
    assert [j.n_groups for j in annotated] == [0, 0, 0]
    assert isinstance(annotated[1], LocalJob)
    seen: list[Any] = []

    def receiver(sender: Any, instance: Any, **kwargs: Any) -> None:
        seen.append(instance)

    post_init.connect(receiver, sender=Job)
    try:
        signalled = list(Job.objects.filter(label="loading").order_by("id"))
    finally:
        post_init.disconnect(receiver, sender=Job)
    assert len(seen) == 3
    assert [type(j) for j in signalled] == [BasicJob, LocalJob, SlurmJob]


def test_loaded_jobs_pickle_refresh_and_compare(user: Any) -> None:
    _jobs(user)
    job = Job.objects.filter(label="loading").order_by("id").first()
    assert job is not None
    copy = pickle.loads(pickle.dumps(job))
    assert copy == job
    assert copy.extended_properties == {"a": 1}
    Job.objects.filter(pk=job.pk).update(description="elsewhere")
    job.refresh_from_db()
    assert job.description == "elsewhere"
    assert job.extended_properties == {"a": 1}


def test_timestamps_load_as_utc_datetimes_with_the_fast_loader_on_postgres(user: Any) -> None:
    import datetime

    _jobs(user)
    job = Job.objects.filter(label="loading").order_by("id").first()
    assert job is not None
    assert job.creation_time.tzinfo is datetime.UTC
    assert abs(job.creation_time - datetime.datetime.now(datetime.UTC)).total_seconds() < 60
    raw = connection.connection
    if connection.vendor == "postgresql":
        import psycopg

        oid = psycopg.postgres.types["timestamptz"].oid
        loader = raw.adapters.get_loader(oid, psycopg.pq.Format.TEXT)
        assert loader.__name__ == "UTCTimestamptzLoader"
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s::timestamptz", ["2026-01-02 03:04:05.678901+02"])
            (value,) = cursor.fetchone()
        assert value == datetime.datetime(2026, 1, 2, 1, 4, 5, 678901, tzinfo=datetime.UTC)
        assert value.tzinfo is datetime.UTC


def test_empty_extra_select_and_streamed_queries_load_like_django(user: Any) -> None:
    jobs = _jobs(user)
    assert list(Job.objects.filter(pk__in=[])) == []
    assert list(Job.objects.none()) == []
    extra = list(
        Job.objects.filter(label="loading").extra(select={"twice": "id * 2"}).order_by("id")
    )
    assert [(j.pk, j.twice) for j in extra] == [(j.pk, 2 * j.pk) for j in jobs]
    assert [type(j) for j in extra] == [BasicJob, LocalJob, SlurmJob]
    streamed = list(Job.objects.filter(label="loading").order_by("id").iterator(chunk_size=2))
    assert [(type(j), j.pk, j.extended_properties) for j in streamed] == [
        (type(j), j.pk, j.extended_properties) for j in extra
    ]


def _many(user: Any, count: int) -> list[int]:
    manager = JobManager("peers")
    jobs = [
        manager.create_job(f"job {i}", user, job_type="BASIC")
        if i % 2 == 0
        else manager.create_job(f"job {i}", user, job_type="LOCAL", executable="python")
        for i in range(count)
    ]
    for i, job in enumerate(jobs):
        job.extended_properties = {"i": i}
    manager.bulk_create(jobs)
    return [job.pk for job in jobs]


def test_a_deferred_field_is_loaded_for_all_peers_in_one_query(user: Any) -> None:
    ids = _many(user, 6)
    only = Job.objects.filter(pk__in=ids).only("id", "name").order_by("id")
    still_deferred = {
        f.attname for f in Job._meta.concrete_fields if f.attname not in ("id", "name", "job_type")
    } - {"extended_properties", "workspace"}
    for queryset, left in (
        (only, still_deferred),
        (
            Job.objects.filter(pk__in=ids)
            .defer("job_type", "extended_properties", "workspace")
            .order_by("id"),
            set(),
        ),
        (
            JobManager("peers").list_jobs(user=user).defer("extended_properties", "workspace"),
            set(),
        ),
    ):
        with CaptureQueriesContext(connection) as queries:
            jobs = list(queryset)
            # Still typed: job_type is loaded whatever only()/defer() said.
            assert [type(j) for j in jobs] == [BasicJob, LocalJob] * 3
            assert [j.extended_properties for j in jobs] == [{"i": i} for i in range(6)]
            assert all(j.workspace.endswith(f"/{j.pk}") for j in jobs)
        assert len(queries) == 3, "\n".join(q["sql"] for q in queries.captured_queries)
        # Every job now has the two fields read, and only those: the rest stay deferred.
        assert all(j.get_deferred_fields() == left for j in jobs)


def test_a_users_jobs_keep_their_user_whatever_only_or_defer_says(user: Any) -> None:
    _many(user, 4)
    manager = JobManager("peers")
    for queryset in (
        manager.list_jobs(user=user).only("id", "name"),
        manager.list_jobs(user=user).defer("user", "name"),
        manager.list_jobs(user=user).defer("user_id"),
    ):
        with CaptureQueriesContext(connection) as queries:
            assert all(job.user is user for job in queryset)  # the user's own object
        assert len(queries) == 1


def test_peers_of_a_streamed_query_are_its_batches(user: Any, monkeypatch: Any) -> None:
    from offload import loading

    ids = _many(user, 5)
    monkeypatch.setattr(loading, "BATCH_ROWS", 2)
    queryset = Job.objects.filter(pk__in=ids).only("id").order_by("id")
    with CaptureQueriesContext(connection) as queries:
        names = [job.name for job in queryset.iterator(chunk_size=10)]
    assert names == [f"job {i}" for i in range(5)]
    assert len(queries) == 1 + 3  # the query, then one per batch of 2
    # A deferred foreign key too: its id comes with the peers' (the user object is Django's).
    jobs = list(Job.objects.filter(pk__in=ids).only("id"))
    with CaptureQueriesContext(connection) as queries:
        assert {job.user_id for job in jobs} == {user.pk}
    assert len(queries) == 1


def test_saving_a_job_with_deferred_fields_writes_only_what_changed(user: Any) -> None:
    ids = _many(user, 3)
    jobs = list(Job.objects.filter(pk__in=ids).defer("extended_properties", "description"))
    job = jobs[0]
    Job.objects.filter(pk=job.pk).update(description="written elsewhere")
    with CaptureQueriesContext(connection) as queries:
        job.save()  # nothing loaded changed, nothing deferred is read
    assert len(queries) == 0
    assert job.extended_properties == {"i": 0}  # loaded with its peers
    assert is_raw_json(jobs[1].__dict__, "extended_properties")  # their text, undecoded
    with CaptureQueriesContext(connection) as queries:
        job.save()
        jobs[1].save()
    assert [q for q in queries.captured_queries if "UPDATE" in q["sql"]] == []
    job.extended_properties["j"] = 1
    job.name = "renamed"
    with CaptureQueriesContext(connection) as queries:
        job.save()
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1
    assert "extended_properties" in updates[0] and "description" not in updates[0]
    fresh = Job.objects.get(pk=job.pk)
    assert (fresh.name, fresh.extended_properties) == ("renamed", {"i": 0, "j": 1})
    assert fresh.description == "written elsewhere"  # the deferred field was never written back
    # Loaded after a save took its snapshot: still not written unless changed.
    assert jobs[2].description == ""
    jobs[2].save()
    jobs[2].description = "mine"
    jobs[2].save()
    assert Job.objects.get(pk=jobs[2].pk).description == "mine"


def test_copies_pickles_and_vanished_rows_of_peers(user: Any) -> None:
    ids = _many(user, 4)
    jobs = list(Job.objects.filter(pk__in=ids).only("id", "name").order_by("id"))
    copied = copy.copy(jobs[0])
    pickled = pickle.loads(pickle.dumps(jobs[1]))
    with CaptureQueriesContext(connection) as queries:
        assert pickled.extended_properties == {"i": 1}  # on its own: no peers after pickling
    assert len(queries) == 1
    assert jobs[1].get_deferred_fields() >= {"extended_properties"}
    Job.objects.filter(pk=jobs[3].pk).delete()
    with CaptureQueriesContext(connection) as queries:
        assert copied.extended_properties == {"i": 0}
        assert [j.extended_properties for j in jobs[:3]] == [{"i": i} for i in range(3)]
    assert len(queries) == 1  # a copy shares its original's peers: one query for all
    with pytest.raises(Job.DoesNotExist):
        jobs[3].extended_properties  # noqa: B018 - its row is gone, as Django would say
