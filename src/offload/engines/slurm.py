"""The Slurm engine: batch scripts submitted with ``sbatch``, one ``squeue`` per poll for every
active job, and the accounting (``sacct``, or ``sacct -c`` on a cluster without slurmdbd) only
for jobs that left the queue.

Each attempt gets ``<workspace>/.offload/job-<id>/attempt-<n>/`` holding ``job.sh`` (the script,
with its ``#SBATCH`` directives), ``stdout.log``/``stderr.log`` and ``jobid`` (written by the job
when it starts, so a monitor that crashed right after ``sbatch`` finds the job even after Slurm
forgot it). Every submission carries ``--comment=offload-<job>-<attempt>`` for the same reason.

Nothing a user wrote becomes a directive or shell code: resource values are checked against strict
formats, paths go on ``sbatch``'s argument list, and environment values, the command and its
arguments are quoted for bash, each on its own line (:func:`bash_quote`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from offload.engines.base import (
    BatchSchedulerEngine,
    JobHandle,
    JobSpec,
    NativeReport,
    aggregate_statuses,
    attempt_folder,
    validate_environment,
)
from offload.engines.batch_common import (
    INHERITED,
    JOB_NAME_UNSAFE,
    LOG_LIMIT,
    WALL_TIME,
    bash_quote,
    ids_from_jobid_files,
    positive_int,
    validate_command,
    validate_dependencies,
    validate_names,
    working_directory,
)
from offload.errors import (
    ConfigurationError,
    EngineError,
    EngineUnavailableError,
    InvalidJobError,
    JobStateError,
    SubmissionRejectedError,
)
from offload.status import Status
from offload.transport.base import CommandResult, CommandRunner

#: A size in megabytes, or with a K/M/G/T suffix (Slurm's --mem; no "KB" forms).
MEMORY = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)
HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})
#: A job array: comma-separated indexes or ranges (``1-100``, ``0-15:4``, ``1,3,7-9``), optionally
#: ``%N`` at most N tasks at once. Nothing else: the value becomes an ``#SBATCH --array`` line.
ARRAY_PART = re.compile(r"^(\d{1,7})(?:-(\d{1,7})(?::(\d{1,7}))?)?$")
#: Slurm's own ceiling on array indexes (MaxArraySize may be at most 4000001).
ARRAY_MAX_INDEX = 4_000_000
#: The most tasks one array may have here (engine option ``max_array_tasks``); Slurm's default
#: MaxArraySize allows indexes 0-1000, MaxJobCount 10000 jobs in all.
ARRAY_MAX_TASKS = 10_000
#: sbatch errors that say nothing about the job: the submission is retried, the job stays as it is.
TRANSIENT = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Zero Bytes were transmitted",
    "Resource temporarily unavailable",
    "Slurm temporarily unable to accept job",
    "Communication connection failure",
)
#: Slurm's reason for a job whose dependency can never be satisfied (it would wait forever).
NEVER_SATISFIED = "DependencyNeverSatisfied"


def slurm_path(path: str) -> str:
    """A path for ``--output``/``--error``: ``%`` starts a Slurm filename pattern, ``%%`` is one %."""
    return path.replace("%", "%%")


def _exit_message(exit_code: str) -> tuple[int | None, str]:
    """Slurm's ``code:signal`` as an exit code and words."""
    code_text, _, signal_text = exit_code.partition(":")
    code = int(code_text) if code_text.isdigit() else None
    if signal_text.isdigit() and int(signal_text) != 0:
        return code, f"killed by signal {signal_text}"
    if code is None:
        return None, "failed"
    return code, f"exited with code {code}"


def parse_array(value: Any, max_tasks: int = ARRAY_MAX_TASKS) -> tuple[str, list[int]]:
    """A job's ``array`` parameter as Slurm's ``--array`` text and its sorted task ids. Raises
    ``InvalidJobError("array", …)`` for anything but indexes, ranges, steps and one ``%limit``."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidJobError("array", f"must be text such as '1-100%10', not {value!r}")
    text = str(value).strip()
    spec, percent, limit = text.partition("%")
    if percent and (not limit.isdigit() or int(limit) < 1 or len(limit) > 7):
        raise InvalidJobError("array", f"{value!r}: the limit after % must be a positive number")
    tasks: set[int] = set()
    for part in spec.split(","):
        match = ARRAY_PART.match(part)
        if match is None:
            raise InvalidJobError(
                "array",
                f"{value!r} is not a Slurm array: indexes or ranges separated by commas "
                "('1-100', '0-15:4', '1,3,7-9'), optionally '%N' (at most N at once)",
            )
        first, last, step = match.group(1), match.group(2), match.group(3)
        start = int(first)
        end = int(last) if last is not None else start
        stride = int(step) if step is not None else 1
        if end < start or stride < 1 or end > ARRAY_MAX_INDEX:
            raise InvalidJobError(
                "array",
                f"{part!r}: a range goes up (start ≤ end ≤ {ARRAY_MAX_INDEX:,}) with a step ≥ 1",
            )
        if (end - start) // stride + 1 + len(tasks) > max_tasks:
            raise InvalidJobError("array", f"{value!r} has more than {max_tasks:,} tasks")
        tasks.update(range(start, end + 1, stride))
    return text, sorted(tasks)


def map_state(job_id: int, state: str, reason: str = "", exit_code: str = "") -> NativeReport:
    """One Slurm state (from ``squeue`` or the accounting) as a report. The native state and the
    reason are kept in ``native_status``; the message says what happened in words."""
    # sacct writes "CANCELLED by 0"; squeue's reason "None" means no reason.
    base = state.split()[0].upper() if state.strip() else "UNKNOWN"
    reason = "" if reason in ("None", "(null)") else reason
    native = f"{base} ({reason})" if reason else base
    code, exit_text = _exit_message(exit_code) if exit_code else (None, "")
    status: Status | None
    message = ""
    if base == "PENDING":
        if reason == NEVER_SATISFIED:
            status, message = Status.ERROR, "a job it depends on ended so that it can never run"
        elif reason in HELD_REASONS:
            status, message = Status.PAUSED, "held"
        else:
            status, message = Status.SUBMITTED, f"queued: {reason}" if reason else "queued"
    elif base in ("CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT"):
        status, message = Status.SUBMITTED, f"requeued by Slurm ({base.lower()})"
    elif base in ("RUNNING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"):
        status = Status.RUNNING
    elif base in ("SUSPENDED", "STOPPED"):
        status, message = Status.PAUSED, "suspended"
    elif base == "COMPLETED":
        status, message, code = Status.COMPLETE, "exited with code 0", 0
    elif base == "FAILED":
        status, message = Status.ERROR, exit_text or "failed"
    elif base == "TIMEOUT":
        status, message = Status.ERROR, "wall time exceeded: stopped at its time limit"
    elif base == "OUT_OF_MEMORY":
        status, message = Status.ERROR, "out of memory: stopped at its memory limit"
    elif base == "NODE_FAIL":
        status, message = Status.ERROR, "its node failed"
    elif base == "BOOT_FAIL":
        status, message = Status.ERROR, "its node failed to boot"
    elif base == "DEADLINE":
        status, message = Status.ERROR, "its deadline passed"
    elif base == "PREEMPTED":
        # In the queue a preempted job is requeued (PENDING); final only when not requeued.
        status, message = Status.ERROR, "preempted by another job and not requeued"
    elif base in ("CANCELLED", "REVOKED"):
        status, message = Status.ABORTED, "cancelled"
    else:
        status, message = None, f"unknown Slurm state {base}"
    if reason and status not in (Status.SUBMITTED, None):
        message = f"{message} ({reason})" if message else reason
    return NativeReport(job_id, status, native, message, code)


#: What Slurm's queue and accounting say once a job or task has ended.
FINAL = frozenset({Status.COMPLETE, Status.ERROR, Status.ABORTED})
FINAL_CODES = frozenset(s.value for s in FINAL)


class QueueLine(NamedTuple):
    """One line of ``squeue``: a single job (``task`` None) or one task of an array."""

    job: str
    task: int | None
    state: str
    reason: str
    #: Slurm's own job id of the line (an array task's ``%A``).
    raw: str


def split_array_id(text: str) -> tuple[str, list[int | None]]:
    """``"7"`` → ("7", [None]); ``"7_3"`` → ("7", [3]); ``"7_[3-5%2]"`` → ("7", [3, 4, 5])."""
    job, underscore, tasks = text.strip().partition("_")
    if not underscore:
        return job, [None]
    if tasks.isdigit():
        return job, [int(tasks)]
    try:
        _, ids = parse_array(tasks.strip("[]"), 4_000_001)
    except InvalidJobError:
        return text, [None]  # nothing offload submitted looks like this
    return job, list(ids)


def task_record(report: NativeReport, slurm_job_id: str = "") -> dict[str, Any]:
    """One array task as kept in ``state["tasks"]``."""
    record: dict[str, Any] = {
        "status": report.status.value if report.status is not None else Status.SUBMITTED.value,
        "native_status": report.native_status,
        "exit_code": report.exit_code,
    }
    if slurm_job_id.isdigit():
        record["slurm_job_id"] = slurm_job_id
    return record


@dataclass
class ArrayPoll:
    """One array job during a poll: its tasks as the queue, then the accounting, say."""

    handle: JobHandle
    #: ``state["tasks"]`` as the previous poll left it.
    before: dict[str, Any]
    expected: list[str] = field(default_factory=list)
    #: Tasks known this poll (from the queue, the accounting, or settled earlier).
    now: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Tasks to ask the accounting about → their own Slurm job id when known.
    need: dict[str, str] = field(default_factory=dict)
    #: Whether the queue or the accounting said anything about a task this poll.
    heard: bool = False
    answered: set[str] = field(default_factory=set)

    def report(self) -> NativeReport | None:
        """The array as one job: Various while its tasks disagree and some still wait,
        Various-Complete once none waits (``aggregate_statuses``). None (stale) when neither the
        queue nor the accounting knew any task that had not already ended."""
        if self.need and not self.heard:
            return None
        tasks: dict[str, dict[str, Any]] = {}
        for task in self.expected:
            record = self.now.get(task, self.before.get(task))
            if isinstance(record, dict):
                tasks[task] = record  # a task unknown this poll keeps its last known state
        # A task never seen anywhere yet counts as waiting: never assumed finished.
        statuses = [Status(r["status"]) for r in tasks.values()]
        statuses += [Status.SUBMITTED] * (len(self.expected) - len(tasks))
        status = aggregate_statuses(statuses)
        if status is None:
            return None
        natives = Counter(str(r["native_status"]) for r in tasks.values())
        if len(self.expected) > len(tasks):
            natives["UNSEEN"] += len(self.expected) - len(tasks)
        native = ", ".join(f"{count} {name}" for name, count in natives.most_common())
        counts = Counter(statuses)
        message = f"{len(statuses)} tasks: " + ", ".join(
            f"{counts[s]} {s.display}"
            for s in Status
            if counts[s]  # in lifecycle order
        )
        failed = [
            f"task {t}: {r['native_status']}"
            + (f" (exit {r['exit_code']})" if r.get("exit_code") else "")
            for t, r in sorted(tasks.items(), key=lambda item: int(item[0]))
            if r["status"] in (Status.ERROR.value, Status.ABORTED.value)
        ]
        if failed:
            more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
            message += "; " + "; ".join(failed[:3]) + more
        exit_code = None
        if status in FINAL or status == Status.VARIOUS_COMPLETE:
            codes = [r["exit_code"] for r in tasks.values() if r.get("exit_code") is not None]
            exit_code = max(codes) if codes else None
        return NativeReport(
            self.handle.job_id,
            status,
            native[:255],
            message,
            exit_code,
            state={"tasks": tasks} if tasks != self.before else None,
        )


def array_from_queue(handle: JobHandle, queued: Mapping[str, QueueLine]) -> ArrayPoll:
    """What the queue says about an array's tasks. Tasks it no longer has are asked of the
    accounting, unless an earlier poll already saw them end."""
    try:
        _, ids = parse_array(handle.state["array"], 4_000_001)
    except InvalidJobError:
        ids = []
    before = handle.state.get("tasks")
    array = ArrayPoll(handle, dict(before) if isinstance(before, dict) else {})
    known_ids = {str(t) for t in ids}
    array.expected = [str(t) for t in ids] + sorted(
        (t for t in queued if t not in known_ids), key=int
    )
    for task in array.expected:
        line = queued.get(task)
        known = array.before.get(task)
        if line is not None:
            report = map_state(handle.job_id, line.state, line.reason)
            if report.status not in FINAL or line.reason == NEVER_SATISFIED:
                # A pending task still shares the array's record; its own id comes when it starts.
                own_id = line.raw if line.state.split()[0] != "PENDING" else ""
                array.now[task] = task_record(report, own_id)
                array.heard = True
                continue
        if isinstance(known, dict) and known.get("status") in FINAL_CODES:
            array.now[task] = known  # settled by an earlier poll: not asked again
            continue
        raw = line.raw if line is not None else ""
        if not raw and isinstance(known, dict):
            raw = str(known.get("slurm_job_id") or "")
        array.need[task] = raw
    return array


class SlurmEngine(BatchSchedulerEngine):
    """Options: ``partition``, ``account``, ``qos`` (defaults for every job), ``accounting``
    (``"sacct"``: slurmdbd; ``"jobcomp"``: ``sacct -c``; ``"none"``), ``inherit_environment``."""

    kind = "slurm"
    can_pause = True
    supports_dependencies = True
    native_id_pattern: ClassVar[re.Pattern[str]] = re.compile(r"^\d+$")

    def __init__(
        self, options: Mapping[str, Any] | None = None, runner: CommandRunner | None = None
    ) -> None:
        super().__init__(options, runner)
        self.accounting = str(self.options.get("accounting") or "sacct")
        if self.accounting not in ("sacct", "jobcomp", "none"):
            raise ConfigurationError(
                f"Slurm engine option accounting={self.accounting!r} is not one of sacct, "
                "jobcomp, none"
            )
        self.inherit = tuple(INHERITED) + tuple(self.options.get("inherit_environment", ()))
        self.max_array_tasks = int(self.options.get("max_array_tasks") or ARRAY_MAX_TASKS)

    # -- validation ----------------------------------------------------------------------------
    def validate(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        params = dict(parameters)
        if params.get("array") is None or params.get("array") == "":
            params.pop("array", None)
        else:
            params["array"], _ = parse_array(params["array"], self.max_array_tasks)
        validate_command(params)
        params["environment"] = validate_environment(params.get("environment"), allow_bool=False)
        validate_names(params, self.options, ("partition", "account", "qos"), "Slurm")
        for name in ("nodes", "ntasks", "cpus_per_task"):
            positive_int(params, name)
        wall_time = params.get("wall_time")
        if wall_time is not None:
            text = str(wall_time).strip()
            if (
                isinstance(wall_time, bool)
                or not WALL_TIME.match(text)
                or not re.search(r"[1-9]", text)
            ):
                raise InvalidJobError(
                    "wall_time",
                    f"{wall_time!r} is not a Slurm time limit: minutes ('30'), 'HH:MM:SS' or "
                    "'D-HH:MM:SS', more than zero",
                )
            params["wall_time"] = text
        memory = params.get("memory")
        if memory is not None:
            text = str(memory).strip()
            if isinstance(memory, bool) or not MEMORY.match(text) or not re.search(r"[1-9]", text):
                raise InvalidJobError(
                    "memory", f"{memory!r} is not a memory size: megabytes ('500') or '4G', '512M'"
                )
            params["memory"] = text.upper()
        working_directory = params.get("working_directory")
        if working_directory is not None:
            if not isinstance(working_directory, str) or not working_directory.strip():
                raise InvalidJobError("working_directory", "must be a folder path")
            if "\x00" in working_directory or "\n" in working_directory:
                raise InvalidJobError("working_directory", "must not contain NUL or newlines")
        params["extra_directives"] = self._validate_directives(params.get("extra_directives"))
        validate_dependencies(params, self.native_id_pattern)
        return params

    @staticmethod
    def _validate_directives(directives: Any) -> list[str]:
        directives = directives or []
        if isinstance(directives, str):
            directives = [directives]
        if not isinstance(directives, list | tuple):
            raise InvalidJobError("extra_directives", "must be a list of options, e.g. ['--qos=x']")
        clean: list[str] = []
        for i, directive in enumerate(directives):
            field = f"extra_directives[{i}]"
            if not isinstance(directive, str):
                raise InvalidJobError(field, "must be a string such as '--exclusive'")
            text = directive.strip()
            if text.startswith("#SBATCH"):
                text = text[len("#SBATCH") :].strip()
            if any(c in text for c in "\n\r\x00"):
                raise InvalidJobError(field, "must be one directive on one line")
            if not text.startswith("-"):
                raise InvalidJobError(field, f"{directive!r} is not an sbatch option (starts -)")
            clean.append(text)
        return clean

    # -- the script ----------------------------------------------------------------------------
    def _job_name(self, spec: JobSpec) -> str:
        name = JOB_NAME_UNSAFE.sub("_", spec.name).strip("_")[:100]
        return name or spec.key

    def render_script(self, spec: JobSpec, params: Mapping[str, Any]) -> str:
        folder = attempt_folder(spec.workspace, spec.job_id, spec.attempt)
        directives = [
            f"--job-name={self._job_name(spec)}",
            f"--comment={spec.key}",
        ]
        for name, option in (("partition", "partition"), ("account", "account"), ("qos", "qos")):
            if params.get(name):
                directives.append(f"--{option}={params[name]}")
        for name, option in (("nodes", "nodes"), ("ntasks", "ntasks")):
            if params.get(name):
                directives.append(f"--{option}={params[name]}")
        if params.get("cpus_per_task"):
            directives.append(f"--cpus-per-task={params['cpus_per_task']}")
        if params.get("memory"):
            directives.append(f"--mem={params['memory']}")
        if params.get("wall_time"):
            directives.append(f"--time={params['wall_time']}")
        if params.get("native_dependencies"):
            # Slurm ANDs comma-separated conditions; a job it waits for that already ended
            # was resolved by the monitor and is not listed.
            conditions = [f"{d['type']}:{d['native_id']}" for d in params["native_dependencies"]]
            directives.append(f"--dependency={','.join(conditions)}")
        if params.get("array"):
            directives.append(f"--array={params['array']}")
        directives.extend(params.get("extra_directives") or [])
        lines = ["#!/bin/bash"]
        lines += [f"#SBATCH {d}" for d in directives]
        lines += [
            f"# offload job {spec.job_id}, attempt {spec.attempt}; written by offload's Slurm engine.",
            "# Output files, working folder and inherited variables are on sbatch's command line.",
        ]
        if params.get("array"):
            # Every task records the array's id (crash recovery) and its own job id (the
            # accounting of a cluster without slurmdbd knows tasks only by their own ids).
            tasks = folder + "/tasks"
            lines += [
                f"printf '%s\\n' \"${{SLURM_ARRAY_JOB_ID}}\" > {bash_quote(folder + '/jobid')}",
                f"mkdir -p {bash_quote(tasks)}",
                f"printf '%s\\n' \"${{SLURM_JOB_ID}}\" > "
                f'{bash_quote(tasks)}/"${{SLURM_ARRAY_TASK_ID}}.jobid"',
                'export OFFLOAD_TASK_ID="${SLURM_ARRAY_TASK_ID}"',
            ]
        else:
            lines.append(f"printf '%s\\n' \"${{SLURM_JOB_ID}}\" > {bash_quote(folder + '/jobid')}")
        lines += [
            f"export OFFLOAD_JOB_ID={spec.job_id}",
            f"export OFFLOAD_ATTEMPT={spec.attempt}",
            f"export OFFLOAD_WORKSPACE={bash_quote(spec.workspace)}",
            f"export OFFLOAD_JOB_NAME={bash_quote(spec.name)}",
        ]
        for name, value in (params.get("environment") or {}).items():
            lines.append(f"export {name}={bash_quote(value)}")
        if params.get("script"):
            lines += ["# the job's script, verbatim:", str(params["script"])]
        else:
            command = [params["executable"], *params.get("arguments", [])]
            lines.append("exec " + " ".join(bash_quote(word) for word in command))
        return "\n".join(lines) + "\n"

    # -- BatchSchedulerEngine pieces -------------------------------------------------------------
    @staticmethod
    def script_path(spec: JobSpec) -> str:
        return f"{attempt_folder(spec.workspace, spec.job_id, spec.attempt)}/job.sh"

    def write_submission(self, spec: JobSpec) -> str:
        params = self.validate(spec.parameters)
        path = self.script_path(spec)
        self.runner.write_text(path, self.render_script(spec, params), mode=0o755)
        return path

    def submit_command(self, spec: JobSpec, script_path: str) -> list[str]:
        folder = slurm_path(attempt_folder(spec.workspace, spec.job_id, spec.attempt))
        workdir = working_directory(spec.workspace, spec.parameters.get("working_directory"))
        # An array's tasks each get their own logs: %A is the array's id, %a the task's index.
        suffix = "-%A_%a.log" if spec.parameters.get("array") else ".log"
        return [
            "sbatch",
            "--parsable",
            f"--output={folder}/stdout{suffix}",
            f"--error={folder}/stderr{suffix}",
            f"--chdir={workdir}",
            # Only these names (their values come from sbatch's environment): never the monitor's
            # database URL or secret key.
            f"--export={','.join(self.inherit)}",
            script_path,
        ]

    def parse_submit_output(self, result: CommandResult) -> str:
        first = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
        native_id = first.split(";")[0].strip()  # "id" or "id;cluster"
        if not self.native_id_pattern.match(native_id):
            raise SubmissionRejectedError(
                f"sbatch answered {result.stdout.strip()!r}, not a job id: {result.stderr.strip()}"
            )
        return native_id

    def submit_error(self, result: CommandResult) -> EngineError:
        text = result.stderr + result.stdout
        if any(sign in text for sign in TRANSIENT):
            detail = (result.stderr.strip() or result.stdout.strip())[-500:]
            return EngineUnavailableError(f"sbatch could not reach Slurm: {detail}")
        return super().submit_error(result)

    def check_result(self, result: CommandResult, what: str) -> None:
        """A failed scheduler command means the scheduler is unreachable (stale), not a failed job."""
        if result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-500:]
            raise EngineUnavailableError(f"{what} failed (exit {result.returncode}): {detail}")

    def status_command(self, native_ids: Sequence[str]) -> list[str]:
        # --array: one line per array task (never "7_[3-9]"); %A is each task's own job id.
        return [
            "squeue",
            "--noheader",
            "--array",
            f"--jobs={','.join(native_ids)}",
            "--format=%i|%T|%r|%A",
        ]

    def parse_queue(self, result: CommandResult) -> list[QueueLine]:
        """The lines of :meth:`status_command`'s output, array tasks one by one."""
        if result.returncode != 0 and "Invalid job id" in result.stderr:
            return []  # squeue refuses a list of only ids it has forgotten: all left the queue
        self.check_result(result, "squeue")
        lines: list[QueueLine] = []
        for line in result.stdout.splitlines():
            fields = line.strip().split("|")
            if len(fields) < 3:
                continue
            job, tasks = split_array_id(fields[0])
            raw = fields[3] if len(fields) > 3 else ""
            for task in tasks:
                lines.append(QueueLine(job, task, fields[1], fields[2], raw))
        return lines

    def parse_status_output(
        self, result: CommandResult, handles: Mapping[str, JobHandle]
    ) -> dict[int, NativeReport]:
        """Reports for the single (not array) jobs the queue still knows."""
        reports: dict[int, NativeReport] = {}
        for line in self.parse_queue(result):
            handle = handles.get(line.job)
            if handle is None or line.task is not None:
                continue
            report = map_state(handle.job_id, line.state, line.reason)
            if report.status in FINAL and line.reason != NEVER_SATISFIED:
                continue  # finished: the accounting has the exit code
            reports[handle.job_id] = report
        return reports

    def accounting_command(self, native_ids: Sequence[str]) -> list[str] | None:
        if self.accounting == "none":
            return None
        argv = ["sacct", "--noheader", "--parsable2", f"--jobs={','.join(native_ids)}"]
        if self.accounting == "jobcomp":
            return [*argv, "--completion", "--format=JobID,State,ExitCode"]
        return [*argv, "--allocations", "--format=JobID,State,ExitCode,Reason"]

    def parse_accounting_lines(self, result: CommandResult) -> dict[str, list[str]]:
        """JobID → its fields, the last record of each (a requeued job has several)."""
        self.check_result(result, "sacct")
        latest: dict[str, list[str]] = {}
        for line in result.stdout.splitlines():
            fields = line.strip().split("|")
            if len(fields) >= 3 and fields[0]:
                latest[fields[0]] = fields
        return latest

    def parse_accounting_output(
        self, result: CommandResult, handles: Mapping[str, JobHandle]
    ) -> dict[int, NativeReport]:
        reports: dict[int, NativeReport] = {}
        for native_id, fields in self.parse_accounting_lines(result).items():
            if native_id not in handles:
                continue
            reason = fields[3] if len(fields) > 3 else ""
            report = map_state(handles[native_id].job_id, fields[1], reason, fields[2])
            if report.status is not None:
                reports[report.job_id] = report
        return reports

    def submission_state(self, spec: JobSpec) -> dict[str, Any]:
        array = spec.parameters.get("array")
        if not array:
            return {}
        try:
            text, _ = parse_array(array, self.max_array_tasks)
        except InvalidJobError:
            return {}
        return {"array": text}

    def poll_batch(self, handles: Sequence[JobHandle]) -> dict[int, NativeReport]:
        """One ``squeue`` for every job and array task, then one accounting call for the single
        jobs and the array tasks that left the queue, then (rarely) one ``scancel``."""
        if not handles:
            return {}
        by_native = {h.native_id: h for h in handles}
        lines = self.parse_queue(self.run(self.status_command(list(by_native))))
        single_lines = {line.job: line for line in lines if line.task is None}
        task_lines: dict[str, dict[str, QueueLine]] = {}
        for line in lines:
            if line.task is not None:
                task_lines.setdefault(line.job, {})[str(line.task)] = line
        reports: dict[int, NativeReport] = {}
        ask_single: list[str] = []
        arrays: list[ArrayPoll] = []
        for handle in handles:
            if handle.state.get("array"):
                arrays.append(array_from_queue(handle, task_lines.get(handle.native_id, {})))
                continue
            queued = single_lines.get(handle.native_id)
            seen = map_state(handle.job_id, queued.state, queued.reason) if queued else None
            if seen is None or (seen.status in FINAL and NEVER_SATISFIED not in seen.native_status):
                ask_single.append(handle.native_id)  # left the queue (or is leaving it)
            else:
                reports[handle.job_id] = seen
        unsettled = [a for a in arrays if a.need]
        if ask_single or unsettled:
            self._ask_accounting(ask_single, unsettled, by_native, reports)
        for array in arrays:
            report = array.report()
            if report is not None:
                reports[array.handle.job_id] = report
        # A job whose dependency failed waits in Slurm forever; offload calls it an Error, so it
        # leaves the queue too (one scancel for all of them).
        doomed = [
            h.native_id
            for h in handles
            if (r := reports.get(h.job_id)) is not None
            and r.status == Status.ERROR
            and NEVER_SATISFIED in r.native_status
        ]
        if doomed:
            self.run(["scancel", *doomed])
        return reports

    def _ask_accounting(
        self,
        singles: list[str],
        arrays: list[ArrayPoll],
        by_native: Mapping[str, JobHandle],
        reports: dict[int, NativeReport],
    ) -> None:
        """The one accounting call of a poll. slurmdbd's ``sacct`` knows array tasks as
        ``<array>_<task>``; ``sacct -c`` (jobcomp) only by each task's own job id, which the
        queue showed while the task ran or the task wrote into ``tasks/<task>.jobid``."""
        by_raw: dict[str, list[tuple[ArrayPoll, str]]] = {}
        ids = list(singles)
        if self.accounting == "jobcomp":
            for array in arrays:
                folder = attempt_folder(
                    self.remote_workspace(array.handle.workspace),
                    array.handle.job_id,
                    array.handle.attempt,
                )
                for task, raw in array.need.items():
                    if not raw:
                        text = (self.runner.read_text(f"{folder}/tasks/{task}.jobid") or "").strip()
                        # No file: the task never started; the array's own record (the tasks
                        # not yet split off it) answers for it.
                        raw = text if text.isdigit() else array.handle.native_id
                    by_raw.setdefault(raw, []).append((array, task))
            ids += [raw for raw in by_raw if raw not in ids]
        else:
            ids += [a.handle.native_id for a in arrays if a.handle.native_id not in ids]
        command = self.accounting_command(ids)
        if command is None:
            return
        records = self.parse_accounting_lines(self.run(command))
        arrays_by_id = {a.handle.native_id: a for a in arrays}
        for job_field, fields in records.items():
            reason = fields[3] if len(fields) > 3 else ""
            targets = by_raw.get(job_field, [])
            if job_field in singles and not targets:
                handle = by_native[job_field]
                report = map_state(handle.job_id, fields[1], reason, fields[2])
                if report.status is not None:
                    reports[handle.job_id] = report
                continue
            job, tasks = split_array_id(job_field)
            if not targets and job in arrays_by_id and tasks != [None]:
                targets = [(arrays_by_id[job], str(t)) for t in tasks]
            for array, task in targets:
                if task not in array.need:
                    continue
                report = map_state(array.handle.job_id, fields[1], reason, fields[2])
                if report.status is not None:
                    raw = job_field if job_field.isdigit() else array.need[task]
                    array.now[task] = task_record(report, raw)
                    array.answered.add(task)
                    array.heard = True

    def find_submissions(self, specs: Sequence[JobSpec]) -> dict[str, str]:
        """One ``squeue`` over this user's jobs (every state Slurm still remembers), then the
        ``jobid`` file each job writes when it starts, for jobs Slurm has forgotten."""
        # %F: the array's id for an array's tasks, the job's own id otherwise.
        result = self.run(["squeue", "--noheader", "--me", "--states=all", "--format=%F|%k|%o"])
        self.check_result(result, "squeue")
        # Key and script path together: job ids restart in another offload database (a test
        # run, a second portal), script paths are unique to one attempt of one job.
        wanted = {(spec.key, self.script_path(spec)) for spec in specs}
        found: dict[str, str] = {}
        for line in result.stdout.splitlines():
            native_id, _, rest = line.strip().partition("|")
            comment, _, command = rest.partition("|")
            if (comment, command) in wanted and self.native_id_pattern.match(native_id):
                found[comment] = native_id
        return ids_from_jobid_files(self.runner, specs, found, self.native_id_pattern)

    # -- control --------------------------------------------------------------------------------
    def _queue_states(self, handle: JobHandle) -> set[str]:
        """The Slurm states of the job (of each of an array's tasks) still in the queue."""
        lines = self.parse_queue(self.run(self.status_command([handle.native_id])))
        return {line.state for line in lines if line.job == handle.native_id}

    def _queue_state(self, handle: JobHandle) -> tuple[str, str]:
        lines = self.parse_queue(self.run(self.status_command([handle.native_id])))
        for line in lines:
            if line.job == handle.native_id:
                return line.state, line.reason
        return "", ""

    def cancel_command(self, native_id: str) -> list[str]:
        return ["scancel", native_id]

    def cancel(self, handle: JobHandle) -> None:
        if not handle.native_id:
            return
        result = self.run(self.cancel_command(handle.native_id))
        text = result.stderr.strip()
        if result.returncode != 0 and (
            "already completing or completed" in text or "Invalid job id" in text
        ):
            return  # it ended on its own first
        self.check_result(result, "scancel")

    def _control(self, handle: JobHandle, action: str, partial: bool = False) -> None:
        """``scontrol <action>`` on the job (on all of an array's tasks). ``partial``: the tasks
        it does not apply to (suspending pending tasks, say) are not an error."""
        result = self.run(["scontrol", action, handle.native_id])
        text = result.stderr.strip()
        if result.returncode != 0 and "Unable to contact" not in text:
            applied = [ln for ln in text.splitlines() if "No error" in ln]
            if partial and applied:
                return
            raise JobStateError(f"Slurm refused to {action} job {handle.native_id}: {text}")
        self.check_result(result, f"scontrol {action}")

    def pause(self, handle: JobHandle) -> None:
        """A queued job is held; a running one suspended (suspend needs Slurm operator rights).
        An array: its queued tasks held and its running ones suspended."""
        if handle.state.get("array"):
            states = self._queue_states(handle)
            if not states & {"PENDING", "RUNNING"}:
                raise JobStateError(
                    f"job {handle.job_id} has no queued or running task in Slurm, so it cannot be "
                    "paused"
                )
            if "PENDING" in states:
                self._control(handle, "hold")
            if "RUNNING" in states:
                self._control(handle, "suspend", partial=True)
            return
        state, _ = self._queue_state(handle)
        if state == "PENDING":
            self._control(handle, "hold")
        elif state == "RUNNING":
            self._control(handle, "suspend")
        else:
            raise JobStateError(
                f"job {handle.job_id} is {state or 'no longer queued'} in Slurm, so it cannot be "
                "paused"
            )

    def resume(self, handle: JobHandle) -> None:
        if handle.state.get("array"):
            states = self._queue_states(handle)
            if not states & {"PENDING", "SUSPENDED"}:
                raise JobStateError(
                    f"job {handle.job_id} has no held or suspended task in Slurm, so it cannot "
                    "be resumed"
                )
            if "PENDING" in states:
                self._control(handle, "release", partial=True)
            if "SUSPENDED" in states:
                self._control(handle, "resume", partial=True)
            return
        state, _ = self._queue_state(handle)
        if state == "PENDING":
            self._control(handle, "release")
        elif state == "SUSPENDED":
            self._control(handle, "resume")
        else:
            raise JobStateError(
                f"job {handle.job_id} is {state or 'no longer queued'} in Slurm, not held or "
                "suspended, so it cannot be resumed"
            )

    def get_logs(self, handle: JobHandle) -> dict[str, str]:
        """``stdout``/``stderr``; for an array ``stdout-<array>_<task>`` … for each task that
        has started (the file names without ``.log``, as the web pages name them)."""
        folder = attempt_folder(
            self.remote_workspace(handle.workspace), handle.job_id, handle.attempt
        )
        names = ["stdout", "stderr"]
        if handle.state.get("array"):
            tasks = handle.state.get("tasks")
            started = sorted(
                (
                    t
                    for t, r in (tasks if isinstance(tasks, dict) else {}).items()
                    if isinstance(r, dict)
                    and str(r.get("native_status", "")).split(" ")[0] not in ("PENDING", "")
                ),
                key=int,
            )
            names = [f"{stream}-{handle.native_id}_{task}" for task in started for stream in names]
        logs: dict[str, str] = {}
        for name in names:
            text = self.runner.read_text(f"{folder}/{name}.log")
            logs[name] = (text or "")[-LOG_LIMIT:]
        return logs

    def cleanup(self, handle: JobHandle) -> None:
        self.cancel(handle)
