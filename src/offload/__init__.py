"""offload: run long jobs elsewhere, keep their state in a database.

The public API. Names that need Django's models (``JobManager``, ``Job`` …) are loaded on first use,
so ``import offload`` works before Django is configured (as ``INSTALLED_APPS`` requires).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from offload.errors import (
    EngineUnavailableError,
    InvalidJobError,
    JobAlreadyExecutedError,
    JobNotFoundError,
    JobStateError,
    NotSupportedError,
    OffloadError,
    TemplateNotFoundError,
)
from offload.templates import (
    BasicJobTemplate,
    CondorJobTemplate,
    JobTemplate,
    LocalJobTemplate,
    PbsJobTemplate,
    SgeJobTemplate,
    SlurmJobTemplate,
)

if TYPE_CHECKING:
    from offload.manager import JobManager, get_job_manager
    from offload.models import (
        JOB_TYPES,
        BasicJob,
        CondorJob,
        CondorWorkflow,
        DaskJob,
        Job,
        JobEvent,
        LocalJob,
        PbsJob,
        Scheduler,
        SgeJob,
        SlurmJob,
    )
    from offload.schedulers import (
        create_condor_scheduler,
        create_dask_scheduler,
        create_scheduler,
        get_scheduler,
        list_schedulers,
    )
    from offload.status import Category, Status
    from offload.workflow_nodes import CondorWorkflowJobNode

__version__ = "0.1.0"

_LAZY = {
    # Lazy too, so `python -m offload.status` (which regenerates docs/statuses.md) runs the module
    # once, without runpy's warning about a module imported by its own package first.
    "Status": "offload.status",
    "Category": "offload.status",
    "JobManager": "offload.manager",
    "get_job_manager": "offload.manager",
    "JOB_TYPES": "offload.models",
    "Job": "offload.models",
    "BasicJob": "offload.models",
    "LocalJob": "offload.models",
    "SlurmJob": "offload.models",
    "PbsJob": "offload.models",
    "SgeJob": "offload.models",
    "DaskJob": "offload.models",
    "CondorJob": "offload.models",
    "CondorWorkflow": "offload.models",
    "CondorWorkflowJobNode": "offload.workflow_nodes",
    "JobEvent": "offload.models",
    "Scheduler": "offload.models",
    "create_scheduler": "offload.schedulers",
    "create_dask_scheduler": "offload.schedulers",
    "create_condor_scheduler": "offload.schedulers",
    "get_scheduler": "offload.schedulers",
    "list_schedulers": "offload.schedulers",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'offload' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "JOB_TYPES",
    "BasicJob",
    "BasicJobTemplate",
    "Category",
    "CondorJob",
    "CondorJobTemplate",
    "CondorWorkflow",
    "CondorWorkflowJobNode",
    "DaskJob",
    "EngineUnavailableError",
    "InvalidJobError",
    "Job",
    "JobAlreadyExecutedError",
    "JobEvent",
    "JobManager",
    "JobNotFoundError",
    "JobStateError",
    "JobTemplate",
    "LocalJob",
    "LocalJobTemplate",
    "NotSupportedError",
    "OffloadError",
    "PbsJob",
    "PbsJobTemplate",
    "Scheduler",
    "SgeJob",
    "SgeJobTemplate",
    "SlurmJob",
    "SlurmJobTemplate",
    "Status",
    "TemplateNotFoundError",
    "create_condor_scheduler",
    "create_dask_scheduler",
    "create_scheduler",
    "get_job_manager",
    "get_scheduler",
    "list_schedulers",
]
