"""Who may see and act on which jobs: the one place every web route (pages, actions, logs, files,
the event stream, the REST API) asks.

- A user sees their own jobs and the jobs shared with one of their groups, and acts on their own
  and on those shared with a group that may act (every shared group may, unless the job names it
  view-only: :func:`set_group_permissions`).
- Staff, and users with the ``offload.manage_all_jobs`` permission, see and act on every job.
- Everyone else is told the job does not exist (404, never 403): a job's id reveals nothing. A
  user who may see a job but not act on it gets 403 for the action.
- Anonymous visitors see nothing, except in the apps listed in ``OFFLOAD["ANONYMOUS_JOBS"]``:
  there they see (and act on, unless the app says ``"view"``) the jobs without a user that their
  own browser session created (:func:`remember_anonymous_job`).

API tokens (``Authorization: Bearer <token>``) are made by :func:`create_api_token` (the CLI's
``offload tokens create USER`` and the admin call it); only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal

from django.conf import settings
from django.contrib.auth.models import Group
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from offload.errors import InvalidJobError
from offload.models import ApiToken, Job

#: The permission that lets a non-staff user see and act on every job.
MANAGE_ALL_PERMISSION = "offload.manage_all_jobs"
#: Tokens start with this, so they are recognisable in logs and secret scanners.
TOKEN_PREFIX = "ofl_"  # noqa: S105 (a marker, not a secret)
#: The largest id a job can have (the column is a signed 64-bit integer).
MAX_JOB_ID = 2**63 - 1
#: How long ``last_used`` may lag behind (seconds): one write a minute per token at most.
LAST_USED_RESOLUTION = 60.0
#: Key of ``Job.extended_properties`` holding the per-group rights: ``{"<group id>": "view"}``.
GROUP_PERMISSIONS_KEY = "__group_permissions__"
#: Session key listing the ids of the jobs an anonymous visitor's session created.
ANONYMOUS_SESSION_KEY = "offload_anonymous_jobs"
#: Most jobs an anonymous session remembers (the oldest are forgotten first).
MAX_ANONYMOUS_JOBS = 200

Permission = Literal["view", "act"]


def is_signed_in(user: Any) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False))


def can_manage_all(user: Any) -> bool:
    """Staff and holders of ``offload.manage_all_jobs`` see and act on every job."""
    if not is_signed_in(user) or not getattr(user, "is_active", True):
        return False
    return bool(getattr(user, "is_staff", False) or user.has_perm(MANAGE_ALL_PERMISSION))


def shared_with(user: Any) -> Q:
    """Jobs of ``user`` or shared with one of their groups (a subquery, no join duplicates).

    When nothing is shared with the user's groups (one indexed ``EXISTS`` tells), the condition is
    only ``user = …``: the database then pages through the ``(user, id)`` index, however many jobs
    the table holds. The ``OR EXISTS`` form made PostgreSQL walk every job newest first (and count
    them all) for a user whose jobs are old."""
    shares = Job.groups.through.objects.filter(group__user=user.pk)
    if not shares.exists():
        return Q(user=user.pk)
    in_group = shares.filter(job_id=OuterRef("pk"))
    return Q(user=user.pk) | Q(Exists(in_group))


def visible_jobs(
    user: Any, queryset: QuerySet[Job] | None = None, *, anonymous_jobs: Collection[int] = ()
) -> QuerySet[Job]:
    """The (not deleted) jobs ``user`` may see. An anonymous visitor sees only
    ``anonymous_jobs`` (their session's, :func:`anonymous_jobs_of`) in the apps that opt in."""
    qs = queryset if queryset is not None else Job.objects.visible()
    if not is_signed_in(user):
        apps = anonymous_apps()
        if not apps or not anonymous_jobs:
            return qs.none()
        return qs.filter(user__isnull=True, label__in=list(apps), pk__in=list(anonymous_jobs))
    if can_manage_all(user):
        return qs
    return qs.filter(shared_with(user))


def get_job_or_404(
    user: Any,
    job_id: Any,
    queryset: QuerySet[Job] | None = None,
    *,
    anonymous_jobs: Collection[int] = (),
) -> Job:
    """The job if ``user`` may see it; otherwise Http404, whether or not it exists."""
    try:
        pk = int(job_id)
    except (TypeError, ValueError):
        raise Http404("no such job") from None
    if not 0 < pk <= MAX_JOB_ID:
        raise Http404(f"job {pk} does not exist")
    job = visible_jobs(user, queryset, anonymous_jobs=anonymous_jobs).filter(pk=pk).first()
    if job is None:
        raise Http404(f"job {pk} does not exist")
    return job


def may_act(user: Any, job: Job, *, anonymous_jobs: Collection[int] = ()) -> bool:
    """Whether ``user`` may act on ``job`` (run, cancel, resubmit, delete …): its owner, a manager,
    a member of a group it is shared with that is not view-only for it; an anonymous visitor on
    their session's jobs where the app lets them act."""
    if not is_signed_in(user):
        rights = anonymous_apps().get(job.label)
        return (
            rights == "act"
            and job.user_id is None
            and job.pk in set(anonymous_jobs)
            and visible_jobs(user, anonymous_jobs=anonymous_jobs).filter(pk=job.pk).exists()
        )
    if can_manage_all(user) or (job.user_id is not None and job.user_id == user.pk):
        return True
    view_only = view_only_group_ids(job)
    shared = Job.groups.through.objects.filter(job_id=job.pk, group__user=user.pk)
    if view_only:
        shared = shared.exclude(group_id__in=view_only)
    return shared.exists()


def actable_job_ids(
    user: Any, jobs: Iterable[Job], *, anonymous_jobs: Collection[int] = ()
) -> set[int]:
    """The ids among ``jobs`` (already visible to ``user``) that ``user`` may act on, in at most
    ONE query (the shared groups of the jobs that are not the user's own)."""
    jobs = list(jobs)
    if not is_signed_in(user):
        apps = anonymous_apps()
        mine = set(anonymous_jobs)
        return {
            job.pk
            for job in jobs
            if job.user_id is None and job.pk in mine and apps.get(job.label) == "act"
        }
    actable = {job.pk for job in jobs if job.user_id is not None and job.user_id == user.pk}
    others = {job.pk: job for job in jobs if job.pk not in actable}
    if others and can_manage_all(user):  # asked only when needed (it loads the permissions)
        return {job.pk for job in jobs}
    if others:
        rows = Job.groups.through.objects.filter(
            job_id__in=list(others), group__user=user.pk
        ).values_list("job_id", "group_id")
        for job_id, group_id in rows:
            if group_id not in view_only_group_ids(others[job_id]):
                actable.add(job_id)
    return actable


# -- per-group rights -------------------------------------------------------------------------------
def group_permissions(job: Job) -> dict[int, Permission]:
    """Group id → ``"view"`` for the groups that may only look at ``job``; the other groups it
    is shared with may act (the default, as in Tethys, where sharing means both)."""
    raw = (job.extended_properties or {}).get(GROUP_PERMISSIONS_KEY) or {}
    rights: dict[int, Permission] = {}
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            try:
                rights[int(key)] = "view" if value == "view" else "act"
            except (TypeError, ValueError):
                continue
    return rights


def view_only_group_ids(job: Job) -> set[int]:
    return {gid for gid, right in group_permissions(job).items() if right == "view"}


def set_group_permissions(job: Job, rights: Mapping[Group | str | int, Permission]) -> None:
    """Share ``job`` with groups, each ``"view"`` (see only) or ``"act"`` (see and act)::

        job = manager.create_job("run {id}", user, job_type="LOCAL", ...)
        job.save()
        set_group_permissions(job, {"reviewers": "view", "team": "act"})

    Groups are given as Group objects, names or ids; they are added to ``job.groups``. The rights
    are kept (by group id, so renaming a group changes nothing) in the job's
    ``extended_properties["__group_permissions__"]`` and saved through the store."""
    if job.pk is None:
        raise InvalidJobError("job", "save the job before setting its group permissions")
    resolved: dict[int, Permission] = {}
    groups: list[Group] = []
    for key, right in rights.items():
        if right not in ("view", "act"):
            raise InvalidJobError("group_permissions", f"{right!r} is not 'view' or 'act'")
        group = _group(key)
        groups.append(group)
        resolved[group.pk] = right
    current = group_permissions(job)
    current.update(resolved)
    props = dict(job.extended_properties or {})
    view_only = {str(gid): "view" for gid, right in sorted(current.items()) if right == "view"}
    if view_only:
        props[GROUP_PERMISSIONS_KEY] = view_only
    else:
        props.pop(GROUP_PERMISSIONS_KEY, None)
    job.groups.add(*groups)
    job.extended_properties = props
    job.save()


def _group(key: Group | str | int) -> Group:
    if isinstance(key, Group):
        return key
    found = (
        Group.objects.filter(pk=key).first()
        if isinstance(key, int)
        else Group.objects.filter(name=key).first()
    )
    if found is None:
        raise InvalidJobError("group_permissions", f"no group {key!r}")
    return found


# -- anonymous visitors -----------------------------------------------------------------------------
def anonymous_apps() -> dict[str, Permission]:
    """``OFFLOAD["ANONYMOUS_JOBS"]``: app labels whose anonymous visitors may use their own
    session's jobs — a list (they may act) or a dict ``{"app": "view" | "act"}``. Empty: none."""
    raw = (getattr(settings, "OFFLOAD", None) or {}).get("ANONYMOUS_JOBS") or {}
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, Mapping):
        return {str(k): ("view" if v == "view" else "act") for k, v in raw.items()}
    if isinstance(raw, Iterable):
        return {str(label): "act" for label in raw}
    return {}


def anonymous_jobs_of(request: Any) -> list[int]:
    """The ids of the jobs the anonymous visitor's session created (empty for a signed-in user,
    or where no app opts in)."""
    if is_signed_in(getattr(request, "user", None)) or not anonymous_apps():
        return []
    session = getattr(request, "session", None)
    if session is None:
        return []
    ids = session.get(ANONYMOUS_SESSION_KEY) or []
    return [int(i) for i in ids if isinstance(i, int)]


def remember_anonymous_job(request: Any, job: Job) -> None:
    """Let the visitor's session see ``job`` (a job without a user, of an app listed in
    ``OFFLOAD["ANONYMOUS_JOBS"]``): call it in the view that created the job."""
    if job.pk is None or job.user_id is not None:
        raise InvalidJobError("job", "only a saved job without a user can belong to a session")
    if job.label not in anonymous_apps():
        raise InvalidJobError(
            "label", f"app {job.label!r} is not in OFFLOAD['ANONYMOUS_JOBS']; add it to opt in"
        )
    ids = [i for i in (request.session.get(ANONYMOUS_SESSION_KEY) or []) if i != job.pk]
    ids.append(job.pk)
    request.session[ANONYMOUS_SESSION_KEY] = ids[-MAX_ANONYMOUS_JOBS:]


# -- API tokens -------------------------------------------------------------------------------------
def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", errors="replace")).hexdigest()


def create_api_token(user: Any, name: str = "") -> tuple[ApiToken, str]:
    """A new token for ``user``: the stored record and the token itself (shown only now)."""
    record = ApiToken(user=user, name=name[:255])
    token = set_new_token(record)
    record.save()
    return record, token


def set_new_token(record: ApiToken) -> str:
    """Give ``record`` a new random token (its hash and prefix); the token, to show once."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record.key_hash = hash_token(token)
    record.prefix = token[:12]
    return token


def user_for_token(token: str) -> Any | None:
    """The active user a bearer token belongs to, or None. Notes when the token was used."""
    if not isinstance(token, str) or not token or len(token) > 512:
        return None
    record = ApiToken.objects.select_related("user").filter(key_hash=hash_token(token)).first()
    if record is None or not record.user.is_active:
        return None
    now = timezone.now()
    if record.last_used is None or (now - record.last_used).total_seconds() > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=record.pk).update(last_used=now)
    return record.user


def bearer_token(request: Any) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, if any."""
    header = request.headers.get("Authorization", "") or ""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
