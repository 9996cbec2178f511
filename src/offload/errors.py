"""Exceptions a caller can act on; each message says what was wrong, with which value, and what to do."""

from __future__ import annotations


class OffloadError(Exception):
    """Base class of every error offload raises on purpose."""


class ConfigurationError(OffloadError):
    """A setting or scheduler record is missing or malformed."""


class InvalidJobError(OffloadError, ValueError):
    """A job's parameters are invalid. ``field`` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class JobNotFoundError(OffloadError, LookupError):
    """No job with that id exists (or it belongs to someone else)."""

    def __init__(self, job_id: object) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} does not exist")


class TemplateNotFoundError(OffloadError, KeyError):
    """No job template with that name is registered for the app."""

    def __init__(self, name: str, available: list[str]) -> None:
        self.name = name
        self.available = available
        listed = ", ".join(sorted(available)) or "none registered"
        super().__init__(f"job template {name!r} does not exist (available: {listed})")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class JobStateError(OffloadError):
    """The job's status does not allow the requested action (e.g. executing a running job)."""


class JobAlreadyExecutedError(JobStateError):
    """``execute()`` on a job that has already been executed; use ``resubmit()``."""


class NotSupportedError(OffloadError):
    """The job's engine cannot do that (e.g. pause a job on an engine without pause)."""


class EngineError(OffloadError):
    """An engine failed to carry out a request."""


class EngineUnavailableError(EngineError):
    """The scheduler could not be reached. Transient: jobs go stale, never Error."""


class SubmissionRejectedError(EngineError):
    """The scheduler refused the job itself (bad executable, bad resources). Permanent: the job errs."""
