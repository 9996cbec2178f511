"""The jobs table's ``show_detailed_status`` and the job page's sub-job view: a progress bar of a
job's tasks (array tasks, HTCondor procs) by status, from ``engine_state["tasks"]``, and a
workflow's DAG as a server-rendered SVG (a layered layout, each node coloured by its status),
from ``engine_state["nodes"]``.

Both are drawn from what the monitor stored in the database; nothing here calls a scheduler, and
nothing needs a script or a library from elsewhere: the SVG is inline markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from typing import Any

from django.utils.safestring import SafeString, mark_safe

from offload.models import Job
from offload.status import Status

#: Display order of the bar's segments (finished first, then running, waiting, failed).
BAR_ORDER: tuple[Status, ...] = (
    Status.COMPLETE,
    Status.VARIOUS_COMPLETE,
    Status.RESULTS_READY,
    Status.RUNNING,
    Status.VARIOUS,
    Status.SUBMITTED,
    Status.PENDING,
    Status.PAUSED,
    Status.ERROR,
    Status.ABORTED,
    Status.OTHER,
)
#: Status code → (fill, stroke, text colour) of a bar segment and a DAG node.
COLOURS: dict[str, tuple[str, str, str]] = {
    Status.PENDING.value: ("#eaeef2", "#8c959f", "#24292f"),
    Status.SUBMITTED.value: ("#b6e3ff", "#0969da", "#0a3069"),
    Status.RUNNING.value: ("#93c5fd", "#1e40af", "#172554"),
    Status.PAUSED.value: ("#f5d90a", "#9a6700", "#3b2300"),
    Status.VARIOUS.value: ("#93c5fd", "#1e40af", "#172554"),
    Status.RESULTS_READY.value: ("#99e0d8", "#115e59", "#042f2e"),
    Status.COMPLETE.value: ("#8fdba0", "#116329", "#04260f"),
    Status.VARIOUS_COMPLETE.value: ("#8fdba0", "#116329", "#04260f"),
    Status.ERROR.value: ("#ffaba8", "#a40e26", "#4c0519"),
    Status.ABORTED.value: ("#bdbdbd", "#3d3d3d", "#111111"),
    Status.OTHER.value: ("#d8b4fe", "#6b21a8", "#2e1065"),
}
#: Statuses whose jobs show their tasks as a bar in the table (Tethys shows it for Various).
BAR_STATUSES = frozenset({Status.VARIOUS, Status.VARIOUS_COMPLETE})
#: Largest DAG drawn; a bigger one is summarised as a bar of its nodes.
MAX_NODES = 400
NODE_WIDTH = 150
NODE_HEIGHT = 30
GAP_X = 18
GAP_Y = 46
MARGIN = 10
#: Characters of a node's name shown in its box (the whole name is its tooltip).
LABEL_CHARS = 19


def _code(value: Any) -> str:
    """A stored status (code or name) → its code; anything unknown is Other."""
    if isinstance(value, str):
        status = Status.parse(value)
        if status is not None:
            return status.value
    return Status.OTHER.value


@dataclass(frozen=True)
class Segment:
    code: str
    label: str
    count: int
    percent: float
    fill: str


@dataclass(frozen=True)
class Detailed:
    """What to draw for one job: a bar (``segments``), a DAG (``svg``), both or neither."""

    segments: list[Segment]
    total: int
    svg: SafeString | None = None
    kind: str = ""  # "tasks" or "nodes"

    @property
    def summary(self) -> str:
        return ", ".join(f"{s.count} {s.label}" for s in self.segments)


def bar(statuses: Mapping[str, Any]) -> list[Segment]:
    """Segments of a progress bar: one per status present, in :data:`BAR_ORDER`."""
    counts: dict[str, int] = {}
    for item in statuses.values():
        raw = item.get("status") if isinstance(item, Mapping) else item
        code = _code(raw)
        counts[code] = counts.get(code, 0) + 1
    total = sum(counts.values())
    segments = []
    for status in BAR_ORDER:
        count = counts.get(status.value, 0)
        if count:
            segments.append(
                Segment(
                    status.value,
                    status.display,
                    count,
                    round(100.0 * count / total, 3),
                    COLOURS[status.value][0],
                )
            )
    return segments


def for_job(job: Job, *, in_table: bool = False, state: Any = None) -> Detailed | None:
    """What ``job`` shows: for a workflow (``engine_state["nodes"]``) its DAG; for a job of
    several tasks (``engine_state["tasks"]``) a bar — in the table only while it is Various or
    Various-Complete. None when there is nothing to draw."""
    if state is None:
        state = job.engine_state
    if not isinstance(state, Mapping):
        state = {}
    nodes = state.get("nodes")
    if isinstance(nodes, Mapping) and nodes:
        segments = bar(nodes)
        svg = dag_svg(nodes, title=f"Workflow of job {job.pk}") if len(nodes) <= MAX_NODES else None
        return Detailed(segments, len(nodes), svg, "nodes")
    tasks = state.get("tasks")
    if isinstance(tasks, Mapping) and tasks:
        if in_table and Status(job._status) not in BAR_STATUSES:
            return None
        return Detailed(bar(tasks), len(tasks), None, "tasks")
    return None


# -- the DAG ------------------------------------------------------------------------------------
def _parents(nodes: Mapping[str, Any]) -> dict[str, list[str]]:
    parents: dict[str, list[str]] = {}
    for name, info in nodes.items():
        raw = info.get("parents") if isinstance(info, Mapping) else None
        found = [str(p) for p in raw if str(p) in nodes and str(p) != name] if raw else []
        parents[str(name)] = list(dict.fromkeys(found))
    return parents


def layers(nodes: Mapping[str, Any]) -> list[list[str]]:
    """Nodes in layers: a node sits one below its lowest parent (longest path from a root).
    Nodes on a cycle (not a DAG, but never an error here) go below everything else. Within a
    layer, nodes are ordered by the mean position of their parents, then by name."""
    parents = _parents(nodes)
    children: dict[str, list[str]] = {name: [] for name in parents}
    for name, ps in parents.items():
        for parent in ps:
            children[parent].append(name)
    waiting = {name: len(ps) for name, ps in parents.items()}
    level: dict[str, int] = {}
    ready = sorted(name for name, count in waiting.items() if count == 0)
    while ready:
        name = ready.pop()
        level[name] = max((level[p] + 1 for p in parents[name] if p in level), default=0)
        for child in children[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    bottom = max(level.values(), default=-1) + 1
    for name in sorted(set(parents) - set(level)):
        level[name] = bottom
    rows: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for name in sorted(level):
        rows[level[name]].append(name)
    position: dict[str, float] = {}
    for row in rows:

        def key(name: str) -> tuple[float, str]:
            known = [position[p] for p in parents[name] if p in position]
            return (sum(known) / len(known) if known else -1.0, name)

        row.sort(key=key)
        for index, name in enumerate(row):
            position[name] = index - (len(row) - 1) / 2
    return rows


def dag_svg(nodes: Mapping[str, Any], *, title: str = "Workflow") -> SafeString:
    """An inline SVG of the DAG: boxes coloured by status, arrows from parent to child."""
    rows = layers(nodes)
    parents = _parents(nodes)
    widest = max((len(row) for row in rows), default=1)
    width = MARGIN * 2 + widest * NODE_WIDTH + (widest - 1) * GAP_X
    height = MARGIN * 2 + len(rows) * NODE_HEIGHT + max(len(rows) - 1, 0) * GAP_Y
    centre: dict[str, tuple[float, float]] = {}
    for depth, row in enumerate(rows):
        row_width = len(row) * NODE_WIDTH + (len(row) - 1) * GAP_X
        left = (width - row_width) / 2
        top = MARGIN + depth * (NODE_HEIGHT + GAP_Y)
        for index, name in enumerate(row):
            centre[name] = (left + index * (NODE_WIDTH + GAP_X) + NODE_WIDTH / 2, top)
    out = [
        f'<svg class="offload-dag" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'aria-label="{escape(title)}: {len(nodes)} nodes">',
        f"<title>{escape(title)}</title>",
        '<defs><marker id="offload-dag-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#59636e"/></marker></defs>',
        '<g class="edges" fill="none" stroke="#8c959f" stroke-width="1.3">',
    ]
    for name, ps in sorted(parents.items()):
        x2, y2 = centre[name]
        for parent in ps:
            x1, top1 = centre[parent]
            y1 = top1 + NODE_HEIGHT
            if y2 <= y1:  # a cycle's back edge: straight, dashed
                out.append(
                    f'<path d="M{x1:.1f},{y1:.1f} L{x2:.1f},{y2:.1f}" stroke-dasharray="4 3" '
                    f'marker-end="url(#offload-dag-arrow)"/>'
                )
                continue
            mid = (y1 + y2) / 2
            out.append(
                f'<path d="M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} '
                f'{x2:.1f},{y2 - 1:.1f}" marker-end="url(#offload-dag-arrow)"/>'
            )
    out.append("</g>")
    out.append('<g class="nodes" font-family="system-ui, sans-serif" font-size="12">')
    for name in sorted(centre):
        info = nodes.get(name)
        code = _code(info.get("status") if isinstance(info, Mapping) else None)
        fill, stroke, ink = COLOURS[code]
        x, y = centre[name]
        label = name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"
        status = Status(code).display
        native = info.get("native_status") if isinstance(info, Mapping) else ""
        tip = f"{name}: {status}" + (f" ({native})" if native else "")
        out.append(
            f'<g class="node" data-node="{escape(name)}" data-status-code="{code}">'
            f"<title>{escape(tip)}</title>"
            f'<rect x="{x - NODE_WIDTH / 2:.1f}" y="{y:.1f}" width="{NODE_WIDTH}" '
            f'height="{NODE_HEIGHT}" rx="6" fill="{fill}" stroke="{stroke}"/>'
            f'<text x="{x:.1f}" y="{y + NODE_HEIGHT / 2 + 4:.1f}" text-anchor="middle" '
            f'fill="{ink}">{escape(label)}</text></g>'
        )
    out.append("</g></svg>")
    return mark_safe("".join(out))  # noqa: S308 (every value above is escaped)


def legend(detailed: Detailed) -> list[tuple[str, str, int]]:
    """(label, colour, count) for the statuses present, for a legend under a DAG."""
    return [(s.label, s.fill, s.count) for s in detailed.segments]
