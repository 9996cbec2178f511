"""create_job(..., status=...): Tethys passes the kwarg to its job's status setter. offload keeps the
job unsaved and applies the status when it is first stored, as update_status(value) would."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from offload import JobManager
from offload.errors import InvalidJobError, JobStateError
from offload.models import IntentAction, Job, JobEvent, JobIntent
from offload.status import Category, Status

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]


@pytest.fixture
def manager() -> JobManager:
    return JobManager("initial_app", custom_statuses={"Archived": "terminal"})


def _history(job: Job) -> list[tuple[str, str, str, str]]:
    return [(e.from_status, e.to_status, e.status_text, e.source) for e in job.events]


def test_a_basic_job_created_with_a_custom_status_gets_it_when_stored(
    manager: JobManager, user: Any
) -> None:
    job = manager.create_job("meshing {id}", user, status="Meshing")
    assert job._state.adding  # still unsaved, as every create_job job
    assert not Job.objects.filter(label="initial_app").exists()
    job.save()
    assert job.status == "Meshing"
    fresh = Job.objects.get(pk=job.pk)
    assert (fresh.status, fresh.status_enum, fresh.name) == (
        "Meshing",
        Status.OTHER,
        f"meshing {job.pk}",
    )
    assert fresh.other_category is None  # undeclared: counts as running
    assert _history(fresh) == [("", "PEN", "", "app"), ("PEN", "OTH", "Meshing", "app")]


@pytest.mark.parametrize(
    ("status", "shown", "started", "completed"),
    [
        ("Running", "Running", True, False),
        ("SUB", "Submitted", False, False),
        (Status.COMPLETE, "Complete", False, True),
        ("Archived", "Archived", False, False),
    ],
)
def test_the_status_is_set_as_the_setter_sets_it(
    manager: JobManager, user: Any, status: Any, shown: str, started: bool, completed: bool
) -> None:
    job = manager.create_job("s", user, status=status)
    job.save()
    fresh = Job.objects.get(pk=job.pk)
    assert fresh.status == shown
    assert (fresh.start_time is not None, fresh.completion_time is not None) == (
        started,
        completed,
    )
    if shown == "Archived":
        assert fresh.other_category is Category.TERMINAL  # the app's declaration applies
        with pytest.raises(JobStateError, match="final"):
            fresh.update_status("Running")


def test_results_ready_asks_for_result_processing_as_the_setter_does(
    manager: JobManager, user: Any
) -> None:
    job = manager.create_job("r", user, status="Results-Ready")
    job.save()
    assert JobIntent.objects.filter(job_id=job.pk, action=IntentAction.RESULTS).count() == 1


def test_pending_or_none_change_nothing(manager: JobManager, user: Any) -> None:
    for status in ("Pending", "PEN", None):
        job = manager.create_job("p", user, job_type="LOCAL", executable="true", status=status)
        job.save()
        assert _history(Job.objects.get(pk=job.pk)) == [("", "PEN", "", "app")]
        job.execute()
        assert Job.objects.get(pk=job.pk).status == "Submitted"


def test_a_job_its_engine_runs_must_start_pending(manager: JobManager, user: Any) -> None:
    for status in ("Running", "Meshing", "Complete"):
        with pytest.raises(InvalidJobError) as info:
            manager.create_job("l", user, job_type="LOCAL", executable="true", status=status)
        assert info.value.field == "status"
        assert "LocalJob is created Pending" in str(info.value)
    assert not Job.objects.exists()


@pytest.mark.parametrize("status", ["", "   ", 7, ["Running"]])
def test_a_bad_status_names_the_field(manager: JobManager, user: Any, status: Any) -> None:
    with pytest.raises(InvalidJobError) as info:
        manager.create_job("b", user, status=status)
    assert info.value.field == "status"
    assert repr(status) in str(info.value)


def test_execute_refuses_a_job_created_in_another_status(manager: JobManager, user: Any) -> None:
    job = manager.create_job("e", user, status="Meshing")
    with pytest.raises(JobStateError, match="created with status 'Meshing'"):
        job.execute()
    assert not Job.objects.exists()  # nothing stored


def test_a_template_job_takes_the_status_too(user: Any) -> None:
    from offload import BasicJobTemplate

    manager = JobManager("initial_tpl", templates=[BasicJobTemplate("t", {})])
    job = manager.create_job("t", user, template_name="t", status="Queued in app")
    job.save()
    assert Job.objects.get(pk=job.pk).status == "Queued in app"


STATUSES = [None, "Running", "Meshing", "Archived", "Results-Ready"]


def _bulk(manager: JobManager, user: Any, count: int, with_statuses: bool) -> tuple[list[Job], int]:
    jobs = [
        manager.create_job(
            f"b{i} {{id}}", user, status=STATUSES[i % len(STATUSES)] if with_statuses else None
        )
        for i in range(count)
    ]
    with CaptureQueriesContext(connection) as ctx:
        made = manager.bulk_create(jobs)
    return made, len([q for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]])


def test_bulk_create_applies_the_statuses_in_a_few_queries(manager: JobManager, user: Any) -> None:
    made, few = _bulk(manager, user, 5, True)
    _, few_plain = _bulk(manager, user, 5, False)
    _, many = _bulk(manager, user, 60, True)
    _, many_plain = _bulk(manager, user, 60, False)
    # The statuses cost one UPDATE, one events INSERT and one intents INSERT, whatever the count.
    assert few - few_plain == many - many_plain == 3
    stored = {job.pk: job for job in Job.objects.filter(pk__in=[j.pk for j in made])}
    assert [stored[j.pk].status for j in made] == [
        "Pending",
        "Running",
        "Meshing",
        "Archived",
        "Results-Ready",
    ]
    assert [j.status for j in made] == [stored[j.pk].status for j in made]
    assert stored[made[3].pk].other_category is Category.TERMINAL
    assert stored[made[1].pk].start_time is not None
    assert _history(stored[made[2].pk]) == [
        ("", "PEN", "", "app"),
        ("PEN", "OTH", "Meshing", "app"),
    ]
    assert JobEvent.objects.filter(job_id__in=[j.pk for j in made]).count() == 5 + 4
    assert list(
        JobIntent.objects.filter(
            action=IntentAction.RESULTS, job_id__in=[j.pk for j in made]
        ).values_list("job_id", flat=True)
    ) == [made[4].pk]
    for job in made:
        assert "_initial_status" not in job.__dict__
        job.description = "edited"
        job.save()  # the created objects save as loaded ones
    assert Job.objects.get(pk=made[2].pk).status == "Meshing"
