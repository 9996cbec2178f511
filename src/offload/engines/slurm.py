"""The Slurm engine: batch scripts submitted with ``sbatch``, one ``squeue`` per poll for every
active job, and the accounting (``sacct``, or ``sacct -c`` on a cluster without slurmdbd) only
for jobs that left the queue.

Each attempt gets ``<workspace>/.offload/attempt-N/`` holding ``job.sh`` (the script, with its
``#SBATCH`` directives), ``stdout.log``/``stderr.log`` and ``jobid`` (written by the job when it
starts, so a monitor that crashed right after ``sbatch`` finds the job even after Slurm forgot it).
Every submission carries ``--comment=offload-<job>-<attempt>`` for the same reason.

Nothing a user wrote becomes a directive or shell code: resource values are checked against strict
formats, paths go on ``sbatch``'s argument list, and environment values, the command and its
arguments are quoted for bash, each on its own line (:func:`bash_quote`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from offload.engines.base import (
    DEPENDENCY_KINDS,
    BatchSchedulerEngine,
    JobHandle,
    JobSpec,
    NativeReport,
    parse_dependencies,
    validate_arguments,
    validate_environment,
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

#: Partitions, accounts, QOS names: what Slurm itself allows in practice, and nothing a shell or
#: the directive parser would read specially.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,128}$")
#: minutes | minutes:seconds | hours:minutes:seconds | days-hours[:minutes[:seconds]]
WALL_TIME = re.compile(r"^(?:\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+(?::\d{1,2}){0,2})$")
#: A size in megabytes, or with a K/M/G/T suffix.
MEMORY = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)
#: Characters kept in Slurm's job name; the rest become "_" (offload keeps the real name).
JOB_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")
#: Variables of the submitter's environment a job inherits; the rest (database URLs, secret keys)
#: stays with the monitor. More can be listed in the ``inherit_environment`` option.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
LOG_LIMIT = 2_000_000  # characters of a log returned by get_logs
HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})
#: Parameters of other schedulers' jobs or of later versions, refused with a clear reason.
NOT_YET = {
    "array": "job arrays are not supported by the Slurm engine yet",
}
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


def bash_quote(value: str) -> str:
    """A bash word for ``value`` that stays on one line: :func:`shlex.quote`, or ``$'…'`` with
    escapes when the value holds newlines or other control characters. So no value can start a
    line of the script (a ``#SBATCH`` directive, say), however it is written."""
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


def attempt_folder(workspace: str, attempt: int) -> str:
    return f"{workspace.rstrip('/')}/.offload/attempt-{attempt}"


def slurm_path(path: str) -> str:
    """A path for ``--output``/``--error``: ``%`` starts a Slurm filename pattern, ``%%`` is one %."""
    return path.replace("%", "%%")


def _positive_int(params: dict[str, Any], name: str) -> None:
    value = params.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidJobError(name, f"must be a positive whole number, not {value!r}")
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise InvalidJobError(name, f"must be a positive whole number, not {value!r}")
    params[name] = int(text)


def _exit_message(exit_code: str) -> tuple[int | None, str]:
    """Slurm's ``code:signal`` as an exit code and words."""
    code_text, _, signal_text = exit_code.partition(":")
    code = int(code_text) if code_text.isdigit() else None
    if signal_text.isdigit() and int(signal_text) != 0:
        return code, f"killed by signal {signal_text}"
    if code is None:
        return None, "failed"
    return code, f"exited with code {code}"


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

    # -- validation ----------------------------------------------------------------------------
    def validate(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        params = dict(parameters)
        for name, problem in NOT_YET.items():
            if params.get(name):
                raise InvalidJobError(name, problem)
        executable, script = params.get("executable"), params.get("script")
        if script:
            if not isinstance(script, str):
                raise InvalidJobError("script", "must be the text of a shell script")
            if "\x00" in script:
                raise InvalidJobError("script", "must not contain NUL characters")
            if executable:
                raise InvalidJobError("script", "give either a script or an executable, not both")
        else:
            if not isinstance(executable, str) or not executable.strip():
                raise InvalidJobError(
                    "executable", "required (or a script): the program to run, e.g. 'python'"
                )
            if "\x00" in executable or "\n" in executable:
                raise InvalidJobError("executable", "must not contain NUL or newline characters")
            params["arguments"] = validate_arguments(params.get("arguments"))
        params["environment"] = validate_environment(params.get("environment"), allow_bool=False)
        for name in ("partition", "account", "qos"):
            value = params.get(name) or self.options.get(name)
            if value is None or value == "":
                params.pop(name, None)
                continue
            if not isinstance(value, str) or not SAFE_NAME.match(value):
                raise InvalidJobError(
                    name, f"{value!r} is not a valid Slurm {name} name (letters, digits, _ . + -)"
                )
            params[name] = value
        for name in ("nodes", "ntasks", "cpus_per_task"):
            _positive_int(params, name)
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
        dependencies = parse_dependencies(params.get("dependencies"))
        if dependencies:
            params["dependencies"] = [{"type": kind, "job": job} for kind, job in dependencies]
        else:
            params.pop("dependencies", None)
        if not self._valid_native_dependencies(params.get("native_dependencies")):
            raise InvalidJobError("native_dependencies", "is set by the monitor, not by hand")
        return params

    def _valid_native_dependencies(self, native: Any) -> bool:
        if native is None:
            return True
        return isinstance(native, list) and all(
            isinstance(d, dict)
            and d.get("type") in DEPENDENCY_KINDS
            and self.native_id_pattern.match(str(d.get("native_id", ""))) is not None
            for d in native
        )

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
        folder = attempt_folder(spec.workspace, spec.attempt)
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
        directives.extend(params.get("extra_directives") or [])
        lines = ["#!/bin/bash"]
        lines += [f"#SBATCH {d}" for d in directives]
        lines += [
            f"# offload job {spec.job_id}, attempt {spec.attempt}; written by offload's Slurm engine.",
            "# Output files, working folder and inherited variables are on sbatch's command line.",
            f"printf '%s\\n' \"${{SLURM_JOB_ID}}\" > {bash_quote(folder + '/jobid')}",
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

    def _workdir(self, spec: JobSpec) -> str:
        chosen = spec.parameters.get("working_directory")
        if not chosen:
            return spec.workspace
        chosen = str(chosen)
        return chosen if chosen.startswith("/") else f"{spec.workspace.rstrip('/')}/{chosen}"

    # -- BatchSchedulerEngine pieces -------------------------------------------------------------
    @staticmethod
    def script_path(spec: JobSpec) -> str:
        return f"{attempt_folder(spec.workspace, spec.attempt)}/job.sh"

    def write_submission(self, spec: JobSpec) -> str:
        params = self.validate(spec.parameters)
        path = self.script_path(spec)
        self.runner.write_text(path, self.render_script(spec, params), mode=0o755)
        return path

    def submit_command(self, spec: JobSpec, script_path: str) -> list[str]:
        folder = attempt_folder(spec.workspace, spec.attempt)
        return [
            "sbatch",
            "--parsable",
            f"--output={slurm_path(folder + '/stdout.log')}",
            f"--error={slurm_path(folder + '/stderr.log')}",
            f"--chdir={self._workdir(spec)}",
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
        return ["squeue", "--noheader", f"--jobs={','.join(native_ids)}", "--format=%i|%T|%r"]

    def parse_status_output(
        self, result: CommandResult, handles: Mapping[str, JobHandle]
    ) -> dict[int, NativeReport]:
        if result.returncode != 0 and "Invalid job id" in result.stderr:
            return {}  # squeue refuses a list of only ids it has forgotten: all left the queue
        self.check_result(result, "squeue")
        reports: dict[int, NativeReport] = {}
        for line in result.stdout.splitlines():
            native_id, _, rest = line.strip().partition("|")
            state, _, reason = rest.partition("|")
            handle = handles.get(native_id)
            if handle is None:
                continue
            report = map_state(handle.job_id, state, reason)
            if report.status in (Status.COMPLETE, Status.ERROR, Status.ABORTED) and (
                reason != NEVER_SATISFIED
            ):
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

    def parse_accounting_output(
        self, result: CommandResult, handles: Mapping[str, JobHandle]
    ) -> dict[int, NativeReport]:
        self.check_result(result, "sacct")
        latest: dict[str, list[str]] = {}
        for line in result.stdout.splitlines():
            fields = line.strip().split("|")
            if len(fields) >= 3 and fields[0] in handles:
                latest[fields[0]] = fields  # a requeued job has several records: the last counts
        reports: dict[int, NativeReport] = {}
        for native_id, fields in latest.items():
            reason = fields[3] if len(fields) > 3 else ""
            report = map_state(handles[native_id].job_id, fields[1], reason, fields[2])
            if report.status is not None:
                reports[report.job_id] = report
        return reports

    def poll_batch(self, handles: Sequence[JobHandle]) -> dict[int, NativeReport]:
        reports = super().poll_batch(handles)
        # A job whose dependency failed waits in Slurm forever; offload calls it an Error, so it
        # leaves the queue too (one scancel for all of them).
        doomed = [
            h.native_id
            for h in handles
            if (r := reports.get(h.job_id)) is not None and NEVER_SATISFIED in r.native_status
        ]
        if doomed:
            self.run(["scancel", *doomed])
        return reports

    def find_submissions(self, specs: Sequence[JobSpec]) -> dict[str, str]:
        """One ``squeue`` over this user's jobs (every state Slurm still remembers), then the
        ``jobid`` file each job writes when it starts, for jobs Slurm has forgotten."""
        result = self.run(["squeue", "--noheader", "--me", "--states=all", "--format=%i|%k|%o"])
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
        for spec in specs:
            if spec.key in found:
                continue
            text = self.runner.read_text(f"{attempt_folder(spec.workspace, spec.attempt)}/jobid")
            native_id = (text or "").strip()
            if self.native_id_pattern.match(native_id):
                found[spec.key] = native_id
        return found

    # -- control --------------------------------------------------------------------------------
    def _queue_state(self, handle: JobHandle) -> tuple[str, str]:
        result = self.run(self.status_command([handle.native_id]))
        if result.returncode != 0 and "Invalid job id" in result.stderr:
            return "", ""
        self.check_result(result, "squeue")
        for line in result.stdout.splitlines():
            native_id, _, rest = line.strip().partition("|")
            if native_id == handle.native_id:
                state, _, reason = rest.partition("|")
                return state, reason
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

    def _control(self, handle: JobHandle, action: str) -> None:
        result = self.run(["scontrol", action, handle.native_id])
        if result.returncode != 0 and "Unable to contact" not in result.stderr:
            raise JobStateError(
                f"Slurm refused to {action} job {handle.native_id}: {result.stderr.strip()}"
            )
        self.check_result(result, f"scontrol {action}")

    def pause(self, handle: JobHandle) -> None:
        """A queued job is held; a running one suspended (suspend needs Slurm operator rights)."""
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
        folder = attempt_folder(self.remote_workspace(handle.workspace), handle.attempt)
        logs: dict[str, str] = {}
        for name in ("stdout", "stderr"):
            text = self.runner.read_text(f"{folder}/{name}.log")
            text = text or ""
            logs[name] = text[-LOG_LIMIT:]
        return logs

    def cleanup(self, handle: JobHandle) -> None:
        self.cancel(handle)
