"""The engines app code gets for a job (``engine_for_job``: logs, files): one per scheduler, shared,
and built again when the scheduler's options change, so nothing is read from an old host or folder.
"""

from __future__ import annotations

from typing import Any

import pytest

from offload import JobManager
from offload.models import Job
from offload.schedulers import create_scheduler, engine_for_job


@pytest.mark.django_db
def test_the_shared_engine_follows_its_scheduler_record(user: Any) -> None:
    record = create_scheduler("pool", scheduler_type="condor", remote_workspace_root="/srv/a")
    job = JobManager("engines_app").create_job(
        "job {id}", user, job_type="CONDOR", scheduler=record, executable="/bin/true"
    )
    job.save()
    first = engine_for_job(job)
    assert engine_for_job(Job.objects.get(pk=job.pk)) is first  # shared while nothing changed
    assert first.options["remote_workspace_root"] == "/srv/a"
    record.options = {**record.options, "remote_workspace_root": "/srv/b"}
    record.save()
    second = engine_for_job(Job.objects.get(pk=job.pk))
    assert second is not first
    assert second.options["remote_workspace_root"] == "/srv/b"
    assert engine_for_job(Job.objects.get(pk=job.pk)) is second
