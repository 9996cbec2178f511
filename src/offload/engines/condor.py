"""The HTCondor engine (Tethys's CondorJob): a submit description per attempt, submitted with
``condor_submit`` (alike jobs of a batch together, in one call: see ``submit_batch``); one
``condor_q -json`` per poll for every active offload job of the schedd (a constraint on offload's
ClassAd tag), and ``condor_history -json`` only for jobs (procs) that left the queue. Through the
command-line tools, so it works the same on this machine and over SSH.

Each attempt gets ``<workspace>/.offload/job-<id>/attempt-<n>/`` holding ``job.sub`` (the submit
description), ``stdout.<proc>.log``/``stderr.<proc>.log`` and ``condor.log`` (HTCondor's user log).
Every submission carries ``+OffloadKey = "offload-<job>-<attempt>"`` and ``+OffloadSubmission =
"<path of job.sub>"``, so a monitor that crashed after ``condor_submit`` finds the cluster instead
of submitting again.

Nothing a user wrote becomes another submit command or a shell command: a submit command is one
``name = value`` line, so names must be plain identifiers and values may hold no line break (nor
end with the backslash that would continue the line); ``arguments`` and ``environment`` given as
lists/dicts are quoted in HTCondor's own syntax with ``$`` written as ``$(DOLLAR)``, so they reach
the program verbatim; HTCondor runs programs without a shell.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from offload.engines import condor_dag
from offload.engines.base import (
    BatchSchedulerEngine,
    JobHandle,
    JobSpec,
    NativeReport,
    SubmitOutcome,
    SubmitResult,
    aggregate_statuses,
    attempt_folder,
    job_folder,
    validate_arguments,
    validate_environment,
)
from offload.errors import (
    EngineError,
    EngineUnavailableError,
    InvalidJobError,
    JobStateError,
    SubmissionRejectedError,
)
from offload.status import Status
from offload.transport.base import CommandResult

#: The CondorPy template set Tethys apps name in ``condorpy_template_name``: bundles of submit
#: commands the job's ``attributes`` are merged over.
CONDORPY_TEMPLATES: dict[str, dict[str, str]] = {
    "base": {},
    "vanilla_base": {"universe": "vanilla"},
    "vanilla_transfer_files": {
        "universe": "vanilla",
        "transfer_executable": "TRUE",
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT_OR_EVICT",
    },
    "vanilla_nfs": {
        "universe": "vanilla",
        "transfer_executable": "FALSE",
        "should_transfer_files": "NO",
    },
    "remote_output_files": {
        "universe": "vanilla",
        "transfer_executable": "TRUE",
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT_OR_EVICT",
    },
}
DEFAULT_TEMPLATE = "vanilla_base"

#: A submit command name: a plain identifier, ``+Name``/``MY.Name`` for a custom ClassAd attribute.
ATTRIBUTE_NAME = re.compile(r"^(?:\+|MY\.)?[A-Za-z_][A-Za-z0-9_.]{0,127}$", re.IGNORECASE)
#: Words that start a statement of the submit language rather than name a command.
STATEMENTS = frozenset({"queue", "include", "if", "elif", "else", "endif", "warning", "use"})
#: Commands offload writes itself (its files and tags); get_logs() reads the logs.
RESERVED = frozenset(
    {"log", "output", "error", "offloadkey", "offloadsubmission", "getenv", "hold", "notification"}
)
#: ``$ENV(NAME)`` would copy the submitter's (the monitor's) environment into the job.
ENV_MACRO = re.compile(r"\$ENV\s*\(", re.IGNORECASE)
TAG = "OffloadKey"
SUBMISSION_TAG = "OffloadSubmission"
PAUSE_REASON = "offload: paused by the user"
LOG_LIMIT = 2_000_000
MAX_PROCS = 100_000
#: Characters kept in HTCondor's batch name; offload keeps the real name.
BATCH_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")
#: condor_q -json / condor_history -json attributes offload reads.
AD_ATTRIBUTES = (
    "ClusterId",
    "ProcId",
    "JobStatus",
    "HoldReason",
    "HoldReasonCode",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    TAG,
    SUBMISSION_TAG,
)
#: HTCondor's JobStatus codes.
NATIVE_NAMES = {
    1: "Idle",
    2: "Running",
    3: "Removed",
    4: "Completed",
    5: "Held",
    6: "Transferring Output",
    7: "Suspended",
}
#: Errors of the tools that say the schedd (or the pool) cannot be reached: not the job's fault.
UNREACHABLE = (
    "Can't find address",
    "Failed to connect",
    "Unable to connect",
    "Could not connect",
    "connect to local queue manager",
    "Failed to end classad message",
    "SECMAN:",
    "timed out",
)
FINISHED = frozenset({Status.COMPLETE, Status.ERROR, Status.ABORTED})


# -- values in a submit description -------------------------------------------------------------
def check_value(field: str, value: Any) -> str:
    """A submit-command value as text that stays on its own line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(check_value(f"{field}[{i}]", item) for i, item in enumerate(value))
    if not isinstance(value, str | int | float):
        raise InvalidJobError(field, f"must be text or a number, not {type(value).__name__}")
    text = str(value)
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text):
        raise InvalidJobError(field, "must be one line (no line breaks or control characters)")
    if text.rstrip().endswith("\\"):
        raise InvalidJobError(field, "must not end with a backslash (it would continue the line)")
    if ENV_MACRO.search(text):
        raise InvalidJobError(
            field, "must not use $ENV(): the submitter's environment stays private"
        )
    return text.strip()


def literal(text: str) -> str:
    """Text HTCondor must not expand as a macro: every ``$`` written as ``$(DOLLAR)``."""
    return text.replace("$", "$(DOLLAR)")


def quote_arguments(arguments: Sequence[str]) -> str:
    """An argument list in HTCondor's new quoting: the whole in double quotes, each argument in
    single quotes (``'`` doubled, ``"`` doubled), so spaces and quotes reach the program as is."""
    words = []
    for arg in arguments:
        words.append("'" + arg.replace("'", "''").replace('"', '""') + "'")
    return '"' + literal(" ".join(words)) + '"'


def quote_environment(environment: Mapping[str, str]) -> str:
    """NAME=value pairs in HTCondor's new environment syntax, values in single quotes."""
    pairs = []
    for name, value in environment.items():
        pairs.append(f"{name}='" + value.replace("'", "''").replace('"', '""') + "'")
    return '"' + literal(" ".join(pairs)) + '"'


def classad_string(text: str) -> str:
    """A ClassAd string literal (for ``+Name = "…"``), with macros disabled."""
    return '"' + literal(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def check_path_list(field: str, value: Any) -> list[str]:
    """Files for ``transfer_input_files``/``transfer_output_files``: no commas (the separator), no
    line breaks, no ``..`` in a relative path."""
    if value is None or value == "" or value == []:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise InvalidJobError(field, "must be a list of file paths")
    clean: list[str] = []
    for i, item in enumerate(items):
        name = f"{field}[{i}]"
        if not isinstance(item, str) or not item.strip():
            raise InvalidJobError(name, "must be a file path")
        text = check_value(name, item)
        if "," in text:
            raise InvalidJobError(name, f"{item!r} contains a comma, which separates files")
        if not text.startswith("/") and ".." in text.split("/"):
            raise InvalidJobError(name, f"{item!r} leaves the job's folder (..)")
        clean.append(text)
    return clean


def is_workflow(parameters: Mapping[str, Any]) -> bool:
    """A CondorWorkflow's parameters (they hold ``nodes``) rather than a CondorJob's."""
    return "nodes" in parameters


# -- batched submission ---------------------------------------------------------------------------
#: One line of ``condor_submit -terse`` output: a cluster's first and last proc ("12.0 - 12.2").
TERSE_LINE = re.compile(r"^\s*(\d+)\.(\d+)\s*-\s*(\d+)\.(\d+)\s*$")


def submit_commands(text: str) -> list[tuple[str, str]]:
    """The ``name = value`` commands of a submit description offload rendered (comments and the
    ``queue`` statement left out), in order."""
    commands: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or line.startswith("queue "):
            continue
        name, _, value = line.partition(" = ")
        commands.append((name.strip(), value))
    return commands


def batch_signature(text: str) -> tuple[str, ...] | None:
    """Jobs whose descriptions set the same commands, all non-empty, can share one submit file:
    in a file of several ``queue`` statements every command stays set for the jobs after it, so
    each job must overwrite every command the one before it set. None: this job goes alone."""
    commands = submit_commands(text)
    if any(not value.strip() for _, value in commands):
        return None
    return tuple(sorted(name.lower() for name, _ in commands))


def other_spelling(executable: str) -> str:
    """The same program spelled differently (``/bin//sh``, ``./run.sh``): condor_submit starts a
    new cluster after a ``queue`` only when the text of ``executable`` changes, so two jobs in a
    row with the same program get alternate spellings and each gets its own cluster."""
    if "/" in executable:
        head, _, tail = executable.rpartition("/")
        return f"{head}//{tail}"
    return f"./{executable}"


def render_batch(descriptions: Sequence[str]) -> str:
    """One submit description for several jobs: each job's own commands and its ``queue``
    statement, one after the other (every job a cluster of its own, see :func:`other_spelling`).
    The descriptions must share one :func:`batch_signature`."""
    parts: list[str] = []
    previous = ""
    for text in descriptions:
        lines = text.rstrip("\n").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("executable = "):
                value = line[len("executable = ") :]
                if value == previous:
                    value = other_spelling(value)
                    lines[i] = f"executable = {value}"
                previous = value
        parts.append("\n".join(lines))
    return "\n".join(parts) + "\n"


def parse_terse(stdout: str, procs: Sequence[int]) -> list[str] | None:
    """The cluster of each job of a batch from ``condor_submit -terse`` (one ``C.0 - C.N`` line
    per cluster, in the order of the file), or None when the lines do not match the jobs one to one
    (the clusters are then found by their tags)."""
    lines = [m for m in (TERSE_LINE.match(line) for line in stdout.splitlines()) if m]
    if len(lines) != len(procs):
        return None
    clusters: list[str] = []
    for match, count in zip(lines, procs, strict=True):
        first, low, last, high = (int(g) for g in match.groups())
        if first != last or low != 0 or high != count - 1:
            return None
        clusters.append(str(first))
    if len(set(clusters)) != len(clusters):
        return None
    return clusters


# -- native states --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcState:
    """One proc of a cluster, as offload reads it."""

    status: Status | None
    native_status: str
    message: str = ""
    exit_code: int | None = None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def map_ad(ad: Mapping[str, Any]) -> ProcState:
    """One job ad (from condor_q or condor_history) as offload's status, as Tethys maps it."""
    code = _int(ad.get("JobStatus"))
    native = NATIVE_NAMES.get(code or 0, f"JobStatus {code}")
    if code == 1:
        return ProcState(Status.SUBMITTED, native, "queued")
    if code in (2, 6):
        return ProcState(Status.RUNNING, native)
    if code == 3:
        return ProcState(Status.ABORTED, native, "removed")
    if code == 7:
        return ProcState(Status.PAUSED, native, "suspended")
    if code == 5:
        reason = str(ad.get("HoldReason") or "").strip()
        if reason.startswith(PAUSE_REASON):
            return ProcState(Status.PAUSED, native, "held")
        return ProcState(
            Status.ERROR, f"{native} ({reason})" if reason else native, f"held: {reason}"
        )
    if code == 4:
        if ad.get("ExitBySignal") is True:
            signal = _int(ad.get("ExitSignal"))
            return ProcState(Status.ERROR, native, f"killed by signal {signal}")
        exit_code = _int(ad.get("ExitCode"))
        if exit_code == 0:
            return ProcState(Status.COMPLETE, native, "exited with code 0", 0)
        if exit_code is None:
            return ProcState(Status.COMPLETE, native, "completed", None)
        return ProcState(Status.ERROR, native, f"exited with code {exit_code}", exit_code)
    return ProcState(None, native, f"unknown HTCondor JobStatus {code}")


def parse_ads(text: str, what: str) -> list[dict[str, Any]]:
    """The job ads of ``-json`` output (nothing at all when no job matched)."""
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EngineUnavailableError(f"{what} printed something that is not JSON: {exc}") from exc
    if not isinstance(data, list):
        raise EngineUnavailableError(f"{what} printed JSON that is not a list of job ads")
    return [ad for ad in data if isinstance(ad, dict)]


def job_report(
    job_id: int, procs: Mapping[int, ProcState], expected: int
) -> tuple[NativeReport, dict[str, Any] | None]:
    """One report for a cluster of ``expected`` procs, and its per-proc engine state when there
    are several (Various while they disagree, Various-Complete when all ended unalike)."""
    if expected <= 1:
        proc = procs.get(0) or next(iter(procs.values()))
        report = NativeReport(job_id, proc.status, proc.native_status, proc.message, proc.exit_code)
        return report, None
    known = {p: s for p, s in procs.items() if s.status is not None}
    status = aggregate_statuses(s.status for s in known.values() if s.status is not None)
    if status in FINISHED | {Status.VARIOUS_COMPLETE} and len(known) < expected:
        status = Status.VARIOUS  # some procs are not accounted for yet
    counts: dict[str, int] = {}
    for proc in known.values():
        counts[proc.native_status.split(" (")[0]] = (
            counts.get(proc.native_status.split(" (")[0], 0) + 1
        )
    native = ", ".join(f"{name}: {n}" for name, n in sorted(counts.items()))
    failed = [
        f"proc {p}: {s.message}" for p, s in sorted(known.items()) if s.status == Status.ERROR
    ]
    message = "; ".join(failed[:5]) + (f" (and {len(failed) - 5} more)" if len(failed) > 5 else "")
    tasks = {
        str(p): {
            "status": s.status.value if s.status is not None else None,
            "native_status": s.native_status,
            "exit_code": s.exit_code,
        }
        for p, s in sorted(procs.items())
    }
    return NativeReport(job_id, status, native, message), {"tasks": tasks}


def _stored_procs(handle: JobHandle) -> dict[int, ProcState]:
    """Procs an earlier poll saw finish (kept in the engine state): not asked about again."""
    finished: dict[int, ProcState] = {}
    tasks = handle.state.get("tasks") if isinstance(handle.state, Mapping) else None
    if not isinstance(tasks, Mapping):
        return finished
    for proc, task in tasks.items():
        if not isinstance(task, Mapping) or not str(proc).isdigit():
            continue
        try:
            status = Status(str(task.get("status")))
        except ValueError:
            continue
        if status in FINISHED:
            finished[int(proc)] = ProcState(
                status, str(task.get("native_status") or ""), "", _int(task.get("exit_code"))
            )
    return finished


class CondorEngine(BatchSchedulerEngine):
    """Options: ``host``/``username``/… for a schedd reached over SSH (see the SSH transport),
    ``remote_workspace_root``/``local_workspace_root`` (where job folders live on the submit host),
    ``default_template`` (a CondorPy template name; default ``vanilla_base``)."""

    kind = "condor"
    can_pause = True
    native_id_pattern: ClassVar[re.Pattern[str]] = re.compile(r"^\d+$")

    # -- validation ----------------------------------------------------------------------------
    def validate(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """A CondorJob's parameters, or a CondorWorkflow's (``nodes``, ``max_jobs``: each node's
        job checked as a CondorJob's parameters, errors naming ``nodes.<name>.<field>``)."""
        if not is_workflow(parameters):
            return self.validate_job(parameters)
        params = dict(parameters)
        nodes, throttles = condor_dag.validate_nodes(params.get("nodes"), params.get("max_jobs"))
        for node in nodes:
            job = {k: v for k, v in node.items() if k not in condor_dag.DAG_KEYS}
            if node["noop"] and not (
                job.get("executable") or (job.get("attributes") or {}).get("executable")
            ):
                job["executable"] = "/bin/true"  # never run, but DAGMan reads its submit file
            try:
                node.update(self.validate_job(job))
            except InvalidJobError as exc:
                raise InvalidJobError(f"nodes.{node['name']}.{exc.field}", exc.problem) from None
        params["nodes"] = nodes
        params["max_jobs"] = throttles
        return params

    def validate_job(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        params = dict(parameters)
        template = params.get("condorpy_template_name") or self.options.get("default_template")
        template = template or DEFAULT_TEMPLATE
        if template not in CONDORPY_TEMPLATES:
            raise InvalidJobError(
                "condorpy_template_name",
                f"{template!r} is not one of {', '.join(sorted(CONDORPY_TEMPLATES))}",
            )
        params["condorpy_template_name"] = template
        attributes = params.get("attributes") or {}
        if not isinstance(attributes, Mapping):
            raise InvalidJobError("attributes", "must be a dict of submit command → value")
        clean: dict[str, str] = {}
        for name, value in attributes.items():
            field = f"attributes.{name}"
            if not isinstance(name, str) or not ATTRIBUTE_NAME.match(name):
                raise InvalidJobError(
                    "attributes", f"{name!r} is not a submit command name (letters, digits, _ .)"
                )
            bare = name.lstrip("+").removeprefix("MY.").removeprefix("my.").lower()
            if name.lower() in STATEMENTS:
                raise InvalidJobError(field, "is a statement of the submit language, not a command")
            if bare in RESERVED:
                raise InvalidJobError(
                    field, "is set by offload (its logs, tags and environment policy)"
                )
            if value is None:
                continue
            clean[name] = check_value(field, value)
        params["attributes"] = clean
        executable = params.get("executable") or clean.get("executable")
        if not isinstance(executable, str) or not executable.strip():
            raise InvalidJobError("executable", "required: the program to run, e.g. '/bin/sh'")
        params["executable"] = check_value("executable", executable)
        clean.pop("executable", None)
        if "arguments" in params and params["arguments"] is not None:
            if "arguments" in clean:
                raise InvalidJobError(
                    "arguments", "give arguments or attributes.arguments, not both"
                )
            params["arguments"] = validate_arguments(params["arguments"])
        params["environment"] = validate_environment(params.get("environment"), allow_bool=False)
        if params["environment"] and "environment" in clean:
            raise InvalidJobError(
                "environment", "give environment or attributes.environment, not both"
            )
        params["remote_input_files"] = check_path_list(
            "remote_input_files", params.get("remote_input_files")
        )
        params["remote_output_files"] = check_path_list(
            "remote_output_files", params.get("remote_output_files")
        )
        num_jobs = params.get("num_jobs", 1)
        if num_jobs is None:
            num_jobs = 1
        if isinstance(num_jobs, bool) or not str(num_jobs).strip().isdigit():
            raise InvalidJobError("num_jobs", f"must be a positive whole number, not {num_jobs!r}")
        if not 1 <= int(str(num_jobs).strip()) <= MAX_PROCS:
            raise InvalidJobError("num_jobs", f"must be between 1 and {MAX_PROCS}")
        params["num_jobs"] = int(str(num_jobs).strip())
        return params

    # -- the submit description ------------------------------------------------------------------
    @staticmethod
    def submit_path(spec: JobSpec) -> str:
        """The file condor_submit (job.sub) or condor_submit_dag (workflow.dag) is given."""
        name = "workflow.dag" if is_workflow(spec.parameters) else "job.sub"
        return f"{attempt_folder(spec.workspace, spec.job_id, spec.attempt)}/{name}"

    def render_submit(
        self, spec: JobSpec, params: Mapping[str, Any], node: str | None = None
    ) -> str:
        """A submit description: the job's, or one workflow node's (``node``: its files are
        ``<node>.stdout.<proc>.log`` … and it carries no tag; the DAGMan job does)."""
        folder = attempt_folder(spec.workspace, spec.job_id, spec.attempt)
        prefix = f"{node}." if node else ""
        commands: dict[str, str] = dict(CONDORPY_TEMPLATES[params["condorpy_template_name"]])
        commands.update(params.get("attributes") or {})
        commands["executable"] = params["executable"]
        if params.get("arguments") is not None and "arguments" not in commands:
            commands["arguments"] = quote_arguments(params["arguments"])
        if "environment" not in commands:
            environment = {
                "OFFLOAD_JOB_ID": str(spec.job_id),
                "OFFLOAD_ATTEMPT": str(spec.attempt),
                "OFFLOAD_WORKSPACE": spec.workspace,
                "OFFLOAD_JOB_NAME": spec.name.replace("\n", " ").replace("\r", " "),
            } | dict(params.get("environment") or {})
            commands["environment"] = quote_environment(environment)
        inputs = params.get("remote_input_files") or []
        if inputs:
            commands["transfer_input_files"] = ", ".join(literal(p) for p in inputs)
        outputs = params.get("remote_output_files") or []
        if outputs:
            commands["transfer_output_files"] = ", ".join(literal(p) for p in outputs)
        commands.setdefault("initialdir", literal(spec.workspace))
        batch_name = BATCH_NAME_UNSAFE.sub("_", spec.name).strip("_")[:100] or spec.key
        commands.setdefault("batch_name", batch_name)
        lines = [
            f"# offload job {spec.job_id}, attempt {spec.attempt}; written by offload's HTCondor engine."
        ]
        lines += [f"{name} = {value}" for name, value in commands.items()]
        lines += [
            f"output = {literal(folder)}/{prefix}stdout.$(Process).log",
            f"error = {literal(folder)}/{prefix}stderr.$(Process).log",
            f"log = {literal(folder)}/{prefix}condor.log",
            "getenv = false",
            "notification = never",
        ]
        if node:
            lines.append(f"+OffloadNode = {classad_string(f'{spec.key}/{node}')}")
        else:
            lines.append(f"+{TAG} = {classad_string(spec.key)}")
            lines.append(f"+{SUBMISSION_TAG} = {classad_string(self.submit_path(spec))}")
        lines.append(f"queue {int(params['num_jobs'])}")
        return "\n".join(lines) + "\n"

    def render_workflow(self, spec: JobSpec, params: Mapping[str, Any]) -> dict[str, str]:
        """File path → text: each node's submit description and the DAG file."""
        folder = attempt_folder(spec.workspace, spec.job_id, spec.attempt)
        condor_dag.check_dag_path("workspace", folder)
        files: dict[str, str] = {}
        submit_files: dict[str, str] = {}
        for node in params["nodes"]:
            path = f"{folder}/{node['name']}.sub"
            submit_files[node["name"]] = path
            files[path] = self.render_submit(spec, node, node=node["name"])
        files[self.submit_path(spec)] = condor_dag.render_dag(
            params["nodes"],
            params["max_jobs"],
            submit_files,
            f"{folder}/workflow.status",
            f"offload workflow {spec.job_id}, attempt {spec.attempt}; written by offload's "
            "HTCondor engine.",
        )
        return files

    # -- BatchSchedulerEngine pieces -------------------------------------------------------------
    def write_submission(self, spec: JobSpec) -> str:
        params = self.validate(spec.parameters)
        path = self.submit_path(spec)
        if is_workflow(params):
            files = self.render_workflow(spec, params)
            dag = files.pop(path)
            for file, text in files.items():
                self.runner.write_text(file, text)
            self.runner.write_text(path, dag)  # last: its presence means "maybe submitted"
            return path
        self.runner.write_text(path, self.render_submit(spec, params))
        return path

    def submit_command(self, spec: JobSpec, script_path: str) -> list[str]:
        if is_workflow(spec.parameters):
            return [
                "condor_submit_dag",
                "-force",
                "-usedagdir",
                "-batch-name",
                BATCH_NAME_UNSAFE.sub("_", spec.name).strip("_")[:100] or spec.key,
                "-append",
                f"+{TAG} = {classad_string(spec.key)}",
                "-append",
                f"+{SUBMISSION_TAG} = {classad_string(script_path)}",
                script_path,
            ]
        return ["condor_submit", "-terse", script_path]

    def parse_submit_output(self, result: CommandResult) -> str:
        # -terse: "12.0 - 12.2"
        match = re.search(r"^\s*(\d+)\.\d+\s*-\s*\1\.\d+\s*$", result.stdout, re.MULTILINE)
        if match is None:
            match = re.search(r"submitted to cluster (\d+)", result.stdout)
        if match is None:
            raise SubmissionRejectedError(
                f"condor_submit answered {result.stdout.strip()!r}, not a cluster id: "
                f"{result.stderr.strip()}"
            )
        return match.group(1)

    def submit_batch(self, specs: Sequence[JobSpec]) -> list[SubmitResult]:
        """CondorJobs whose descriptions set the same commands (:func:`batch_signature`) are
        submitted together: each still gets its own ``job.sub`` (its record, and what crash
        adoption matches), and one ``condor_submit -terse`` reads all their descriptions, one
        ``queue`` statement each, from its standard input. Workflows, lone jobs and jobs whose
        batch HTCondor refused go one by one, so one bad job cannot fail the others."""
        batches: dict[tuple[str, ...], list[tuple[int, JobSpec, str]]] = {}
        alone: list[int] = []
        for index, spec in enumerate(specs):
            signature: tuple[str, ...] | None = None
            text = ""
            if self.batching and not is_workflow(spec.parameters):
                remote = dataclasses.replace(spec, workspace=self.remote_workspace(spec.workspace))
                try:
                    text = self.render_submit(remote, self.validate(spec.parameters))
                except InvalidJobError:
                    pass  # refused, with its field, on the one-by-one path
                else:
                    signature = batch_signature(text)
            if signature is None:
                alone.append(index)
            else:
                batches.setdefault(signature, []).append((index, spec, text))
        for signature in [k for k, members in batches.items() if len(members) == 1]:
            alone.extend(index for index, _, _ in batches.pop(signature))
        results: dict[int, SubmitResult] = {}
        if alone:
            for index, result in zip(
                sorted(alone), super().submit_batch([specs[i] for i in sorted(alone)]), strict=True
            ):
                results[index] = result
        if batches:
            results.update(self._submit_together(list(batches.values())))
        return [results[i] for i in range(len(specs))]

    #: False once this HTCondor refused a batch that the same jobs one by one did not fail, or
    #: answered it with other than one cluster per job (a version without several ``queue``
    #: statements per file): one by one from then on.
    batching: bool = True

    def _submit_together(
        self, batches: Sequence[Sequence[tuple[int, JobSpec, str]]]
    ) -> dict[int, SubmitResult]:
        results: dict[int, SubmitResult] = {}
        everyone = [
            dataclasses.replace(s, workspace=self.remote_workspace(s.workspace))
            for batch in batches
            for _, s, _ in batch
        ]
        try:
            existing = self.find_submissions(everyone)
        except EngineUnavailableError as exc:
            for batch in batches:
                for index, spec, _ in batch:
                    results[index] = SubmitResult(
                        spec.job_id, SubmitOutcome.UNAVAILABLE, message=str(exc)
                    )
            return results
        for batch in batches:
            todo: list[tuple[int, JobSpec, str]] = []
            for index, spec, text in batch:
                remote = dataclasses.replace(spec, workspace=self.remote_workspace(spec.workspace))
                if remote.key in existing:
                    results[index] = SubmitResult(
                        spec.job_id,
                        SubmitOutcome.SUBMITTED,
                        native_id=existing[remote.key],
                        state=self.submission_state(remote),
                        adopted=True,
                    )
                    continue
                try:
                    self.stage_in(spec.workspace, remote.workspace)
                    self.runner.write_text(self.submit_path(remote), text)
                except EngineUnavailableError as exc:
                    results[index] = SubmitResult(
                        spec.job_id, SubmitOutcome.UNAVAILABLE, message=str(exc)
                    )
                    continue
                todo.append((index, spec, text))
            if len(todo) == 1:
                index, spec, _ = todo[0]
                [results[index]] = super().submit_batch([spec])
            elif todo:
                results.update(self._submit_one_file(todo))
        return results

    def _submit_one_file(self, todo: Sequence[tuple[int, JobSpec, str]]) -> dict[int, SubmitResult]:
        """One condor_submit for the jobs of ``todo`` (staged, their job.sub written)."""
        remotes = [
            dataclasses.replace(s, workspace=self.remote_workspace(s.workspace)) for _, s, _ in todo
        ]
        procs = [int(self.validate(s.parameters)["num_jobs"]) for _, s, _ in todo]
        try:
            result = self.runner.run(
                ["condor_submit", "-terse", "-"],
                timeout=self.command_timeout + len(todo) * 0.5,
                input_text=render_batch([text for _, _, text in todo]),
            )
            if result.returncode != 0:
                raise self.submit_error(result)
        except EngineUnavailableError as exc:
            return {
                index: SubmitResult(spec.job_id, SubmitOutcome.UNAVAILABLE, message=str(exc))
                for index, spec, _ in todo
            }
        except SubmissionRejectedError:
            # One job HTCondor refused fails the whole file: each one by one (adopting any
            # cluster the refused file did create), so only the bad one becomes Error.
            alone = super().submit_batch([spec for _, spec, _ in todo])
            if all(r.outcome == SubmitOutcome.SUBMITTED for r in alone):
                self.batching = False  # no job was at fault: this HTCondor refuses the file
            return {index: r for (index, _, _), r in zip(todo, alone, strict=True)}
        clusters = parse_terse(result.stdout, procs)
        if clusters is None:
            # Submitted, but the output does not say which cluster is whose: the tags do. An
            # HTCondor whose output is not one cluster per job is not batched again.
            self.batching = False
            try:
                found = self.find_submissions(remotes)
            except EngineUnavailableError:
                found = {}
            clusters = [found.get(r.key, "") for r in remotes]
        results: dict[int, SubmitResult] = {}
        for (index, spec, _), remote, cluster in zip(todo, remotes, clusters, strict=True):
            if cluster:
                results[index] = SubmitResult(
                    spec.job_id,
                    SubmitOutcome.SUBMITTED,
                    native_id=cluster,
                    state=self.submission_state(remote),
                )
            else:  # next cycle's find_submissions adopts it
                results[index] = SubmitResult(
                    spec.job_id,
                    SubmitOutcome.UNAVAILABLE,
                    message="condor_submit did not name this job's cluster; it is looked up again",
                )
        return results

    def submit_error(self, result: CommandResult) -> EngineError:
        text = result.stderr + result.stdout
        if any(sign in text for sign in UNREACHABLE):
            detail = (result.stderr.strip() or result.stdout.strip())[-500:]
            return EngineUnavailableError(f"condor_submit could not reach the schedd: {detail}")
        return SubmissionRejectedError(
            f"HTCondor refused the job (exit {result.returncode}): "
            f"{(result.stderr.strip() or result.stdout.strip())[-2000:]}"
        )

    def submission_state(self, spec: JobSpec) -> dict[str, Any]:
        """The number of procs (the poll needs it to know which procs left the queue); for a
        workflow, the graph (node → parents), for the DAG view."""
        try:
            params = self.validate(spec.parameters)
        except InvalidJobError:
            return {"procs": 1}
        if is_workflow(params):
            graph = {node["name"]: node["parents"] for node in params["nodes"]}
            # Every node Pending until DAGMan's first status file: the DAG view has them all.
            pending = {
                name: {
                    "status": Status.PENDING.value,
                    "native_status": "",
                    "parents": parents,
                    "exit_code": None,
                    "retries": 0,
                }
                for name, parents in graph.items()
            }
            return {"procs": 1, "workflow": True, "graph": graph, "nodes": pending}
        return {"procs": int(params["num_jobs"])}

    def check_result(self, result: CommandResult, what: str) -> None:
        """A failed scheduler command means the schedd is unreachable (stale), not a failed job."""
        if result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-500:]
            raise EngineUnavailableError(f"{what} failed (exit {result.returncode}): {detail}")

    def status_command(self, native_ids: Sequence[str]) -> list[str]:
        # Every offload job of this user on the schedd, in one call; the ids are picked out here
        # (a constraint listing thousands of ids would only make the schedd's work longer).
        return [
            "condor_q",
            "-json",
            "-constraint",
            f"{TAG} =!= undefined",
            "-attributes",
            ",".join(AD_ATTRIBUTES),
        ]

    def parse_status_output(
        self, result: CommandResult, handles: Mapping[str, JobHandle]
    ) -> dict[int, NativeReport]:
        procs = self._procs_from(result, "condor_q", handles)
        reports: dict[int, NativeReport] = {}
        for native_id, found in procs.items():
            handle = handles[native_id]
            report, state = job_report(handle.job_id, found, int(handle.state.get("procs", 1)))
            reports[handle.job_id] = dataclasses.replace(report, state=state)
        return reports

    def accounting_command(self, native_ids: Sequence[str]) -> list[str] | None:
        ids = ", ".join(str(int(n)) for n in native_ids if self.native_id_pattern.match(n))
        return [
            "condor_history",
            "-json",
            "-constraint",
            f"{TAG} =!= undefined && member(ClusterId, {{{ids}}})",
            "-attributes",
            ",".join(AD_ATTRIBUTES),
        ]

    def _procs_from(
        self, result: CommandResult, what: str, handles: Mapping[str, JobHandle]
    ) -> dict[str, dict[int, ProcState]]:
        self.check_result(result, what)
        procs: dict[str, dict[int, ProcState]] = {}
        for ad in parse_ads(result.stdout, what):
            cluster, proc = _int(ad.get("ClusterId")), _int(ad.get("ProcId"))
            if cluster is None or proc is None or str(cluster) not in handles:
                continue
            handle = handles[str(cluster)]
            if ad.get(TAG) not in (None, handle.key):
                continue  # the same cluster id from another schedd history: not ours
            procs.setdefault(str(cluster), {})[proc] = map_ad(ad)
        return procs

    def poll_batch(self, handles: Sequence[JobHandle]) -> dict[int, NativeReport]:
        """One ``condor_q`` for every job; one ``condor_history`` only for clusters with procs
        that left the queue and that no earlier poll saw finish."""
        if not handles:
            return {}
        by_native = {h.native_id: h for h in handles if self.native_id_pattern.match(h.native_id)}
        if not by_native:
            return {}
        queue = self.run(self.status_command(list(by_native)))
        procs = self._procs_from(queue, "condor_q", by_native)
        left: list[str] = []
        for native_id, handle in by_native.items():
            found = procs.setdefault(native_id, {})
            for proc, earlier in _stored_procs(handle).items():
                found.setdefault(proc, earlier)
            expected = max(1, int(handle.state.get("procs", 1) or 1))
            if len(found) < expected:
                left.append(native_id)
        if left:
            command = self.accounting_command(left)
            assert command is not None
            history = self._procs_from(self.run(command), "condor_history", by_native)
            for native_id, found in history.items():
                for proc, ended in found.items():
                    procs[native_id].setdefault(proc, ended)
        reports: dict[int, NativeReport] = {}
        for native_id, found in procs.items():
            if not found:
                continue  # neither the queue nor the history knows it: stale, not failed
            handle = by_native[native_id]
            expected = max(1, int(handle.state.get("procs", 1) or 1))
            report, state = job_report(handle.job_id, found, expected)
            if report.status is None:
                continue
            if handle.state.get("workflow"):
                report, state = self.workflow_report(handle, report)
            reports[handle.job_id] = dataclasses.replace(report, state=state)
        return reports

    def workflow_report(
        self, handle: JobHandle, dagman: NativeReport
    ) -> tuple[NativeReport, dict[str, Any] | None]:
        """A workflow's status from its DAGMan job and DAGMan's node status file: Various while
        nodes run, Various-Complete when all are done, Error naming the nodes that failed."""
        folder = attempt_folder(
            self.remote_workspace(handle.workspace), handle.job_id, handle.attempt
        )
        graph = handle.state.get("graph") or {}
        text = self.runner.read_text(f"{folder}/workflow.status") or ""
        nodes = condor_dag.parse_node_status(text, graph)
        state = {"nodes": nodes} if nodes else None
        failed = sorted(n for n, node in nodes.items() if node["status"] == Status.ERROR.value)
        status, message = dagman.status, dagman.message
        if dagman.status == Status.RUNNING:
            started = any(
                node["status"] not in (Status.PENDING.value, None) for node in nodes.values()
            )
            status = Status.VARIOUS if started else Status.SUBMITTED
        elif dagman.status == Status.COMPLETE:
            status, message = Status.VARIOUS_COMPLETE, "every node is done"
        elif dagman.status == Status.ERROR and failed:
            details = [
                f"{n} ({nodes[n]['native_status']}, {nodes[n]['retries']} retries)" for n in failed
            ]
            message = f"node(s) failed: {'; '.join(details)}"
        return (
            NativeReport(handle.job_id, status, dagman.native_status, message, dagman.exit_code),
            state,
        )

    def find_submissions(self, specs: Sequence[JobSpec]) -> dict[str, str]:
        """Clusters already submitted for these attempts (a monitor crashed after condor_submit).
        Only attempts whose submit description exists can have one; for them, one condor_q and,
        for those not in the queue, one condor_history, matched on the tag and the file."""
        candidates = {
            spec.key: self.submit_path(spec)
            for spec in specs
            if self.runner.read_text(self.submit_path(spec), limit=1) is not None
        }
        if not candidates:
            return {}
        found: dict[str, str] = {}
        for command, what in (("condor_q", "condor_q"), ("condor_history", "condor_history")):
            wanted = [k for k in candidates if k not in found]
            if not wanted:
                break
            keys = ", ".join(json.dumps(k) for k in wanted)
            result = self.run(
                [
                    command,
                    "-json",
                    "-constraint",
                    f"member({TAG}, {{{keys}}})",
                    "-attributes",
                    f"ClusterId,{TAG},{SUBMISSION_TAG}",
                ]
            )
            self.check_result(result, what)
            for ad in parse_ads(result.stdout, what):
                key, path = ad.get(TAG), ad.get(SUBMISSION_TAG)
                cluster = _int(ad.get("ClusterId"))
                if isinstance(key, str) and candidates.get(key) == path and cluster is not None:
                    found[key] = str(cluster)
        return found

    # -- control --------------------------------------------------------------------------------
    def _act(self, handle: JobHandle, argv: list[str], what: str) -> CommandResult:
        result = self.run(argv)
        text = (result.stderr + result.stdout).strip()
        if result.returncode != 0 and any(sign in text for sign in UNREACHABLE):
            self.check_result(result, what)
        return result

    def cancel_command(self, native_id: str) -> list[str]:
        return ["condor_rm", native_id]

    def cancel(self, handle: JobHandle) -> None:
        if not self.native_id_pattern.match(handle.native_id):
            return
        result = self._act(handle, self.cancel_command(handle.native_id), "condor_rm")
        if result.returncode != 0:
            text = (result.stderr + result.stdout).strip()
            if "Couldn't find" in text or "not found" in text.lower():
                return  # it ended on its own first
            raise SubmissionRejectedError(
                f"HTCondor could not remove cluster {handle.native_id}: {text[-500:]}"
            )

    def pause(self, handle: JobHandle) -> None:
        """Holds the cluster (a running job is stopped and starts again when released)."""
        result = self._act(
            handle, ["condor_hold", "-reason", PAUSE_REASON, handle.native_id], "condor_hold"
        )
        if result.returncode != 0:
            raise JobStateError(
                f"HTCondor refused to hold cluster {handle.native_id}: "
                f"{(result.stderr.strip() or result.stdout.strip())[-500:]}"
            )

    def resume(self, handle: JobHandle) -> None:
        result = self._act(handle, ["condor_release", handle.native_id], "condor_release")
        if result.returncode != 0:
            raise JobStateError(
                f"HTCondor refused to release cluster {handle.native_id}: "
                f"{(result.stderr.strip() or result.stdout.strip())[-500:]}"
            )

    def get_logs(self, handle: JobHandle) -> dict[str, str]:
        """Each proc's stdout and stderr (``stdout``/``stderr`` for one proc, ``stdout.<n>``
        otherwise) and HTCondor's user log (``condor_log``); for a workflow, DAGMan's
        ``dagman.out`` and ``dagman.log`` and every node's ``<node>.stdout`` … files."""
        folder = attempt_folder(
            self.remote_workspace(handle.workspace), handle.job_id, handle.attempt
        )
        logs: dict[str, str]
        if handle.state.get("workflow"):
            logs = {
                "dagman.out": self.runner.read_text(f"{folder}/workflow.dag.dagman.out") or "",
                "dagman.log": self.runner.read_text(f"{folder}/workflow.dag.dagman.log") or "",
            }
            for node in handle.state.get("graph") or {}:
                for stream in ("stdout", "stderr"):
                    text = self.runner.read_text(f"{folder}/{node}.{stream}.0.log")
                    logs[f"{node}.{stream}"] = text or ""
                logs[f"{node}.condor_log"] = (
                    self.runner.read_text(f"{folder}/{node}.condor.log") or ""
                )
            return {name: text[-LOG_LIMIT:] for name, text in logs.items()}
        procs = max(1, int(handle.state.get("procs", 1) or 1))
        logs = {}
        for proc in range(min(procs, 1000)):
            for stream in ("stdout", "stderr"):
                name = stream if procs == 1 else f"{stream}.{proc}"
                text = self.runner.read_text(f"{folder}/{stream}.{proc}.log")
                logs[name] = (text or "")[-LOG_LIMIT:]
        logs["condor_log"] = (self.runner.read_text(f"{folder}/condor.log") or "")[-LOG_LIMIT:]
        return logs

    def cleanup(self, handle: JobHandle) -> None:
        """Out of the queue, and offload's own files for the job (its ``.offload/job-<id>``
        folder) gone; the job's other files are the workspace's, which the store deletes when it
        owns it. Other jobs sharing the workspace keep theirs."""
        self.cancel(handle)
        workspace = self.remote_workspace(handle.workspace)
        if workspace.strip("/"):
            self.run(["rm", "-rf", "--", job_folder(workspace, handle.job_id)])
