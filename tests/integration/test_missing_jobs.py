"""Acting on a job that no longer exists (its row is gone, or it was deleted and is hidden until a
monitor removes it) raises JobNotFoundError naming it; nothing is written for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone

from offload import JobManager
from offload.errors import JobNotFoundError, OffloadError
from offload.models import Job, JobEvent, JobIntent

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]

ACTIONS: dict[str, Callable[[Job], Any]] = {
    "stop": lambda job: job.stop(),
    "terminate": lambda job: job.terminate(),
    "pause": lambda job: job.pause(),
    "resume": lambda job: job.resume(),
    "execute": lambda job: job.execute(),
    "update_status(value)": lambda job: job.update_status("Running"),
    "status = value": lambda job: setattr(job, "status", "Meshing"),
    "update_status()": lambda job: job.update_status(),
    "resubmit": lambda job: job.resubmit(),
    "process_results": lambda job: job.process_results(),
}


@pytest.fixture
def manager() -> JobManager:
    return JobManager("missing_app")


def _make(manager: JobManager, user: Any, action: str, job_type: str) -> Job:
    """A stored job in a status where ``action`` would otherwise be allowed."""
    if job_type == "LOCAL":
        job = manager.create_job("gone", user, job_type="LOCAL", executable="true")
    else:
        job = manager.create_job("gone", user)
    job.save()
    if action == "execute":
        return job
    if job_type == "LOCAL":
        job.execute()  # Submitted
    else:
        job.update_status("Running")
    if action == "resume":
        job.update_status("Paused")
    elif action in ("resubmit", "process_results"):
        job.update_status("Results-Ready" if action == "process_results" else "Complete")
    return job


def _remove_row(job: Job) -> None:
    Job.objects.filter(pk=job.pk).delete()


def _hide(job: Job) -> None:
    Job.objects.filter(pk=job.pk).update(deleted_at=timezone.now())


#: Each action with each job type it applies to (a LOCAL job gets Paused or Results-Ready from a
#: monitor only, so resume and process_results are tried on BASIC jobs).
CASES = [
    (action, job_type)
    for action in ACTIONS
    for job_type in ("BASIC", "LOCAL")
    if not (job_type == "LOCAL" and action in ("resume", "process_results"))
]


@pytest.mark.parametrize("gone", [_remove_row, _hide], ids=["row-gone", "deleted"])
@pytest.mark.parametrize(("action", "job_type"), CASES)
def test_acting_on_a_job_that_no_longer_exists_raises_job_not_found(
    manager: JobManager, user: Any, action: str, job_type: str, gone: Callable[[Job], None]
) -> None:
    job = _make(manager, user, action, job_type)
    events = JobEvent.objects.filter(job_id=job.pk).count()
    intents = JobIntent.objects.filter(job_id=job.pk).count()
    gone(job)
    with pytest.raises(JobNotFoundError) as info:
        ACTIONS[action](job)
    assert info.value.job_id == job.pk
    assert str(info.value) == f"job {job.pk} does not exist"
    assert isinstance(info.value, OffloadError)
    # Nothing was written for it (no event, no intent left pointing at a missing row).
    assert JobEvent.objects.filter(job_id=job.pk).count() == (0 if gone is _remove_row else events)
    assert JobIntent.objects.filter(job_id=job.pk).count() == (
        0 if gone is _remove_row else intents
    )


def test_a_stale_copy_of_a_deleted_job_raises_too(manager: JobManager, user: Any) -> None:
    job = manager.create_job("hidden", user, job_type="LOCAL", executable="true")
    job.execute()
    copy = Job.objects.get(pk=job.pk)
    job.delete()  # executed: hidden now, a monitor stops it and removes the row
    assert manager.get_job(job.pk) is None
    for action in ("stop", "resubmit", "update_status()", "update_status(value)"):
        with pytest.raises(JobNotFoundError, match=f"job {job.pk} "):
            ACTIONS[action](copy)


def test_the_same_actions_on_an_existing_job_still_work(manager: JobManager, user: Any) -> None:
    job = manager.create_job("here", user)
    job.save()
    job.update_status()  # reload: fine
    job.update_status("Running")
    job.pause()
    job.resume()
    job.stop()
    job.resubmit()
    assert Job.objects.get(pk=job.pk).status == "Submitted"


@pytest.mark.parametrize("job_type", ["BASIC", "LOCAL"])
def test_deleting_a_job_twice_is_harmless(manager: JobManager, user: Any, job_type: str) -> None:
    job = _make(manager, user, "stop", job_type)
    copy = Job.objects.get(pk=job.pk)
    job.delete()
    job.delete()
    copy.delete()
    assert manager.get_job(job.pk) is None
    if job_type == "LOCAL":  # one DELETE intent, however often it was asked
        assert JobIntent.objects.filter(job_id=job.pk, action="delete").count() == 1


def test_deleting_a_job_whose_row_a_monitor_already_removed_is_harmless(
    manager: JobManager, user: Any
) -> None:
    job = manager.create_job("purged", user, job_type="LOCAL", executable="true")
    job.execute()
    copy = Job.objects.get(pk=job.pk)
    job.delete()
    _remove_row(job)  # what the monitor does once the job is stopped and its files are gone
    copy.delete()
    assert not Job.objects.filter(pk=job.pk).exists()
    assert not JobIntent.objects.filter(job_id=job.pk).exists()
