"""Who may see and act on which jobs: the one place every web route (pages, actions, logs, the
event stream, the REST API) asks.

- A user sees and acts on their own jobs and the jobs shared with one of their groups.
- Staff, and users with the ``offload.manage_all_jobs`` permission, see and act on every job.
- Everyone else is told the job does not exist (404, never 403): a job's id reveals nothing.

View and act are the same right for now; a per-group "view only" share is a later addition.

API tokens (``Authorization: Bearer <token>``) are made by :func:`create_api_token` (the CLI's
``offload tokens create USER`` and the admin call it); only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from offload.models import ApiToken, Job

#: The permission that lets a non-staff user see and act on every job.
MANAGE_ALL_PERMISSION = "offload.manage_all_jobs"
#: Tokens start with this, so they are recognisable in logs and secret scanners.
TOKEN_PREFIX = "ofl_"  # noqa: S105 (a marker, not a secret)
#: The largest id a job can have (the column is a signed 64-bit integer).
MAX_JOB_ID = 2**63 - 1
#: How long ``last_used`` may lag behind (seconds): one write a minute per token at most.
LAST_USED_RESOLUTION = 60.0


def is_signed_in(user: Any) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False))


def can_manage_all(user: Any) -> bool:
    """Staff and holders of ``offload.manage_all_jobs`` see and act on every job."""
    if not is_signed_in(user) or not getattr(user, "is_active", True):
        return False
    return bool(getattr(user, "is_staff", False) or user.has_perm(MANAGE_ALL_PERMISSION))


def shared_with(user: Any) -> Q:
    """Jobs of ``user`` or shared with one of their groups (a subquery, no join duplicates)."""
    in_group = Job.groups.through.objects.filter(job_id=OuterRef("pk"), group__user=user.pk)
    return Q(user=user.pk) | Q(Exists(in_group))


def visible_jobs(user: Any, queryset: QuerySet[Job] | None = None) -> QuerySet[Job]:
    """The (not deleted) jobs ``user`` may see and act on; none for an anonymous user."""
    qs = queryset if queryset is not None else Job.objects.visible()
    if not is_signed_in(user):
        return qs.none()
    if can_manage_all(user):
        return qs
    return qs.filter(shared_with(user))


def get_job_or_404(user: Any, job_id: Any, queryset: QuerySet[Job] | None = None) -> Job:
    """The job if ``user`` may see it; otherwise Http404, whether or not it exists."""
    try:
        pk = int(job_id)
    except (TypeError, ValueError):
        raise Http404("no such job") from None
    if not 0 < pk <= MAX_JOB_ID:
        raise Http404(f"job {pk} does not exist")
    job = visible_jobs(user, queryset).filter(pk=pk).first()
    if job is None:
        raise Http404(f"job {pk} does not exist")
    return job


def may_act(user: Any, job: Job) -> bool:
    """Whether ``user`` may act on ``job`` (cancel, resubmit, delete …). Equal to seeing it."""
    if not is_signed_in(user):
        return False
    if can_manage_all(user) or (job.user_id is not None and job.user_id == user.pk):
        return True
    return visible_jobs(user).filter(pk=job.pk).exists()


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
