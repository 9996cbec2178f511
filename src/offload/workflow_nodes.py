"""The nodes of an HTCondor workflow (Tethys's ``CondorWorkflowJobNode``): plain objects kept in
their workflow's ``parameters["nodes"]``, so a workflow and its graph are one row.

    workflow = manager.create_job("dag {id}", user, job_type="CONDORWORKFLOW")
    workflow.save()
    a = CondorWorkflowJobNode("A", workflow, executable="/bin/sh", arguments=["-c", "…"])
    a.save()
    b = CondorWorkflowJobNode("B", workflow, executable="/bin/echo", retry=2, category="io")
    b.add_parent(a)
    b.save()
    workflow.add_max_jobs_throttle("io", 1)
    workflow.execute()

Nothing is checked here but the shape: the HTCondor engine validates every node (and the graph:
unknown parents, cycles) when the workflow is executed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from offload.engines.condor_dag import NODE_SETTINGS

if TYPE_CHECKING:
    from offload.models import CondorWorkflow

#: Node settings besides the node's job (Tethys's CondorWorkflowNode fields).
NODE_FIELDS = NODE_SETTINGS
#: The node's job (as a CondorJob's parameters).
JOB_FIELDS = (
    "executable",
    "arguments",
    "environment",
    "condorpy_template_name",
    "attributes",
    "remote_input_files",
    "remote_output_files",
    "num_jobs",
)


class CondorWorkflowJobNode:
    """One node: a job (``executable``, ``attributes`` … as a CondorJob) plus DAG settings."""

    def __init__(self, name: str, workflow: CondorWorkflow | None = None, **settings: Any) -> None:
        unknown = sorted(set(settings) - set(NODE_FIELDS) - set(JOB_FIELDS) - {"parents"})
        if unknown:
            raise TypeError(f"unknown node settings: {', '.join(unknown)}")
        self.name = name
        self.workflow = workflow
        self.settings: dict[str, Any] = {k: v for k, v in settings.items() if k != "parents"}
        self.parents: list[str] = [str(p) for p in settings.get("parents") or []]

    def __getattr__(self, name: str) -> Any:
        if name in NODE_FIELDS or name in JOB_FIELDS:
            return self.__dict__.get("settings", {}).get(name)
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"<CondorWorkflowJobNode {self.name} parents={self.parents}>"

    @property
    def parent_nodes(self) -> list[CondorWorkflowJobNode]:
        if self.workflow is None:
            return []
        return [node for node in self.workflow.nodes if node.name in self.parents]

    def add_parent(self, parent: CondorWorkflowJobNode | str) -> None:
        """This node runs after ``parent`` (a node or its name). Stored at once when the node
        belongs to a saved workflow, as Tethys's ``add_parent``."""
        name = parent.name if isinstance(parent, CondorWorkflowJobNode) else str(parent)
        if name not in self.parents:
            self.parents.append(name)
        if self.workflow is not None and self.workflow.get_job(self.name) is not None:
            self.save()

    def set_attribute(self, name: str, value: Any) -> None:
        attributes = dict(self.settings.get("attributes") or {})
        attributes[name] = value
        self.settings["attributes"] = attributes

    def get_attribute(self, name: str) -> Any:
        return (self.settings.get("attributes") or {}).get(name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "parents": list(self.parents), **self.settings}

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], workflow: CondorWorkflow | None = None
    ) -> CondorWorkflowJobNode:
        settings = {k: v for k, v in data.items() if k not in ("name",)}
        return cls(str(data.get("name", "")), workflow, **settings)

    def save(self) -> None:
        """Store the node in its workflow (replacing a node of the same name) and save that."""
        if self.workflow is None:
            raise ValueError(f"node {self.name!r} belongs to no workflow")
        self.workflow.store_node(self)
