"""The BASIC engine: runs nothing. The app drives the job's status itself (Tethys's BasicJob)."""

from __future__ import annotations

from collections.abc import Sequence

from offload.engines.base import (
    Engine,
    JobHandle,
    JobSpec,
    NativeReport,
    SubmitOutcome,
    SubmitResult,
)


class BasicEngine(Engine):
    kind = "basic"
    executes = False
    can_pause = True  # pausing a BASIC job only records the status the app asked for

    def submit_batch(self, specs: Sequence[JobSpec]) -> list[SubmitResult]:
        return [SubmitResult(s.job_id, SubmitOutcome.SUBMITTED, native_id="") for s in specs]

    def poll_batch(self, handles: Sequence[JobHandle]) -> dict[int, NativeReport]:
        return {}

    def cancel(self, handle: JobHandle) -> None:
        """Nothing runs, so there is nothing to stop."""

    def pause(self, handle: JobHandle) -> None:
        """Nothing runs; the status change is the whole effect."""

    def resume(self, handle: JobHandle) -> None:
        """Nothing runs; the status change is the whole effect."""
