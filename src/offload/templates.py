"""Job templates (Tethys's older API): named parameter bundles an app registers and creates jobs from.

Pure: no Django. String values may contain ``$(APP_WORKSPACE)`` and ``$(USER_WORKSPACE)``, resolved to
absolute paths when a job is created, recursively through lists, tuples and dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

APP_WORKSPACE = "$(APP_WORKSPACE)"
USER_WORKSPACE = "$(USER_WORKSPACE)"


def substitute_workspaces(value: Any, app_workspace: str, user_workspace: str) -> Any:
    """``value`` with every workspace placeholder in its strings replaced, containers rebuilt."""
    if isinstance(value, str):
        return value.replace(APP_WORKSPACE, app_workspace).replace(USER_WORKSPACE, user_workspace)
    if isinstance(value, list):
        return [substitute_workspaces(v, app_workspace, user_workspace) for v in value]
    if isinstance(value, tuple):
        return tuple(substitute_workspaces(v, app_workspace, user_workspace) for v in value)
    if isinstance(value, dict):
        return {
            substitute_workspaces(k, app_workspace, user_workspace): substitute_workspaces(
                v, app_workspace, user_workspace
            )
            for k, v in value.items()
        }
    return value


class JobTemplate:
    """A named job recipe: a job type (code such as ``'LOCAL'`` or a job class) and parameters."""

    #: The job type used when none is given.
    default_type: str = "BASIC"

    def __init__(
        self,
        name: str,
        type: Any = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("JobTemplate name: must be a non-empty string")
        self.name = name
        self.type = type if type is not None else self.default_type
        self.parameters: dict[str, Any] = dict(parameters or {})

    def resolved_parameters(self, app_workspace: str, user_workspace: str) -> dict[str, Any]:
        resolved = substitute_workspaces(self.parameters, app_workspace, user_workspace)
        assert isinstance(resolved, dict)
        return resolved

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} type={self.type!r}>"


class BasicJobTemplate(JobTemplate):
    """A template for BASIC jobs (no execution; the app drives their status)."""

    default_type = "BASIC"

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, self.default_type, parameters)


class LocalJobTemplate(JobTemplate):
    """A template for LOCAL jobs (a process on the monitor's machine)."""

    default_type = "LOCAL"

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, self.default_type, parameters)


class SlurmJobTemplate(JobTemplate):
    """A template for SLURM jobs (a command or script plus partition, wall time, memory …)."""

    default_type = "SLURM"

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, self.default_type, parameters)


class SgeJobTemplate(JobTemplate):
    """A template for SGE (Grid Engine) jobs (a command or script plus queue, h_rt, h_vmem …)."""

    default_type = "SGE"

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, self.default_type, parameters)


class PbsJobTemplate(JobTemplate):
    """A template for PBS jobs (a command or script plus queue, nodes/ppn, walltime …)."""

    default_type = "PBS"

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, self.default_type, parameters)


class CondorJobTemplate(JobTemplate):
    """A template for HTCondor jobs (``executable``, ``condorpy_template_name``, ``attributes`` …)."""

    default_type = "CONDORJOB"

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        super().__init__(name, self.default_type, parameters)
