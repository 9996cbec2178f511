"""``JobManager``: the Tethys-compatible Jobs API an app uses to create, list and get its jobs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Q, QuerySet
from django.urls import NoReverseMatch, reverse

from offload import store
from offload.errors import InvalidJobError, TemplateNotFoundError
from offload.models import JOB_TYPES, Job
from offload.status import Category, Status
from offload.templates import JobTemplate

#: The kwargs create_job accepts besides type-specific parameters.
JOB_FIELDS = frozenset(
    {
        "description",
        "workspace",
        "extended_properties",
        "status_message",
        "process_results_function",
        "scheduler",
        "parameters",
        "creation_time",
    }
)


def _app_label(app: Any) -> str:
    label = app if isinstance(app, str) else getattr(app, "package", None)
    if not isinstance(label, str) or not label:
        raise TypeError("JobManager(app): app must be a label string or have a .package string")
    return store.safe_segment(label, "app")


def resolve_job_class(job_type: Any) -> type[Job]:
    if job_type is None:
        return JOB_TYPES["BASIC"]
    if isinstance(job_type, type) and issubclass(job_type, Job):
        return job_type
    if isinstance(job_type, str):
        cls = JOB_TYPES.get(job_type.upper())
        if cls is not None:
            return cls
    valid = ", ".join(sorted(JOB_TYPES))
    raise ValueError(f"job_type {job_type!r} is not a job type; valid types: {valid}")


class JobManager:
    """Creates, lists and gets one app's jobs. Every job it returns is of its type's class
    (``LocalJob``, ``BasicJob`` …), loaded without a query per job."""

    def __init__(
        self,
        app: Any,
        templates: Iterable[JobTemplate] | None = None,
        custom_statuses: Mapping[str, Category | str] | None = None,
    ) -> None:
        self.app = app
        self.label = _app_label(app)
        self.job_templates: dict[str, JobTemplate] = {}
        for template in templates or ():
            self.register_template(template)
        for text, category in (custom_statuses or {}).items():
            self.add_custom_status(text, category)

    # -- workspaces & templates ---------------------------------------------------------------
    @property
    def app_workspace(self) -> str:
        return str(store.app_workspace(self.label))

    def get_user_workspace(self, user: Any) -> str:
        return str(store.user_workspace(self.label, user))

    def register_template(self, template: JobTemplate) -> None:
        if not isinstance(template, JobTemplate):
            raise TypeError(f"register_template needs a JobTemplate, not {type(template).__name__}")
        self.job_templates[template.name] = template

    def add_custom_status(self, text: str, category: Category | str) -> None:
        """Declare a custom status text in a category (pre-running, running, active,
        non-terminal, terminal). A bad text or category raises InvalidJobError naming it."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidJobError("text", f"a custom status must be non-empty text, not {text!r}")
        builtin = Status.parse(text)
        if builtin is not None:
            raise InvalidJobError(
                "text", f"{text!r} is the built-in status {builtin.display}, not a custom one"
            )
        store.declare_custom_status(self.label, text.strip(), Category.parse(category))

    # -- the Jobs API -------------------------------------------------------------------------
    def create_job(
        self,
        name: str,
        user: Any,
        groups: Any = None,
        job_type: Any = None,
        template_name: str | None = None,
        **kwargs: Any,
    ) -> Job:
        """A new, unsaved job of ``job_type`` (or of the template's type). ``job.save()`` or
        ``job.execute()`` stores it; ``{id}`` in the name becomes its id then, and a ``status``
        given here is set (see :func:`offload.store.set_initial_status`)."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidJobError("name", "must be a non-empty string")
        if template_name is not None:
            template = self.job_templates.get(template_name)
            if template is None:
                raise TemplateNotFoundError(template_name, list(self.job_templates))
            params = template.resolved_parameters(self.app_workspace, self.get_user_workspace(user))
            params.update(kwargs)
            kwargs = params
            if job_type is None:
                job_type = template.type
        cls = resolve_job_class(job_type)
        allowed = JOB_FIELDS | {"status"} | set(cls.parameter_names)
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise TypeError(
                f"create_job() got unexpected keyword arguments for {cls.__name__}: "
                f"{', '.join(unknown)} (accepted: {', '.join(sorted(allowed))})"
            )
        process_fn = kwargs.pop("process_results_function", None)
        status = kwargs.pop("status", None)
        params = dict(kwargs.pop("parameters", None) or {})
        for pname in cls.parameter_names:
            if pname in kwargs:
                params[pname] = kwargs.pop(pname)
        job = cls.build(name=name, user=user, label=self.label, job_type=cls.type_code, **kwargs)
        job.parameters = params
        if process_fn is not None:
            job.process_results_function = process_fn
        if groups is not None:
            job._pending_groups = _resolve_groups(groups)  # type: ignore[attr-defined]
        if status is not None:
            # Stored with the job (Tethys's status setter saves at once; the job stays unsaved).
            store.set_initial_status(job, status)
        return job

    def _scoped(self) -> QuerySet[Job]:
        return Job.objects.visible().filter(label=self.label)

    def list_jobs(
        self,
        user: Any = None,
        groups: Any = None,
        order_by: str = "id",
        filters: Mapping[str, Any] | None = None,
    ) -> QuerySet[Job]:
        """The app's jobs, optionally one user's or those shared with some groups. Lazy and
        typed: iterating runs one query whatever the number of jobs."""
        if user is not None and groups is not None:
            raise ValueError("list_jobs: pass user or groups, not both")
        qs = self._scoped()
        if isinstance(user, get_user_model()) and user.pk is not None:
            # One user's jobs through the reverse relation: each job gets that very user object,
            # with no join and no user object built per row.
            qs = user.offload_jobs.visible().filter(label=self.label)
        elif user is not None:
            qs = qs.filter(user=user).select_related("user")
        else:
            # The user comes with each job (tables show it): still one query however many jobs.
            qs = qs.select_related("user")
        if filters:
            qs = qs.filter(**dict(filters))
        if groups is not None:
            group_objs = _resolve_groups(groups)
            qs = qs.filter(_in_groups(group_objs))
        return qs.order_by(order_by)

    def get_job(
        self, job_id: Any, user: Any = None, filters: Mapping[str, Any] | None = None
    ) -> Job | None:
        """The job, or None if it does not exist, is another app's, or (with ``user``) another
        user's."""
        try:
            pk = int(job_id)
        except (TypeError, ValueError):
            return None
        qs = self._scoped().filter(pk=pk)
        if filters:
            qs = qs.filter(**dict(filters))
        if user is not None:
            qs = qs.filter(user=user)
        return qs.first()

    def get_job_status_callback_url(self, request: Any, job_id: Any) -> str:
        """The absolute URL a job can GET to ask for a prompt status refresh: Tethys's
        ``/update-job-status/<id>/`` where ``offload.urls_root`` is installed (the portal), else
        the one under ``offload.urls`` (e.g. ``/jobs/update-job-status/<id>/``)."""
        kwargs = {"job_id": int(job_id)}
        try:
            relative = reverse("offload_root:update_job_status", kwargs=kwargs)
        except NoReverseMatch:
            relative = reverse("offload:update_job_status", kwargs=kwargs)
        return str(request.build_absolute_uri(relative))

    def bulk_create(self, jobs: Iterable[Job]) -> list[Job]:
        """Store many jobs from :meth:`create_job` at once (the fast path), with the groups and
        statuses they were created with, in a number of queries that does not grow per job."""
        return store.bulk_create_jobs(list(jobs))


def _in_groups(groups: list[Group]) -> Q:
    return Q(pk__in=Job.groups.through.objects.filter(group__in=groups).values("job_id"))


def _resolve_groups(groups: Any) -> list[Group]:
    """One group or many, as Group objects or names. Unknown names raise ValueError."""
    if isinstance(groups, Group | str):
        groups = [groups]
    resolved: list[Group] = []
    names: list[str] = []
    for group in groups:
        if isinstance(group, Group):
            resolved.append(group)
        elif isinstance(group, str):
            names.append(group)
        else:
            raise TypeError(f"groups: {group!r} is neither a Group nor a group name")
    if names:
        found = {g.name: g for g in Group.objects.filter(name__in=names)}
        missing = sorted(set(names) - set(found))
        if missing:
            raise ValueError(f"groups: no group named {', '.join(map(repr, missing))}")
        resolved.extend(found[n] for n in names)
    return resolved


_managers: dict[str, JobManager] = {}


def get_job_manager(app: Any) -> JobManager:
    """The app's JobManager (one per app label, created on first use)."""
    label = _app_label(app)
    manager = _managers.get(label)
    if manager is None:
        manager = _managers[label] = JobManager(app)
    return manager
