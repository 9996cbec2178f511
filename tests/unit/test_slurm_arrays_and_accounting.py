"""The Slurm engine's parsers on captured scheduler output: array specifications, squeue lines of
array tasks, accounting records (slurmdbd's ``sacct`` and ``sacct -c``) for the states the test
cluster cannot produce on demand (OUT_OF_MEMORY: it runs task/none and jobacct_gather/none, so
nothing enforces memory; PREEMPTED: no preemption configured), and an array's aggregate status.
"""

from __future__ import annotations

from typing import Any

import pytest

from offload.engines.base import JobHandle
from offload.engines.slurm import (
    ArrayPoll,
    SlurmEngine,
    array_from_queue,
    parse_array,
    split_array_id,
    task_record,
)
from offload.errors import InvalidJobError
from offload.status import Status
from offload.transport.base import CommandResult


@pytest.mark.parametrize(
    ("value", "text", "tasks"),
    [
        ("1-4", "1-4", [1, 2, 3, 4]),
        ("1-100%10", "1-100%10", list(range(1, 101))),
        ("0-15:4", "0-15:4", [0, 4, 8, 12]),
        ("1,3,7-9", "1,3,7-9", [1, 3, 7, 8, 9]),
        (" 5 ", "5", [5]),
        (7, "7", [7]),
    ],
)
def test_array_specifications(value: Any, text: str, tasks: list[int]) -> None:
    assert parse_array(value) == (text, tasks)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1-",
        "-3",
        "5-1",
        "1-3:0",
        "1-10%0",
        "1-10%",
        "1-10%x",
        "a",
        "1;2",
        "1 2",
        "1-2\n3",
        "1-10%2%3",
        "[1-3]",
        True,
        None,
        1.5,
        "1-5000000",
    ],
)
def test_bad_array_specifications_are_refused(value: Any) -> None:
    with pytest.raises(InvalidJobError) as info:
        parse_array(value)
    assert info.value.field == "array"


def test_an_array_may_have_at_most_max_array_tasks() -> None:
    assert len(parse_array("1-10000")[1]) == 10_000
    with pytest.raises(InvalidJobError, match="more than 10,000 tasks"):
        parse_array("0-10000")
    with pytest.raises(InvalidJobError, match="more than 5 tasks"):
        SlurmEngine({"max_array_tasks": 5}).validate({"executable": "x", "array": "1-6"})


def test_squeue_and_sacct_job_ids() -> None:
    assert split_array_id("42") == ("42", [None])
    assert split_array_id("42_7") == ("42", [7])
    assert split_array_id("42_[3-5%2]") == ("42", [3, 4, 5])
    assert split_array_id("42_[1,4]") == ("42", [1, 4])


def test_the_script_and_sbatch_line_of_an_array() -> None:
    from offload.engines.base import JobSpec

    engine = SlurmEngine()
    spec = JobSpec(5, 1, "SLURM", "a", "/w", {"executable": "x", "array": "1-3%2"})
    script = engine.render_script(spec, engine.validate(spec.parameters))
    assert "#SBATCH --array=1-3%2\n" in script
    assert '"${SLURM_ARRAY_JOB_ID}" > /w/.offload/job-5/attempt-1/jobid' in script
    assert '/w/.offload/job-5/attempt-1/tasks/"${SLURM_ARRAY_TASK_ID}.jobid"' in script
    argv = engine.submit_command(spec, "/w/.offload/job-5/attempt-1/job.sh")
    assert "--output=/w/.offload/job-5/attempt-1/stdout-%A_%a.log" in argv
    assert "--error=/w/.offload/job-5/attempt-1/stderr-%A_%a.log" in argv
    assert engine.submission_state(spec) == {"array": "1-3%2"}


def result(stdout: str, returncode: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult(("sacct",), returncode, stdout, stderr)


HANDLES = {str(n): JobHandle(n, 1, str(n), "/w") for n in (100, 101, 102, 103, 104)}


def test_accounting_records_of_states_the_test_cluster_cannot_produce() -> None:
    # sacct --allocations --parsable2 --format=JobID,State,ExitCode,Reason, as slurmdbd answers
    # (captured from Slurm 22.05 clusters; the test cluster enforces no memory limit and has no
    # preemption).
    captured = (
        "100|OUT_OF_MEMORY|0:125|None\n"
        "101|PREEMPTED|0:15|None\n"
        "102|REQUEUED|0:0|None\n"
        "102|COMPLETED|0:0|None\n"  # requeued, then ran again: the last record counts
        "103|TIMEOUT|0:0|None\n"
        "104|NODE_FAIL|1:0|None\n"
    )
    reports = SlurmEngine().parse_accounting_output(result(captured), HANDLES)
    assert (reports[100].status, reports[100].native_status) == (Status.ERROR, "OUT_OF_MEMORY")
    assert reports[100].message == "out of memory: stopped at its memory limit"
    assert (reports[101].status, reports[101].message) == (
        Status.ERROR,
        "preempted by another job and not requeued",
    )
    assert (reports[102].status, reports[102].exit_code) == (Status.COMPLETE, 0)
    assert reports[103].message == "wall time exceeded: stopped at its time limit"
    assert reports[104].message == "its node failed"


def test_jobcomp_records_read_the_same() -> None:
    # sacct -c --parsable2 --format=JobID,State,ExitCode (jobcomp/filetxt has no reason).
    reports = SlurmEngine({"accounting": "jobcomp"}).parse_accounting_output(
        result("100|OUT_OF_MEMORY|0:125\n101|REQUEUED|0:0\n"), HANDLES
    )
    assert reports[100].status == Status.ERROR
    assert (reports[101].status, reports[101].message) == (
        Status.SUBMITTED,
        "requeued by Slurm (requeued)",
    )


def array_handle(state: dict[str, Any]) -> JobHandle:
    return JobHandle(9, 1, "50", "/w", state)


def test_array_tasks_from_the_queue_and_what_is_left_for_the_accounting() -> None:
    engine = SlurmEngine()
    # squeue --noheader --array --format=%i|%T|%r|%A for an array 1-4%2 where task 1 already ran.
    lines = engine.parse_queue(
        CommandResult(
            ("squeue",),
            0,
            "50_3|PENDING|JobArrayTaskLimit|50\n50_4|PENDING|JobArrayTaskLimit|50\n"
            "50_2|RUNNING|None|52\n",
            "",
        )
    )
    queued = {str(line.task): line for line in lines}
    array = array_from_queue(array_handle({"array": "1-4%2"}), queued)
    assert array.need == {"1": ""}  # not in the queue: ask the accounting
    assert array.now["2"] == {
        "status": "RUN",
        "native_status": "RUNNING",
        "exit_code": None,
        "slurm_job_id": "52",
    }
    assert array.now["3"]["native_status"] == "PENDING (JobArrayTaskLimit)"
    assert "slurm_job_id" not in array.now["3"]  # still part of the array's own record
    # The accounting said task 1 failed: Various (others still wait).
    array.now["1"] = task_record(slurm_state("FAILED", "2:0"), "51")
    array.answered.add("1")
    report = array.report()
    assert report is not None and report.status == Status.VARIOUS
    assert report.message.startswith("4 tasks: 2 Submitted, 1 Running, 1 Error")
    assert "task 1: FAILED (exit 2)" in report.message
    assert report.state is not None and set(report.state["tasks"]) == {"1", "2", "3", "4"}


def slurm_state(state: str, exit_code: str) -> Any:
    from offload.engines.slurm import map_state

    return map_state(9, state, "", exit_code)


def test_an_array_whose_tasks_all_ended_differently_is_various_complete() -> None:
    before = {
        "1": {"status": "COM", "native_status": "COMPLETED", "exit_code": 0},
        "2": {"status": "ERR", "native_status": "FAILED", "exit_code": 5},
    }
    array = array_from_queue(array_handle({"array": "1-2", "tasks": before}), {})
    assert array.need == {}  # both settled earlier: not asked again
    report = array.report()
    assert report is not None and report.status == Status.VARIOUS_COMPLETE
    assert report.exit_code == 5
    assert report.state is None  # nothing changed: nothing to write


def test_an_array_nobody_knows_any_more_is_stale_not_finished() -> None:
    before = {"1": {"status": "RUN", "native_status": "RUNNING", "exit_code": None}}
    array = array_from_queue(array_handle({"array": "1-2", "tasks": before}), {})
    assert set(array.need) == {"1", "2"}
    assert array.report() is None  # neither the queue nor the accounting answered
    # A task the accounting does not know yet keeps its last state: never assumed finished.
    array.now["2"] = task_record(slurm_state("COMPLETED", "0:0"))
    array.heard = True
    report = array.report()
    assert report is not None and report.status == Status.VARIOUS


def test_an_empty_array_poll_reports_nothing() -> None:
    assert ArrayPoll(array_handle({"array": "1"}), {}).report() is None
