"""The HTCondor engine's pure parts: validation, the submit description (quoting, no injected
commands), the mapping of job ads, and the parsing of condor_q/condor_history output captured
from the real pool of scripts/start-htcondor (HTCondor 23.9)."""

from __future__ import annotations

from typing import Any

import pytest

from offload.engines.base import JobHandle, JobSpec
from offload.engines.condor import (
    CONDORPY_TEMPLATES,
    CondorEngine,
    batch_signature,
    job_report,
    map_ad,
    other_spelling,
    parse_ads,
    parse_terse,
    quote_arguments,
    quote_environment,
    render_batch,
)
from offload.errors import EngineUnavailableError, InvalidJobError
from offload.status import Status
from offload.transport.base import CommandResult


def engine() -> CondorEngine:
    return CondorEngine({})


def spec(**parameters: Any) -> JobSpec:
    return JobSpec(12, 1, "CONDOR", "my job", "/w/job 12", parameters)


def render(**parameters: Any) -> str:
    e = engine()
    s = spec(**parameters)
    return e.render_submit(s, e.validate(s.parameters))


def commands(text: str) -> list[str]:
    """The names of the submit commands and statements of a submit description, line by line."""
    names = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        names.append(line.split("=")[0].strip() if "=" in line else line.split()[0])
    return names


def result(stdout: str, returncode: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult(("condor_q",), returncode, stdout, stderr)


# -- the submit description --------------------------------------------------------------------
def test_a_plain_job_is_described_with_its_tags_logs_and_queue_count() -> None:
    text = render(executable="/bin/echo", arguments=["a b", "it's", 'x"y', "$HOME", ""], num_jobs=3)
    lines = text.splitlines()
    assert "universe = vanilla" in lines  # the default template, vanilla_base
    assert "executable = /bin/echo" in lines
    assert """arguments = "'a b' 'it''s' 'x""y' '$(DOLLAR)HOME' ''\"""" in lines
    assert "output = /w/job 12/.offload/job-12/attempt-1/stdout.$(Process).log" in lines
    assert "log = /w/job 12/.offload/job-12/attempt-1/condor.log" in lines
    assert "initialdir = /w/job 12" in lines
    assert '+OffloadKey = "offload-12-1"' in lines
    assert '+OffloadSubmission = "/w/job 12/.offload/job-12/attempt-1/job.sub"' in lines
    assert lines[-1] == "queue 3"
    assert commands(text).count("queue") == 1


def test_quoting_of_arguments_and_environment() -> None:
    assert quote_arguments(["-c", "echo $(x)"]) == "\"'-c' 'echo $(DOLLAR)(x)'\""
    assert quote_environment({"A": "1 2", "B": "it's"}) == "\"A='1 2' B='it''s'\""


def test_templates_are_merged_under_the_attributes() -> None:
    text = render(
        executable="/bin/true",
        condorpy_template_name="vanilla_transfer_files",
        attributes={"should_transfer_files": "IF_NEEDED", "+Project": '"hydro"', "request_cpus": 2},
    )
    lines = text.splitlines()
    assert "should_transfer_files = IF_NEEDED" in lines
    assert "transfer_executable = TRUE" in lines
    assert '+Project = "hydro"' in lines
    assert "request_cpus = 2" in lines
    assert set(CONDORPY_TEMPLATES) >= {
        "base",
        "vanilla_base",
        "vanilla_transfer_files",
        "vanilla_nfs",
        "remote_output_files",
    }


def test_input_and_output_files_are_listed() -> None:
    text = render(
        executable="/bin/true",
        remote_input_files=["/data/in.txt", "rel/x.csv"],
        remote_output_files=["out.nc"],
    )
    assert "transfer_input_files = /data/in.txt, rel/x.csv\n" in text
    assert "transfer_output_files = out.nc\n" in text


def test_a_job_name_can_not_add_commands() -> None:
    e = engine()
    s = JobSpec(3, 1, "CONDOR", "x\nqueue 100\n+OffloadKey = 1", "/w", {"executable": "/bin/true"})
    text = e.render_submit(s, e.validate(s.parameters))
    assert commands(text).count("queue") == 1
    assert commands(text).count("+OffloadKey") == 1


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"attributes": {"request_memory": "1\nqueue 10"}}, "attributes.request_memory"),
        ({"attributes": {"request_memory": "1\rqueue 10"}}, "attributes.request_memory"),
        ({"attributes": {"requirements": "true \\"}}, "attributes.requirements"),
        ({"attributes": {"queue": "5"}}, "attributes.queue"),
        ({"attributes": {"include": "/etc/x"}}, "attributes.include"),
        ({"attributes": {"output": "/tmp/x"}}, "attributes.output"),
        ({"attributes": {"getenv": "true"}}, "attributes.getenv"),
        ({"attributes": {"MY.OffloadKey": '"x"'}}, "attributes.MY.OffloadKey"),
        ({"attributes": {"environment": "X=$ENV(SECRET)"}}, "attributes.environment"),
        ({"attributes": {"a b": "x"}}, "attributes"),
        ({"attributes": {"x=y": "x"}}, "attributes"),
        ({"attributes": "universe = vanilla"}, "attributes"),
        ({"attributes": {"arguments": "x"}, "arguments": ["y"]}, "arguments"),
        ({"executable": "/bin/true\nqueue"}, "executable"),
        ({"executable": ""}, "executable"),
        ({"condorpy_template_name": "nope"}, "condorpy_template_name"),
        ({"num_jobs": 0}, "num_jobs"),
        ({"num_jobs": True}, "num_jobs"),
        ({"num_jobs": "2; rm"}, "num_jobs"),
        ({"remote_input_files": ["../x"]}, "remote_input_files[0]"),
        ({"remote_input_files": ["a,b"]}, "remote_input_files[0]"),
        ({"remote_output_files": ["a\nb"]}, "remote_output_files[0]"),
        ({"arguments": "a string"}, "arguments"),
        ({"environment": {"A B": "x"}}, "environment"),
    ],
)
def test_bad_values_are_refused_naming_the_field(parameters: dict[str, Any], field: str) -> None:
    parameters = {"executable": "/bin/true"} | parameters
    with pytest.raises(InvalidJobError) as info:
        engine().validate(parameters)
    assert info.value.field == field


def test_set_attribute_style_executable_is_accepted() -> None:
    params = engine().validate({"attributes": {"executable": "/bin/x", "arguments": '"1 2"'}})
    assert params["executable"] == "/bin/x"
    assert "executable" not in params["attributes"]


def test_submit_output_is_read() -> None:
    e = engine()
    assert e.parse_submit_output(result("12.0 - 12.2\n")) == "12"
    assert (
        e.parse_submit_output(result("Submitting job(s).\n1 job(s) submitted to cluster 7.\n"))
        == "7"
    )
    unreachable = CommandResult(
        ("condor_submit",), 1, "", "ERROR: Can't find address of local schedd\n"
    )
    assert isinstance(e.submit_error(unreachable), EngineUnavailableError)


# -- job ads ------------------------------------------------------------------------------------
def test_job_statuses_map_as_tethys_does() -> None:
    assert map_ad({"JobStatus": 1}).status == Status.SUBMITTED
    assert map_ad({"JobStatus": 2}).status == Status.RUNNING
    assert map_ad({"JobStatus": 6}).status == Status.RUNNING
    assert map_ad({"JobStatus": 3}).status == Status.ABORTED
    assert map_ad({"JobStatus": 7}).status == Status.PAUSED
    done = map_ad({"JobStatus": 4, "ExitCode": 0, "ExitBySignal": False})
    assert (done.status, done.exit_code) == (Status.COMPLETE, 0)
    failed = map_ad({"JobStatus": 4, "ExitCode": 3, "ExitBySignal": False})
    assert (failed.status, failed.exit_code, failed.message) == (
        Status.ERROR,
        3,
        "exited with code 3",
    )
    killed = map_ad({"JobStatus": 4, "ExitBySignal": True, "ExitSignal": 9})
    assert killed.status == Status.ERROR and "signal 9" in killed.message
    ours = map_ad({"JobStatus": 5, "HoldReason": "offload: paused by the user (by user u)"})
    assert ours.status == Status.PAUSED
    theirs = map_ad({"JobStatus": 5, "HoldReason": "Transfer input files failure: x.txt"})
    assert theirs.status == Status.ERROR and "x.txt" in theirs.message
    assert theirs.native_status.startswith("Held (")
    assert map_ad({"JobStatus": 42}).status is None


# Captured from `condor_q -json -constraint 'OffloadKey =!= undefined' -attributes …` and
# `condor_history -json …` on the test pool.
CONDOR_Q = """[
{
  "ClusterId": 41,
  "JobStatus": 2,
  "OffloadKey": "offload-7-1",
  "OffloadSubmission": "/w/7/.offload/job-7/attempt-1/job.sub",
  "ProcId": 0
}
,
{
  "ClusterId": 42,
  "HoldReason": "offload: paused by the user (by user offload-condor)",
  "HoldReasonCode": 1,
  "JobStatus": 5,
  "OffloadKey": "offload-8-1",
  "ProcId": 0
}
,
{
  "ClusterId": 43,
  "JobStatus": 2,
  "OffloadKey": "offload-9-1",
  "ProcId": 2
}
,
{
  "ClusterId": 99,
  "JobStatus": 2,
  "OffloadKey": "offload-1-1",
  "ProcId": 0
}
]
"""
CONDOR_HISTORY = """[
{
  "ClusterId": 43,
  "ExitBySignal": false,
  "ExitCode": 0,
  "JobStatus": 4,
  "OffloadKey": "offload-9-1",
  "ProcId": 1
}
,
{
  "ClusterId": 43,
  "ExitBySignal": false,
  "ExitCode": 5,
  "JobStatus": 4,
  "OffloadKey": "offload-9-1",
  "ProcId": 0
}
]
"""


def handles() -> dict[str, JobHandle]:
    return {
        "41": JobHandle(7, 1, "41", "/w/7"),
        "42": JobHandle(8, 1, "42", "/w/8"),
        "43": JobHandle(9, 1, "43", "/w/9", {"procs": 3}),
        "44": JobHandle(10, 1, "44", "/w/10"),
    }


def test_condor_q_output_is_parsed_for_our_clusters_only() -> None:
    reports = engine().parse_status_output(result(CONDOR_Q), handles())
    assert reports[7].status == Status.RUNNING and reports[7].native_status == "Running"
    assert reports[8].status == Status.PAUSED
    assert reports[9].status == Status.RUNNING  # one proc of three seen: not finished
    assert 10 not in reports  # not in the queue: the history is asked
    assert set(reports) == {7, 8, 9}


def test_empty_and_broken_output() -> None:
    assert parse_ads("", "condor_q") == []
    assert parse_ads("[\n]\n", "condor_history") == []
    with pytest.raises(EngineUnavailableError):
        parse_ads("-- Failed to fetch ads", "condor_q")
    with pytest.raises(EngineUnavailableError):
        engine().parse_status_output(result("", 1, "Can't find address for schedd"), handles())


def test_procs_from_the_queue_and_the_history_aggregate() -> None:
    e = engine()
    h = handles()
    queue = e._procs_from(result(CONDOR_Q), "condor_q", h)["43"]
    history = e._procs_from(result(CONDOR_HISTORY), "condor_history", h)["43"]
    report, state = job_report(9, queue | history, 3)
    assert report.status == Status.VARIOUS
    assert state is not None
    assert state["tasks"]["0"] == {"status": "ERR", "native_status": "Completed", "exit_code": 5}
    assert state["tasks"]["2"]["status"] == "RUN"
    assert "proc 0: exited with code 5" in report.message
    ended = queue | history | {2: map_ad({"JobStatus": 4, "ExitCode": 0})}
    report, _ = job_report(9, ended, 3)
    assert report.status == Status.VARIOUS_COMPLETE
    all_done = {p: map_ad({"JobStatus": 4, "ExitCode": 0}) for p in range(3)}
    assert job_report(9, all_done, 3)[0].status == Status.COMPLETE
    # Two of three procs known and finished: not Complete before the third is accounted for.
    assert job_report(9, {0: all_done[0], 1: all_done[1]}, 3)[0].status == Status.VARIOUS


def test_a_cluster_id_reused_by_another_job_is_not_ours() -> None:
    other = CONDOR_HISTORY.replace("offload-9-1", "offload-77-1")
    assert engine()._procs_from(result(other), "condor_history", handles()) == {}


def test_the_history_command_names_only_clusters_that_left() -> None:
    command = engine().accounting_command(["43", "44"])
    assert command is not None
    assert command[:2] == ["condor_history", "-json"]
    assert "member(ClusterId, {43, 44})" in command[3]


# -- batched submission --------------------------------------------------------------------------
def described(job_id: int, **parameters: Any) -> str:
    e = engine()
    s = JobSpec(job_id, 1, "CONDOR", f"job {job_id}", f"/w/job {job_id}", parameters)
    return e.render_submit(s, e.validate(s.parameters))


def test_a_batch_is_each_job_with_its_own_queue_statement_and_a_cluster_each() -> None:
    texts = [
        described(1, executable="/bin/sh", arguments=["-c", "echo 1"]),
        described(2, executable="/bin/sh", arguments=["-c", "echo 2"], num_jobs=3),
        described(3, executable="/bin/sh", arguments=["-c", "echo 3"]),
        described(4, executable="/bin/true", arguments=[]),
    ]
    assert len({batch_signature(t) for t in texts}) == 1
    text = render_batch(texts)
    sections = text.split("queue ")
    assert [line.split()[0] for line in text.splitlines() if line.startswith("queue")] == [
        "queue"
    ] * 4
    assert [s.split("\n")[0] for s in sections[1:]] == ["1", "3", "1", "1"]
    # Each job keeps everything of its own: tag, files, environment, arguments.
    for job_id, section in zip((1, 2, 3, 4), sections[:4], strict=True):
        assert f'+OffloadKey = "offload-{job_id}-1"' in section
        assert (
            f'+OffloadSubmission = "/w/job {job_id}/.offload/job-{job_id}/attempt-1/job.sub"'
            in section
        )
        assert f"initialdir = /w/job {job_id}\n" in section
        assert (
            f"output = /w/job {job_id}/.offload/job-{job_id}/attempt-1/stdout.$(Process).log"
            in section
        )
        assert f"OFFLOAD_JOB_ID='{job_id}'" in section
    # The same program twice in a row is spelled differently: condor_submit starts a new cluster
    # only when the executable's text changes.
    executables = [line for line in text.splitlines() if line.startswith("executable = ")]
    assert executables == [
        "executable = /bin/sh",
        "executable = /bin//sh",
        "executable = /bin/sh",
        "executable = /bin/true",
    ]
    assert other_spelling("run.sh") == "./run.sh"


def test_only_jobs_setting_the_same_commands_share_a_file() -> None:
    plain = described(1, executable="/bin/sh")
    memory = described(2, executable="/bin/sh", attributes={"request_memory": "100"})
    assert batch_signature(plain) != batch_signature(memory)  # 100 MB would carry over
    # An empty value would keep the value of the job before: such a job goes alone.
    assert batch_signature(described(3, executable="/bin/sh", attributes={"+Note": ""})) is None


def test_terse_output_maps_one_cluster_to_each_job_in_order() -> None:
    # condor_submit -terse of a batch, captured on the pool of scripts/start-htcondor (23.9).
    out = "1145.0 - 1145.0\n1146.0 - 1146.2\n1147.0 - 1147.0\n"
    assert parse_terse(out, [1, 3, 1]) == ["1145", "1146", "1147"]
    assert parse_terse(out, [1, 1, 1]) is None  # a proc count that does not match
    assert parse_terse(out, [1, 3]) is None  # more clusters than jobs
    assert parse_terse("89.0 - 89.5\n", [2, 1, 3]) is None  # jobs merged into one cluster
    assert parse_terse("", [1]) is None
