"""Signed tokens that let a running job push its own status to ``/update-job-status/<id>/``.

A token names one job and one attempt, and is signed with Django's ``SECRET_KEY`` (through
:mod:`django.core.signing`, with a salt of its own, so no other signed value of the site is a
valid token). The view accepts a token only for the job's current attempt: once a job is
resubmitted, whatever the earlier attempt still sends is refused.

    token = make_status_token(job.id, job.attempt)   # give it to the job (environment, arguments)
    check_status_token(token, job.id)               # -> the attempt it was made for, or None
"""

from __future__ import annotations

from typing import Any

from django.core import signing

SALT = "offload.web.tokens.status"


def make_status_token(job_id: int, attempt: int) -> str:
    """A URL-safe token allowing status reports for attempt ``attempt`` of job ``job_id``."""
    return signing.dumps({"job": int(job_id), "attempt": int(attempt)}, salt=SALT)


def check_status_token(token: str, job_id: int) -> int | None:
    """The attempt ``token`` was made for, if it is a valid token for job ``job_id``; else None.

    The caller compares the attempt with the job's current one (an older attempt is rejected)."""
    if not isinstance(token, str) or not token:
        return None
    try:
        data: Any = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    job, attempt = data.get("job"), data.get("attempt")
    if not isinstance(job, int) or not isinstance(attempt, int) or job != int(job_id):
        return None
    return attempt
