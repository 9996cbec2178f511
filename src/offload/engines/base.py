"""The engine contract: how the monitor (or the cluster agent) talks to any scheduler, in plain data.

Engines import nothing from Django and never touch the database. The monitor hands them
:class:`JobSpec` objects and :class:`JobHandle` objects and gets back :class:`SubmitResult` and
:class:`NativeReport` objects; everything in them is JSON-serialisable, so the same engines run inside
the portal's monitor and inside the agent on a remote cluster.

The contract is shaped for batch schedulers: submissions come in batches, and one
:meth:`Engine.poll_batch` call answers for every active job of a scheduler (one ``squeue`` or one
``condor_q`` per cycle, never one per job). :class:`BatchSchedulerEngine` is the template method
for command-line schedulers (after psij-python): a scheduler supplies only its submit command, how to
read the native id from the submit output, one status command for many ids and its parser, and an
accounting command for jobs that left the queue. Polling, batching and error handling live there once.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from offload.errors import (
    ConfigurationError,
    EngineError,
    EngineUnavailableError,
    InvalidJobError,
    NotSupportedError,
    SubmissionRejectedError,
)
from offload.status import Status
from offload.transport import runner_for
from offload.transport.base import CommandResult, CommandRunner

#: offload's own folder inside a job's workspace. Each job keeps its files in ``job-<id>/`` in it
#: (an attempt's in ``job-<id>/attempt-<n>/``), so jobs an app gives one shared workspace never
#: read, overwrite or remove each other's scripts, logs or exit codes.
INTERNAL_FOLDER = ".offload"


def attempt_subpath(job_id: int, attempt: int) -> str:
    """An attempt's folder relative to its workspace: ``.offload/job-<id>/attempt-<n>``."""
    return f"{INTERNAL_FOLDER}/job-{int(job_id)}/attempt-{int(attempt)}"


def job_folder(workspace: str, job_id: int) -> str:
    """offload's folder for one job in its workspace: ``<workspace>/.offload/job-<id>``."""
    return f"{workspace.rstrip('/')}/{INTERNAL_FOLDER}/job-{int(job_id)}"


def attempt_folder(workspace: str, job_id: int, attempt: int) -> str:
    """The folder of one attempt of one job (its script, logs and exit code):
    ``<workspace>/.offload/job-<id>/attempt-<n>``."""
    return f"{workspace.rstrip('/')}/{attempt_subpath(job_id, attempt)}"


def attempt_dir(workspace: str, job_id: int, attempt: int) -> Path:
    """:func:`attempt_folder` as a :class:`Path`, for engines that work on this machine's files."""
    return Path(attempt_folder(workspace, job_id, attempt))


def submission_key(job_id: int, attempt: int) -> str:
    """The tag every native submission carries, so a monitor that crashed after submitting finds
    the existing submission instead of submitting again."""
    return f"offload-{job_id}-{attempt}"


#: A valid environment variable name.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def validate_arguments(arguments: Any) -> list[str]:
    """A job's ``arguments`` as a list of strings: an argument list, never a shell string."""
    arguments = arguments or []
    if isinstance(arguments, str):
        raise InvalidJobError(
            "arguments", "must be a list of strings (an argument list, never a shell string)"
        )
    if not isinstance(arguments, list | tuple):
        raise InvalidJobError("arguments", f"must be a list, not {type(arguments).__name__}")
    clean: list[str] = []
    for i, arg in enumerate(arguments):
        if isinstance(arg, bool) or not isinstance(arg, str | int | float):
            raise InvalidJobError(
                f"arguments[{i}]", f"must be a string or number, not {type(arg).__name__}"
            )
        if "\x00" in str(arg):
            raise InvalidJobError(f"arguments[{i}]", "must not contain NUL characters")
        clean.append(str(arg))
    return clean


def validate_environment(environment: Any, *, allow_bool: bool = True) -> dict[str, str]:
    """A job's ``environment`` as NAME → text; ``allow_bool=False`` also refuses True/False."""
    environment = environment or {}
    if not isinstance(environment, dict):
        raise InvalidJobError("environment", "must be a dict of NAME → value")
    refused: tuple[type, ...] = (dict, list) if allow_bool else (dict, list, bool)
    clean: dict[str, str] = {}
    for name, value in environment.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise InvalidJobError(
                "environment", f"{name!r} is not a valid variable name (letters, digits, _)"
            )
        if value is None or isinstance(value, refused):
            raise InvalidJobError(f"environment.{name}", "must be a string or number")
        if "\x00" in str(value):
            raise InvalidJobError(f"environment.{name}", "must not contain NUL characters")
        clean[name] = str(value)
    return clean


#: Kinds of dependency on another offload job (Slurm's names; other schedulers map them).
DEPENDENCY_KINDS = ("afterok", "afterany", "afternotok")


def parse_dependencies(value: Any) -> list[tuple[str, int]]:
    """A job's ``dependencies`` parameter as (kind, offload job id) pairs. Accepted: a list of job
    ids (``afterok``) and/or ``{"type": "afterany", "job": 12}`` items."""
    if value is None or value == []:
        return []
    if not isinstance(value, list | tuple):
        raise InvalidJobError(
            "dependencies", 'must be a list of job ids or {"type": "afterok", "job": id} items'
        )
    pairs: list[tuple[str, int]] = []
    for i, item in enumerate(value):
        kind, job = (
            ("afterok", item)
            if not isinstance(item, dict)
            else (
                item.get("type", "afterok"),
                item.get("job"),
            )
        )
        if kind not in DEPENDENCY_KINDS:
            raise InvalidJobError(
                f"dependencies[{i}]", f"type {kind!r} is not one of {', '.join(DEPENDENCY_KINDS)}"
            )
        if isinstance(job, bool) or not isinstance(job, int | str) or not str(job).isdigit():
            raise InvalidJobError(f"dependencies[{i}]", f"{job!r} is not an offload job id")
        pairs.append((str(kind), int(job)))
    return pairs


def aggregate_statuses(statuses: Iterable[Status]) -> Status | None:
    """One status for a job made of several tasks (an array, HTCondor's ``num_jobs`` procs, a DAG's
    nodes), as Tethys does: all alike → that status; some still pending, queued, running or paused →
    Various; all finished but not alike (some Complete, some Error …) → Various-Complete, which runs
    result processing and then Complete. None for no tasks at all."""
    seen = set(statuses)
    if not seen:
        return None
    if len(seen) == 1:
        return next(iter(seen))
    waiting = {Status.PENDING, Status.SUBMITTED, Status.RUNNING, Status.PAUSED, Status.VARIOUS}
    return Status.VARIOUS if seen & waiting else Status.VARIOUS_COMPLETE


@dataclass(frozen=True)
class JobSpec:
    """What to run: everything an engine needs to submit one attempt of one job."""

    job_id: int
    attempt: int
    job_type: str
    name: str
    workspace: str
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return submission_key(self.job_id, self.attempt)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"parameters": dict(self.parameters)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobSpec:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclass(frozen=True)
class JobHandle:
    """A submitted attempt: the native id and whatever engine state the engine asked to keep."""

    job_id: int
    attempt: int
    native_id: str
    workspace: str
    state: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return submission_key(self.job_id, self.attempt)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"state": dict(self.state)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobHandle:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


class SubmitOutcome(enum.StrEnum):
    SUBMITTED = "submitted"  # the scheduler has it; native_id is set
    DEFERRED = "deferred"  # no capacity right now (e.g. local slots full); try again next cycle
    REJECTED = "rejected"  # the job itself is wrong; it becomes Error with the message
    UNAVAILABLE = "unavailable"  # the scheduler could not be reached; retried with backoff


@dataclass(frozen=True)
class SubmitResult:
    job_id: int
    outcome: SubmitOutcome
    native_id: str = ""
    state: Mapping[str, Any] = field(default_factory=dict)
    #: The status right after submission (a local process is Running at once).
    status: Status = Status.SUBMITTED
    native_status: str = ""
    message: str = ""
    #: True when the engine found an earlier submission with the same key and adopted it.
    adopted: bool = False


@dataclass(frozen=True)
class NativeReport:
    """An engine's answer about one job. ``status`` None means the scheduler no longer knows the
    job and its accounting has no record either: the monitor flags the job stale, never Error."""

    job_id: int
    status: Status | None
    native_status: str = ""
    message: str = ""
    exit_code: int | None = None
    #: Engine state to merge into the stored state (per-task states, log paths …).
    state: Mapping[str, Any] | None = None


class Engine(abc.ABC):
    """One scheduler, configured by plain options. Instances are cheap, reused across cycles, and
    must be safe to call from one thread at a time."""

    #: Short name used in settings and scheduler records (``'local'``, ``'slurm'`` …).
    kind: ClassVar[str]
    can_pause: ClassVar[bool] = False
    #: True when a running job can be stopped (every real engine).
    can_cancel: ClassVar[bool] = True
    #: True when the engine runs nothing (BASIC): the monitor never polls it.
    executes: ClassVar[bool] = True
    #: True when the scheduler can wait for other jobs: the monitor then resolves a job's
    #: ``dependencies`` to the native ids of the jobs it waits for (``native_dependencies``).
    supports_dependencies: ClassVar[bool] = False

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: dict[str, Any] = dict(options or {})

    # -- validation (pure, no I/O) ---------------------------------------------------------
    def validate(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalise a job's parameters; raise ``InvalidJobError(field, problem)``."""
        return dict(parameters)

    # -- the batch contract -----------------------------------------------------------------
    @abc.abstractmethod
    def submit_batch(self, specs: Sequence[JobSpec]) -> list[SubmitResult]:
        """Submit each spec, returning one result per spec in order. Must be idempotent per
        ``spec.key``: if a submission with that key exists, adopt it rather than submit again."""

    @abc.abstractmethod
    def poll_batch(self, handles: Sequence[JobHandle]) -> dict[int, NativeReport]:
        """One status query for all ``handles``. Raise :class:`EngineUnavailableError` when the
        scheduler cannot be reached; leave a job out (or report ``status=None``) when it is unknown."""

    def cancel(self, handle: JobHandle) -> None:
        raise NotSupportedError(f"the {self.kind} engine cannot stop jobs")

    def pause(self, handle: JobHandle) -> None:
        raise NotSupportedError(f"the {self.kind} engine cannot pause jobs")

    def resume(self, handle: JobHandle) -> None:
        raise NotSupportedError(f"the {self.kind} engine cannot resume jobs")

    def get_logs(self, handle: JobHandle) -> dict[str, str]:
        """Log name → text, readable while the job runs and after."""
        return {}

    def cleanup(self, handle: JobHandle) -> None:
        """Remove the job from the scheduler and delete the engine's own files for it."""

    def needs_stage_out(self) -> bool:
        """True when finished jobs' files live elsewhere (a remote workspace) and must be copied
        back: the monitor then calls :meth:`stage_out` before result processing."""
        return False

    def stage_out(self, handle: JobHandle) -> list[str]:
        """Copy a finished attempt's files (outputs, logs) back into its local workspace; the
        relative paths copied. Raises :class:`EngineUnavailableError` when the copy fails: the
        monitor tries again later, and the job's status does not change."""
        return []

    def close(self) -> None:
        """Release connections; the engine is not used again."""


class BatchSchedulerEngine(Engine):
    """Template method for command-line batch schedulers (Slurm, PBS, Grid Engine, HTCondor CLI).

    Subclasses supply the scheduler-specific pieces; submission, batching, the queue-then-accounting
    poll and the mapping of transport failures to "stale" are here, once.
    """

    #: Seconds a scheduler command may take before the scheduler counts as unreachable.
    command_timeout: ClassVar[float] = 60.0

    def __init__(
        self, options: Mapping[str, Any] | None = None, runner: CommandRunner | None = None
    ) -> None:
        super().__init__(options)
        #: Where the scheduler's commands run: here, or over SSH when the options name a remote
        #: ``host`` (one connection per engine, so per scheduler, reused across cycles).
        self.runner: CommandRunner = runner if runner is not None else runner_for(self.options)
        #: On a remote host, job folders live under this folder (``remote_workspace_root``);
        #: without it the remote side uses the same paths (a shared file system).
        self.remote_root = str(self.options.get("remote_workspace_root") or "").rstrip("/")
        if self.remote_root and not self.remote_root.startswith("/"):
            raise ConfigurationError(
                f"remote_workspace_root must be an absolute path, not {self.remote_root!r}"
            )
        self.local_root = str(self.options.get("local_workspace_root") or "").rstrip("/")

    def remote_workspace(self, workspace: str) -> str:
        """The job's workspace where its scheduler runs it. With ``remote_workspace_root`` set:
        that folder plus the workspace's path below ``local_workspace_root`` (or its whole path);
        the script is written there and its logs are read back from there."""
        if not self.remote_root or workspace.startswith(self.remote_root + "/"):
            return workspace
        relative = workspace.lstrip("/")
        if self.local_root and workspace.startswith(self.local_root + "/"):
            relative = workspace[len(self.local_root) + 1 :]
        return f"{self.remote_root}/{relative}"

    def close(self) -> None:
        self.runner.close()

    # -- staging (a remote workspace) ------------------------------------------------------
    def needs_stage_out(self) -> bool:
        return bool(self.remote_root)

    def stage_in(self, local_workspace: str, remote_workspace: str) -> list[str]:
        """Copy the job's workspace files (inputs the app put there) to its remote workspace
        before it is submitted, leaving out offload's own ``.offload`` folder."""
        if remote_workspace == local_workspace:
            return []
        return self.runner.upload_tree(
            local_workspace, remote_workspace, skip=lambda path: path == INTERNAL_FOLDER
        )

    def stage_out(self, handle: JobHandle) -> list[str]:
        """Copy the remote workspace back: outputs and this attempt's logs
        (``.offload/job-<id>/attempt-<n>``; other attempts' folders were copied when they ended,
        other jobs' folders in a shared workspace are theirs)."""
        remote = self.remote_workspace(handle.workspace)
        if remote == handle.workspace:
            return []
        own = attempt_subpath(handle.job_id, handle.attempt)
        internal = INTERNAL_FOLDER + "/"

        def skip(path: str) -> bool:
            if not path.startswith(internal):
                return False
            return not (path == own or path.startswith(own + "/") or own.startswith(path + "/"))

        return self.runner.download_tree(remote, handle.workspace, skip=skip)

    # -- what a scheduler supplies ---------------------------------------------------------
    @abc.abstractmethod
    def write_submission(self, spec: JobSpec) -> str:
        """Write the job's script/description into its workspace (through ``self.runner``) and
        return its path. Values must be quoted: nothing a user wrote may become a directive."""

    @abc.abstractmethod
    def submit_command(self, spec: JobSpec, script_path: str) -> list[str]:
        """The argument list that submits ``script_path``."""

    @abc.abstractmethod
    def parse_submit_output(self, result: CommandResult) -> str:
        """The native id from a successful submit command's output."""

    @abc.abstractmethod
    def status_command(self, native_ids: Sequence[str]) -> list[str]:
        """One command that reports on every id in ``native_ids``."""

    @abc.abstractmethod
    def parse_status_output(
        self, result: CommandResult, handles: Mapping[str, JobHandle]
    ) -> dict[int, NativeReport]:
        """Reports for the jobs the queue still knows, keyed by job id."""

    def accounting_command(self, native_ids: Sequence[str]) -> list[str] | None:
        """One command asking the accounting about jobs that left the queue (None: no accounting)."""
        return None

    def parse_accounting_output(
        self, result: CommandResult, handles: Mapping[str, JobHandle]
    ) -> dict[int, NativeReport]:
        return {}

    def find_submissions(self, specs: Sequence[JobSpec]) -> dict[str, str]:
        """Submission key → native id of submissions that already exist (crash recovery)."""
        return {}

    def submission_state(self, spec: JobSpec) -> dict[str, Any]:
        """Engine state to keep with a submitted attempt (say, an array's task ids)."""
        return {}

    def cancel_command(self, native_id: str) -> list[str]:
        raise NotSupportedError(f"the {self.kind} engine cannot stop jobs")

    def submit_error(self, result: CommandResult) -> EngineError:
        """The error for a failed submit command. By default the job was refused (it becomes
        Error); a scheduler returns :class:`EngineUnavailableError` for failures that say nothing
        about the job (controller unreachable), so the submission is retried."""
        return SubmissionRejectedError(
            f"{self.kind} refused the job (exit {result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )

    # -- the template ----------------------------------------------------------------------
    def run(self, argv: Sequence[str]) -> CommandResult:
        return self.runner.run(list(argv), timeout=self.command_timeout)

    def submit_batch(self, specs: Sequence[JobSpec]) -> list[SubmitResult]:
        local_workspaces = {s.job_id: s.workspace for s in specs}
        specs = [
            dataclasses.replace(s, workspace=self.remote_workspace(s.workspace)) for s in specs
        ]
        try:
            existing = self.find_submissions(specs) if specs else {}
        except EngineUnavailableError as exc:
            return [
                SubmitResult(s.job_id, SubmitOutcome.UNAVAILABLE, message=str(exc)) for s in specs
            ]
        results: list[SubmitResult] = []
        for spec in specs:
            if spec.key in existing:
                results.append(
                    SubmitResult(
                        spec.job_id,
                        SubmitOutcome.SUBMITTED,
                        native_id=existing[spec.key],
                        state=self.submission_state(spec),
                        adopted=True,
                    )
                )
                continue
            try:
                self.stage_in(local_workspaces[spec.job_id], spec.workspace)
                script = self.write_submission(spec)
                result = self.run(self.submit_command(spec, script))
                if result.returncode != 0:
                    raise self.submit_error(result)
                native_id = self.parse_submit_output(result)
            except EngineUnavailableError as exc:
                results.append(
                    SubmitResult(spec.job_id, SubmitOutcome.UNAVAILABLE, message=str(exc))
                )
            except (SubmissionRejectedError, InvalidJobError) as exc:
                # The job itself is wrong (bad parameters, refused by the scheduler): Error.
                results.append(SubmitResult(spec.job_id, SubmitOutcome.REJECTED, message=str(exc)))
            else:
                results.append(
                    SubmitResult(
                        spec.job_id,
                        SubmitOutcome.SUBMITTED,
                        native_id=native_id,
                        state=self.submission_state(spec),
                    )
                )
        return results

    def poll_batch(self, handles: Sequence[JobHandle]) -> dict[int, NativeReport]:
        if not handles:
            return {}
        by_native = {h.native_id: h for h in handles}
        queue = self.run(self.status_command(list(by_native)))
        reports = self.parse_status_output(queue, by_native)
        seen = {h.native_id for h in handles if h.job_id in reports}
        left = [nid for nid in by_native if nid not in seen]
        if left:
            command = self.accounting_command(left)
            if command is not None:
                acct = self.run(command)
                reports.update(self.parse_accounting_output(acct, {n: by_native[n] for n in left}))
        # Whatever neither the queue nor the accounting knows stays unknown: stale, not failed.
        return reports

    def cancel(self, handle: JobHandle) -> None:
        result = self.run(self.cancel_command(handle.native_id))
        if result.returncode != 0:
            raise SubmissionRejectedError(
                f"{self.kind} could not stop job {handle.native_id}: {result.stderr.strip()}"
            )
