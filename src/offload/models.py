"""Django models: one ``Job`` table for every job type (a proxy class per type), the append-only
``JobEvent`` history, the ``JobIntent`` queue the monitors carry out, ``Scheduler`` records and the
monitors' leases.

Only :mod:`offload.store` writes ``Job``, ``JobEvent`` and ``JobIntent`` rows; the methods on
``Job`` are thin, Tethys-compatible entry points into it.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init
from django.utils import timezone

from offload.loading import JobIterable, LazyJSONField, RawJSON, json_copy, load_for_peers
from offload.status import (
    ACTIVE_STATUSES,
    NON_TERMINAL_STATUSES,
    PRE_RUNNING_STATUSES,
    RUNNING_STATUSES,
    STATUS_CHOICES,
    TERMINAL_STATUSES,
    Category,
    Status,
)

if TYPE_CHECKING:
    from offload.engines.base import JobHandle

OTHER_STATUS_KEY = "__other_status__"
OTHER_CATEGORY_KEY = "__other_category__"


#: Status code → display name, for every status but Other (whose name is the job's own text).
_DISPLAY_NAMES: dict[str, str] = {s.value: s.display for s in Status if s != Status.OTHER}


class EventSource(models.TextChoices):
    APP = "app", "app code"
    USER = "user", "a user"
    MONITOR = "monitor", "the monitor"
    POLL = "poll", "a scheduler poll"
    PUSH = "push", "a pushed report"


class IntentAction(models.TextChoices):
    EXECUTE = "execute"
    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"
    RESUBMIT = "resubmit"
    DELETE = "delete"
    REFRESH = "refresh"
    RESULTS = "results"


class SchedulerType(models.TextChoices):
    LOCAL = "local", "Local processes"
    CONDOR = "condor", "HTCondor"
    SLURM = "slurm", "Slurm"
    PBS = "pbs", "PBS"
    SGE = "sge", "Grid Engine"
    DASK = "dask", "Dask"
    AGENT = "agent", "Remote agent"


def snapshot_values(names: Any, values: Any) -> dict[str, Any]:
    """Field name → value as loaded or saved, for ``save()`` to tell what app code changed. Only
    JSON values can change in place, so only they are copied (JSON text still undecoded, a
    :class:`~offload.loading.RawJSON`, is immutable and kept as it is)."""
    loaded = dict(zip(names, values, strict=False))
    for name in JSON_ATTNAMES:
        if name in loaded and type(loaded[name]) is not RawJSON:
            loaded[name] = json_copy(loaded[name])
    return loaded


def loaded_values(job: Any) -> dict[str, Any]:
    """Field name → value as the job was loaded or last saved ({} for a new job)."""
    data = job.__dict__
    loaded = data.get("_loaded")
    if loaded is None:
        row = data.get("_loaded_row")
        if row is None:
            return {}
        loaded = dict(zip(row[0], row[1], strict=True))
        loaded.update(data.get("_loaded_more") or ())  # deferred fields loaded since
        for name in JSON_ATTNAMES:
            if loaded.get(name).__class__ is str:
                loaded[name] = RawJSON(loaded[name])  # the row's JSON text
        data["_loaded"] = loaded
    return loaded  # type: ignore[no-any-return]


def _fernet_key() -> bytes:
    digest = hashlib.sha256(("offload-secrets:" + settings.SECRET_KEY).encode()).digest()
    return base64.urlsafe_b64encode(digest)


class Scheduler(models.Model):
    """A scheduler a job can run on (an HTCondor pool, a Slurm cluster …) and how to reach it.

    Secrets (passwords, private-key passphrases) are encrypted at rest with a key derived from
    ``SECRET_KEY``; read them with :meth:`get_secrets`.
    """

    name = models.CharField(max_length=255, unique=True)
    scheduler_type = models.CharField(max_length=16, choices=SchedulerType.choices)
    host = models.CharField(max_length=1024, blank=True, default="")
    port = models.PositiveIntegerField(null=True, blank=True)
    username = models.CharField(max_length=255, blank=True, default="")
    options = models.JSONField(default=dict, blank=True)
    secrets_encrypted = models.TextField(blank=True, default="", editable=False)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering: ClassVar[list[str]] = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.scheduler_type})"

    def set_secrets(self, secrets: dict[str, str]) -> None:
        from cryptography.fernet import Fernet

        clean = {k: v for k, v in secrets.items() if v}
        self.secrets_encrypted = (
            Fernet(_fernet_key()).encrypt(json.dumps(clean).encode()).decode() if clean else ""
        )

    def get_secrets(self) -> dict[str, str]:
        if not self.secrets_encrypted:
            return {}
        from cryptography.fernet import Fernet

        data = json.loads(Fernet(_fernet_key()).decrypt(self.secrets_encrypted.encode()))
        return dict(data)

    def engine_options(self) -> dict[str, Any]:
        """Plain options for the engine: the record's fields, its options and its secrets."""
        return {
            **self.options,
            "host": self.host,
            "port": self.port,
            "username": self.username,
            **self.get_secrets(),
        }


class JobQuerySet(models.QuerySet["Job"]):
    """Jobs, built typed and fast from their rows (:class:`offload.loading.JobIterable`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._iterable_class = JobIterable

    def visible(self) -> JobQuerySet:
        return self.filter(deleted_at__isnull=True)


class Job(models.Model):
    """Every job, whatever its type. ``job_type`` picks the engine and the proxy class."""

    # Tethys's category lists, on the class as Tethys has them.
    PRE_RUNNING_STATUSES = PRE_RUNNING_STATUSES
    RUNNING_STATUSES = RUNNING_STATUSES
    ACTIVE_STATUSES = ACTIVE_STATUSES
    NON_TERMINAL_STATUSES = NON_TERMINAL_STATUSES
    TERMINAL_STATUSES = TERMINAL_STATUSES
    STATUSES = tuple(STATUS_CHOICES)
    OTHER_STATUS_KEY = OTHER_STATUS_KEY

    #: The job-type code of this class; set on each proxy.
    type_code: ClassVar[str] = ""
    #: Engine kind used when the job has no scheduler record.
    engine_kind: ClassVar[str] = "basic"
    #: Type-specific attributes kept in ``parameters`` (accepted as create_job kwargs).
    parameter_names: ClassVar[tuple[str, ...]] = ()

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=1024)
    description = models.CharField(max_length=2048, blank=True, default="")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="offload_jobs",
    )
    groups = models.ManyToManyField(Group, blank=True, related_name="offload_jobs")
    label = models.CharField(max_length=1024, db_index=True)
    job_type = models.CharField(max_length=32, db_index=True)
    creation_time = models.DateTimeField(default=timezone.now)
    execute_time = models.DateTimeField(null=True, blank=True)
    start_time = models.DateTimeField(null=True, blank=True)
    completion_time = models.DateTimeField(null=True, blank=True)
    workspace = models.CharField(max_length=1024, blank=True, default="")
    owns_workspace = models.BooleanField(default=False, editable=False)
    extended_properties = LazyJSONField(default=dict, blank=True)
    status_message = models.TextField(blank=True, default="")
    _status = models.CharField(
        max_length=3, choices=STATUS_CHOICES, default=Status.PENDING.value, db_column="status"
    )
    _process_results_function = models.CharField(
        max_length=1024, blank=True, default="", db_column="process_results_function"
    )
    parameters = LazyJSONField(default=dict, blank=True)
    scheduler = models.ForeignKey(
        Scheduler, on_delete=models.PROTECT, null=True, blank=True, related_name="jobs"
    )
    native_id = models.CharField(max_length=255, blank=True, default="")
    native_status = models.CharField(max_length=255, blank=True, default="")
    attempt = models.PositiveIntegerField(default=0)
    engine_state = LazyJSONField(default=dict, blank=True)
    last_contact = models.DateTimeField(null=True, blank=True)
    stale_since = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = JobQuerySet.as_manager()

    class Meta:
        verbose_name = "job"
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["label", "user", "id"], name="offload_job_label_user"),
            models.Index(fields=["_status", "job_type"], name="offload_job_status_type"),
            models.Index(fields=["user", "id"], name="offload_job_user"),
            # A user's first page filtered by status, or sorted by name, without reading all of
            # their jobs (the jobs table and the REST API).
            models.Index(fields=["user", "_status", "id"], name="offload_job_user_status"),
            models.Index(fields=["user", "name", "id"], name="offload_job_user_name"),
        ]
        permissions = [
            ("jobs_table_actions", "Can act on every job in the jobs table"),
            ("manage_all_jobs", "Can see and act on every user's jobs (web, API, events)"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id}: {self.name}"

    def __lt__(self, other: Job) -> bool:
        return (self.id or 0) < (other.id or 0)

    # -- typed instances -------------------------------------------------------------------------
    @classmethod
    def from_db(cls, db: str | None, field_names: Any, values: Any, **kwargs: Any) -> Job:
        instance = super().from_db(db, field_names, values, **kwargs)
        # What was loaded, so save() writes only the fields app code changed.
        instance._loaded = snapshot_values(field_names, values)  # type: ignore[attr-defined]
        proxy = JOB_TYPES.get(instance.job_type)
        if proxy is not None and issubclass(proxy, cls):
            instance.__class__ = proxy
        return instance

    def refresh_from_db(
        self, using: str | None = None, fields: Any = None, from_queryset: Any = None
    ) -> None:
        """Django's, except that reading a deferred field of a job loaded with others loads it
        for all of them in one query (:class:`offload.loading.Peers`)."""
        peers = self.__dict__.get("_peers")
        if (
            peers is not None
            and fields is not None
            and using is None
            and from_queryset is None
            and load_for_peers(self, peers, fields)
        ):
            return
        super().refresh_from_db(using=using, fields=fields, from_queryset=from_queryset)

    @classmethod
    def loaded_classes(cls) -> dict[str, type[Job]]:
        """Job-type code → the class a row of that type is loaded as (when it is this class or
        one of its subclasses)."""
        return {code: proxy for code, proxy in JOB_TYPES.items() if issubclass(proxy, cls)}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.job_type and self.type_code:
            self.job_type = self.type_code

    @classmethod
    def build(cls, **values: Any) -> Job:
        """A new, unsaved job: what ``cls(**values)`` makes, without Django's generic
        ``Model.__init__`` (a third of a ``create_job`` call). Values other than plain fields and
        the ``user``/``scheduler`` relations, or ``pre_init``/``post_init`` receivers, take the
        ordinary constructor."""
        if (
            not values.keys() <= _BUILD_NAMES
            or pre_init.has_listeners(cls)
            or post_init.has_listeners(cls)
        ):
            return cls(**values)
        job = cls.__new__(cls)
        data = job.__dict__
        data["_state"] = ModelState()
        for attname, default, call in _field_defaults():
            data[attname] = default() if call else default
        for name, value in values.items():
            if name in _RELATIONS:
                setattr(job, name, value)  # through the descriptor: checks the model, sets the id
            else:
                data[name] = value
        if not job.job_type and cls.type_code:
            job.job_type = cls.type_code
        return job

    # -- Tethys's attributes ---------------------------------------------------------------------
    @property
    def type(self) -> str:
        return type(self).__name__

    @property
    def status_enum(self) -> Status:
        return Status(self._status)

    @property
    def other_category(self) -> Category | None:
        value = (self.extended_properties or {}).get(OTHER_CATEGORY_KEY)
        return Category(value) if value else None

    @property
    def cached_status(self) -> str:
        """The last known status's display name (the custom text for Other). Never a query."""
        display = _DISPLAY_NAMES.get(self._status)
        if display is not None:
            return display
        return str((self.extended_properties or {}).get(OTHER_STATUS_KEY) or "Other")

    @property
    def status(self) -> str:
        """The last known status. Never calls a scheduler and never writes: the monitor keeps it
        current. Setting it is ``update_status(value)``."""
        return self.cached_status

    @status.setter
    def status(self, value: str) -> None:
        self.update_status(status=value)

    @property
    def is_stale(self) -> bool:
        return self.stale_since is not None

    @property
    def run_time(self) -> datetime.timedelta | str:
        start = self.start_time or self.execute_time
        if not start:
            return ""
        end = self.completion_time or timezone.now()
        return end - start

    @property
    def process_results_function(self) -> Callable[..., Any] | None:
        from offload.store import resolve_function

        if not self._process_results_function:
            return None
        return resolve_function(self._process_results_function)

    @process_results_function.setter
    def process_results_function(self, function: Callable[..., Any] | str | None) -> None:
        from offload.store import function_path

        self._process_results_function = function_path(function) if function else ""

    # -- actions (all go through the store) ------------------------------------------------------
    def save(self, *args: Any, **kwargs: Any) -> None:
        from offload import store

        store.save_job(self, super_save=super().save, args=args, kwargs=kwargs)

    def execute(self, *args: Any, **kwargs: Any) -> None:
        """Submit the job: Submitted now, handed to the monitor, which submits it to its engine."""
        from offload import store

        store.execute(self, source=kwargs.pop("source", EventSource.APP), extra=kwargs or None)

    def update_status(self, status: str | Status | None = None, *args: Any, **kwargs: Any) -> None:
        """With ``status``: set it (a display name, a code, or any text for Other). Without: reload
        the status from the database and ask the monitor to refresh it soon."""
        from offload import store

        if status is not None:
            store.set_status(
                self,
                status,
                message=kwargs.get("message"),
                source=kwargs.get("source", EventSource.APP),
            )
        else:
            store.refresh(self)

    def stop(self) -> None:
        from offload import store

        store.stop(self)

    terminate = stop

    def pause(self) -> None:
        from offload import store

        store.pause(self)

    def resume(self) -> None:
        from offload import store

        store.resume(self)

    def resubmit(self, *args: Any, **kwargs: Any) -> None:
        from offload import store

        store.resubmit(self)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        """Record the intent to delete: the job disappears from lists now; a monitor stops it on its
        scheduler, removes its own workspace and then its row."""
        from offload import store

        store.delete(self)
        return (1, {"offload.Job": 1})

    def get_logs(self) -> dict[str, Any]:
        from offload import store

        return store.get_logs(self)

    def process_results(self, *args: Any, **kwargs: Any) -> None:
        """Run result processing now (once: a lock in the database guards it)."""
        from offload import store

        store.process_results_now(self)

    @property
    def status_token(self) -> str:
        """A signed token that lets whoever holds it push status reports for this attempt
        (``POST /update-job-status/<id>/`` with ``Authorization: Bearer <token>``)."""
        from offload.web.tokens import make_status_token

        return make_status_token(self.pk, self.attempt)

    @property
    def events(self) -> list[JobEvent]:
        """The job's history, oldest first."""
        return list(JobEvent.objects.filter(job_id=self.id).order_by("id"))

    def handle(self) -> JobHandle:
        from offload.engines.base import JobHandle

        return JobHandle(
            job_id=self.id,
            attempt=self.attempt,
            native_id=self.native_id,
            workspace=self.workspace,
            state=dict(self.engine_state or {}),
        )


#: Names ``Job.build`` sets itself: every plain concrete field, and the two relations.
_RELATIONS = frozenset({"user", "scheduler"})
_BUILD_NAMES = frozenset(
    {f.attname for f in Job._meta.concrete_fields if not f.is_relation} | _RELATIONS
)


@functools.cache
def _field_defaults() -> tuple[tuple[str, Any, bool], ...]:
    """(attname, default, whether to call it) for every concrete field of Job, as
    ``Model.__init__`` would give them: callables (``dict``, ``timezone.now``) are called per job,
    everything else is an immutable constant."""
    defaults: list[tuple[str, Any, bool]] = []
    for field in Job._meta.concrete_fields:
        if field.has_default() and callable(field.default):
            defaults.append((field.attname, field.default, True))
        else:
            defaults.append((field.attname, field.get_default(), False))
    return tuple(defaults)


#: The JSON fields of Job (the values ``snapshot_values`` copies).
JSON_ATTNAMES: tuple[str, ...] = tuple(
    f.attname for f in Job._meta.concrete_fields if isinstance(f, models.JSONField)
)


def parameter(name: str, doc: str = "") -> Any:
    """A type-specific job attribute stored in ``Job.parameters`` (so every type shares one table)."""

    def getter(self: Job) -> Any:
        return (self.parameters or {}).get(name)

    def setter(self: Job, value: Any) -> None:
        params = dict(self.parameters or {})
        params[name] = value
        self.parameters = params

    return property(getter, setter, doc=doc)


class BasicJob(Job):
    """A job that runs nothing; the app drives its status (Tethys's BasicJob)."""

    type_code = "BASIC"
    engine_kind = "basic"

    class Meta:
        proxy = True


class LocalJob(Job):
    """A process on the monitor's machine: ``executable`` + ``arguments`` + ``environment``."""

    type_code = "LOCAL"
    engine_kind = "local"
    parameter_names = ("executable", "arguments", "environment")

    executable = parameter("executable", "The program to run (looked up on PATH, or a path).")
    arguments = parameter("arguments", "Its argument list; never a shell string.")
    environment = parameter("environment", "Extra environment variables for the process.")

    class Meta:
        proxy = True


class BatchCommand:
    """The parameters every batch-scheduler job type shares (Slurm, PBS, Grid Engine): a command
    or a script, its environment and folder, and the offload jobs it waits for. Each type adds
    its resources and names them all in ``parameter_names``."""

    executable = parameter("executable", "The program to run (or give a script).")
    arguments = parameter("arguments", "Its argument list; never a shell string.")
    environment = parameter("environment", "Extra environment variables for the job.")
    working_directory = parameter("working_directory", "Its folder (default: the workspace).")
    dependencies = parameter(
        "dependencies", 'Offload jobs to wait for: ids (afterok) or {"type": …, "job": id}.'
    )


class SlurmJob(BatchCommand, Job):
    """A Slurm batch job: a command (``executable`` + ``arguments``) or a ``script``, plus
    resources. Every value is validated by the Slurm engine before it is written into the script."""

    type_code = "SLURM"
    engine_kind = "slurm"
    parameter_names = (
        "executable",
        "arguments",
        "script",
        "environment",
        "working_directory",
        "partition",
        "account",
        "qos",
        "nodes",
        "ntasks",
        "cpus_per_task",
        "memory",
        "wall_time",
        "extra_directives",
        "dependencies",
        "array",
    )

    script = parameter("script", "A bash script body, run after the #SBATCH directives.")
    partition = parameter("partition", "The Slurm partition (--partition).")
    account = parameter("account", "The account charged (--account).")
    qos = parameter("qos", "The quality of service (--qos).")
    nodes = parameter("nodes", "Number of nodes (--nodes).")
    ntasks = parameter("ntasks", "Number of tasks (--ntasks).")
    cpus_per_task = parameter("cpus_per_task", "CPUs per task (--cpus-per-task).")
    memory = parameter("memory", "Memory per node: megabytes or '4G' (--mem).")
    wall_time = parameter("wall_time", "Time limit: minutes, HH:MM:SS or D-HH:MM:SS (--time).")
    extra_directives = parameter("extra_directives", "More sbatch options, one per item.")
    array = parameter(
        "array", "A job array: task indexes such as '1-100%10' (--array); a status per task."
    )

    class Meta:
        proxy = True


class PbsJob(BatchCommand, Job):
    """A PBS Pro / Torque batch job (tested against slurm-wlm-torque's PBS-compatible commands)."""

    type_code = "PBS"
    engine_kind = "pbs"
    parameter_names: ClassVar[tuple[str, ...]] = (
        "executable",
        "arguments",
        "script",
        "environment",
        "working_directory",
        "queue",
        "account",
        "nodes",
        "ppn",
        "memory",
        "wall_time",
        "array",
        "extra_directives",
        "dependencies",
    )

    script = parameter("script", "A bash script body, run after the #PBS directives.")
    queue = parameter("queue", "The queue (-q).")
    account = parameter("account", "The account charged (-A).")
    nodes = parameter("nodes", "Number of nodes (-l nodes=N).")
    ppn = parameter("ppn", "Processors per node (-l nodes=N:ppn=P).")
    memory = parameter("memory", "Memory: megabytes or '4G' (-l mem=…).")
    wall_time = parameter("wall_time", "Time limit: minutes, HH:MM:SS or D-HH:MM:SS (walltime).")
    array = parameter("array", "An array job: '1-10', '1-10%2' (-t; -J for PBS Pro).")
    extra_directives = parameter("extra_directives", "More qsub options, one per item.")

    class Meta:
        proxy = True


class SgeJob(BatchCommand, Job):
    """A (Son of) Grid Engine batch job: a command (``executable`` + ``arguments``) or a
    ``script``, plus resources. Every value is validated by the Grid Engine engine first."""

    type_code = "SGE"
    engine_kind = "sge"
    parameter_names: ClassVar[tuple[str, ...]] = (
        "executable",
        "arguments",
        "script",
        "environment",
        "working_directory",
        "queue",
        "project",
        "parallel_environment",
        "slots",
        "memory",
        "wall_time",
        "array",
        "extra_directives",
        "dependencies",
    )

    script = parameter("script", "A bash script body, run after the #$ directives.")
    queue = parameter("queue", "The cluster queue (-q).")
    project = parameter("project", "The project charged (-P).")
    parallel_environment = parameter("parallel_environment", "Parallel environment name (-pe).")
    slots = parameter("slots", "Slots in the parallel environment (-pe NAME SLOTS).")
    memory = parameter("memory", "Memory limit: megabytes or '4G' (-l h_vmem=…).")
    wall_time = parameter("wall_time", "Time limit: minutes, HH:MM:SS or D-HH:MM:SS (-l h_rt).")
    array = parameter("array", "An array job: '1-10', '1-10:2', '1-100%10' (-t, -tc).")
    extra_directives = parameter("extra_directives", "More qsub options, one per item.")

    class Meta:
        proxy = True


class CondorJob(Job):
    """An HTCondor job (Tethys's CondorJob): one cluster of ``num_jobs`` procs, described by a
    CondorPy template (``condorpy_template_name``) with ``attributes`` (submit commands) merged
    over it. Every value is validated by the HTCondor engine before it is written."""

    type_code = "CONDOR"
    engine_kind = "condor"
    parameter_names: ClassVar[tuple[str, ...]] = (
        "executable",
        "arguments",
        "environment",
        "condorpy_template_name",
        "attributes",
        "remote_input_files",
        "remote_output_files",
        "num_jobs",
    )

    executable = parameter("executable", "The program to run (a path on the submit host).")
    arguments = parameter("arguments", "Its argument list; never a shell string.")
    environment = parameter("environment", "Extra environment variables for the job.")
    condorpy_template_name = parameter(
        "condorpy_template_name",
        "A CondorPy template: base, vanilla_base (default), vanilla_transfer_files, vanilla_nfs, "
        "remote_output_files.",
    )
    attributes = parameter("attributes", "Submit commands (name → value), over the template's.")
    remote_input_files = parameter("remote_input_files", "Files sent with the job.")
    remote_output_files = parameter("remote_output_files", "Files brought back when it ends.")
    num_jobs = parameter("num_jobs", "How many procs to queue (HTCondor's queue N).")

    def set_attribute(self, name: str, value: Any) -> None:
        """Set one submit command (Tethys's ``CondorJob.set_attribute``)."""
        attributes = dict(self.attributes or {})
        attributes[name] = value
        self.attributes = attributes

    def get_attribute(self, name: str) -> Any:
        """One submit command's value, or None."""
        return (self.attributes or {}).get(name)

    class Meta:
        proxy = True


class CondorWorkflow(Job):
    """An HTCondor DAGMan workflow (Tethys's CondorWorkflow): nodes
    (:class:`offload.workflow_nodes.CondorWorkflowJobNode`) with parent/child edges, kept in
    ``parameters["nodes"]``, and per-category throttles in ``parameters["max_jobs"]``. Submitted
    with ``condor_submit_dag``; each node's status lands in ``engine_state["nodes"]``."""

    type_code = "CONDORWORKFLOW"
    engine_kind = "condor"
    parameter_names: ClassVar[tuple[str, ...]] = ("nodes", "max_jobs")

    max_jobs = parameter("max_jobs", "Category → the most jobs of it DAGMan runs at once.")

    @property
    def nodes(self) -> list[Any]:
        """The workflow's nodes (``CondorWorkflowJobNode`` objects), in the order they were added."""
        from offload.workflow_nodes import CondorWorkflowJobNode

        raw = (self.parameters or {}).get("nodes") or []
        return [CondorWorkflowJobNode.from_dict(node, self) for node in raw]

    def get_job(self, name: str) -> Any:
        """The node called ``name``, or None."""
        return next((node for node in self.nodes if node.name == name), None)

    def store_node(self, node: Any) -> None:
        """Add or replace a node (``node.save()`` calls this) and save the workflow if it is saved."""
        nodes = [
            n for n in (self.parameters or {}).get("nodes") or [] if n.get("name") != node.name
        ]
        nodes.append(node.to_dict())
        self.parameters = {**(self.parameters or {}), "nodes": nodes}
        if self.pk is not None:
            self.save()

    def add_max_jobs_throttle(self, category: str, max_jobs: int) -> None:
        """At most ``max_jobs`` nodes of ``category`` run at once (DAGMan's MAXJOBS)."""
        self.max_jobs = {**(self.max_jobs or {}), category: max_jobs}
        if self.pk is not None:
            self.save()

    def execute(self, *args: Any, **kwargs: Any) -> None:
        from offload.errors import InvalidJobError

        if not (self.parameters or {}).get("nodes"):
            raise InvalidJobError(
                "nodes", "a workflow needs at least one node (CondorWorkflowJobNode … .save())"
            )
        super().execute(*args, **kwargs)

    class Meta:
        proxy = True


class DaskJob(Job):
    """A task on a Dask scheduler (Tethys's DaskJob): ``job.execute(obj)`` with a
    ``dask.delayed`` object, a ``Future``, or a callable and its arguments. The task is written
    into the job's workspace with Dask's serialization (never into the database); the monitor
    submits it, follows it on the scheduler and stores its result, which ``job.result`` loads."""

    type_code = "DASK"
    engine_kind = "dask"
    parameter_names = ("forget", "scheduler_address", "key")

    forget = parameter("forget", "True: do not keep the result (no result retrieval).")
    scheduler_address = parameter(
        "scheduler_address", "The scheduler to run on (default: the engine's or the record's)."
    )

    class Meta:
        proxy = True

    @property
    def key(self) -> str:
        """The Dask key of the task (``offload-<id>-<attempt>``, or the Future's key)."""
        params = self.parameters or {}
        return str(self.native_id or params.get("key") or "")

    @key.setter
    def key(self, value: str) -> None:
        params = dict(self.parameters or {})
        params["key"] = value
        self.parameters = params

    @property
    def dashboard_url(self) -> str:
        return str((self.engine_state or {}).get("dashboard") or "")

    @property
    def result(self) -> Any:
        """The task's result, stored by the monitor (None before it finished, or with forget)."""
        if not self.attempt or not self.workspace:
            return None
        from offload.engines.dask import load_result

        return load_result(self.workspace, self.pk, self.attempt)

    def results_argument(self) -> Any:
        """What ``process_results_function`` receives: ``f(result)`` or ``f(job, result)``."""
        return self.result

    def store_result(self, value: Any) -> None:
        """Keep ``value`` as the job's result, what :attr:`result` loads from now on (Tethys's
        DaskJob stores what its ``process_results_function`` returns), in Dask's serialization
        in the attempt's folder; raises for a value Dask cannot serialize. A job run with
        ``forget=True`` keeps no result."""
        if self.forget:
            return
        from offload.engines.dask import store_result
        from offload.errors import JobStateError

        if not self.attempt or not self.workspace:
            raise JobStateError(f"job {self.pk} has not run: it has no result to replace")
        store_result(self.workspace, self.pk, self.attempt, value)

    def execute(self, *args: Any, **kwargs: Any) -> None:
        """``execute(delayed_or_future)`` or ``execute(function, *args, **kwargs)``."""
        from offload import store
        from offload.engines import dask as dask_engine
        from offload.errors import InvalidJobError

        source = kwargs.pop("source", EventSource.APP)
        if not args:
            raise InvalidJobError(
                "obj",
                "give the task: job.execute(delayed_obj), job.execute(future) or "
                "job.execute(function, *args, **kwargs)",
            )
        obj, call_args = args[0], args[1:]
        kind = dask_engine.task_kind(obj)
        params = dict(self.parameters or {})
        params["task"] = kind
        data = b""
        if kind == "future":
            if call_args or kwargs:
                raise InvalidJobError("obj", "a Future takes no arguments")
            if not isinstance(obj.key, str):
                raise InvalidJobError("obj", f"the Future's key {obj.key!r} is not a string")
            params["key"] = obj.key
            params.setdefault("scheduler_address", obj.client.scheduler.address)
        else:
            if kind == "delayed" and (call_args or kwargs):
                raise InvalidJobError("obj", "a delayed object takes no arguments")
            data = dask_engine.task_bytes(kind, obj, call_args, kwargs)
        if not self._state.adding and (Status(self._status) != Status.PENDING or self.attempt):
            store.execute(self, source=source)  # refuses: already executed
            return
        dask_engine.DaskEngine(None).validate(params)
        self.parameters = params
        if self._state.adding:
            self.save()
        else:
            Job.objects.filter(pk=self.pk).update(parameters=params)
        if kind == "future":
            # Held on its scheduler, so the task outlives the app's own reference to it.
            dask_engine.hold_future(obj)
        else:
            if not self.workspace:
                raise InvalidJobError("workspace", "a DaskJob needs a workspace for its task")
            dask_engine.write_task(self.workspace, self.pk, data)
        store.execute(self, source=source)


#: Job-type code → job class. Later engines add their codes (CONDOR, PBS, DASK …).
JOB_TYPES: dict[str, type[Job]] = {
    "BASIC": BasicJob,
    "LOCAL": LocalJob,
    "SLURM": SlurmJob,
    "DASK": DaskJob,
    "PBS": PbsJob,
    "SGE": SgeJob,
    "CONDOR": CondorJob,
    "CONDORJOB": CondorJob,
    "CONDORWORKFLOW": CondorWorkflow,
}


class JobEvent(models.Model):
    """One accepted status change (or action) of a job. Append-only: rows are never updated."""

    id = models.BigAutoField(primary_key=True)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="event_set")
    attempt = models.PositiveIntegerField(default=0)
    time = models.DateTimeField(default=timezone.now, db_index=True)
    from_status = models.CharField(max_length=3, blank=True, default="", choices=STATUS_CHOICES)
    to_status = models.CharField(max_length=3, choices=STATUS_CHOICES)
    status_text = models.CharField(max_length=1024, blank=True, default="")
    source = models.CharField(max_length=16, choices=EventSource.choices)
    native_status = models.CharField(max_length=255, blank=True, default="")
    message = models.TextField(blank=True, default="")
    actor = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["job", "id"], name="offload_event_job"),
        ]

    def __str__(self) -> str:
        return f"job {self.job_id}: {self.from_status or '-'} → {self.to_status} ({self.source})"

    @property
    def from_display(self) -> str:
        return Status(self.from_status).display if self.from_status else ""

    @property
    def to_display(self) -> str:
        if self.to_status == Status.OTHER.value and self.status_text:
            return self.status_text
        return Status(self.to_status).display

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise ValueError("job events are append-only; they cannot be changed")
        super().save(*args, **kwargs)


class JobIntent(models.Model):
    """Something a monitor must do for a job (submit, stop, pause …). Written by web requests and
    app code, claimed by monitors with a lease, retried with backoff, kept as a record when done."""

    id = models.BigAutoField(primary_key=True)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="intents")
    action = models.CharField(max_length=16, choices=IntentAction.choices)
    attempt = models.PositiveIntegerField(default=0)
    payload = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(default=timezone.now)
    not_before = models.DateTimeField(default=timezone.now)
    tries = models.PositiveIntegerField(default=0)
    claimed_by = models.CharField(max_length=255, blank=True, default="")
    lease_expires = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    outcome = models.TextField(blank=True, default="")
    requested_by = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["done_at", "not_before"], name="offload_intent_due"),
            models.Index(fields=["job", "done_at"], name="offload_intent_job"),
        ]

    def __str__(self) -> str:
        return f"{self.action} job {self.job_id}"


class MonitorLease(models.Model):
    """A named lease a monitor holds for a while (e.g. the right to poll one scheduler this cycle)."""

    name = models.CharField(max_length=255, unique=True)
    owner = models.CharField(max_length=255, blank=True, default="")
    expires = models.DateTimeField(default=timezone.now)
    last_run = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} → {self.owner}"


class ApiToken(models.Model):
    """A token a script sends as ``Authorization: Bearer <token>`` to use the REST API as
    ``user``. Only a SHA-256 hash of it is stored; the token itself is shown once, at creation
    (:func:`offload.web.access.create_api_token`)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="offload_api_tokens"
    )
    name = models.CharField(max_length=255, blank=True, default="")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, blank=True, default="", editable=False)
    created = models.DateTimeField(default=timezone.now)
    last_used = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"
