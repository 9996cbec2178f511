"""The Grid Engine engine (Son of Grid Engine, Open Grid Scheduler, Univa/Altair GE): job scripts
with ``#$`` directives submitted with ``qsub -b n``, one ``qstat -xml`` per poll for every active
job, and the accounting (``qacct -j``) only for jobs (or array tasks) that left the queue.

Each attempt gets ``<workspace>/.offload/job-<id>/attempt-<n>/`` holding ``job.sh``, ``stdout.log``
and ``stderr.log`` (``stdout.<task>.log`` … for arrays), ``jobid`` (written by the job when it
starts) and, when offload stopped the job, ``cancelled`` (Grid Engine's accounting has no record of
a job deleted while it waited, and records a deleted running job like any killed one). Every
submission carries the context ``offload_key=offload-<job>-<attempt>`` (``-ac``), so a monitor that
crashed right after ``qsub`` adopts the job instead of submitting it twice.

Dependencies: Grid Engine's ``-hold_jid`` waits until the jobs it names have *ended*, however they
ended (Slurm's ``afterany``). ``afterok`` and ``afternotok`` are kept all the same: the job script
first asks ``qacct`` how each of them ended and, when the condition does not hold, exits with
code 97 and says why in ``dependency-failed``; the engine reports that as an Error ("can never
run"), as the Slurm engine does. So a dependent job needs ``qacct`` on its execution host (true of
a standard installation with a shared ``$SGE_ROOT``).

Nothing a user wrote becomes a directive or shell code: names and resources are checked against
strict formats, paths go on ``qsub``'s argument list, and environment values, the command and its
arguments are quoted for bash, each on its own line.
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from offload.engines.base import (
    JobHandle,
    JobSpec,
    NativeReport,
    attempt_folder,
)
from offload.engines.batch_common import (
    CANCELLED_MARKER,
    DEPENDENCY_FAILED_EXIT,
    DEPENDENCY_MARKER,
    FINISHED_STATUSES,
    INHERITED,
    ScriptBatchEngine,
    aggregate_tasks,
    array_task_ids,
    bash_quote,
    expand_task_list,
    hms,
    ids_from_jobid_files,
    memory_megabytes,
    parse_array,
    positive_int,
    safe_job_name,
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
    EngineUnavailableError,
    InvalidJobError,
    JobStateError,
)
from offload.status import Status
from offload.transport.base import CommandResult, CommandRunner

#: qsub/qstat errors that say nothing about the job: Grid Engine's qmaster did not answer.
TRANSIENT = (
    "unable to contact qmaster",
    "unable to send message to qmaster",
    "can't unpack gdi request",
    "commlib error",
    "got no connection",
    "failed receiving gdi request",
)
#: Grid Engine's ``failed`` code for a job the qmaster stopped at its h_rt/h_cpu/h_vmem limit.
FAILED_LIMIT = 37
#: ``failed`` for a job killed from outside (qdel, or a signal) — "assumedly after job".
FAILED_KILLED = 100
#: One qacct per job id, in one command (qacct takes a single id): ids are digits, checked before.
QACCT_EACH = (
    'command -v qacct >/dev/null || { echo "qacct: command not found" >&2; exit 127; }; '
    'for id in "$@"; do qacct -j "$id" 2>/dev/null; done; exit 0'
)
#: Checks run by a job script before its command, for afterok/afternotok dependencies.
DEPENDENCY_CHECK = r"""offload_dependency() { # kind native-id
    local verdict="" _
    for _ in $(seq 60); do
        verdict="$(qacct -j "$2" 2>/dev/null | awk '$1 == "jobnumber" {n++}
            ($1 == "failed" || $1 == "exit_status") && $2 != 0 {bad++}
            END {if (n) print (bad ? "notok" : "ok")}')"
        [ -n "$verdict" ] && break
        sleep 1
    done
    case "$1:$verdict" in
        *:) printf 'the accounting has no record of job %s, which it waits for\n' "$2" ;;
        afterok:notok) printf 'job %s, which it waits for (afterok), failed\n' "$2" ;;
        afternotok:ok) printf 'job %s, which it waits for (afternotok), succeeded\n' "$2" ;;
        *) return 0 ;;
    esac >MARKER
    exit 97
}"""


def _sge_path(field: str, path: str) -> str:
    """A path for ``-o``/``-e``/``-wd``: ``$`` starts a Grid Engine pseudo variable and ``host:``
    a host name, so paths with either (or a newline) are refused rather than misread."""
    if any(c in path for c in "$:\n\r\x00"):
        raise InvalidJobError(
            field, f"{path!r} cannot be given to Grid Engine (no $, : or newlines in its paths)"
        )
    return path


def map_queue_state(job_id: int, state: str, waiting_for: str = "") -> NativeReport:
    """A Grid Engine queue state (``qw``, ``hqw``, ``r``, ``s``, ``Eqw``, ``dr`` …) as a report."""
    native = state or "unknown"
    deleting = "d" in state
    letters = state.replace("d", "")
    status: Status | None
    if "E" in letters:
        status, message = Status.ERROR, "Grid Engine put the job in its error state (Eqw)"
    elif any(c in letters for c in "sST"):
        status, message = Status.PAUSED, "suspended"
    elif "h" in letters:
        if waiting_for:
            status, message = Status.SUBMITTED, f"waiting for jobs {waiting_for} to end"
        else:
            status, message = Status.PAUSED, "held"
    elif "q" in letters:
        status = Status.SUBMITTED
        message = "requeued (rescheduled)" if "R" in letters else "queued"
    elif "r" in letters or "t" in letters:
        status, message = Status.RUNNING, ""
    else:
        status, message = None, f"unknown Grid Engine state {state!r}"
    if deleting and status is not None and status not in FINISHED_STATUSES:
        message = "being deleted"
    return NativeReport(job_id, status, native, message)


@dataclasses.dataclass
class QueueEntry:
    native_id: str
    state: str
    tasks: list[str]
    waiting_for: str


def parse_qstat_xml(text: str) -> list[QueueEntry]:
    """``qstat -xml -g d -r``: one entry per job (or array task, or pending task range)."""
    # qstat's own output on the scheduler host the operator configured, not user input; and
    # ElementTree fetches no external entities (expat ≥ 2.4 also stops entity expansion bombs).
    root = ElementTree.fromstring(text)  # noqa: S314
    entries: list[QueueEntry] = []
    for item in root.iter("job_list"):
        native_id = (item.findtext("JB_job_number") or "").strip()
        if not native_id:
            continue
        entries.append(
            QueueEntry(
                native_id,
                (item.findtext("state") or "").strip(),
                expand_task_list(item.findtext("tasks") or ""),
                ",".join(
                    (p.text or "").strip() for p in item.findall("predecessor_jobs") if p.text
                ),
            )
        )
    return entries


@dataclasses.dataclass
class AccountingRecord:
    native_id: str
    task: str
    failed: int
    failed_text: str
    exit_status: int | None
    wallclock: float | None
    category: str


def parse_qacct(text: str) -> list[AccountingRecord]:
    """``qacct -j`` records (one per job or array task, separated by ``=====`` lines)."""
    records: list[AccountingRecord] = []
    for block in re.split(r"^=+\s*$", text, flags=re.MULTILINE):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.strip().partition(" ")
            if key:
                fields[key] = value.strip()
        if "jobnumber" not in fields:
            continue
        failed_text = fields.get("failed", "0")
        failed_code = failed_text.split(":")[0].strip()
        exit_text = fields.get("exit_status", "").split()
        wall = fields.get("ru_wallclock", "").rstrip("s")
        task = fields.get("taskid", "undefined")
        records.append(
            AccountingRecord(
                native_id=fields["jobnumber"],
                task="" if task == "undefined" else task,
                failed=int(failed_code) if failed_code.isdigit() else 0,
                failed_text=failed_text.partition(":")[2].strip(),
                exit_status=int(exit_text[0]) if exit_text and exit_text[0].isdigit() else None,
                wallclock=float(wall) if re.match(r"^\d+(\.\d+)?$", wall) else None,
                category=fields.get("category", ""),
            )
        )
    return records


def map_accounting(
    job_id: int, record: AccountingRecord, cancelled: bool = False, dependency: str = ""
) -> NativeReport:
    """How a job (or task) that left the queue ended, from its accounting record."""
    code = record.exit_status
    native = f"failed {record.failed}, exit {code}" if record.failed else f"exit {code}"
    if record.failed == FAILED_LIMIT:
        if "h_vmem" in record.category and "h_rt" not in record.category:
            message = "out of memory: stopped at its memory limit"
        else:
            message = "wall time exceeded: stopped at its time limit"
        return NativeReport(job_id, Status.ERROR, native, message, code)
    if record.failed == FAILED_KILLED:
        if cancelled:
            return NativeReport(job_id, Status.ABORTED, native, "cancelled", code)
        signal = f" by signal {code - 128}" if code is not None and code > 128 else ""
        return NativeReport(job_id, Status.ERROR, native, f"killed{signal}", code)
    if record.failed:
        text = record.failed_text or f"failed {record.failed}"
        return NativeReport(
            job_id, Status.ERROR, native, f"Grid Engine could not run it: {text}", code
        )
    if code == 0:
        return NativeReport(job_id, Status.COMPLETE, native, "exited with code 0", 0)
    if code == DEPENDENCY_FAILED_EXIT and dependency:
        message = f"a job it depends on ended so that it can never run: {dependency.strip()}"
        return NativeReport(job_id, Status.ERROR, native, message, code)
    if code is not None and code > 128:
        return NativeReport(job_id, Status.ERROR, native, f"killed by signal {code - 128}", code)
    return NativeReport(job_id, Status.ERROR, native, f"exited with code {code}", code)


class SgeEngine(ScriptBatchEngine):
    """Options: ``queue``, ``project``, ``parallel_environment`` (defaults for every job),
    ``memory_resource`` (the complex that ``memory`` sets: ``h_vmem``, the default, or e.g.
    ``mem_free``/``h_rss``), ``inherit_environment``, and ``host``… for SSH."""

    kind = "sge"
    scheduler_name = "Grid Engine"
    transient = TRANSIENT
    can_pause = True
    supports_dependencies = True
    native_id_pattern: ClassVar[re.Pattern[str]] = re.compile(r"^\d+$")

    def __init__(
        self, options: Mapping[str, Any] | None = None, runner: CommandRunner | None = None
    ) -> None:
        super().__init__(options, runner)
        self.memory_resource = str(self.options.get("memory_resource") or "h_vmem")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.memory_resource):
            raise ConfigurationError(
                f"Grid Engine option memory_resource={self.memory_resource!r} is not a complex name"
            )
        self.inherit = tuple(INHERITED) + tuple(self.options.get("inherit_environment", ()))

    # -- validation ----------------------------------------------------------------------------
    def validate(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        params = dict(parameters)
        validate_common(params)
        validate_names(
            params, self.options, ("queue", "project", "parallel_environment"), "Grid Engine"
        )
        positive_int(params, "slots")
        if params.get("slots") and not params.get("parallel_environment"):
            raise InvalidJobError(
                "parallel_environment",
                "required with slots: Grid Engine gives a job several slots only through a "
                "parallel environment (-pe NAME SLOTS); ask your admins for its name",
            )
        if params.get("wall_time") is not None:
            params["wall_time"] = hms(wall_time_seconds(params["wall_time"]))
        if params.get("memory") is not None:
            params["memory"] = f"{memory_megabytes(params['memory'])}M"
        params["extra_directives"] = validate_extra_directives(
            params.get("extra_directives"), "#$", "qsub"
        )
        validate_dependencies(params, self.native_id_pattern)
        return params

    # -- the script ----------------------------------------------------------------------------
    def render_script(self, spec: JobSpec, params: Mapping[str, Any]) -> str:
        folder = attempt_folder(spec.workspace, spec.job_id, spec.attempt)
        directives = [
            "-S /bin/bash",
            f"-N {safe_job_name(spec.name, spec.key)}",
            f"-ac offload_key={spec.key}",
        ]
        for name, option in (("queue", "-q"), ("project", "-P")):
            if params.get(name):
                directives.append(f"{option} {params[name]}")
        if params.get("parallel_environment"):
            directives.append(f"-pe {params['parallel_environment']} {params.get('slots') or 1}")
        if params.get("memory"):
            directives.append(f"-l {self.memory_resource}={params['memory']}")
        if params.get("wall_time"):
            directives.append(f"-l h_rt={params['wall_time']}")
        array = parse_array(params.get("array"))
        if array is not None:
            first, last, step, limit = array
            directives.append(f"-t {first}-{last}:{step}")
            if limit:
                directives.append(f"-tc {limit}")
        checks: list[str] = []
        native = params.get("native_dependencies") or []
        if native:
            directives.append(f"-hold_jid {','.join(str(d['native_id']) for d in native)}")
            conditional = [d for d in native if d["type"] != "afterany"]
            if conditional:
                marker = f"{folder}/{DEPENDENCY_MARKER}"
                checks.append(DEPENDENCY_CHECK.replace("MARKER", bash_quote(marker)))
                checks += [f"offload_dependency {d['type']} {d['native_id']}" for d in conditional]
        directives.extend(params.get("extra_directives") or [])
        lines = ["#!/bin/bash"]
        lines += [f"#$ {d}" for d in directives]
        lines += [
            f"# offload job {spec.job_id}, attempt {spec.attempt}; written by offload's Grid "
            "Engine engine.",
            "# Output files, working folder and inherited variables are on qsub's command line.",
        ]
        lines += script_body(
            job_id=spec.job_id,
            attempt=spec.attempt,
            workspace=spec.workspace,
            name=spec.name,
            params=params,
            native_id_variable="JOB_ID",
            check_dependencies=checks,
        )
        return "\n".join(lines) + "\n"

    def submit_command(self, spec: JobSpec, script_path: str) -> list[str]:
        folder = _sge_path("workspace", attempt_folder(spec.workspace, spec.job_id, spec.attempt))
        # Grid Engine expands $TASK_ID in output paths: one pair of logs per array task.
        suffix = ".$TASK_ID" if spec.parameters.get("array") else ""
        return [
            "qsub",
            "-terse",
            "-b",
            "n",
            "-o",
            f"{folder}/stdout{suffix}.log",
            "-e",
            f"{folder}/stderr{suffix}.log",
            "-wd",
            _sge_path("workspace", spec.workspace),
            # Only these names (their values come from qsub's environment): never the monitor's
            # database URL or secret key.
            "-v",
            ",".join(self.inherit),
            script_path,
        ]

    def parse_submit_output(self, result: CommandResult) -> str:
        # -terse prints "12" for a job, "12.1-10:1" for an array.
        first = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
        native_id = first.split(".")[0].strip()
        return self.submitted_id(native_id, result)

    # -- status ------------------------------------------------------------------------------------
    def status_command(self, native_ids: Sequence[str]) -> list[str]:
        # This user's jobs (qstat's default), every array task on its own line (-g d), with the
        # jobs each waits for (-r): one command however many jobs are active.
        return ["qstat", "-xml", "-g", "d", "-r"]

    def queue_entries(self, result: CommandResult) -> dict[str, list[QueueEntry]]:
        self.check_result(result, "qstat")
        try:
            entries = parse_qstat_xml(result.stdout)
        except ElementTree.ParseError as exc:
            raise EngineUnavailableError(
                f"qstat answered something that is not XML: {exc}"
            ) from exc
        grouped: dict[str, list[QueueEntry]] = {}
        for entry in entries:
            grouped.setdefault(entry.native_id, []).append(entry)
        return grouped

    def parse_status_output(
        self, result: CommandResult, handles: Mapping[str, JobHandle]
    ) -> dict[int, NativeReport]:
        reports: dict[int, NativeReport] = {}
        for native_id, entries in self.queue_entries(result).items():
            handle = handles.get(native_id)
            if handle is not None and not handle.state.get("array"):
                first = entries[0]
                reports[handle.job_id] = map_queue_state(
                    handle.job_id, first.state, first.waiting_for
                )
        return reports

    def accounting_command(self, native_ids: Sequence[str]) -> list[str] | None:
        ids = [n for n in native_ids if self.native_id_pattern.match(n)]
        return ["sh", "-c", QACCT_EACH, "qacct-each", *ids]

    def accounting_records(self, native_ids: Sequence[str]) -> dict[str, list[AccountingRecord]]:
        if not native_ids:
            return {}
        command = self.accounting_command(native_ids)
        assert command is not None
        result = self.run(command)
        self.check_result(result, "qacct")
        grouped: dict[str, list[AccountingRecord]] = {}
        for record in parse_qacct(result.stdout):
            grouped.setdefault(record.native_id, []).append(record)
        return grouped

    def _marker(self, handle: JobHandle, name: str) -> str | None:
        folder = attempt_folder(
            self.remote_workspace(handle.workspace), handle.job_id, handle.attempt
        )
        return self.runner.read_text(f"{folder}/{name}")

    def _ended(self, handle: JobHandle, record: AccountingRecord) -> NativeReport:
        cancelled = (
            record.failed == FAILED_KILLED and self._marker(handle, CANCELLED_MARKER) is not None
        )
        dependency = ""
        if record.exit_status == DEPENDENCY_FAILED_EXIT and not record.failed:
            dependency = self._marker(handle, DEPENDENCY_MARKER) or ""
        return map_accounting(handle.job_id, record, cancelled, dependency)

    def poll_batch(self, handles: Sequence[JobHandle]) -> dict[int, NativeReport]:
        if not handles:
            return {}
        by_native = {h.native_id: h for h in handles}
        queue = self.queue_entries(self.run(self.status_command(list(by_native))))
        reports: dict[int, NativeReport] = {}
        array_tasks: dict[str, dict[str, dict[str, Any]]] = {}
        ask_accounting: list[str] = []
        for native_id, handle in by_native.items():
            entries = queue.get(native_id, [])
            if not handle.state.get("array"):
                if entries:
                    first = entries[0]
                    reports[handle.job_id] = map_queue_state(
                        handle.job_id, first.state, first.waiting_for
                    )
                else:
                    ask_accounting.append(native_id)
                continue
            tasks: dict[str, dict[str, Any]] = {
                k: dict(v) for k, v in (handle.state.get("tasks") or {}).items()
            }
            visible: set[str] = set()
            for entry in entries:
                report = map_queue_state(handle.job_id, entry.state, entry.waiting_for)
                for task in entry.tasks:
                    visible.add(task)
                    if report.status is not None:
                        tasks[task] = task_entry(report.status, entry.state, None)
            expected = array_task_ids(str(handle.state["array"]))
            # Tasks no longer queued and not known to have ended: the accounting has them.
            if any(
                t not in visible
                and Status(tasks.get(t, {}).get("status", "SUB")) not in FINISHED_STATUSES
                for t in expected
            ):
                ask_accounting.append(native_id)
            array_tasks[native_id] = tasks
        records = self.accounting_records(ask_accounting)
        for native_id in ask_accounting:
            handle = by_native[native_id]
            found = records.get(native_id, [])
            if native_id not in array_tasks:
                if found:
                    reports[handle.job_id] = self._ended(handle, found[-1])
                elif self._marker(handle, CANCELLED_MARKER) is not None:
                    # Deleted while it waited: Grid Engine keeps no record of it at all.
                    reports[handle.job_id] = NativeReport(
                        handle.job_id, Status.ABORTED, "deleted", "cancelled"
                    )
                continue
            tasks = array_tasks[native_id]
            for record in found:
                if record.task:
                    ended = self._ended(handle, record)
                    if ended.status is not None:
                        tasks[record.task] = task_entry(
                            ended.status, ended.native_status, ended.exit_code
                        )
            if native_id not in queue:
                missing = [
                    t
                    for t in array_task_ids(str(handle.state["array"]))
                    if Status(tasks.get(t, {}).get("status", "SUB")) not in FINISHED_STATUSES
                ]
                if missing and self._marker(handle, CANCELLED_MARKER) is not None:
                    for t in missing:
                        tasks[t] = task_entry(Status.ABORTED, "deleted", None)
                elif missing:
                    array_tasks[native_id] = {}  # not all accounted for yet: ask again next cycle
        for native_id, tasks in array_tasks.items():
            handle = by_native[native_id]
            status = aggregate_tasks(tasks) if tasks else None
            if status is None:
                continue
            natives = sorted({str(t["native_status"]) for t in tasks.values()})
            reports[handle.job_id] = NativeReport(
                handle.job_id,
                status,
                "; ".join(natives)[:200],
                tasks_message(tasks),
                state={"tasks": tasks},
            )
        # A job in Grid Engine's error state (Eqw) would wait forever: offload calls it an
        # Error, so it leaves the queue too (one qdel for all of them).
        doomed = [
            h.native_id
            for h in handles
            if (r := reports.get(h.job_id)) is not None
            and r.status == Status.ERROR
            and "E" in r.native_status
            and h.native_id in queue
        ]
        if doomed:
            self.run(["qdel", *doomed])
        return reports

    def find_submissions(self, specs: Sequence[JobSpec]) -> dict[str, str]:
        """One ``qstat -j '*'`` (every job the qmaster knows, with its context and script), then
        the ``jobid`` file each job writes when it starts, for jobs that already left the queue."""
        result = self.run(["qstat", "-j", "*"])
        text = result.stdout + result.stderr
        if result.returncode != 0 and "do not exist" not in text:
            self.check_result(result, "qstat -j")
        # Key and script path together: job ids restart in another offload database (a test
        # run, a second portal), script paths are unique to one attempt of one job.
        wanted = {(spec.key, self.script_path(spec)) for spec in specs}
        found: dict[str, str] = {}
        for block in re.split(r"^=+\s*$", result.stdout, flags=re.MULTILINE):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
            context = dict(
                part.partition("=")[::2] for part in fields.get("context", "").split(",") if part
            )
            key = context.get("offload_key", "")
            native_id = fields.get("job_number", "")
            if (key, fields.get("script_file", "")) in wanted and self.native_id_pattern.match(
                native_id
            ):
                found[key] = native_id
        return ids_from_jobid_files(self.runner, specs, found, self.native_id_pattern)

    # -- control --------------------------------------------------------------------------------
    def _states(self, handle: JobHandle) -> list[str]:
        entries = self.queue_entries(self.run(self.status_command([handle.native_id])))
        return [e.state for e in entries.get(handle.native_id, [])]

    def cancel_command(self, native_id: str) -> list[str]:
        return ["qdel", native_id]

    def cancel(self, handle: JobHandle) -> None:
        if not handle.native_id:
            return
        # First the marker: Grid Engine's accounting cannot tell a deleted job from a killed one.
        folder = attempt_folder(
            self.remote_workspace(handle.workspace), handle.job_id, handle.attempt
        )
        self.runner.write_text(f"{folder}/{CANCELLED_MARKER}", "stopped through offload\n")
        result = self.run(self.cancel_command(handle.native_id))
        text = result.stdout + result.stderr
        if result.returncode != 0 and "does not exist" in text:
            return  # it ended on its own first
        if result.returncode != 0 and not any(s in text.lower() for s in TRANSIENT):
            raise JobStateError(
                f"Grid Engine refused to delete job {handle.native_id}: {text.strip()}"
            )
        self.check_result(result, "qdel")

    def _control(self, handle: JobHandle, argv: list[str]) -> None:
        result = self.run([*argv, handle.native_id])
        text = result.stdout + result.stderr
        if result.returncode != 0 and not any(s in text.lower() for s in TRANSIENT):
            raise JobStateError(
                f"Grid Engine refused {' '.join(argv)} for job {handle.native_id}: {text.strip()}"
            )
        self.check_result(result, " ".join(argv))

    def pause(self, handle: JobHandle) -> None:
        """Queued tasks are held (``qhold``), running ones suspended (``qmod -sj``)."""
        states = self._states(handle)
        # A task waiting for other jobs (hqw) can be held too: the user hold stays after they end.
        queued = any("q" in s for s in states)
        running = any(("r" in s or "t" in s) and not any(c in s for c in "sST") for s in states)
        if not queued and not running:
            raise JobStateError(
                f"job {handle.job_id} is {', '.join(states) or 'no longer queued'} in Grid Engine, "
                "so it cannot be paused"
            )
        if queued:
            self._control(handle, ["qhold"])
        if running:
            self._control(handle, ["qmod", "-sj"])

    def resume(self, handle: JobHandle) -> None:
        states = self._states(handle)
        held = any("h" in s for s in states)
        suspended = any(c in s for s in states for c in "sS")
        if not held and not suspended:
            raise JobStateError(
                f"job {handle.job_id} is {', '.join(states) or 'no longer queued'} in Grid Engine, "
                "not held or suspended, so it cannot be resumed"
            )
        if held:
            self._control(handle, ["qrls"])
        if suspended:
            self._control(handle, ["qmod", "-usj"])

    def cleanup(self, handle: JobHandle) -> None:
        self.cancel(handle)
