"""The engine contract's plain data, and the rule that engines import nothing from Django."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from offload.engines import ENGINE_CLASSES, build_engine, engine_class, submission_key
from offload.engines.base import (
    Engine,
    JobHandle,
    JobSpec,
    NativeReport,
    SubmitOutcome,
    SubmitResult,
)
from offload.engines.basic import BasicEngine
from offload.errors import ConfigurationError, NotSupportedError
from offload.status import Status


def test_job_spec_roundtrips_through_json() -> None:
    spec = JobSpec(
        job_id=7,
        attempt=2,
        job_type="LOCAL",
        name="run 7",
        workspace="/ws/7",
        parameters={"executable": "python", "arguments": ["a", "ü"], "environment": {"A": "1"}},
    )
    data = spec.to_dict()
    assert data == {
        "job_id": 7,
        "attempt": 2,
        "job_type": "LOCAL",
        "name": "run 7",
        "workspace": "/ws/7",
        "parameters": {"executable": "python", "arguments": ["a", "ü"], "environment": {"A": "1"}},
    }
    again = JobSpec.from_dict(json.loads(json.dumps(data)))
    assert again == spec
    assert again.key == spec.key == "offload-7-2"


def test_job_handle_roundtrips_through_json() -> None:
    handle = JobHandle(
        job_id=3, attempt=1, native_id="1234", workspace="/ws/3", state={"pid": 1234, "dir": "/d"}
    )
    data = handle.to_dict()
    assert data == {
        "job_id": 3,
        "attempt": 1,
        "native_id": "1234",
        "workspace": "/ws/3",
        "state": {"pid": 1234, "dir": "/d"},
    }
    again = JobHandle.from_dict(json.loads(json.dumps(data)))
    assert again == handle
    assert again.key == "offload-3-1"


def test_from_dict_ignores_unknown_keys_and_defaults_missing_mappings() -> None:
    handle = JobHandle.from_dict(
        {"job_id": 1, "attempt": 1, "native_id": "", "workspace": "/w", "extra": "ignored"}
    )
    assert handle.state == {}
    spec = JobSpec.from_dict(
        {"job_id": 1, "attempt": 1, "job_type": "BASIC", "name": "n", "workspace": "/w", "x": 1}
    )
    assert spec.parameters == {}


def test_submission_key() -> None:
    assert submission_key(12, 3) == "offload-12-3"


def test_results_and_reports_defaults() -> None:
    result = SubmitResult(1, SubmitOutcome.SUBMITTED, native_id="9")
    assert result.status is Status.SUBMITTED
    assert result.adopted is False
    report = NativeReport(1, None)
    assert report.status is None and report.state is None


def test_engine_registry() -> None:
    assert set(ENGINE_CLASSES) >= {"basic", "local"}
    assert engine_class("basic") is BasicEngine
    with pytest.raises(ConfigurationError, match=r"valid: .*basic.*local"):
        engine_class("no-such-engine")


def test_basic_engine_runs_nothing() -> None:
    engine = build_engine("basic")
    assert not engine.executes
    assert engine.can_pause
    spec = JobSpec(1, 1, "BASIC", "n", "/w")
    [result] = engine.submit_batch([spec])
    assert result.outcome is SubmitOutcome.SUBMITTED
    assert engine.poll_batch([JobHandle(1, 1, "", "/w")]) == {}


def test_engine_defaults_raise_not_supported() -> None:
    class Minimal(Engine):
        kind = "minimal"

        def submit_batch(self, specs):  # type: ignore[no-untyped-def]
            return []

        def poll_batch(self, handles):  # type: ignore[no-untyped-def]
            return {}

    engine = Minimal({"a": 1})
    assert engine.options == {"a": 1}
    assert not Minimal.can_pause
    handle = JobHandle(1, 1, "x", "/w")
    for action in (engine.cancel, engine.pause, engine.resume):
        with pytest.raises(NotSupportedError, match="minimal"):
            action(handle)
    assert engine.get_logs(handle) == {}
    assert engine.validate({"k": "v"}) == {"k": "v"}


def test_engines_import_no_django() -> None:
    code = (
        "import sys, offload.engines.local, offload.engines.base, offload.engines.basic, "
        "offload.engines.local_runner\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_status_and_templates_import_no_django() -> None:
    code = (
        "import sys, offload, offload.status, offload.templates, offload.errors\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_aggregate_statuses_follows_tethys() -> None:
    from offload.engines.base import aggregate_statuses

    assert aggregate_statuses([]) is None
    assert aggregate_statuses([Status.COMPLETE] * 3) == Status.COMPLETE
    assert aggregate_statuses([Status.ERROR, Status.ERROR]) == Status.ERROR
    assert aggregate_statuses([Status.RUNNING, Status.COMPLETE]) == Status.VARIOUS
    assert aggregate_statuses([Status.SUBMITTED, Status.ERROR]) == Status.VARIOUS
    assert aggregate_statuses([Status.COMPLETE, Status.ERROR]) == Status.VARIOUS_COMPLETE
    assert aggregate_statuses([Status.ABORTED, Status.COMPLETE]) == Status.VARIOUS_COMPLETE
