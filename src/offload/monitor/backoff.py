"""Exponential backoff per key, across monitor cycles.

The monitor keeps one :class:`Backoff` for polls and one for submissions, keyed by scheduler
(``group_key``): each failure in a row waits longer (``RETRY_INITIAL * RETRY_FACTOR**(n-1)`` after
the n-th, at most ``RETRY_MAX``) and a success starts over. Pure: no Django, no database.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def backoff_delay(failures: int, *, initial: float, factor: float, maximum: float) -> float:
    """Seconds to wait after ``failures`` failures in a row: 0 after none, ``initial`` after the
    first, times ``factor`` after each further one, never more than ``maximum``. A factor below 1
    counts as 1 (the delay never shrinks while failures go on); negative values count as 0."""
    if failures <= 0:
        return 0.0
    initial, maximum = max(initial, 0.0), max(maximum, 0.0)
    factor = max(factor, 1.0)
    try:
        delay = initial * factor ** (failures - 1)
    except OverflowError:  # factor ** n beyond a float: far past any ceiling
        return maximum
    return min(delay, maximum)


class Backoff:
    """Consecutive failures and the time of the next try, per key (e.g. per scheduler).

    ``failed(key)`` counts a failure and returns the delay before the key may be tried again;
    ``succeeded(key)`` forgets its failures; ``wait(key)`` is how long it must still wait (0 when
    it may be tried now)."""

    def __init__(
        self,
        *,
        initial: float,
        factor: float,
        maximum: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.initial = initial
        self.factor = factor
        self.maximum = maximum
        self.clock = clock
        self._failures: dict[str, int] = {}
        self._next_try: dict[str, float] = {}

    def delay(self, failures: int) -> float:
        return backoff_delay(
            failures, initial=self.initial, factor=self.factor, maximum=self.maximum
        )

    def failed(self, key: str) -> float:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = self.delay(failures)
        self._next_try[key] = self.clock() + delay
        return delay

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
        self._next_try.pop(key, None)

    def failures(self, key: str) -> int:
        """Failures in a row so far."""
        return self._failures.get(key, 0)

    def wait(self, key: str) -> float:
        """Seconds before ``key`` may be tried again; 0 if it may be tried now."""
        next_try = self._next_try.get(key)
        if next_try is None:
            return 0.0
        return max(next_try - self.clock(), 0.0)


__all__ = ["Backoff", "backoff_delay"]
