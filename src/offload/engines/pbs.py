"""The PBS engine (PBS Pro / OpenPBS, Torque): job scripts with ``#PBS`` directives submitted with
``qsub``, one ``qstat -f`` per poll for every active job, exit codes from ``qstat``'s
``exit_status`` where the server reports it and otherwise from the ``exit_code`` file the job script
writes when its command ends.

Tested against Slurm's PBS-compatible commands (Debian's ``slurm-wlm-torque``: ``qsub``, ``qstat``,
``qdel``, ``qhold``, ``qrls`` over Slurm), since no PBS server is packaged for Debian; see
docs/engines.md for what those wrappers cannot show (exit codes, holds, failed dependencies). The
``bin`` option names the folder holding the commands (so they need not be first on PATH, where
Grid Engine's ``qsub`` may be).

Each attempt gets ``<workspace>/.offload/job-<id>/attempt-<n>/`` holding ``job.sh``, ``stdout.log``,
``stderr.log``, ``jobid`` (written when the job starts), ``exit_code`` (written when its command
ends) and, when offload stopped it, ``cancelled``. The PBS job name is
``offload-<job>-<attempt>-<hash of the script path>``: a monitor that crashed right after ``qsub``
finds the job by that name instead of submitting it twice.

Slurm's ``qsub`` wrapper runs ``sbatch`` through a shell built from its own arguments, so nothing
but checked paths and variable names goes on the command line: every other value is a ``#PBS``
directive inside the script (checked against strict formats) or quoted for bash in its body.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from offload.engines.base import (
    ENV_NAME,
    JobHandle,
    JobSpec,
    NativeReport,
    attempt_folder,
)
from offload.engines.batch_common import (
    CANCELLED_MARKER,
    INHERITED,
    ScriptBatchEngine,
    aggregate_tasks,
    array_task_ids,
    check_safe_path,
    exit_code_path,
    hms,
    ids_from_jobid_files,
    memory_megabytes,
    parse_array,
    positive_int,
    script_body,
    task_entry,
    tasks_message,
    validate_common,
    validate_dependencies,
    validate_extra_directives,
    validate_names,
    wall_time_seconds,
)
from offload.errors import (
    ConfigurationError,
    JobStateError,
)
from offload.status import Status
from offload.transport.base import CommandResult, CommandRunner

#: qstat's exit status when none of the ids it was given is known.
UNKNOWN_JOB_EXIT = 153
#: Messages of commands that could not reach the server (or, for the wrappers, Slurm).
TRANSIENT = (
    "cannot connect to server",
    "communication failure",
    "problem loading jobs",
    "unable to contact slurm controller",
    "socket timed out",
    "zero bytes were transmitted",
    "pbs_server daemon may not be running",
    "connection refused",
)
#: Messages of qdel/qhold/qrls for a job that already ended.
ENDED = ("unknown job", "invalid job id", "already completing or completed", "job has finished")
#: PBS's exit_status for jobs stopped at a resource limit (Torque -10/-11, PBS Pro -29).
LIMIT_EXITS = {-10: "a resource limit", -11: "its wall time", -29: "its wall time"}
PBS_TIME = "%a %b %d %H:%M:%S %Y"
#: An array task's index: Torque's, PBS Pro's, or Slurm's (under its PBS wrappers).
TASK_EXPRESSION = '"${PBS_ARRAYID:-${PBS_ARRAY_INDEX:-${SLURM_ARRAY_TASK_ID:-}}}"'
#: The array's own id in a task (what qsub printed): PBS Pro's PBS_ARRAY_ID, Slurm's array job id,
#: or Torque's task id "12[3].server" made "12[].server".
ARRAY_ID_VARIABLE = "PBS_ARRAY_ID:-${SLURM_ARRAY_JOB_ID:-${PBS_JOBID/\\[*\\]/[]}}"
#: Lists each array's per-task files (started.N, exit_code.N) and ``cancelled``, for all arrays
#: in one command: ``<folder> TAB <file> TAB <content>`` lines. Folders are checked paths.
ARRAY_FILES = (
    'for d in "$@"; do for f in "$d"/started.* "$d"/exit_code.* "$d"/cancelled; do '
    '[ -f "$f" ] && printf "%s\\t%s\\t%s\\n" "$d" "${f##*/}" "$(head -c 32 "$f" | tr -d "\\n")"; '
    "done; done; exit 0"
)


def parse_qstat_full(text: str) -> dict[str, dict[str, str]]:
    """``qstat -f``: ``Job Id: X`` blocks of ``key = value`` lines (continuation lines, which
    PBS Pro indents deeper, are appended to the previous value)."""
    jobs: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    last = ""
    for line in text.splitlines():
        if line.startswith("Job Id:"):
            current = jobs.setdefault(line.partition(":")[2].strip(), {})
            last = ""
            continue
        if current is None or not line.strip():
            continue
        key, sep, value = line.strip().partition(" = ")
        if sep and " " not in key:
            current[key] = value.strip()
            last = key
        elif last:
            current[last] += line.strip()
    return jobs


def _seconds(text: str) -> int | None:
    parts = text.strip().split(":")
    if not parts or not all(p.isdigit() for p in parts):
        return None
    total = 0
    for part in parts:
        total = total * 60 + int(part)
    return total


def _elapsed(fields: Mapping[str, str]) -> int | None:
    """Seconds the job ran: ``resources_used.walltime``, else end (``ctime``) minus start
    (``mtime``) as the Slurm wrappers report them."""
    used = _seconds(fields.get("resources_used.walltime", ""))
    if used is not None:
        return used
    try:
        start = datetime.strptime(fields.get("mtime", ""), PBS_TIME)
        end = datetime.strptime(fields.get("ctime", ""), PBS_TIME)
    except ValueError:
        return None
    return int((end - start).total_seconds())


def over_wall_time(fields: Mapping[str, str]) -> bool:
    limit = _seconds(fields.get("Resource_List.walltime", ""))
    elapsed = _elapsed(fields)
    return limit is not None and elapsed is not None and elapsed >= limit - 1


def map_finished(
    job_id: int,
    fields: Mapping[str, str],
    exit_code: int | None,
    cancelled: bool,
) -> NativeReport:
    """A finished job (``C``/``F``) as a report, from its exit code (qstat's or the job's file)."""
    state = fields.get("job_state", "C")
    native = f"{state} (exit {exit_code})" if exit_code is not None else state
    if exit_code == 0:
        return NativeReport(job_id, Status.COMPLETE, native, "exited with code 0", 0)
    if cancelled:
        return NativeReport(job_id, Status.ABORTED, native, "cancelled", exit_code)
    if exit_code in LIMIT_EXITS:
        return NativeReport(
            job_id, Status.ERROR, native, f"stopped at {LIMIT_EXITS[exit_code]}", exit_code
        )
    if over_wall_time(fields):
        return NativeReport(
            job_id, Status.ERROR, native, "wall time exceeded: stopped at its time limit", exit_code
        )
    if exit_code is None:
        return NativeReport(
            job_id, Status.ERROR, native, "ended without an exit code (killed?)", None
        )
    if exit_code >= 256:  # PBS Pro: 256 + the signal
        return NativeReport(
            job_id, Status.ERROR, native, f"killed by signal {exit_code - 256}", exit_code
        )
    if exit_code > 128:
        return NativeReport(
            job_id, Status.ERROR, native, f"killed by signal {exit_code - 128}", exit_code
        )
    if exit_code < 0:
        return NativeReport(
            job_id,
            Status.ERROR,
            native,
            f"PBS could not run it (exit_status {exit_code})",
            exit_code,
        )
    return NativeReport(job_id, Status.ERROR, native, f"exited with code {exit_code}", exit_code)


def map_queue_state(
    job_id: int, fields: Mapping[str, str], slurm_wrappers: bool = False
) -> NativeReport | None:
    """A job PBS still lists; None when it has finished (``C``/``F``/``X``: see map_finished).
    Slurm's ``qstat`` wrapper shows a held job as ``Q``; Slurm gives held jobs priority 0, which
    that ``qstat`` prints, so with ``slurm_wrappers`` such a job counts as held."""
    state = fields.get("job_state", "")
    comment = fields.get("comment", "")
    native = f"{state} ({comment})" if comment else state
    if state in ("C", "F", "X"):
        return None
    if state == "Q" and slurm_wrappers and fields.get("Priority") == "0":
        return NativeReport(job_id, Status.PAUSED, f"{state} (priority 0: held)", "held")
    if state == "Q":
        return NativeReport(job_id, Status.SUBMITTED, native, "queued")
    if state in ("W", "T", "M"):
        return NativeReport(job_id, Status.SUBMITTED, native, "waiting to start")
    if state == "H":
        return NativeReport(job_id, Status.PAUSED, native, "held")
    if state in ("R", "E", "B"):
        return NativeReport(job_id, Status.RUNNING, native)
    if state in ("S", "U"):
        return NativeReport(job_id, Status.PAUSED, native, "suspended")
    return NativeReport(job_id, None, native, f"unknown PBS state {state!r}")


class PbsEngine(ScriptBatchEngine):
    """Options: ``bin`` (folder of qsub/qstat/qdel/qhold/qrls; default: PATH), ``queue``,
    ``account`` (defaults for every job), ``history`` (True: ``qstat -x``, PBS Pro's finished jobs),
    ``slurm_wrappers`` (True: the commands are Slurm's PBS wrappers), ``inherit_environment``, and
    ``host``… for SSH."""

    kind = "pbs"
    scheduler_name = "PBS"
    transient = TRANSIENT
    can_pause = True
    supports_dependencies = True
    native_id_pattern: ClassVar[re.Pattern[str]] = re.compile(
        r"^\d+(?:\[\d*\])?(?:\.[A-Za-z0-9_.-]+)?$"
    )

    def __init__(
        self, options: Mapping[str, Any] | None = None, runner: CommandRunner | None = None
    ) -> None:
        super().__init__(options, runner)
        self.bin = str(self.options.get("bin") or "").rstrip("/")
        if self.bin and not self.bin.startswith("/"):
            raise ConfigurationError(
                f"PBS engine option bin must be an absolute folder: {self.bin!r}"
            )
        self.history = bool(self.options.get("history"))
        #: True for Slurm's PBS wrappers (slurm-wlm-torque): their qstat shows holds only as
        #: priority 0 (see map_queue_state).
        self.slurm_wrappers = bool(self.options.get("slurm_wrappers"))
        #: Torque's (and Slurm's wrappers') ``-t``, or PBS Pro's ``-J``.
        self.array_option = str(self.options.get("array_option") or "-t")
        if self.array_option not in ("-t", "-J"):
            raise ConfigurationError(
                f"PBS engine option array_option={self.array_option!r} is not -t or -J"
            )
        self.inherit = tuple(INHERITED) + tuple(self.options.get("inherit_environment", ()))
        for name in self.inherit:
            if not ENV_NAME.match(str(name)):
                raise ConfigurationError(f"inherit_environment: {name!r} is not a variable name")

    def command(self, name: str) -> str:
        return f"{self.bin}/{name}" if self.bin else name

    # -- validation ----------------------------------------------------------------------------
    def validate(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        params = dict(parameters)
        validate_common(params)
        validate_names(params, self.options, ("queue", "account"), "PBS")
        positive_int(params, "nodes")
        positive_int(params, "ppn")
        if params.get("wall_time") is not None:
            params["wall_time"] = hms(wall_time_seconds(params["wall_time"]))
        if params.get("memory") is not None:
            params["memory"] = f"{memory_megabytes(params['memory'])}mb"
        params["extra_directives"] = validate_extra_directives(
            params.get("extra_directives"), "#PBS", "qsub"
        )
        validate_dependencies(params, self.native_id_pattern)
        return params

    # -- the script ----------------------------------------------------------------------------
    def job_name(self, spec: JobSpec) -> str:
        """The key plus a hash of the script path: job ids restart in another offload database
        (a test run, a second portal), script paths are unique to one attempt of one job."""
        digest = hashlib.sha256(self.script_path(spec).encode()).hexdigest()[:8]
        return f"{spec.key}-{digest}"

    def render_script(self, spec: JobSpec, params: Mapping[str, Any]) -> str:
        folder = attempt_folder(spec.workspace, spec.job_id, spec.attempt)
        directives = [f"-N {self.job_name(spec)}"]
        if params.get("queue"):
            directives.append(f"-q {params['queue']}")
        if params.get("account"):
            directives.append(f"-A {params['account']}")
        if params.get("nodes") or params.get("ppn"):
            nodes = f"nodes={params.get('nodes') or 1}"
            if params.get("ppn"):
                nodes += f":ppn={params['ppn']}"
            directives.append(f"-l {nodes}")
        if params.get("wall_time"):
            directives.append(f"-l walltime={params['wall_time']}")
        if params.get("memory"):
            directives.append(f"-l mem={params['memory']}")
        array = parse_array(params.get("array"))
        if array is not None:
            first, last, step, limit = array
            spec_text = f"{first}-{last}" + (f":{step}" if step != 1 else "")
            directives.append(f"{self.array_option} {spec_text}" + (f"%{limit}" if limit else ""))
        native = params.get("native_dependencies") or []
        if native:
            by_kind: dict[str, list[str]] = {}
            for d in native:
                by_kind.setdefault(str(d["type"]), []).append(str(d["native_id"]))
            depend = ",".join(f"{kind}:{':'.join(ids)}" for kind, ids in by_kind.items())
            directives.append(f"-W depend={depend}")
        directives.extend(params.get("extra_directives") or [])
        lines = ["#!/bin/bash"]
        lines += [f"#PBS {d}" for d in directives]
        lines += [
            f"# offload job {spec.job_id}, attempt {spec.attempt}; written by offload's PBS engine.",
            "# Output files and inherited variables are on qsub's command line.",
            # Stopped at its wall time (SIGTERM): say so in exit_code, as the queue may not.
            f"offload_stopped() {{ printf '%s\\n' 143 > {exit_code_path(folder)}; exit 143; }}",
            "trap offload_stopped TERM",
        ]
        lines += script_body(
            job_id=spec.job_id,
            attempt=spec.attempt,
            workspace=spec.workspace,
            name=spec.name,
            params=params,
            native_id_variable=(
                ARRAY_ID_VARIABLE if params.get("array") else "PBS_JOBID:-$SLURM_JOB_ID"
            ),
            record_exit_code=True,
            task_expression=TASK_EXPRESSION if params.get("array") else "",
        )
        return "\n".join(lines) + "\n"

    def submit_command(self, spec: JobSpec, script_path: str) -> list[str]:
        folder = check_safe_path(
            "workspace", attempt_folder(spec.workspace, spec.job_id, spec.attempt)
        )
        return [
            self.command("qsub"),
            "-o",
            f"{folder}/stdout.log",
            "-e",
            f"{folder}/stderr.log",
            # Only these names (their values come from qsub's environment): never the monitor's
            # database URL or secret key.
            "-v",
            ",".join(self.inherit),
            check_safe_path("workspace", script_path),
        ]

    def parse_submit_output(self, result: CommandResult) -> str:
        # Slurm's qsub wrapper exits 0 even when sbatch failed, and says so on stdout.
        if "error running the Slurm sbatch command" in result.stdout:
            raise self.submit_error(result)
        lines = result.stdout.strip().splitlines()
        native_id = lines[-1].strip() if lines else ""
        return self.submitted_id(native_id, result)

    # -- status ------------------------------------------------------------------------------------
    def status_command(self, native_ids: Sequence[str]) -> list[str]:
        argv = [self.command("qstat"), "-f"]
        if self.history:
            argv.append("-x")
        return [*argv, *native_ids]

    def queue_fields(self, result: CommandResult) -> dict[str, dict[str, str]]:
        if result.returncode == UNKNOWN_JOB_EXIT and not any(
            s in (result.stderr + result.stdout).lower() for s in TRANSIENT
        ):
            return {}  # none of the ids is known any more
        self.check_result(result, "qstat")
        return parse_qstat_full(result.stdout)

    def parse_status_output(
        self, result: CommandResult, handles: Mapping[str, JobHandle]
    ) -> dict[int, NativeReport]:
        reports: dict[int, NativeReport] = {}
        for native_id, fields in self.queue_fields(result).items():
            handle = handles.get(native_id)
            if handle is not None and (
                report := map_queue_state(handle.job_id, fields, self.slurm_wrappers)
            ):
                reports[handle.job_id] = report
        return reports

    def _file(self, handle: JobHandle, name: str) -> str | None:
        folder = attempt_folder(
            self.remote_workspace(handle.workspace), handle.job_id, handle.attempt
        )
        return self.runner.read_text(f"{folder}/{name}")

    def _recorded_exit(self, handle: JobHandle) -> int | None:
        text = (self._file(handle, "exit_code") or "").strip()
        return int(text) if re.match(r"^-?\d+$", text) else None

    def poll_batch(self, handles: Sequence[JobHandle]) -> dict[int, NativeReport]:
        if not handles:
            return {}
        by_native = {h.native_id: h for h in handles}
        queue = self.queue_fields(self.run(self.status_command(list(by_native))))
        reports: dict[int, NativeReport] = {}
        arrays = {n: h for n, h in by_native.items() if h.state.get("array")}
        if arrays:
            reports.update(self.poll_arrays(arrays, queue))
        for native_id, handle in by_native.items():
            if native_id in arrays:
                continue
            fields = queue.get(native_id)
            if fields is not None:
                report = map_queue_state(handle.job_id, fields, self.slurm_wrappers)
                if report is not None:
                    reports[handle.job_id] = report
                    continue
            # Finished (C/F) or gone from the queue: qstat's exit status where the server keeps
            # one, else the code the job script recorded.
            fields = dict(fields or {})
            exit_text = fields.get("exit_status") or fields.get("Exit_status") or ""
            exit_code = int(exit_text) if re.match(r"^-?\d+$", exit_text) else None
            if exit_code is None:
                exit_code = self._recorded_exit(handle)
            cancelled = exit_code != 0 and self._file(handle, CANCELLED_MARKER) is not None
            if not fields and exit_code is None and not cancelled:
                continue  # neither the queue nor the job's files know: stale, not failed
            reports[handle.job_id] = map_finished(handle.job_id, fields, exit_code, cancelled)
        return reports

    def poll_arrays(
        self, arrays: Mapping[str, JobHandle], queue: Mapping[str, Mapping[str, str]]
    ) -> dict[int, NativeReport]:
        """Per-task state of array jobs from the files their tasks write (``started.N``,
        ``exit_code.N``), listed for every array in one command: the queue's view of an array
        differs between PBS Pro, Torque and Slurm's wrappers (which show one record for all)."""
        folders = {
            n: attempt_folder(self.remote_workspace(h.workspace), h.job_id, h.attempt)
            for n, h in arrays.items()
        }
        result = self.run(["sh", "-c", ARRAY_FILES, "array-files", *folders.values()])
        self.check_result(result, "listing the array tasks' files")
        files: dict[str, dict[str, str]] = {folder: {} for folder in folders.values()}
        for line in result.stdout.splitlines():
            folder, _, rest = line.partition("\t")
            name, _, content = rest.partition("\t")
            if folder in files:
                files[folder][name] = content.strip()
        reports: dict[int, NativeReport] = {}
        for native_id, handle in arrays.items():
            found = files[folders[native_id]]
            fields = queue.get(native_id)
            queued = map_queue_state(handle.job_id, fields, self.slurm_wrappers) if fields else None
            ended = queued is None  # finished (C/F) or no longer listed
            if ended and not fields and not found:
                continue  # neither the queue nor the files know: stale, not failed
            cancelled = CANCELLED_MARKER in found
            tasks: dict[str, dict[str, Any]] = {}
            for task in array_task_ids(str(handle.state["array"])):
                code_text = found.get(f"exit_code.{task}")
                if code_text is not None and re.match(r"^-?\d+$", code_text):
                    code = int(code_text)
                    report = map_finished(handle.job_id, {}, code, cancelled and code != 0)
                    assert report.status is not None
                    tasks[task] = task_entry(report.status, f"exit {code}", code)
                elif f"started.{task}" in found and not ended:
                    tasks[task] = task_entry(Status.RUNNING, "R", None)
                elif not ended:
                    assert queued is not None and queued.status is not None
                    # Not started: queued, or held with the rest of the array.
                    waiting = Status.PAUSED if queued.status == Status.PAUSED else Status.SUBMITTED
                    tasks[task] = task_entry(waiting, "Q", None)
                elif cancelled:
                    tasks[task] = task_entry(Status.ABORTED, "deleted", None)
                else:
                    tasks[task] = task_entry(Status.ERROR, "ended without an exit code", None)
            status = aggregate_tasks(tasks)
            natives = sorted({str(t["native_status"]) for t in tasks.values()})
            reports[handle.job_id] = NativeReport(
                handle.job_id,
                status,
                "; ".join(natives)[:200],
                tasks_message(tasks),
                state={"tasks": tasks},
            )
        return reports

    def find_submissions(self, specs: Sequence[JobSpec]) -> dict[str, str]:
        """One ``qstat -f`` (every job the server lists) matched by job name, then the ``jobid``
        file each job writes when it starts, for jobs that already left the queue."""
        jobs = self.queue_fields(self.run([self.command("qstat"), "-f"]))
        wanted = {self.job_name(spec): spec.key for spec in specs}
        found: dict[str, str] = {}
        for native_id, job in jobs.items():
            key = wanted.get(job.get("Job_Name", ""))
            if key and self.native_id_pattern.match(native_id):
                found[key] = native_id
        return ids_from_jobid_files(self.runner, specs, found, self.native_id_pattern)

    # -- control --------------------------------------------------------------------------------
    def _state(self, handle: JobHandle) -> str:
        fields = self.queue_fields(self.run(self.status_command([handle.native_id])))
        return fields.get(handle.native_id, {}).get("job_state", "")

    def _control(self, handle: JobHandle, name: str) -> CommandResult:
        result = self.run([self.command(name), handle.native_id])
        text = (result.stdout + result.stderr).strip()
        if result.returncode != 0 and not any(s in text.lower() for s in TRANSIENT):
            if any(s in text.lower() for s in ENDED):
                return result
            raise JobStateError(f"PBS refused {name} for job {handle.native_id}: {text}")
        self.check_result(result, name)
        return result

    def cancel_command(self, native_id: str) -> list[str]:
        return [self.command("qdel"), native_id]

    def cancel(self, handle: JobHandle) -> None:
        if not handle.native_id:
            return
        # First the marker: without an exit status a deleted job looks like a killed one.
        folder = attempt_folder(
            self.remote_workspace(handle.workspace), handle.job_id, handle.attempt
        )
        self.runner.write_text(f"{folder}/{CANCELLED_MARKER}", "stopped through offload\n")
        self._control(handle, "qdel")

    def pause(self, handle: JobHandle) -> None:
        """A queued job is held (``qhold``); a running one cannot be paused (suspending needs
        PBS operator rights: ``qsig -s suspend``)."""
        state = self._state(handle)
        if state in ("Q", "W", "H"):
            self._control(handle, "qhold")
        else:
            raise JobStateError(
                f"job {handle.job_id} is {state or 'no longer queued'} in PBS: only a queued job "
                "can be paused (held)"
            )

    def resume(self, handle: JobHandle) -> None:
        state = self._state(handle)
        if state in ("Q", "W", "H"):
            self._control(handle, "qrls")
        else:
            raise JobStateError(
                f"job {handle.job_id} is {state or 'no longer queued'} in PBS, not held, so it "
                "cannot be resumed"
            )

    def cleanup(self, handle: JobHandle) -> None:
        self.cancel(handle)
