"""The monitor's backoff for unreachable schedulers (pure: a fake clock, no database)."""

from __future__ import annotations

import pytest

from offload.monitor.backoff import Backoff, backoff_delay


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delay_sequence_grows_by_the_factor_up_to_the_ceiling() -> None:
    delays = [backoff_delay(n, initial=2, factor=2, maximum=300) for n in range(0, 12)]
    assert delays == [0, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert [backoff_delay(n, initial=1, factor=3, maximum=30) for n in range(1, 6)] == [
        1,
        3,
        9,
        27,
        30,
    ]


@pytest.mark.parametrize(
    ("initial", "factor", "maximum", "expected"),
    [
        (5, 1, 300, [5, 5, 5]),  # factor 1: a constant delay
        (5, 0.5, 300, [5, 5, 5]),  # a factor below 1 counts as 1: never shrinks
        (0, 2, 300, [0, 0, 0]),  # no initial delay: no backoff
        (10, 2, 4, [4, 4, 4]),  # a ceiling below the first delay wins
        (-1, 2, 300, [0, 0, 0]),
    ],
)
def test_delay_edge_values(
    initial: float, factor: float, maximum: float, expected: list[float]
) -> None:
    got = [backoff_delay(n, initial=initial, factor=factor, maximum=maximum) for n in (1, 2, 3)]
    assert got == expected


def test_a_long_outage_stays_at_the_ceiling_without_overflow() -> None:
    assert backoff_delay(5000, initial=2, factor=2, maximum=300) == 300
    assert backoff_delay(10**6, initial=2, factor=10, maximum=60) == 60


def test_failures_in_a_row_back_off_across_calls_and_a_success_starts_over() -> None:
    clock = FakeClock()
    backoff = Backoff(initial=2, factor=3, maximum=50, clock=clock)
    assert backoff.wait("slurm:1") == 0  # never failed: may be tried now
    delays = []
    for _ in range(5):
        delays.append(backoff.failed("slurm:1"))
        assert backoff.wait("slurm:1") == delays[-1]
        clock.now += delays[-1] / 2
        assert backoff.wait("slurm:1") == delays[-1] / 2  # still waiting
        clock.now += delays[-1] / 2
        assert backoff.wait("slurm:1") == 0  # due again
    assert delays == [2, 6, 18, 50, 50]
    assert backoff.failures("slurm:1") == 5

    backoff.succeeded("slurm:1")
    assert backoff.failures("slurm:1") == 0
    assert backoff.wait("slurm:1") == 0
    assert backoff.failed("slurm:1") == 2  # from the start again


def test_keys_back_off_independently() -> None:
    clock = FakeClock()
    backoff = Backoff(initial=1, factor=2, maximum=100, clock=clock)
    for _ in range(4):
        backoff.failed("down")
    assert backoff.failed("other") == 1
    assert backoff.wait("down") == 8
    assert backoff.wait("up") == 0
    backoff.succeeded("other")
    assert backoff.wait("down") == 8
