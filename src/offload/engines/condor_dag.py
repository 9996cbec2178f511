"""HTCondor DAGMan workflows (Tethys's CondorWorkflow), the pure parts: checking the nodes and their
graph, writing the DAG file, and reading DAGMan's node status file.

A workflow's ``parameters`` hold ``nodes`` (a list of node dicts: ``name``, ``parents`` and the
node's job — ``executable``, ``arguments``, ``attributes``, ``condorpy_template_name`` … as for a
CondorJob — plus the DAG keywords ``pre_script``/``post_script`` and their ``…_args``,
``variables``, ``priority``, ``category``, ``retry``, ``retry_unless_exit_value``, ``pre_skip``,
``abort_dag_on``, ``abort_dag_on_return_value``, ``noop``, ``done``) and ``max_jobs`` (category →
throttle). A DAG file is a line-oriented language split on white space, so names, script words and
paths written into it must be single words; variable values are quoted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from offload.errors import InvalidJobError
from offload.status import Status

NODE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
#: Words of the DAG language a node may not be called.
DAG_WORDS = frozenset({"parent", "child", "all_nodes", "job", "data", "subdag", "splice", "final"})
CATEGORY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}$")
VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,99}$")
#: A word of a SCRIPT line: DAGMan splits them on white space and knows no quoting.
SCRIPT_WORD = re.compile(r"^[^\s\"'\\]{1,4096}$")
#: A node's DAG settings besides its name and parents (Tethys's CondorWorkflowNode fields).
NODE_SETTINGS = (
    "pre_script",
    "pre_script_args",
    "post_script",
    "post_script_args",
    "variables",
    "priority",
    "category",
    "retry",
    "retry_unless_exit_value",
    "pre_skip",
    "abort_dag_on",
    "abort_dag_on_return_value",
    "noop",
    "done",
)
#: Keys of a node dict that are DAG keywords, not the node's job.
DAG_KEYS = frozenset({"name", "parents", *NODE_SETTINGS})
#: How often DAGMan rewrites its node status file (seconds).
STATUS_INTERVAL = 2
#: DAGMan's NodeStatus codes.
NODE_STATUS_NAMES = {
    0: "NOT_READY",
    1: "READY",
    2: "PRERUN",
    3: "SUBMITTED",
    4: "POSTRUN",
    5: "DONE",
    6: "ERROR",
    7: "FUTILE",
}
NODE_STATUSES = {
    0: Status.PENDING,
    1: Status.PENDING,
    2: Status.RUNNING,
    3: Status.SUBMITTED,
    4: Status.RUNNING,
    5: Status.COMPLETE,
    6: Status.ERROR,
    7: Status.ABORTED,  # futile: never run, an ancestor failed
}


def _int(field: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not str(value).strip().lstrip("-").isdigit():
        raise InvalidJobError(field, f"must be a whole number, not {value!r}")
    number = int(str(value).strip())
    if minimum is not None and number < minimum:
        raise InvalidJobError(field, f"must be at least {minimum}")
    return number


def _script(field: str, executable: Any, args: Any) -> list[str] | None:
    if executable in (None, ""):
        if args:
            raise InvalidJobError(f"{field}_args", f"given without a {field}")
        return None
    words = [executable, *(args or [])]
    if isinstance(args, str):
        raise InvalidJobError(f"{field}_args", "must be a list of words, never a shell string")
    clean = []
    for i, word in enumerate(words):
        name = field if i == 0 else f"{field}_args[{i - 1}]"
        if isinstance(word, bool) or not isinstance(word, str | int | float):
            raise InvalidJobError(name, "must be text or a number")
        if not SCRIPT_WORD.match(str(word)):
            raise InvalidJobError(
                name, f"{word!r} must be one word (DAGMan splits scripts on spaces; no quotes)"
            )
        clean.append(str(word))
    return clean


def validate_nodes(nodes: Any, max_jobs: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The DAG part of each node checked, and the graph: every parent known, no cycle (each error
    names the nodes). The node's job is checked by the engine, as a CondorJob's parameters."""
    if not isinstance(nodes, list | tuple) or not nodes:
        raise InvalidJobError("nodes", "a workflow needs at least one node")
    clean: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, node in enumerate(nodes):
        if not isinstance(node, Mapping):
            raise InvalidJobError(f"nodes[{i}]", "must be a node (a dict)")
        name = node.get("name")
        if not isinstance(name, str) or not NODE_NAME.match(name) or name.lower() in DAG_WORDS:
            raise InvalidJobError(
                f"nodes[{i}].name", f"{name!r} is not a node name (letters, digits, _ . -)"
            )
        if name in names:
            raise InvalidJobError(f"nodes.{name}", "two nodes have this name")
        names.add(name)
        field = f"nodes.{name}"
        entry: dict[str, Any] = {"name": name}
        parents = node.get("parents") or []
        if not isinstance(parents, list | tuple) or not all(isinstance(p, str) for p in parents):
            raise InvalidJobError(f"{field}.parents", "must be a list of node names")
        entry["parents"] = list(dict.fromkeys(parents))
        for which in ("pre_script", "post_script"):
            words = _script(f"{field}.{which}", node.get(which), node.get(f"{which}_args"))
            if words:
                entry[which], entry[f"{which}_args"] = words[0], words[1:]
        variables = node.get("variables") or {}
        if not isinstance(variables, Mapping):
            raise InvalidJobError(f"{field}.variables", "must be a dict of name → value")
        for key, value in variables.items():
            if (
                not isinstance(key, str)
                or not VARIABLE.match(key)
                or key.lower().startswith("queue")
            ):
                raise InvalidJobError(f"{field}.variables", f"{key!r} is not a variable name")
            text = str(value)
            if isinstance(value, dict | list) or any(ord(c) < 0x20 for c in text):
                raise InvalidJobError(f"{field}.variables.{key}", "must be one line of text")
        if variables:
            entry["variables"] = {str(k): str(v) for k, v in variables.items()}
        for key, minimum in (("priority", None), ("retry", 0), ("pre_skip", None)):
            if node.get(key) is not None:
                entry[key] = _int(f"{field}.{key}", node[key], minimum)
        for key in ("retry_unless_exit_value", "abort_dag_on", "abort_dag_on_return_value"):
            if node.get(key) is not None:
                entry[key] = _int(f"{field}.{key}", node[key])
        if "retry_unless_exit_value" in entry and "retry" not in entry:
            raise InvalidJobError(f"{field}.retry_unless_exit_value", "given without retry")
        if "abort_dag_on_return_value" in entry and "abort_dag_on" not in entry:
            raise InvalidJobError(
                f"{field}.abort_dag_on_return_value", "given without abort_dag_on"
            )
        category = node.get("category")
        if category:
            if not isinstance(category, str) or not CATEGORY.match(category):
                raise InvalidJobError(f"{field}.category", f"{category!r} is not a category name")
            entry["category"] = category
        entry["noop"] = bool(node.get("noop"))
        entry["done"] = bool(node.get("done"))
        # The node's job stays beside the DAG settings (the engine checks it), so the checked
        # node has the shape of the node given and checking it again changes nothing.
        entry.update({k: v for k, v in node.items() if k not in DAG_KEYS})
        clean.append(entry)
    for entry in clean:
        unknown = [p for p in entry["parents"] if p not in names]
        if unknown:
            raise InvalidJobError(
                f"nodes.{entry['name']}.parents",
                f"node {entry['name']} names unknown parent(s) {', '.join(unknown)}",
            )
    cycle = find_cycle({e["name"]: e["parents"] for e in clean})
    if cycle:
        raise InvalidJobError("nodes", f"the nodes form a cycle: {' → '.join(cycle)}")
    throttles: dict[str, int] = {}
    if max_jobs:
        if not isinstance(max_jobs, Mapping):
            raise InvalidJobError("max_jobs", "must be a dict of category → number of jobs")
        for category, limit in max_jobs.items():
            if not isinstance(category, str) or not CATEGORY.match(category):
                raise InvalidJobError("max_jobs", f"{category!r} is not a category name")
            throttles[category] = _int(f"max_jobs.{category}", limit, 1)
    return clean, throttles


def find_cycle(parents: Mapping[str, Sequence[str]]) -> list[str]:
    """A cycle of the graph (node → its parents) as the names along it, first repeated at the end;
    [] when there is none."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for parent in parents.get(node, ()):
            if state.get(parent) == 1:
                return [*path[path.index(parent) :], parent][::-1]
            if parent not in state:
                found = visit(parent)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in parents:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def check_dag_path(field: str, path: str) -> str:
    if any(c.isspace() for c in path) or '"' in path:
        raise InvalidJobError(
            field,
            f"{path!r}: a workflow's folder may hold no spaces or quotes (DAG files split on them)",
        )
    return path


def _var_value(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dag(
    nodes: Sequence[Mapping[str, Any]],
    throttles: Mapping[str, int],
    submit_files: Mapping[str, str],
    status_file: str,
    header: str,
) -> str:
    lines = [f"# {header}"]
    for node in nodes:
        name = node["name"]
        job = f"JOB {name} {submit_files[name]}"
        if node.get("noop"):
            job += " NOOP"
        if node.get("done"):
            job += " DONE"
        lines.append(job)
        for key, value in (node.get("variables") or {}).items():
            lines.append(f"VARS {name} {key}={_var_value(value)}")
        for which, word in (("pre_script", "PRE"), ("post_script", "POST")):
            if node.get(which):
                words = [node[which], *(node.get(f"{which}_args") or [])]
                lines.append(f"SCRIPT {word} {name} {' '.join(words)}")
        if node.get("pre_skip") is not None:
            lines.append(f"PRE_SKIP {name} {node['pre_skip']}")
        if node.get("retry") is not None:
            retry = f"RETRY {name} {node['retry']}"
            if node.get("retry_unless_exit_value") is not None:
                retry += f" UNLESS-EXIT {node['retry_unless_exit_value']}"
            lines.append(retry)
        if node.get("abort_dag_on") is not None:
            abort = f"ABORT-DAG-ON {name} {node['abort_dag_on']}"
            if node.get("abort_dag_on_return_value") is not None:
                abort += f" RETURN {node['abort_dag_on_return_value']}"
            lines.append(abort)
        if node.get("priority") is not None:
            lines.append(f"PRIORITY {name} {node['priority']}")
        if node.get("category"):
            lines.append(f"CATEGORY {name} {node['category']}")
    for node in nodes:
        if node["parents"]:
            lines.append(f"PARENT {' '.join(node['parents'])} CHILD {node['name']}")
    for category, limit in throttles.items():
        lines.append(f"MAXJOBS {category} {limit}")
    lines.append(f"NODE_STATUS_FILE {status_file} {STATUS_INTERVAL}")
    return "\n".join(lines) + "\n"


_AD = re.compile(r"\[(.*?)\]", re.DOTALL)
_FIELD = re.compile(r'^\s*(\w+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*);', re.MULTILINE)


def parse_node_status(text: str, parents: Mapping[str, Sequence[str]]) -> dict[str, dict[str, Any]]:
    """DAGMan's node status file as ``state["nodes"]``: name → status code, native status,
    parents, exit code (None: DAGMan does not say) and retries."""
    nodes: dict[str, dict[str, Any]] = {}
    for block in _AD.findall(text):
        fields = {}
        for key, value in _FIELD.findall(block):
            value = value.strip()
            fields[key] = value[1:-1] if value.startswith('"') else value
        if fields.get("Type") != "NodeStatus" or "Node" not in fields:
            continue
        code = int(fields["NodeStatus"]) if fields.get("NodeStatus", "").isdigit() else -1
        details = fields.get("StatusDetails", "")
        exit_code = None
        match = re.search(r"exited with status (-?\d+)|Job.*?failed with status (-?\d+)", details)
        if match:
            exit_code = int(match.group(1) or match.group(2))
        native = NODE_STATUS_NAMES.get(code, f"NodeStatus {code}")
        status = NODE_STATUSES.get(code)
        nodes[fields["Node"]] = {
            "status": status.value if status is not None else None,
            "native_status": f"{native} ({details})" if details else native,
            "parents": list(parents.get(fields["Node"], [])),
            "exit_code": 0 if code == 5 else exit_code,
            "retries": int(fields["RetryCount"]) if fields.get("RetryCount", "").isdigit() else 0,
        }
    return nodes
