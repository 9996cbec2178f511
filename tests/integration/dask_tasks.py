"""Task functions for the Dask tests. Only the standard library: the tests pickle this module by
value, so a worker without the repository on its path runs them too."""

from __future__ import annotations

import threading
import time
from typing import Any


def add(a: int, b: int = 0) -> int:
    return a + b


def slow(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def boom(text: str) -> None:
    raise ValueError(text)


def unserializable() -> Any:
    return threading.Lock()


def record_result(job: Any, result: Any) -> None:
    """A process_results_function: keeps what it received in the job's extended properties."""
    job.extended_properties = {**(job.extended_properties or {}), "received": result}
    job.save()


def stamped(seconds: float) -> tuple[float, float]:
    """Sleeps; returns when it started and ended (epoch seconds), to time pushed reports."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time()
