"""The Slurm engine's pure parts: state mapping, quoting, script rendering, validation, options
from the environment. The engine against a real cluster is in tests/integration/test_slurm.py."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from offload.conf import engine_options_from_environment
from offload.engines import engine_class
from offload.engines.base import JobSpec
from offload.engines.slurm import SlurmEngine, bash_quote, map_state
from offload.errors import (
    ConfigurationError,
    EngineUnavailableError,
    InvalidJobError,
    SubmissionRejectedError,
)
from offload.status import Status
from offload.templates import SlurmJobTemplate
from offload.transport.base import CommandResult


@pytest.mark.parametrize(
    ("state", "reason", "exit_code", "status", "message"),
    [
        ("PENDING", "Priority", "", Status.SUBMITTED, "queued: Priority"),
        ("PENDING", "JobHeldAdmin", "", Status.PAUSED, "held (JobHeldAdmin)"),
        ("RUNNING", "None", "", Status.RUNNING, ""),
        ("COMPLETING", "", "", Status.RUNNING, ""),
        ("SUSPENDED", "", "", Status.PAUSED, "suspended"),
        ("COMPLETED", "", "0:0", Status.COMPLETE, "exited with code 0"),
        ("FAILED", "", "3:0", Status.ERROR, "exited with code 3"),
        ("FAILED", "", "0:9", Status.ERROR, "killed by signal 9"),
        ("TIMEOUT", "", "0:15", Status.ERROR, "wall time exceeded: stopped at its time limit"),
        ("OUT_OF_MEMORY", "", "0:125", Status.ERROR, "out of memory: stopped at its memory limit"),
        ("NODE_FAIL", "", "", Status.ERROR, "its node failed"),
        ("CANCELLED by 0", "", "0:15", Status.ABORTED, "cancelled"),
        ("REQUEUED", "", "", Status.SUBMITTED, "requeued by Slurm (requeued)"),
        ("SOMETHING_NEW", "", "", None, "unknown Slurm state SOMETHING_NEW"),
    ],
)
def test_states_map_with_reasons(
    state: str, reason: str, exit_code: str, status: Status | None, message: str
) -> None:
    report = map_state(7, state, reason, exit_code)
    assert (report.job_id, report.status, report.message) == (7, status, message)
    assert report.native_status.startswith(state.split()[0])


def test_the_exit_code_is_kept() -> None:
    assert map_state(1, "FAILED", "", "3:0").exit_code == 3
    assert map_state(1, "COMPLETED", "", "0:0").exit_code == 0


@pytest.mark.parametrize(
    "value", ["plain", "", "a b", "it's", "$(x) `y` ; | &", "line1\nline2", "tab\there\\", "\x01z"]
)
def test_bash_quote_round_trips_on_one_line(value: str) -> None:
    word = bash_quote(value)
    assert "\n" not in word
    out = subprocess.run(
        ["bash", "-c", f"printf '%s' {word}"], capture_output=True, text=True, check=True
    ).stdout
    assert out == value


def spec(**parameters: Any) -> JobSpec:
    return JobSpec(5, 2, "SLURM", "my job", "/work/ws", parameters)


def test_the_script_has_directives_then_the_quoted_command() -> None:
    engine = SlurmEngine({"partition": "debug"})
    params = engine.validate(
        {"executable": "echo", "arguments": ["a b", "$HOME"], "wall_time": 10, "memory": "2g"}
    )
    script = engine.render_script(spec(), params)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "#SBATCH --job-name=my_job" in lines
    assert "#SBATCH --comment=offload-5-2" in lines
    assert "#SBATCH --partition=debug" in lines
    assert "#SBATCH --time=10" in lines
    assert "#SBATCH --mem=2G" in lines
    assert lines[-1] == "exec echo 'a b' '$HOME'"
    argv = engine.submit_command(spec(), "/work/ws/.offload/job-5/attempt-2/job.sh")
    assert argv[0] == "sbatch" and "--parsable" in argv
    assert "--output=/work/ws/.offload/job-5/attempt-2/stdout.log" in argv
    assert argv[-1] == "/work/ws/.offload/job-5/attempt-2/job.sh"


def test_a_script_body_is_written_verbatim() -> None:
    engine = SlurmEngine()
    body = "set -e\nfor i in 1 2; do echo $i; done\n"
    script = engine.render_script(spec(), engine.validate({"script": body}))
    assert script.endswith(body + "\n")


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({}, "executable"),
        ({"script": "x", "executable": "y"}, "script"),
        ({"executable": "x", "array": "1-10;x"}, "array"),
        ({"executable": "x", "array": "1-100000"}, "array"),
        ({"executable": "x", "dependencies": ["x"]}, "dependencies[0]"),
        ({"executable": "x", "dependencies": [{"type": "before", "job": 1}]}, "dependencies[0]"),
        ({"executable": "x", "dependencies": 3}, "dependencies"),
        ({"executable": "x", "native_dependencies": [{"native_id": "1;x"}]}, "native_dependencies"),
        ({"executable": "x", "partition": "a;b"}, "partition"),
        ({"executable": "x", "wall_time": "1:2:3:4"}, "wall_time"),
        ({"executable": "x", "wall_time": True}, "wall_time"),
        ({"executable": "x", "memory": "0"}, "memory"),
        ({"executable": "x", "cpus_per_task": -1}, "cpus_per_task"),
        ({"executable": "x", "environment": {"A": None}}, "environment.A"),
        ({"executable": "x", "extra_directives": "--a\n--b"}, "extra_directives[0]"),
        ({"executable": "x", "working_directory": ""}, "working_directory"),
    ],
)
def test_bad_parameters_name_their_field(parameters: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidJobError) as info:
        SlurmEngine().validate(parameters)
    assert info.value.field == field


@pytest.mark.parametrize("wall_time", ["30", "5:00", "01:00:00", "2-0", "1-12:30", "1-00:00:01"])
def test_wall_time_formats(wall_time: str) -> None:
    assert SlurmEngine().validate({"executable": "x", "wall_time": wall_time})["wall_time"] == (
        wall_time
    )


def test_dependencies_become_one_directive() -> None:
    engine = SlurmEngine()
    params = engine.validate(
        {
            "executable": "x",
            "dependencies": [4, {"type": "afterany", "job": "5"}],
            "native_dependencies": [
                {"type": "afterok", "native_id": "40"},
                {"type": "afterany", "native_id": "41"},
            ],
        }
    )
    assert params["dependencies"] == [
        {"type": "afterok", "job": 4},
        {"type": "afterany", "job": 5},
    ]
    assert "#SBATCH --dependency=afterok:40,afterany:41\n" in engine.render_script(spec(), params)


def test_a_dependency_that_can_never_be_met_is_an_error() -> None:
    report = map_state(3, "PENDING", "DependencyNeverSatisfied")
    assert report.status == Status.ERROR
    assert "never run" in report.message


def test_a_failing_sbatch_is_a_refusal_unless_slurm_is_unreachable() -> None:
    engine = SlurmEngine()

    def failed(stderr: str) -> CommandResult:
        return CommandResult(("sbatch",), 1, "", stderr)

    refused = engine.submit_error(failed("sbatch: error: invalid partition specified: nope"))
    assert isinstance(refused, SubmissionRejectedError)
    assert "invalid partition" in str(refused)
    unreachable = engine.submit_error(
        failed("sbatch: error: Batch job submission failed: Unable to contact slurm controller")
    )
    assert isinstance(unreachable, EngineUnavailableError)


def test_a_bad_accounting_option_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="accounting"):
        SlurmEngine({"accounting": "mysql"})


def test_engine_and_template_are_registered() -> None:
    assert engine_class("slurm") is SlurmEngine
    assert SlurmJobTemplate("t").type == "SLURM"


def test_engine_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_ENGINE_SLURM", '{"partition": "debug"}')
    assert engine_options_from_environment()["slurm"] == {"partition": "debug"}
    monkeypatch.setenv("OFFLOAD_ENGINE_SLURM", "[1]")
    with pytest.raises(ConfigurationError, match="OFFLOAD_ENGINE_SLURM"):
        engine_options_from_environment()
