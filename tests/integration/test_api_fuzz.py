"""A schema-driven fuzz of the REST API: schemathesis generates requests from the app's own
OpenAPI document and sends them to the WSGI app in-process; no response may be a server error.

Bounded: at most 30 examples per operation (about 11 operations), no deadline per example."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from offload import JobManager
from offload.models import Scheduler
from offload.web.access import create_api_token

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]


@pytest.fixture
def fuzz_token(django_user_model: Any) -> Iterator[str]:
    """A superuser's token (every operation is reachable), a few jobs and a scheduler to hit.
    Requests run in this test's transaction: the WSGI handler must not close its connection."""
    root = django_user_model.objects.create_superuser("fuzzer", password="pw-fuzzer")
    manager = JobManager("fuzz")
    for i in range(3):
        job = manager.create_job(f"fuzz {i}", root, job_type="BASIC")
        job.save()
    Scheduler.objects.create(name="fuzz-sched", scheduler_type="local")
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield create_api_token(root, "fuzz")[1]
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(fuzz_token: str) -> Any:
    return schemathesis.openapi.from_wsgi("/jobs/api/openapi.json", get_wsgi_application())


def test_no_server_errors(api_schema: Any, fuzz_token: str) -> None:
    headers = {"Authorization": f"Bearer {fuzz_token}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 13
    for operation in operations:

        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy())
        def fuzz(case: Any) -> None:
            response = case.call(headers=headers)
            case.validate_response(response, checks=[not_a_server_error])

        fuzz()


def test_the_fuzz_catches_a_server_error(
    api_schema: Any, fuzz_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Negative control: with listing broken on purpose, the same fuzz must fail.
    from offload.web import api

    def broken(job: Any) -> Any:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(api, "job_out", broken)
    operation = api_schema["/jobs/api/jobs"]["GET"]

    @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy())
    def fuzz(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {fuzz_token}"})
        case.validate_response(response, checks=[not_a_server_error])

    with pytest.raises(BaseException) as info:  # an exception group of failures
        fuzz()
    assert "Server error" in "".join(traceback.format_exception(info.value))
