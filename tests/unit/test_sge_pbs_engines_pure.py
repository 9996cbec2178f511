"""The Grid Engine and PBS engines' pure parts, on output captured from the real commands (Son of
Grid Engine 8.1.9; Slurm 22.05's PBS wrappers; PBS Pro's ``qstat -f`` layout): state mapping, the
qstat/qacct parsers, script writing, validation. The engines against real clusters are in
tests/integration/test_sge.py and test_pbs.py."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from offload.engines import engine_class
from offload.engines.base import JobSpec
from offload.engines.batch_common import (
    expand_task_list,
    memory_megabytes,
    parse_array,
    script_body,
    wall_time_seconds,
)
from offload.engines.pbs import PbsEngine, map_finished, parse_qstat_full
from offload.engines.pbs import map_queue_state as pbs_state
from offload.engines.sge import (
    AccountingRecord,
    SgeEngine,
    map_accounting,
    map_queue_state,
    parse_qacct,
    parse_qstat_xml,
)
from offload.errors import InvalidJobError, SubmissionRejectedError
from offload.status import Status
from offload.templates import PbsJobTemplate, SgeJobTemplate
from offload.transport.base import CommandResult

QSTAT_XML = """<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
    <job_list state="running">
      <JB_job_number>6</JB_job_number>
      <JB_name>arr</JB_name>
      <state>r</state>
      <tasks>3</tasks>
    </job_list>
    <job_list state="running">
      <JB_job_number>7</JB_job_number>
      <state>r</state>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>6</JB_job_number>
      <state>qw</state>
      <tasks>4-6:1</tasks>
    </job_list>
    <job_list state="pending">
      <JB_job_number>8</JB_job_number>
      <state>hqw</state>
      <predecessor_jobs_req>7</predecessor_jobs_req>
      <predecessor_jobs>7</predecessor_jobs>
    </job_list>
  </job_info>
</job_info>
"""

QACCT = """==============================================================
qname        offload.q
hostname     vm
jobname      wt
jobnumber    3
taskid       undefined
failed       37  : qmaster enforced h_rt, h_cpu, or h_vmem limit
exit_status  137                  (Killed)
ru_wallclock 3s
category     -q offload.q -l h_rt=3
==============================================================
qname        offload.q
jobnumber    2
taskid       2
failed       0
exit_status  3
ru_wallclock 0s
"""

PBS_WRAPPER = """Job Id:\t8
\tJob_Name = offload-1-1-343f3ea2
\tJob_Owner = root@localhost
\tjob_state = C
\tqueue = debug
\tqtime = Sat Nov 21 16:21:10 2026
\tmtime = Sat Nov 21 16:21:11 2026
\tctime = Sat Nov 21 16:22:12 2026
\tPriority = 4294901753
\tResource_List.walltime = 00:01:00

Job Id:\t9
\tJob_Name = held
\tjob_state = Q
\tPriority = 0
"""

PBS_PRO = """Job Id: 12.server
    Job_Name = offload-3-1-abcdef12
    job_state = F
    Exit_status = 271
    Variable_List = PBS_O_HOME=/home/u,PBS_O_PATH=/usr/bin:/bin,
\tPBS_O_WORKDIR=/home/u
    resources_used.walltime = 00:00:05
    Resource_List.walltime = 01:00:00
"""


# -- shared pieces -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30", 1800), (5, 300), ("01:30", 90), ("1:00:00", 3600), ("1-02", 93600), ("0:03", 3)],
)
def test_wall_times_in_slurms_forms(value: Any, seconds: int) -> None:
    assert wall_time_seconds(value) == seconds


@pytest.mark.parametrize("value", ["soon", "0", "0:00", True, "1:2:3:4", "-5"])
def test_bad_wall_times_are_refused(value: Any) -> None:
    with pytest.raises(InvalidJobError) as info:
        wall_time_seconds(value)
    assert info.value.field == "wall_time"


def test_memory_sizes() -> None:
    assert [memory_megabytes(v) for v in ("500", "2G", "2g", "512M", "100mb", "1T", "1024K")] == [
        500,
        2048,
        2048,
        512,
        100,
        1048576,
        1,
    ]
    for bad in ("lots", "0", "1.5G", "100b", True):
        with pytest.raises(InvalidJobError):
            memory_megabytes(bad)


def test_array_ranges() -> None:
    assert parse_array("1-100%10") == (1, 100, 1, 10)
    assert parse_array("2-10:2") == (2, 10, 2, None)
    assert parse_array("7") == (7, 7, 1, None)
    assert parse_array(None) is None
    for bad in ("0-3", "5-1", "1-", "a-b", "1-3%0"):
        with pytest.raises(InvalidJobError):
            parse_array(bad)
    assert expand_task_list("2-6:2,9") == ["2", "4", "6", "9"]


def test_a_recorded_script_runs_verbatim_and_keeps_its_exit_code(tmp_path: Path) -> None:
    folder = tmp_path / ".offload" / "job-1" / "attempt-1"
    folder.mkdir(parents=True)
    script = "echo one\ncat <<'EOF'\nnot the end: OFFLOAD_SCRIPT_END\nEOF\nexit 5\n"
    lines = script_body(
        job_id=1,
        attempt=1,
        workspace=str(tmp_path),
        name="x",
        params={"script": script, "environment": {"A": "$(nope)"}},
        native_id_variable="PBS_JOBID:-$SLURM_JOB_ID",
        record_exit_code=True,
    )
    result = subprocess.run(
        ["bash", "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        env={"PBS_JOBID": "42", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 5
    assert result.stdout == "one\nnot the end: OFFLOAD_SCRIPT_END\n"
    assert (folder / "exit_code").read_text() == "5\n"
    assert (folder / "jobid").read_text() == "42\n"


# -- Grid Engine ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "waiting", "status", "message"),
    [
        ("qw", "", Status.SUBMITTED, "queued"),
        ("hqw", "", Status.PAUSED, "held"),
        ("hqw", "7", Status.SUBMITTED, "waiting for jobs 7 to end"),
        ("r", "", Status.RUNNING, ""),
        ("t", "", Status.RUNNING, ""),
        ("s", "", Status.PAUSED, "suspended"),
        ("S", "", Status.PAUSED, "suspended"),
        ("Rq", "", Status.SUBMITTED, "requeued (rescheduled)"),
        ("Eqw", "", Status.ERROR, "Grid Engine put the job in its error state (Eqw)"),
        ("dr", "", Status.RUNNING, "being deleted"),
        ("zz", "", None, "unknown Grid Engine state 'zz'"),
    ],
)
def test_sge_queue_states(state: str, waiting: str, status: Status | None, message: str) -> None:
    report = map_queue_state(3, state, waiting)
    assert (report.status, report.message, report.native_status) == (status, message, state)


def test_sge_qstat_xml_is_read_per_task() -> None:
    entries = parse_qstat_xml(QSTAT_XML)
    assert [(e.native_id, e.state, e.tasks, e.waiting_for) for e in entries] == [
        ("6", "r", ["3"], ""),
        ("7", "r", [], ""),
        ("6", "qw", ["4", "5", "6"], ""),
        ("8", "hqw", [], "7"),
    ]


def test_sge_accounting_records_and_their_meaning() -> None:
    wall, task = parse_qacct(QACCT)
    assert (wall.native_id, wall.task, wall.failed, wall.exit_status) == ("3", "", 37, 137)
    assert (task.native_id, task.task, task.exit_status) == ("2", "2", 3)
    report = map_accounting(1, wall)
    assert report.status == Status.ERROR
    assert report.message == "wall time exceeded: stopped at its time limit"
    assert report.native_status == "failed 37, exit 137"
    assert map_accounting(1, task).message == "exited with code 3"

    def record(failed: int, code: int, category: str = "") -> AccountingRecord:
        return AccountingRecord("5", "", failed, "", code, 1.0, category)

    assert map_accounting(1, record(0, 0)).status == Status.COMPLETE
    assert map_accounting(1, record(100, 137), cancelled=True).status == Status.ABORTED
    assert map_accounting(1, record(100, 137)).message == "killed by signal 9"
    memory = map_accounting(1, record(37, 137, "-l h_vmem=100M"))
    assert memory.message == "out of memory: stopped at its memory limit"
    dependency = map_accounting(1, record(0, 97), dependency="job 4 … failed\n")
    assert dependency.status == Status.ERROR and "can never run: job 4" in dependency.message
    assert map_accounting(1, record(0, 97)).message == "exited with code 97"


def sge_spec(**parameters: Any) -> JobSpec:
    return JobSpec(5, 2, "SGE", "my job", "/work/ws", parameters)


def test_the_sge_script_has_directives_then_the_quoted_command() -> None:
    engine = engine_class("sge")({"queue": "all.q"})
    assert isinstance(engine, SgeEngine)
    params = engine.validate(
        {
            "executable": "echo",
            "arguments": ["a b", "$HOME"],
            "wall_time": 10,
            "memory": "2g",
            "parallel_environment": "smp",
            "slots": 4,
            "array": "1-10%2",
            "native_dependencies": [
                {"type": "afterok", "native_id": "11"},
                {"type": "afterany", "native_id": "12"},
            ],
        }
    )
    script = engine.render_script(sge_spec(), params)
    directives = [line for line in script.splitlines() if line.startswith("#$ ")]
    assert directives == [
        "#$ -S /bin/bash",
        "#$ -N my_job",
        "#$ -ac offload_key=offload-5-2",
        "#$ -q all.q",
        "#$ -pe smp 4",
        "#$ -l h_vmem=2048M",
        "#$ -l h_rt=0:10:00",
        "#$ -t 1-10:1",
        "#$ -tc 2",
        "#$ -hold_jid 11,12",
    ]
    assert "offload_dependency afterok 11\n" in script
    assert "offload_dependency afterany" not in script
    assert script.rstrip().endswith("exec echo 'a b' '$HOME'")
    argv = engine.submit_command(
        sge_spec(array="1-10%2"), "/work/ws/.offload/job-5/attempt-2/job.sh"
    )
    assert argv[:4] == ["qsub", "-terse", "-b", "n"]
    assert "/work/ws/.offload/job-5/attempt-2/stdout.$TASK_ID.log" in argv


def test_sge_ids_and_refusals() -> None:
    engine = SgeEngine({})
    assert engine.parse_submit_output(CommandResult(["qsub"], 0, "12.1-10:1\n", "")) == "12"
    assert engine.parse_submit_output(CommandResult(["qsub"], 0, "13\n", "")) == "13"
    with pytest.raises(SubmissionRejectedError):
        engine.parse_submit_output(CommandResult(["qsub"], 0, "Your job was refused\n", ""))
    with pytest.raises(InvalidJobError) as info:
        engine.submit_command(JobSpec(1, 1, "SGE", "x", "/a$b", {}), "/a$b/job.sh")
    assert info.value.field == "workspace"
    with pytest.raises(InvalidJobError) as info:
        engine.validate({"executable": "true", "native_dependencies": [{"type": "x"}]})
    assert info.value.field == "native_dependencies"


# -- PBS --------------------------------------------------------------------------------------------
def test_pbs_qstat_full_blocks_and_continuations() -> None:
    jobs = parse_qstat_full(PBS_WRAPPER)
    assert set(jobs) == {"8", "9"}
    assert jobs["8"]["Job_Name"] == "offload-1-1-343f3ea2"
    pro = parse_qstat_full(PBS_PRO)["12.server"]
    assert pro["Exit_status"] == "271"
    assert pro["Variable_List"].endswith("PBS_O_WORKDIR=/home/u")


@pytest.mark.parametrize(
    ("fields", "wrappers", "status", "message"),
    [
        ({"job_state": "Q"}, False, Status.SUBMITTED, "queued"),
        ({"job_state": "Q", "Priority": "0"}, False, Status.SUBMITTED, "queued"),
        ({"job_state": "Q", "Priority": "0"}, True, Status.PAUSED, "held"),
        ({"job_state": "H"}, False, Status.PAUSED, "held"),
        ({"job_state": "W"}, False, Status.SUBMITTED, "waiting to start"),
        ({"job_state": "R"}, False, Status.RUNNING, ""),
        ({"job_state": "E"}, False, Status.RUNNING, ""),
        ({"job_state": "S"}, False, Status.PAUSED, "suspended"),
    ],
)
def test_pbs_queue_states(
    fields: dict[str, str], wrappers: bool, status: Status, message: str
) -> None:
    report = pbs_state(1, fields, wrappers)
    assert report is not None and (report.status, report.message) == (status, message)


def test_pbs_finished_jobs() -> None:
    assert pbs_state(1, {"job_state": "C"}) is None
    wrapper = parse_qstat_full(PBS_WRAPPER)["8"]
    timeout = map_finished(1, wrapper, 143, cancelled=False)
    assert (timeout.status, timeout.message) == (
        Status.ERROR,
        "wall time exceeded: stopped at its time limit",
    )
    assert map_finished(1, {"job_state": "C"}, 0, False).status == Status.COMPLETE
    assert map_finished(1, {"job_state": "C"}, 3, False).message == "exited with code 3"
    assert map_finished(1, {"job_state": "C"}, None, True).status == Status.ABORTED
    killed = map_finished(1, {"job_state": "C"}, None, False)
    assert (killed.status, killed.message) == (Status.ERROR, "ended without an exit code (killed?)")
    pro = parse_qstat_full(PBS_PRO)["12.server"]
    assert map_finished(1, pro, 271, False).message == "killed by signal 15"
    assert map_finished(1, {}, -11, False).message == "stopped at its wall time"


def pbs_spec(**parameters: Any) -> JobSpec:
    return JobSpec(5, 2, "PBS", "my job", "/work/ws", parameters)


def test_the_pbs_script_and_command_line() -> None:
    engine = PbsEngine({"bin": "/opt/pbs/bin", "queue": "batch"})
    params = engine.validate(
        {
            "script": "echo hi\n",
            "nodes": 2,
            "ppn": 4,
            "memory": "1G",
            "wall_time": "2:00:00",
            "account": "proj1",
            "native_dependencies": [
                {"type": "afterok", "native_id": "11"},
                {"type": "afterok", "native_id": "12.server"},
            ],
        }
    )
    script = engine.render_script(pbs_spec(), params)
    directives = [line for line in script.splitlines() if line.startswith("#PBS ")]
    assert directives[1:] == [
        "#PBS -q batch",
        "#PBS -A proj1",
        "#PBS -l nodes=2:ppn=4",
        "#PBS -l walltime=2:00:00",
        "#PBS -l mem=1024mb",
        "#PBS -W depend=afterok:11:12.server",
    ]
    assert directives[0].startswith("#PBS -N offload-5-2-")
    assert engine.validate(params)["memory"] == "1024mb"  # validating twice changes nothing
    argv = engine.submit_command(pbs_spec(), "/work/ws/.offload/job-5/attempt-2/job.sh")
    assert argv[0] == "/opt/pbs/bin/qsub" and argv[-1] == "/work/ws/.offload/job-5/attempt-2/job.sh"
    # Slurm's qsub wrapper hands its arguments to a shell: such paths are refused, not quoted.
    with pytest.raises(InvalidJobError) as info:
        engine.submit_command(JobSpec(1, 1, "PBS", "x", "/a b;c", {}), "/a b;c/job.sh")
    assert info.value.field == "workspace"
    array = engine.render_script(pbs_spec(), engine.validate({"script": "x", "array": "2-8:2%3"}))
    assert "#PBS -t 2-8:2%3\n" in array and "offload_task=" in array
    pro = PbsEngine({"array_option": "-J"})
    assert "#PBS -J 1-3\n" in pro.render_script(
        pbs_spec(), pro.validate({"script": "x", "array": "1-3"})
    )
    with pytest.raises(InvalidJobError) as info:
        engine.validate({"executable": "true", "array": "3-1"})
    assert info.value.field == "array"


def test_pbs_submit_output() -> None:
    engine = PbsEngine({})
    assert engine.parse_submit_output(CommandResult(["qsub"], 0, "8\n", "")) == "8"
    assert engine.parse_submit_output(CommandResult(["qsub"], 0, "12.server\n", "")) == "12.server"
    refused = CommandResult(
        ["qsub"], 0, "There was an error running the Slurm sbatch command.\nbad option\n", ""
    )
    with pytest.raises(SubmissionRejectedError):
        engine.parse_submit_output(refused)


def test_templates_for_both() -> None:
    assert SgeJobTemplate("t", {"executable": "x"}).type == "SGE"
    assert PbsJobTemplate("t").type == "PBS"
