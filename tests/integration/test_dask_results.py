"""A DaskJob's process_results_function as Tethys calls it, without a Dask scheduler: the job is put
where the monitor leaves it (attempt 1, Results-Ready, its result stored in its workspace) and its
results are processed by process_results()."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from offload import JobManager
from offload.models import DaskJob, Job
from offload.status import Status

pytest.importorskip("distributed")

from offload.engines import dask as dask_engine

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]

received: list[tuple[Any, ...]] = []


def double(result: Any) -> Any:
    received.append((result,))
    return result * 2


def returns_nothing(result: Any) -> None:
    received.append((result,))


def summarise(job: Any, result: Any) -> str:
    received.append((job.pk, result))
    return f"job {job.pk} made {result}"


def just_look(job: Any, result: Any) -> None:
    received.append((job.pk, result))


def tag(result: Any) -> str:
    received.append((result,))
    return "tagged"


def fails(result: Any) -> Any:
    raise ValueError(f"{result} is not a valid mesh")


def unstorable(result: Any) -> Any:
    return threading.Lock()


@pytest.fixture(autouse=True)
def _received() -> None:
    received.clear()


def _result_file(job: Job) -> Path:
    """Where DaskJob.result reads the job's result from: the engine's own helper."""
    return dask_engine.result_path(job.workspace, job.pk, job.attempt)


def _finished(user: Any, function: Any, result: Any = 7, **kwargs: Any) -> DaskJob:
    """A DaskJob as the monitor leaves it when its task finished: its result stored in its
    workspace, Results-Ready."""
    manager = JobManager("dask_results")
    job = manager.create_job(
        "d", user, job_type="DASK", process_results_function=function, **kwargs
    )
    job.save()
    Job.objects.filter(pk=job.pk).update(attempt=1)
    job = Job.objects.get(pk=job.pk)
    if not kwargs.get("forget"):
        # As the monitor stores it; the engine state names no file (as after a monitor that
        # crashed and found the stored result), so the job finds it by its attempt alone.
        dask_engine.store_result(job.workspace, job.pk, job.attempt, result)
    Job.objects.filter(pk=job.pk).update(_status=Status.RESULTS_READY.value, engine_state={})
    fresh = Job.objects.get(pk=job.pk)
    assert isinstance(fresh, DaskJob)
    return fresh


def test_a_one_argument_function_gets_the_result_and_returns_the_new_one(user: Any) -> None:
    job = _finished(user, double)
    assert job.result == 7
    job.process_results()
    done = Job.objects.get(pk=job.pk)
    assert isinstance(done, DaskJob)
    assert done.status == "Complete"
    assert received == [(7,)]
    assert done.result == 14


def test_what_a_one_argument_function_returns_is_the_result_even_none(user: Any) -> None:
    job = _finished(user, returns_nothing)
    job.process_results()
    done = Job.objects.get(pk=job.pk)
    assert isinstance(done, DaskJob)
    assert (done.status, done.result) == ("Complete", None)


def test_the_two_argument_form_replaces_the_result_unless_it_returns_none(user: Any) -> None:
    job = _finished(user, summarise)
    job.process_results()
    done = Job.objects.get(pk=job.pk)
    assert isinstance(done, DaskJob)
    assert (done.status, done.result) == ("Complete", f"job {job.pk} made 7")
    assert received == [(job.pk, 7)]

    kept = _finished(user, just_look, result={"mesh": [1, 2]})
    kept.process_results()
    done = Job.objects.get(pk=kept.pk)
    assert isinstance(done, DaskJob)
    assert (done.status, done.result) == ("Complete", {"mesh": [1, 2]})


def test_an_exception_in_the_function_makes_the_job_error_with_the_message(user: Any) -> None:
    job = _finished(user, fails)
    job.process_results()  # no retry when called by the app
    done = Job.objects.get(pk=job.pk)
    assert isinstance(done, DaskJob)
    assert done.status == "Error"
    assert done.status_message == "result processing failed: ValueError: 7 is not a valid mesh"
    assert done.result == 7  # the task's result is left as it was


def test_a_return_value_that_cannot_be_stored_makes_the_job_error(user: Any) -> None:
    job = _finished(user, unstorable)
    job.process_results()
    done = Job.objects.get(pk=job.pk)
    assert isinstance(done, DaskJob)
    assert done.status == "Error"
    assert done.status_message.startswith(
        "result processing failed: what it returned could not be stored as the job's result: "
    )
    assert done.result == 7


def test_a_forgotten_result_is_none_and_what_the_function_returns_is_not_kept(
    user: Any,
) -> None:
    job = _finished(user, tag, forget=True)
    job.process_results()
    done = Job.objects.get(pk=job.pk)
    assert isinstance(done, DaskJob)
    assert (done.status, done.result) == ("Complete", None)
    assert received == [(None,)]
    assert not _result_file(done).exists()
