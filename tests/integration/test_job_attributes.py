"""The Jobs API's attribute rules, on the real database: fields fixed at creation stay fixed."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from offload import JobManager
from offload.errors import InvalidJobError
from offload.models import Job

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]


@pytest.fixture
def manager() -> JobManager:
    return JobManager("attributes_app")


@pytest.fixture
def stored(manager: JobManager, user: Any) -> Job:
    job = manager.create_job("stored {id}", user)
    job.save()
    return job


def _writes(ctx: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in ctx.captured_queries
        if q["sql"].lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE"))
    ]


# -- user (and the other fields fixed at creation) ----------------------------------------------
def test_changing_the_user_of_a_stored_job_is_refused(stored: Job, other_user: Any) -> None:
    job = Job.objects.get(pk=stored.pk)
    job.user = other_user
    with pytest.raises(InvalidJobError) as info:
        job.save()
    assert info.value.field == "user"
    assert "read-only" in str(info.value)
    assert str(stored.pk) in str(info.value)
    assert Job.objects.get(pk=stored.pk).user_id == stored.user_id


def test_changing_the_user_id_or_clearing_the_user_is_refused(stored: Job, other_user: Any) -> None:
    job = Job.objects.get(pk=stored.pk)
    job.user_id = other_user.pk
    with pytest.raises(InvalidJobError, match=r"^user: "):
        job.save()
    job = Job.objects.get(pk=stored.pk)
    job.user = None
    with pytest.raises(InvalidJobError, match=r"^user: "):
        job.save()
    assert Job.objects.get(pk=stored.pk).user_id == stored.user_id


def test_update_fields_cannot_change_the_user(stored: Job, other_user: Any) -> None:
    job = Job.objects.get(pk=stored.pk)
    job.user = other_user
    for names in (["user"], ["user_id"], ["user", "description"]):
        with pytest.raises(InvalidJobError, match=r"^user: "):
            job.save(update_fields=names)
    assert Job.objects.get(pk=stored.pk).user_id == stored.user_id


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("label", "another_app"),
        ("creation_time", datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)),
        ("job_type", "LOCAL"),
    ],
)
def test_other_fields_fixed_at_creation_are_refused_too(stored: Job, name: str, value: Any) -> None:
    job = Job.objects.get(pk=stored.pk)
    before = getattr(job, name)
    setattr(job, name, value)
    with pytest.raises(InvalidJobError) as info:
        job.save()
    assert info.value.field == name
    assert getattr(Job.objects.get(pk=stored.pk), name) == before


def test_the_same_user_again_and_an_unchanged_job_save_fine(stored: Job, user: Any) -> None:
    job = Job.objects.get(pk=stored.pk)
    job.user = user  # the same owner: no change
    with CaptureQueriesContext(connection) as ctx:
        job.save()
    assert _writes(ctx) == []
    job.description = "edited"
    job.save()
    fresh = Job.objects.get(pk=stored.pk)
    assert (fresh.description, fresh.user_id) == ("edited", user.pk)
    stored.description = "edited again"  # the object save() created the row with
    stored.save()
    assert Job.objects.get(pk=stored.pk).description == "edited again"


def test_the_user_of_an_unsaved_job_may_be_set(
    manager: JobManager, user: Any, other_user: Any
) -> None:
    job = manager.create_job("unsaved", user)
    job.user = other_user
    job.save()
    assert Job.objects.get(pk=job.pk).user_id == other_user.pk
    bulk = manager.create_job("bulk", user)
    bulk.user = other_user
    (created,) = manager.bulk_create([bulk])
    assert Job.objects.get(pk=created.pk).user_id == other_user.pk


def test_a_user_loaded_on_its_own_is_checked_against_the_row(stored: Job, other_user: Any) -> None:
    # Deferred, then read without peers: no snapshot of it, so the row is asked.
    job = Job.objects.defer("user").get(pk=stored.pk)
    job.__dict__.pop("_peers", None)
    assert job.user_id == stored.user_id
    job.save()  # unchanged: fine
    job.user = other_user
    with pytest.raises(InvalidJobError, match=r"^user: "):
        job.save()
    assert Job.objects.get(pk=stored.pk).user_id == stored.user_id
