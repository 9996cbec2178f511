"""Pieces the batch engines share: validation of a batch job's command and resources, bash quoting,
the job script's preamble, array ranges and per-task state, and the files an attempt keeps in
``<workspace>/.offload/job-<id>/attempt-<n>/``.

Grid Engine and PBS use all of it. The Slurm engine (``engines/slurm.py``) uses the quoting, the
command, name, number and dependency checks and the working folder; it keeps its own array, wall
time, memory and directive checks, which follow Slurm's formats and messages.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from offload.engines.base import (
    DEPENDENCY_KINDS,
    BatchSchedulerEngine,
    JobHandle,
    JobSpec,
    SubmitOutcome,
    SubmitResult,
    aggregate_statuses,
    attempt_folder,
    parse_dependencies,
    validate_arguments,
    validate_environment,
)
from offload.errors import (
    EngineError,
    EngineUnavailableError,
    InvalidJobError,
    SubmissionRejectedError,
)
from offload.status import Status
from offload.transport.base import CommandResult, CommandRunner

#: Queues, projects, accounts, parallel environments: letters, digits and ``_ . + -`` only, so no
#: value can end a directive, start another one or mean anything to a shell.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,128}$")
#: minutes | minutes:seconds | hours:minutes:seconds | days-hours[:minutes[:seconds]] (as Slurm's).
WALL_TIME = re.compile(r"^(?:\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+(?::\d{1,2}){0,2})$")
#: A size in megabytes, or with a K/M/G/T suffix.
MEMORY = re.compile(r"^(\d+)(?:([KMGT])B?)?$", re.IGNORECASE)
#: ``first-last[:step][%limit]`` or one task id: ``1-100%10``.
ARRAY = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?(?:%(\d+))?$")
#: Paths that go on a scheduler command line or into a directive: no spaces, quotes, ``$`` (SGE and
#: PBS expand ``$JOB_ID``-style names in output paths), ``%``, ``:`` or shell metacharacters.
SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+@=,-]*$")
#: Characters kept in a scheduler's job name; the rest become "_" (offload keeps the real name).
JOB_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")
#: Variables of the submitter's environment a job inherits; the rest (database URLs, secret keys)
#: stays with the monitor. More can be listed in the ``inherit_environment`` option.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
LOG_LIMIT = 2_000_000  # characters of a log returned by get_logs
#: Tasks of an array kept per task in the job's state (more would make the state too large).
MAX_ARRAY_TASKS = 100_000
#: The exit code a job script uses when a job it depends on ended so that it may not run; the
#: script writes the reason into ``dependency-failed`` next to it.
DEPENDENCY_FAILED_EXIT = 97
#: Files in the attempt folder.
CANCELLED_MARKER = "cancelled"
DEPENDENCY_MARKER = "dependency-failed"
FINISHED_STATUSES = frozenset({Status.COMPLETE, Status.ERROR, Status.ABORTED})


def bash_quote(value: str) -> str:
    """A bash word for ``value`` that stays on one line: :func:`shlex.quote`, or ``$'…'`` with
    escapes when the value holds newlines or other control characters. So no value can start a
    line of the script (a directive, say), however it is written."""
    if not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return shlex.quote(value)
    out = []
    for c in value:
        if c in ("\\", "'"):
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "$'" + "".join(out) + "'"


def ids_from_jobid_files(
    runner: CommandRunner,
    specs: Sequence[JobSpec],
    found: dict[str, str],
    native_id_pattern: re.Pattern[str],
) -> dict[str, str]:
    """``found`` (submission key → native id, from the scheduler's own listing) completed with
    the ids of the jobs it no longer lists: each job writes its id into ``jobid`` in its attempt
    folder when it starts. A file that is missing or holds no valid id adds nothing."""
    for spec in specs:
        if spec.key in found:
            continue
        text = runner.read_text(
            f"{attempt_folder(spec.workspace, spec.job_id, spec.attempt)}/jobid"
        )
        native_id = (text or "").strip()
        if native_id_pattern.match(native_id):
            found[spec.key] = native_id
    return found


def safe_job_name(name: str, fallback: str, limit: int = 100) -> str:
    """The scheduler's job name: ``name`` with unsafe characters replaced; it must not start with a
    digit for Grid Engine and PBS, so such a name gets a prefix."""
    clean = JOB_NAME_UNSAFE.sub("_", name).strip("_")[:limit]
    if clean and not clean[0].isalpha():
        clean = ("j" + clean)[:limit]
    return clean or fallback


def check_safe_path(field: str, path: str) -> str:
    """``path`` when it may go on a scheduler command line or into a directive as it is."""
    if not SAFE_PATH.match(path) or "/../" in path + "/" or "/./" in path + "/":
        raise InvalidJobError(
            field,
            f"{path!r} cannot be given to the scheduler: use an absolute path of letters, digits "
            "and _ . / + @ = , - only (no spaces, $, %, quotes or ..)",
        )
    return path


def positive_int(params: dict[str, Any], name: str) -> None:
    value = params.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidJobError(name, f"must be a positive whole number, not {value!r}")
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise InvalidJobError(name, f"must be a positive whole number, not {value!r}")
    params[name] = int(text)


def validate_command(params: dict[str, Any]) -> None:
    """A command (``executable`` + ``arguments``) or a ``script``, not both; checked in place."""
    executable, script = params.get("executable"), params.get("script")
    if script:
        if not isinstance(script, str):
            raise InvalidJobError("script", "must be the text of a shell script")
        if "\x00" in script:
            raise InvalidJobError("script", "must not contain NUL characters")
        if executable:
            raise InvalidJobError("script", "give either a script or an executable, not both")
        return
    if not isinstance(executable, str) or not executable.strip():
        raise InvalidJobError(
            "executable", "required (or a script): the program to run, e.g. 'python'"
        )
    if "\x00" in executable or "\n" in executable:
        raise InvalidJobError("executable", "must not contain NUL or newline characters")
    params["arguments"] = validate_arguments(params.get("arguments"))


def validate_names(
    params: dict[str, Any], options: Mapping[str, Any], names: Iterable[str], scheduler: str
) -> None:
    """Queue, project … names: the job's value, else the engine option of the same name."""
    for name in names:
        value = params.get(name) or options.get(name)
        if value is None or value == "":
            params.pop(name, None)
            continue
        if not isinstance(value, str) or not SAFE_NAME.match(value):
            raise InvalidJobError(
                name,
                f"{value!r} is not a valid {scheduler} {name} name (letters, digits, _ . + -)",
            )
        params[name] = value


def wall_time_seconds(value: Any) -> int:
    """A time limit in Slurm's forms (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) in seconds."""
    text = str(value).strip()
    if isinstance(value, bool) or not WALL_TIME.match(text) or not re.search(r"[1-9]", text):
        raise InvalidJobError(
            "wall_time",
            f"{value!r} is not a time limit: minutes ('30'), 'MM:SS', 'HH:MM:SS' or "
            "'D-HH:MM:SS', more than zero",
        )
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
        parts = [int(p) for p in text.split(":")] + [0] * (2 - text.count(":"))
        hours, minutes, seconds = parts
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def hms(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def memory_megabytes(value: Any) -> int:
    """A memory size (megabytes, or with a K/M/G/T suffix, PBS's ``kb``/``mb``/``gb`` too) in
    megabytes, at least 1."""
    text = str(value).strip()
    match = MEMORY.match(text)
    if isinstance(value, bool) or match is None or not re.search(r"[1-9]", match.group(1)):
        raise InvalidJobError(
            "memory", f"{value!r} is not a memory size: megabytes ('500') or '4G', '512M'"
        )
    number, unit = int(match.group(1)), (match.group(2) or "").upper()
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    return max(1, int(number * factor))


def parse_array(value: Any) -> tuple[int, int, int, int | None] | None:
    """``array='1-100%10'`` as (first, last, step, limit); None for no array."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    match = ARRAY.match(text)
    if isinstance(value, bool) or match is None:
        raise InvalidJobError(
            "array", f"{value!r} is not a task range: 'first-last', 'first-last:step', '…%limit'"
        )
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else first
    step = int(match.group(3)) if match.group(3) else 1
    limit = int(match.group(4)) if match.group(4) else None
    if first < 1 or last < first or step < 1 or (limit is not None and limit < 1):
        raise InvalidJobError(
            "array", f"{value!r}: task ids start at 1, last ≥ first, step and limit ≥ 1"
        )
    if len(range(first, last + 1, step)) > MAX_ARRAY_TASKS:
        raise InvalidJobError("array", f"{value!r} has more than {MAX_ARRAY_TASKS} tasks")
    return first, last, step, limit


def array_task_ids(array: str) -> list[str]:
    parsed = parse_array(array)
    if parsed is None:
        return []
    first, last, step, _ = parsed
    return [str(i) for i in range(first, last + 1, step)]


def expand_task_list(text: str) -> list[str]:
    """Grid Engine's task lists (``3``, ``2-4:1``, ``2,5,7-9:2``) as task ids."""
    ids: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        match = re.match(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$", part)
        if match is None:
            continue
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        step = int(match.group(3)) if match.group(3) else 1
        ids.extend(str(i) for i in range(first, last + 1, max(step, 1)))
    return ids


def task_entry(status: Status, native_status: str, exit_code: int | None) -> dict[str, Any]:
    return {"status": status.value, "native_status": native_status, "exit_code": exit_code}


def aggregate_tasks(tasks: Mapping[str, Mapping[str, Any]]) -> Status | None:
    return aggregate_statuses(Status(t["status"]) for t in tasks.values())


def tasks_message(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    """``3 tasks: 2 Complete, 1 Error (task 2: exited with code 1)`` — counts by status."""
    counts: dict[str, int] = {}
    for entry in tasks.values():
        display = Status(entry["status"]).display
        counts[display] = counts.get(display, 0) + 1
    summary = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
    failed = [
        (tid, t)
        for tid, t in tasks.items()
        if t["status"] == Status.ERROR.value and t.get("exit_code") not in (None, 0)
    ]
    text = f"{len(tasks)} tasks: {summary}"
    if failed:
        tid, first = min(failed, key=lambda item: int(item[0]) if item[0].isdigit() else 0)
        text += f" (task {tid}: exited with code {first['exit_code']})"
    return text


def validate_dependencies(params: dict[str, Any], native_id: re.Pattern[str]) -> None:
    dependencies = parse_dependencies(params.get("dependencies"))
    if dependencies:
        params["dependencies"] = [{"type": kind, "job": job} for kind, job in dependencies]
    else:
        params.pop("dependencies", None)
    native = params.get("native_dependencies")
    if native is None:
        return
    valid = isinstance(native, list) and all(
        isinstance(d, dict)
        and d.get("type") in DEPENDENCY_KINDS
        and native_id.match(str(d.get("native_id", ""))) is not None
        for d in native
    )
    if not valid:
        raise InvalidJobError("native_dependencies", "is set by the monitor, not by hand")


def validate_extra_directives(directives: Any, prefix: str, command: str) -> list[str]:
    """Raw options for the submit command, one per item, each starting with ``-`` and on one line
    (``#$ -l gpu=1``, or ``-l gpu=1``)."""
    directives = directives or []
    if isinstance(directives, str):
        directives = [directives]
    if not isinstance(directives, list | tuple):
        raise InvalidJobError("extra_directives", f"must be a list of {command} options")
    clean: list[str] = []
    for i, directive in enumerate(directives):
        field = f"extra_directives[{i}]"
        if not isinstance(directive, str):
            raise InvalidJobError(field, "must be a string such as '-l gpu=1'")
        text = directive.strip()
        if text.startswith(prefix):
            text = text[len(prefix) :].strip()
        if any(c in text for c in "\n\r\x00"):
            raise InvalidJobError(field, "must be one directive on one line")
        if not text.startswith("-"):
            raise InvalidJobError(field, f"{directive!r} is not a {command} option (starts -)")
        clean.append(text)
    return clean


def validate_working_directory(params: dict[str, Any]) -> None:
    working_directory = params.get("working_directory")
    if working_directory is None:
        return
    if not isinstance(working_directory, str) or not working_directory.strip():
        raise InvalidJobError("working_directory", "must be a folder path")
    if "\x00" in working_directory or "\n" in working_directory:
        raise InvalidJobError("working_directory", "must not contain NUL or newlines")
    if ".." in working_directory.split("/"):
        raise InvalidJobError("working_directory", "must not contain '..'")


def working_directory(workspace: str, chosen: Any) -> str:
    if not chosen:
        return workspace
    chosen = str(chosen)
    return chosen if chosen.startswith("/") else f"{workspace.rstrip('/')}/{chosen}"


def validate_common(params: dict[str, Any]) -> None:
    """Command, environment, working folder and array: what every batch job has."""
    validate_command(params)
    params["environment"] = validate_environment(params.get("environment"), allow_bool=False)
    validate_working_directory(params)
    array = parse_array(params.get("array"))
    if array is None:
        params.pop("array", None)
    else:
        params["array"] = str(params["array"]).strip()


def exit_code_path(folder: str) -> str:
    """The bash word for the exit-code file: ``exit_code``, or ``exit_code.<task>`` in an array."""
    return f'{bash_quote(folder + "/exit_code")}"${{offload_task:+.$offload_task}}"'


def script_body(
    *,
    job_id: int,
    attempt: int,
    workspace: str,
    name: str,
    params: Mapping[str, Any],
    native_id_variable: str,
    check_dependencies: list[str] | None = None,
    record_exit_code: bool = False,
    task_expression: str = "",
) -> list[str]:
    """The lines after a script's directives: record the native id (crash recovery), go to the
    working folder, export offload's and the job's variables, optionally check the jobs it depends
    on, then the job's command (``exec``) or its script verbatim. With ``record_exit_code`` the
    command's exit code is written to ``exit_code`` (for schedulers whose queue does not tell).

    ``task_expression`` (a bash expression for an array task's index) makes each task write its own
    ``stdout.<task>.log``/``stderr.<task>.log``, ``started.<task>`` when it starts and
    ``exit_code.<task>``: per-task state from files, for schedulers that cannot list tasks."""
    folder = attempt_folder(workspace, job_id, attempt)
    lines: list[str] = []
    if task_expression:
        lines += [
            f"offload_task={task_expression}",
            f'exec >{bash_quote(folder + "/stdout.")}"$offload_task".log '
            f'2>{bash_quote(folder + "/stderr.")}"$offload_task".log',
            f': >{bash_quote(folder + "/started.")}"$offload_task"',
            'export OFFLOAD_TASK_ID="$offload_task"',
        ]
    lines += [
        f"printf '%s\\n' \"${{{native_id_variable}}}\" > {bash_quote(folder + '/jobid')}",
        f"cd {bash_quote(working_directory(workspace, params.get('working_directory')))} || exit 1",
        f"export OFFLOAD_JOB_ID={job_id}",
        f"export OFFLOAD_ATTEMPT={attempt}",
        f"export OFFLOAD_WORKSPACE={bash_quote(workspace)}",
        f"export OFFLOAD_JOB_NAME={bash_quote(name)}",
    ]
    for key, value in (params.get("environment") or {}).items():
        lines.append(f"export {key}={bash_quote(value)}")
    lines += check_dependencies or []
    if params.get("script"):
        body = str(params["script"])
        if record_exit_code:
            # The script runs in a child bash, so its `exit` ends only it and the code is kept;
            # the here-document's end marker is derived from the script, so it never occurs in it.
            marker = "OFFLOAD_SCRIPT_END_" + hashlib.sha256(body.encode()).hexdigest()[:24]
            lines += [
                "# the job's script, verbatim, run by a child bash:",
                f"bash -s <<'{marker}'",
                body.rstrip("\n"),
                marker,
            ]
        else:
            lines += ["# the job's script, verbatim:", body]
    else:
        command = [params["executable"], *params.get("arguments", [])]
        words = " ".join(bash_quote(word) for word in command)
        lines.append(words if record_exit_code else "exec " + words)
    if record_exit_code:
        lines += [
            "offload_code=$?",
            f"printf '%s\\n' \"$offload_code\" > {exit_code_path(folder)}",
            'exit "$offload_code"',
        ]
    return lines


class ScriptBatchEngine(BatchSchedulerEngine):
    """What the Grid Engine and PBS engines share on top of the template: the job script written
    to ``<attempt folder>/job.sh``, an array's task range kept with the job, a failed scheduler
    command taken for an unreachable scheduler, and the logs (one pair per task of an array)."""

    native_id_pattern: ClassVar[re.Pattern[str]]
    #: The scheduler as messages name it ("Grid Engine").
    scheduler_name: ClassVar[str]
    #: Words (lower case) of a failed command that say nothing about the job: it is retried.
    transient: ClassVar[tuple[str, ...]]

    @abc.abstractmethod
    def validate(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """The job's parameters checked and normalised; InvalidJobError naming the field."""

    @abc.abstractmethod
    def render_script(self, spec: JobSpec, params: Mapping[str, Any]) -> str:
        """The job script for validated ``params``."""

    @staticmethod
    def script_path(spec: JobSpec) -> str:
        return f"{attempt_folder(spec.workspace, spec.job_id, spec.attempt)}/job.sh"

    def write_submission(self, spec: JobSpec) -> str:
        params = self.validate(spec.parameters)
        path = self.script_path(spec)
        self.runner.write_text(path, self.render_script(spec, params), mode=0o755)
        return path

    def submitted_id(self, native_id: str, result: CommandResult) -> str:
        """``native_id`` read from qsub's answer, when it is a job id of this scheduler."""
        if not self.native_id_pattern.match(native_id):
            raise SubmissionRejectedError(
                f"qsub answered {result.stdout.strip()!r}, not a job id: {result.stderr.strip()}"
            )
        return native_id

    def submit_error(self, result: CommandResult) -> EngineError:
        text = (result.stderr + result.stdout).lower()
        if any(sign in text for sign in self.transient):
            detail = (result.stderr.strip() or result.stdout.strip())[-500:]
            return EngineUnavailableError(f"qsub could not reach {self.scheduler_name}: {detail}")
        return super().submit_error(result)

    def submission_state(self, spec: JobSpec) -> dict[str, Any]:
        """An array's task range is kept with the job: the poll knows which tasks to expect."""
        array = spec.parameters.get("array")
        return {"array": str(array).strip()} if array else {}

    def submit_batch(self, specs: Sequence[JobSpec]) -> list[SubmitResult]:
        results = super().submit_batch(specs)
        by_id = {spec.job_id: spec for spec in specs}
        kept: list[SubmitResult] = []
        for result in results:
            state = self.submission_state(by_id[result.job_id])
            if result.outcome == SubmitOutcome.SUBMITTED and state and not result.state:
                result = dataclasses.replace(result, state=state)
            kept.append(result)
        return kept

    def check_result(self, result: CommandResult, what: str) -> None:
        """A failed scheduler command means the scheduler is unreachable (stale), not a failed job."""
        if result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-500:]
            raise EngineUnavailableError(f"{what} failed (exit {result.returncode}): {detail}")

    def get_logs(self, handle: JobHandle) -> dict[str, str]:
        folder = attempt_folder(
            self.remote_workspace(handle.workspace), handle.job_id, handle.attempt
        )
        logs: dict[str, str] = {}
        if handle.state.get("array"):
            for task in array_task_ids(str(handle.state["array"]))[:100]:
                for name in ("stdout", "stderr"):
                    text = self.runner.read_text(f"{folder}/{name}.{task}.log")
                    if text is not None:
                        logs[f"{name}.{task}"] = text[-LOG_LIMIT:]
            return logs
        for name in ("stdout", "stderr"):
            logs[name] = (self.runner.read_text(f"{folder}/{name}.log") or "")[-LOG_LIMIT:]
        return logs
