"""Engines: one module per scheduler, all implementing :mod:`offload.engines.base`.

Engines are plain Python with no Django import, so the cluster agent can use them too. They are
looked up by kind (``'local'``, ``'basic'`` …) and built from plain option dicts.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from offload.engines.base import (
    BatchSchedulerEngine,
    Engine,
    JobHandle,
    JobSpec,
    NativeReport,
    SubmitOutcome,
    SubmitResult,
    submission_key,
)
from offload.errors import ConfigurationError

#: Engine kind → "module:Class". Later engines (condor, slurm, pbs, sge, dask, agent) register here.
ENGINE_CLASSES: dict[str, str] = {
    "basic": "offload.engines.basic:BasicEngine",
    "local": "offload.engines.local:LocalEngine",
    "slurm": "offload.engines.slurm:SlurmEngine",
    "sge": "offload.engines.sge:SgeEngine",
    "pbs": "offload.engines.pbs:PbsEngine",
    "dask": "offload.engines.dask:DaskEngine",
    "condor": "offload.engines.condor:CondorEngine",
}


def engine_class(kind: str) -> type[Engine]:
    try:
        target = ENGINE_CLASSES[kind]
    except KeyError:
        valid = ", ".join(sorted(ENGINE_CLASSES))
        raise ConfigurationError(f"unknown engine kind {kind!r} (valid: {valid})") from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert isinstance(cls, type) and issubclass(cls, Engine)
    return cls


def build_engine(kind: str, options: Mapping[str, Any] | None = None) -> Engine:
    return engine_class(kind)(options)


__all__ = [
    "ENGINE_CLASSES",
    "BatchSchedulerEngine",
    "Engine",
    "JobHandle",
    "JobSpec",
    "NativeReport",
    "SubmitOutcome",
    "SubmitResult",
    "build_engine",
    "engine_class",
    "submission_key",
]
