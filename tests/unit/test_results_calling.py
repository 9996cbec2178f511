"""How a finished job's process_results_function is called, and whether what it returns becomes
the job's result (no database, no Dask: plain stand-ins for the jobs)."""

from __future__ import annotations

from typing import Any

import pytest

from offload.store import call_results_function


class PlainJob:
    """A job type without a result of its own (BASIC, LOCAL, the batch schedulers)."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.engine_state = state or {}


class ResultJob(PlainJob):
    """A job type that keeps a result (as DaskJob: results_argument and store_result)."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self._result = result

    def results_argument(self) -> Any:
        return self._result

    def store_result(self, value: Any) -> None:  # pragma: no cover - run_results calls it
        self._result = value


calls: list[tuple[Any, ...]] = []


def one(arg: Any) -> Any:
    calls.append((arg,))
    return {"processed": arg if not isinstance(arg, PlainJob) else "job"}


def one_returning_none(arg: Any) -> None:
    calls.append((arg,))


def two(job: Any, result: Any) -> Any:
    calls.append((job, result))
    return f"summary of {result}"


def two_returning_none(job: Any, result: Any) -> None:
    calls.append((job, result))


def star(*args: Any) -> str:
    calls.append(args)
    return "from *args"


class Processor:
    def method(self, result: Any) -> str:
        calls.append((result,))
        return "from a method"


@pytest.fixture(autouse=True)
def _calls() -> None:
    calls.clear()


def test_a_one_argument_function_gets_a_dask_jobs_result_and_its_return_is_kept() -> None:
    job = ResultJob(7)
    assert call_results_function(job, one) == (True, {"processed": 7})
    assert calls == [(7,)]


def test_none_returned_by_a_one_argument_function_is_kept_as_tethys_does() -> None:
    assert call_results_function(ResultJob(7), one_returning_none) == (True, None)


def test_a_bound_method_of_one_argument_gets_the_result() -> None:
    assert call_results_function(ResultJob("r"), Processor().method) == (True, "from a method")
    assert calls == [("r",)]


def test_the_two_argument_form_gets_the_job_and_the_result() -> None:
    job = ResultJob(7)
    assert call_results_function(job, two) == (True, "summary of 7")
    assert calls == [(job, 7)]
    calls.clear()
    # Returning None keeps the result as it is.
    assert call_results_function(job, two_returning_none) == (False, None)
    assert calls == [(job, 7)]
    calls.clear()
    assert call_results_function(job, star) == (True, "from *args")
    assert calls == [(job, 7)]


def test_other_job_types_pass_the_job_and_keep_nothing() -> None:
    job = PlainJob({"result": "from the engine"})
    assert call_results_function(job, one) == (False, {"processed": "job"})
    assert calls == [(job,)]
    calls.clear()
    assert call_results_function(job, two) == (False, "summary of from the engine")
    assert calls == [(job, "from the engine")]


def test_an_exception_in_the_function_is_raised_to_the_caller() -> None:
    def failing(result: Any) -> Any:
        raise ValueError(f"cannot use {result}")

    with pytest.raises(ValueError, match="cannot use 7"):
        call_results_function(ResultJob(7), failing)
