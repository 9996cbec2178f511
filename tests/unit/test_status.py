"""The status table and its transition rules (pure: no Django, no database)."""

from __future__ import annotations

import pytest

from offload import status as rules
from offload.errors import InvalidJobError
from offload.status import (
    ACTIVE_STATUSES,
    FINAL,
    NON_TERMINAL_STATUSES,
    PRE_RUNNING_STATUSES,
    RUNNING_STATUSES,
    TERMINAL_STATUSES,
    Category,
    Status,
    Verdict,
    check_transition,
)

TETHYS = [
    ("Pending", "PEN"),
    ("Submitted", "SUB"),
    ("Running", "RUN"),
    ("Paused", "PAS"),
    ("Various", "VAR"),
    ("Results-Ready", "RES"),
    ("Complete", "COM"),
    ("Various-Complete", "VCP"),
    ("Error", "ERR"),
    ("Aborted", "ABT"),
    ("Other", "OTH"),
]


def test_eleven_tethys_statuses_with_display_names_and_codes() -> None:
    assert [(s.display, s.code) for s in Status] == TETHYS
    assert len(Status) == 11
    for display, code in TETHYS:
        assert Status(code).display == display
        assert str(Status(code)) == code  # the value stored in the database


@pytest.mark.parametrize(("display", "code"), TETHYS)
def test_parse_accepts_code_display_and_member_name_case_insensitively(
    display: str, code: str
) -> None:
    status = Status(code)
    assert Status.parse(code) is status
    assert Status.parse(code.lower()) is status
    assert Status.parse(display) is status
    assert Status.parse(display.upper()) is status
    assert Status.parse(f"  {display}  ") is status
    assert Status.parse(status.name) is status
    assert Status.parse(status) is status


def test_parse_member_name_with_underscore() -> None:
    assert Status.parse("RESULTS_READY") is Status.RESULTS_READY
    assert Status.parse("results_ready") is Status.RESULTS_READY
    assert Status.parse("various_complete") is Status.VARIOUS_COMPLETE


@pytest.mark.parametrize("text", ["", "Computing", "Runnin", "almost done", "RUNX"])
def test_parse_returns_none_for_text_that_names_no_status(text: str) -> None:
    assert Status.parse(text) is None


def test_tethys_category_lists() -> None:
    assert PRE_RUNNING_STATUSES == ("Pending", "Submitted")
    assert RUNNING_STATUSES == ("Running", "Various")
    assert set(ACTIVE_STATUSES) == {"Submitted", "Running", "Various", "Paused"}
    assert set(NON_TERMINAL_STATUSES) == {"Pending", "Submitted", "Running", "Various", "Paused"}
    assert set(TERMINAL_STATUSES) == {
        "Complete",
        "Error",
        "Aborted",
        "Various-Complete",
        "Results-Ready",
    }
    # Every display name in the lists is a real status.
    for name in (*PRE_RUNNING_STATUSES, *RUNNING_STATUSES, *ACTIVE_STATUSES, *TERMINAL_STATUSES):
        assert Status.parse(name) is not None


def test_categories() -> None:
    # Tethys's five lists.
    assert [c.value for c in Category] == [
        "pre-running",
        "running",
        "active",
        "non-terminal",
        "terminal",
    ]


@pytest.mark.parametrize(
    ("given", "category"),
    [
        ("non-terminal", Category.NON_TERMINAL),
        ("NON_TERMINAL", Category.NON_TERMINAL),
        (" Pre-Running ", Category.PRE_RUNNING),
        (Category.TERMINAL, Category.TERMINAL),
        ("active", Category.ACTIVE),
    ],
)
def test_category_parse(given: str, category: Category) -> None:
    assert Category.parse(given) is category


@pytest.mark.parametrize("given", ["sideways", "", None, 3, "nonterminal"])
def test_an_unknown_category_names_the_field_and_the_valid_ones(given: object) -> None:
    with pytest.raises(InvalidJobError) as info:
        Category.parse(given)  # type: ignore[arg-type]
    assert info.value.field == "category"
    assert str(info.value) == (
        f"category: {given!r} is not a status category "
        "(valid: pre-running, running, active, non-terminal, terminal)"
    )
    assert isinstance(info.value, ValueError)


def test_a_non_terminal_custom_status_is_neither_running_nor_final() -> None:
    assert rules.rank(Status.OTHER, Category.NON_TERMINAL) == rules.rank(Status.PAUSED)
    assert not rules.is_final(Status.OTHER, Category.NON_TERMINAL)
    assert rules.is_active(Status.OTHER, Category.NON_TERMINAL)  # the monitor keeps watching

    def into(current: Status) -> Verdict:
        return check_transition(
            current, Status.OTHER, new_category=Category.NON_TERMINAL, new_text="Reviewing"
        )

    def out_to(new: Status) -> Verdict:
        return check_transition(
            Status.OTHER, new, current_category=Category.NON_TERMINAL, current_text="Reviewing"
        )

    for current in (Status.PENDING, Status.SUBMITTED, Status.RUNNING, Status.PAUSED):
        assert into(current) is Verdict.APPLY
    for final in (Status.COMPLETE, Status.ERROR, Status.ABORTED):
        assert into(final) is Verdict.FINAL
    for new in (Status.RUNNING, Status.PAUSED, Status.VARIOUS, Status.COMPLETE, Status.ERROR):
        assert out_to(new) is Verdict.APPLY
    for earlier in (Status.PENDING, Status.SUBMITTED):
        assert out_to(earlier) is Verdict.BACKWARD


def test_final_statuses() -> None:
    assert frozenset({Status.COMPLETE, Status.ERROR, Status.ABORTED}) == FINAL
    for status in Status:
        assert rules.is_final(status) == (status in FINAL)
    assert rules.is_final(Status.OTHER, Category.TERMINAL)
    assert not rules.is_final(Status.OTHER, Category.RUNNING)
    assert not rules.is_final(Status.OTHER, None)


def test_active_statuses() -> None:
    assert {s for s in Status if s != Status.OTHER and rules.is_active(s)} == {
        Status.SUBMITTED,
        Status.RUNNING,
        Status.PAUSED,
        Status.VARIOUS,
    }
    # An undeclared custom status counts as running: the monitor keeps watching the job.
    assert rules.is_active(Status.OTHER, None)
    assert rules.is_active(Status.OTHER, Category.PRE_RUNNING)
    assert not rules.is_active(Status.OTHER, Category.TERMINAL)


# -- check_transition -----------------------------------------------------------------------------
FORWARD = [
    (Status.PENDING, Status.SUBMITTED),
    (Status.PENDING, Status.ABORTED),
    (Status.SUBMITTED, Status.RUNNING),
    (Status.SUBMITTED, Status.COMPLETE),
    (Status.SUBMITTED, Status.ERROR),
    (Status.RUNNING, Status.PAUSED),
    (Status.PAUSED, Status.RUNNING),
    (Status.RUNNING, Status.VARIOUS),
    (Status.VARIOUS, Status.RUNNING),
    (Status.RUNNING, Status.RESULTS_READY),
    (Status.RUNNING, Status.COMPLETE),
    (Status.RUNNING, Status.ERROR),
    (Status.PAUSED, Status.ABORTED),
    (Status.RESULTS_READY, Status.COMPLETE),
    (Status.RESULTS_READY, Status.ERROR),
    (Status.VARIOUS_COMPLETE, Status.COMPLETE),
]


@pytest.mark.parametrize(("current", "new"), FORWARD)
def test_forward_and_sideways_moves_apply(current: Status, new: Status) -> None:
    assert check_transition(current, new) is Verdict.APPLY


BACKWARD = [
    (Status.SUBMITTED, Status.PENDING),
    (Status.RUNNING, Status.SUBMITTED),
    (Status.RUNNING, Status.PENDING),
    (Status.PAUSED, Status.PENDING),
    (Status.RESULTS_READY, Status.RUNNING),
    (Status.RESULTS_READY, Status.SUBMITTED),
    (Status.VARIOUS_COMPLETE, Status.VARIOUS),
]


@pytest.mark.parametrize(("current", "new"), BACKWARD)
def test_late_reports_never_move_a_job_backwards(current: Status, new: Status) -> None:
    assert check_transition(current, new) is Verdict.BACKWARD


@pytest.mark.parametrize("current", sorted(FINAL))
@pytest.mark.parametrize("new", [s for s in Status])
def test_final_statuses_are_final(current: Status, new: Status) -> None:
    expected = Verdict.SAME if new == current else Verdict.FINAL
    assert check_transition(current, new) is expected


@pytest.mark.parametrize("status", [s for s in Status if s != Status.OTHER])
def test_duplicate_report_is_same(status: Status) -> None:
    assert check_transition(status, status) is Verdict.SAME


def test_other_same_text_is_same_and_new_text_applies() -> None:
    assert (
        check_transition(Status.OTHER, Status.OTHER, current_text="Meshing", new_text="Meshing")
        is Verdict.SAME
    )
    assert (
        check_transition(Status.OTHER, Status.OTHER, current_text="Meshing", new_text="Solving")
        is Verdict.APPLY
    )


def test_custom_status_moves_by_its_category_rank() -> None:
    # Running -> a custom pre-running status is a step back.
    assert (
        check_transition(Status.RUNNING, Status.OTHER, new_category=Category.PRE_RUNNING)
        is Verdict.BACKWARD
    )
    # Submitted -> custom running status applies; running <-> running custom is sideways.
    assert (
        check_transition(Status.SUBMITTED, Status.OTHER, new_category=Category.RUNNING)
        is Verdict.APPLY
    )
    assert (
        check_transition(Status.RUNNING, Status.OTHER, new_category=Category.RUNNING)
        is Verdict.APPLY
    )
    assert (
        check_transition(Status.OTHER, Status.RUNNING, current_category=Category.ACTIVE)
        is Verdict.APPLY
    )
    # A custom terminal status is final.
    assert (
        check_transition(
            Status.OTHER, Status.RUNNING, current_category=Category.TERMINAL, current_text="Done"
        )
        is Verdict.FINAL
    )
    # Undeclared custom text counts as running.
    assert check_transition(Status.RUNNING, Status.OTHER, new_text="Meshing") is Verdict.APPLY
    assert check_transition(Status.OTHER, Status.COMPLETE, current_text="x") is Verdict.APPLY


def test_allowed_transitions_table_is_consistent_with_check_transition() -> None:
    table = rules.allowed_transitions()
    assert set(table) == set(Status)
    for current, targets in table.items():
        if current == Status.OTHER:
            continue
        for new in Status:
            if new in (current, Status.OTHER):
                continue
            verdict = check_transition(current, new)
            if new in targets:
                assert verdict is Verdict.APPLY, (current, new)
            else:
                assert verdict is not Verdict.APPLY, (current, new)
    for final in FINAL:
        assert table[final] == frozenset()


def test_ranks_never_decrease_along_allowed_edges() -> None:
    # The one exception: a released hold sends a paused (queued) job back to the queue.
    for current, targets in rules.allowed_transitions().items():
        for new in targets:
            if Status.OTHER in (current, new) or (current, new) == (
                Status.PAUSED,
                Status.SUBMITTED,
            ):
                continue
            assert rules.rank(new) >= rules.rank(current), (current, new)


def test_mermaid_diagram_is_generated_from_the_table() -> None:
    diagram = rules.mermaid_diagram()
    assert diagram.startswith("stateDiagram-v2\n")
    edges = {
        tuple(line.strip().split(" --> "))
        for line in diagram.splitlines()
        if " --> " in line and ":" not in line and "[*]" not in line
    }
    expected = {
        (src.display.replace("-", ""), dst.display.replace("-", ""))
        for src, dsts in rules.allowed_transitions().items()
        for dst in dsts
        if Status.OTHER not in (src, dst)
    }
    assert edges == expected
    for final in FINAL:
        assert f"{final.display} --> Submitted: resubmit()" in diagram


def test_render_docs_lists_every_status() -> None:
    docs = rules.render_docs()
    for display, code in TETHYS:
        assert f"| {display} | {code} |" in docs
    assert "```mermaid" in docs


def test_a_released_hold_returns_a_paused_job_to_the_queue() -> None:
    # A job held while queued and then released is queued again, not running.
    assert check_transition(Status.PAUSED, Status.SUBMITTED) is Verdict.APPLY
