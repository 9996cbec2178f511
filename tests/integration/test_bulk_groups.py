"""bulk_create stores the groups create_job was given, in a number of queries that does not grow
with the jobs."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from offload import JobManager
from offload.errors import InvalidJobError
from offload.models import Job

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]


@pytest.fixture
def groups() -> list[Group]:
    return [Group.objects.create(name=name) for name in ("hydro", "geo", "ops")]


def _group_names(job: Job) -> set[str]:
    return set(Job.objects.get(pk=job.pk).groups.values_list("name", flat=True))


def test_bulk_create_attaches_the_groups_as_save_does(user: Any, groups: list[Group]) -> None:
    manager = JobManager("bulk_groups")
    hydro, geo, _ = groups
    made = manager.bulk_create(
        [
            manager.create_job("one group", user, groups=hydro),
            manager.create_job("by name", user, groups=["geo", "hydro"]),
            manager.create_job("twice", user, groups=[geo, "geo", geo]),
            manager.create_job("none", user),
            manager.create_job("empty", user, groups=[]),
        ]
    )
    assert [_group_names(job) for job in made] == [
        {"hydro"},
        {"geo", "hydro"},
        {"geo"},
        set(),
        set(),
    ]
    saved = manager.create_job("saved", user, groups=["geo", "hydro"])
    saved.save()
    assert _group_names(saved) == _group_names(made[1])
    shared = manager.list_jobs(groups="hydro")
    assert {job.name for job in shared} == {"one group", "by name", "saved"}
    for job in made:
        assert "_pending_groups" not in job.__dict__


def _count(manager: JobManager, user: Any, count: int, groups: list[Group] | None) -> int:
    jobs = [
        manager.create_job(f"g{i}", user, groups=groups[: 1 + i % len(groups)] if groups else None)
        for i in range(count)
    ]
    with CaptureQueriesContext(connection) as ctx:
        manager.bulk_create(jobs)
    return len([q for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]])


def test_the_groups_cost_one_insert_whatever_the_number_of_jobs(
    user: Any, groups: list[Group]
) -> None:
    manager = JobManager("bulk_groups_count")
    few = _count(manager, user, 5, groups) - _count(manager, user, 5, None)
    many = _count(manager, user, 60, groups) - _count(manager, user, 60, None)
    assert few == many == 1  # one INSERT into the groups table
    assert Job.groups.through.objects.filter(job__label="bulk_groups_count").count() == (
        sum(1 + i % 3 for i in range(5)) + sum(1 + i % 3 for i in range(60))
    )


def test_an_unsaved_group_is_refused_and_nothing_is_stored(user: Any) -> None:
    manager = JobManager("bulk_groups_bad")
    jobs = [manager.create_job("ok", user), manager.create_job("bad", user, groups=Group(name="x"))]
    with pytest.raises(InvalidJobError, match=r"^groups: "):
        manager.bulk_create(jobs)
    assert not Job.objects.filter(label="bulk_groups_bad").exists()
    assert all(job.pk is None for job in jobs)
