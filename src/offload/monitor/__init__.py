"""The monitor: the only part of offload that talks to schedulers."""

from offload.monitor.loop import CycleStats, Monitor, run_monitor

__all__ = ["CycleStats", "Monitor", "run_monitor"]
