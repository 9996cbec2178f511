"""Job statuses, their categories and the transition rules every status change goes through.

This module is pure (no Django). The same table drives the enforcement in :func:`check_transition`
and the state diagram in ``docs/statuses.md`` (``python -m offload.status`` regenerates it).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from offload.errors import InvalidJobError


class Status(enum.StrEnum):
    """The eleven Tethys statuses. The value is the three-letter code stored in the database."""

    PENDING = "PEN"
    SUBMITTED = "SUB"
    RUNNING = "RUN"
    PAUSED = "PAS"
    VARIOUS = "VAR"
    RESULTS_READY = "RES"
    COMPLETE = "COM"
    VARIOUS_COMPLETE = "VCP"
    ERROR = "ERR"
    ABORTED = "ABT"
    OTHER = "OTH"

    @property
    def display(self) -> str:
        return _DISPLAY[self]

    @property
    def code(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | Status) -> Status | None:
        """The status named by a code (``'COM'``), a display name (``'Complete'``) or a member
        name (``'COMPLETE'``), case-insensitively; ``None`` if ``value`` names no status."""
        if isinstance(value, Status):
            return value
        key = str(value).strip()
        return _LOOKUP.get(key.upper()) or _LOOKUP.get(key.replace("_", "-").upper())


_DISPLAY: dict[Status, str] = {
    Status.PENDING: "Pending",
    Status.SUBMITTED: "Submitted",
    Status.RUNNING: "Running",
    Status.PAUSED: "Paused",
    Status.VARIOUS: "Various",
    Status.RESULTS_READY: "Results-Ready",
    Status.COMPLETE: "Complete",
    Status.VARIOUS_COMPLETE: "Various-Complete",
    Status.ERROR: "Error",
    Status.ABORTED: "Aborted",
    Status.OTHER: "Other",
}

_LOOKUP: dict[str, Status] = {}
for _s in Status:
    _LOOKUP[_s.value.upper()] = _s
    _LOOKUP[_s.name.upper()] = _s
    _LOOKUP[_DISPLAY[_s].upper()] = _s

STATUS_CHOICES: list[tuple[str, str]] = [(s.value, s.display) for s in Status]


class Category(enum.StrEnum):
    """The category a custom ("Other") status may be declared in: Tethys's five status lists.
    Non-terminal is neither pre-running, running, active nor terminal: a status the job pauses
    in, as Paused or an undeclared custom status."""

    PRE_RUNNING = "pre-running"
    RUNNING = "running"
    ACTIVE = "active"
    NON_TERMINAL = "non-terminal"
    TERMINAL = "terminal"

    @classmethod
    def parse(cls, value: Category | str) -> Category:
        """The category named by ``value`` (its name as Tethys writes it, e.g. ``"non-terminal"``,
        case-insensitively; ``_`` for ``-`` too); InvalidJobError naming the valid ones."""
        if isinstance(value, Category):
            return value
        if isinstance(value, str):
            key = value.strip().lower().replace("_", "-")
            for category in cls:
                if category.value == key:
                    return category
        valid = ", ".join(c.value for c in cls)
        raise InvalidJobError("category", f"{value!r} is not a status category (valid: {valid})")


# Tethys's lists (display names), kept for apps that test membership in them.
PRE_RUNNING_STATUSES: tuple[str, ...] = ("Pending", "Submitted")
RUNNING_STATUSES: tuple[str, ...] = ("Running", "Various")
ACTIVE_STATUSES: tuple[str, ...] = ("Submitted", "Running", "Various", "Paused")
NON_TERMINAL_STATUSES: tuple[str, ...] = ("Pending", "Submitted", "Running", "Various", "Paused")
TERMINAL_STATUSES: tuple[str, ...] = (
    "Complete",
    "Error",
    "Aborted",
    "Various-Complete",
    "Results-Ready",
)

#: Statuses the monitor keeps asking the engine about.
POLLED = frozenset({Status.SUBMITTED, Status.RUNNING, Status.PAUSED, Status.VARIOUS})
#: Statuses after which result processing runs, exactly once.
RESULTS_PENDING = frozenset({Status.RESULTS_READY, Status.VARIOUS_COMPLETE})
#: Statuses nothing leaves but an explicit resubmit.
FINAL = frozenset({Status.COMPLETE, Status.ERROR, Status.ABORTED})


@dataclass(frozen=True)
class StatusInfo:
    """One row of the transition table: a status's rank and whether it is final.

    Reports may move a job to a higher rank, or sideways within rank 2 (Running ⇄ Paused ⇄ Various);
    never to a lower rank. A final status is left only by ``resubmit()``.
    """

    status: Status
    rank: int
    final: bool
    description: str


TABLE: tuple[StatusInfo, ...] = (
    StatusInfo(Status.PENDING, 0, False, "created, not yet executed"),
    StatusInfo(Status.SUBMITTED, 1, False, "handed to the monitor / queued by the scheduler"),
    StatusInfo(Status.RUNNING, 2, False, "running"),
    StatusInfo(Status.PAUSED, 2, False, "held or suspended; resumes to Running"),
    StatusInfo(Status.VARIOUS, 2, False, "parts of the job are in different states"),
    StatusInfo(Status.RESULTS_READY, 3, False, "finished; result processing is due"),
    StatusInfo(Status.VARIOUS_COMPLETE, 3, False, "all parts finished, some not successfully"),
    StatusInfo(Status.COMPLETE, 4, True, "finished and results processed"),
    StatusInfo(Status.ERROR, 4, True, "failed; the reason is in status_message"),
    StatusInfo(Status.ABORTED, 4, True, "stopped by a user or an administrator"),
    StatusInfo(Status.OTHER, 2, False, "a custom status; its rank follows its declared category"),
)
_INFO: dict[Status, StatusInfo] = {row.status: row for row in TABLE}

_CATEGORY_RANK: dict[Category, int] = {
    Category.PRE_RUNNING: 1,
    Category.RUNNING: 2,
    Category.ACTIVE: 2,
    Category.NON_TERMINAL: 2,
    Category.TERMINAL: 4,
}
#: How a custom status declared in each category behaves, for the documentation.
_CATEGORY_MEANING: dict[Category, str] = {
    Category.PRE_RUNNING: "ranks with Submitted",
    Category.RUNNING: "ranks with Running",
    Category.ACTIVE: "ranks with Running",
    Category.NON_TERMINAL: "ranks with Paused (neither running nor final)",
    Category.TERMINAL: "is final, as Complete",
}

#: Where a job may go from each status. Results-Ready and Various-Complete lead only to the end of
#: result processing; Pending leads to Aborted (a stop before execute) and Submitted.
_ALLOWED: dict[Status, frozenset[Status]] = {}


def _build_allowed() -> None:
    for row in TABLE:
        if row.final:
            _ALLOWED[row.status] = frozenset()
        elif row.status in RESULTS_PENDING:
            _ALLOWED[row.status] = frozenset({Status.COMPLETE, Status.ERROR, Status.ABORTED})
        else:
            _ALLOWED[row.status] = frozenset(
                other.status
                for other in TABLE
                if other.status != row.status
                and (
                    other.rank > row.rank
                    or (other.rank == row.rank == 2)
                    or other.status == Status.OTHER
                )
            )


_build_allowed()
# A released hold puts a queued job back in the queue: Paused may return to Submitted.
_ALLOWED[Status.PAUSED] = _ALLOWED[Status.PAUSED] | {Status.SUBMITTED}


def info(status: Status) -> StatusInfo:
    return _INFO[status]


def rank(status: Status, category: Category | None = None) -> int:
    """The rank of a status; an Other status ranks by its declared category."""
    if status == Status.OTHER and category is not None:
        return _CATEGORY_RANK[category]
    return _INFO[status].rank


def is_final(status: Status, category: Category | None = None) -> bool:
    if status == Status.OTHER:
        return category == Category.TERMINAL
    return _INFO[status].final


def is_active(status: Status, category: Category | None = None) -> bool:
    """True while the monitor should keep the job under watch."""
    if status == Status.OTHER:
        return category != Category.TERMINAL
    return status in POLLED


class Verdict(enum.Enum):
    """What the rules say about a proposed change."""

    APPLY = "apply"  # a real change: write it and one JobEvent
    SAME = "same"  # a duplicate report: nothing to write
    BACKWARD = "backward"  # a late report: ignored
    FINAL = "final"  # the job is finished: only resubmit leaves it


def check_transition(
    current: Status,
    new: Status,
    *,
    current_category: Category | None = None,
    new_category: Category | None = None,
    current_text: str = "",
    new_text: str = "",
) -> Verdict:
    """Decide whether a job in ``current`` may move to ``new``. The one place the rules live."""
    if current == new and (current != Status.OTHER or current_text == new_text):
        return Verdict.SAME
    if is_final(current, current_category):
        return Verdict.FINAL
    if current == Status.OTHER or new == Status.OTHER:
        # Custom statuses move by the rank of the category they were declared in.
        cur_rank = rank(current, current_category)
        new_rank = rank(new, new_category)
        if new_rank < cur_rank and not (cur_rank == 2 and new_rank == 2):
            return Verdict.BACKWARD
        return Verdict.APPLY
    if new in _ALLOWED[current]:
        return Verdict.APPLY
    return Verdict.BACKWARD


def allowed_transitions() -> Mapping[Status, frozenset[Status]]:
    """The transition table (without custom statuses), for documentation and tests."""
    return dict(_ALLOWED)


def mermaid_diagram(extra_edges: Iterable[tuple[str, str, str]] = ()) -> str:
    """The state diagram of :func:`allowed_transitions`, as Mermaid source."""
    lines = ["stateDiagram-v2", "    [*] --> Pending"]
    ids = {s: s.display.replace("-", "") for s in Status}
    for src, targets in _ALLOWED.items():
        if src == Status.OTHER:
            continue
        for dst in sorted(targets, key=lambda s: (rank(s), s.display)):
            if dst == Status.OTHER:
                continue
            lines.append(f"    {ids[src]} --> {ids[dst]}")
    for status in sorted(FINAL, key=lambda s: s.display):
        lines.append(f"    {ids[status]} --> Submitted: resubmit() (new attempt)")
    for src_name, dst_name, label in extra_edges:
        lines.append(f"    {src_name} --> {dst_name}: {label}")
    for status in sorted(FINAL, key=lambda s: s.display):
        lines.append(f"    {ids[status]} --> [*]")
    return "\n".join(lines) + "\n"


def status_table_markdown() -> str:
    rows = ["| status | code | rank | final | meaning |", "| --- | --- | --- | --- | --- |"]
    for row in TABLE:
        rows.append(
            f"| {row.status.display} | {row.status.value} | {row.rank} | "
            f"{'yes' if row.final else 'no'} | {row.description} |"
        )
    return "\n".join(rows) + "\n"


def render_docs() -> str:
    """The body of ``docs/statuses.md``; a test checks the checked-in file matches."""
    return (
        "# Job statuses\n\n"
        "<!-- Generated by `python -m offload.status > docs/statuses.md`; do not edit. -->\n\n"
        "offload keeps Tethys's eleven statuses. Every change goes through one rule "
        "(`offload.status.check_transition`): a report may move a job to a higher rank, or sideways "
        "among Running, Paused and Various; a late or duplicate report never moves it back; a final "
        "status is left only by `resubmit()`, which starts a new attempt and keeps the history. One exception to forward-only: a paused job whose hold is released while it is still queued returns to Submitted. "
        "A custom status (Other) ranks by the category it was declared in; an undeclared one "
        "counts as running, so the monitor keeps watching the job.\n\n"
        + status_table_markdown()
        + "\n```mermaid\n"
        + mermaid_diagram()
        + "```\n\n"
        "Categories, as Tethys names them:\n\n"
        f"- pre-running: {', '.join(PRE_RUNNING_STATUSES)}\n"
        f"- running: {', '.join(RUNNING_STATUSES)}\n"
        f"- active: {', '.join(ACTIVE_STATUSES)}\n"
        f"- non-terminal: {', '.join(NON_TERMINAL_STATUSES)}\n"
        f"- terminal: {', '.join(TERMINAL_STATUSES)}\n\n"
        "A custom status is declared per app in one of them "
        "(`JobManager.add_custom_status(text, category)`): "
        + "; ".join(f"{c.value} {_CATEGORY_MEANING[c]}" for c in Category)
        + ". The monitor keeps watching a job in a custom status unless it is terminal.\n"
    )


if __name__ == "__main__":  # pragma: no cover
    print(render_docs(), end="")
