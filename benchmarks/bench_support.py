"""What the benchmarks of the batch engines through the monitor (bench_slurm.py, bench_condor.py)
share: the scheduler started by its ``scripts/start-*``, the engine on a transport that records its
commands, submitting and polling timed, the rows of results and their table. The database is set
up by bench_core.py's ``setup_django``.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_core import machine, setup_django

ROOT = Path(__file__).resolve().parents[1]


def start_scheduler(name: str, *, timeout: float = 300) -> None:
    """scripts/start-<name> (idempotent); its exports applied to this process (unquoted values
    have their ``$VARIABLES`` expanded: ``PATH=<wrappers>:$PATH``). Exits when it fails."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / f"start-{name}")],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"scripts/start-{name} failed:\n{result.stderr[-2000:]}")
    for line in result.stdout.splitlines():
        match = re.match(r"^export ([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if match:
            value = match.group(2)
            value = value[1:-1] if value.startswith("'") else os.path.expandvars(value)
            os.environ[match.group(1)] = value


def counting_engine(kind: str) -> Any:
    """The default ``kind`` engine on our own local transport, recording the name of each command
    it runs in ``engine.runner.commands``."""
    from offload.schedulers import build_engine_for
    from offload.transport.local import LocalRunner

    class CountingRunner(LocalRunner):
        def __init__(self) -> None:
            self.commands: list[str] = []

        def run(self, argv: Sequence[str], **kwargs: Any) -> Any:
            self.commands.append(str(argv[0]))
            return super().run(argv, **kwargs)

    default: Any = build_engine_for(kind, None)
    return type(default)(default.options, runner=CountingRunner())


def prepare(kind: str, *, start: str, timeout: float = 300) -> tuple[Any, Any, Any, Any]:
    """The scheduler started (``scripts/start-<start>``), a throwaway SQLite database (WAL) set up
    as bench_core.py does; the benchmark's user, a JobManager, and a Monitor whose
    ``<kind>:default`` engine is :func:`counting_engine`'s (also returned)."""
    start_scheduler(start, timeout=timeout)
    home = Path(tempfile.mkdtemp(prefix=f"offload-bench-{kind}-"))
    setup_django(f"sqlite:///{home / 'bench.sqlite3'}", home)

    from django.contrib.auth import get_user_model

    from offload import JobManager
    from offload.monitor.loop import Monitor

    user = get_user_model().objects.create(username="bench")
    monitor = Monitor(name=f"bench-{kind}")
    engine = counting_engine(kind)
    monitor.engines[f"{kind}:default"] = engine
    return user, JobManager("bench"), monitor, engine


def submit_all(monitor: Any, jobs: list[Any]) -> float:
    """execute() every job, then monitor cycles until each has a native id; the seconds taken."""
    from offload.models import Job

    started = time.perf_counter()
    for job in jobs:
        job.execute()
    ids = [job.pk for job in jobs]
    while Job.objects.filter(pk__in=ids, native_id="").exists():
        stats = monitor.run_cycle()
        assert not stats.errors, stats.errors
    return time.perf_counter() - started


def poll_cycles(
    monitor: Any, engine: Any, scheduler: str, count: int
) -> tuple[list[float], list[list[str]], int]:
    """``count`` monitor cycles that each poll ``scheduler`` (``slurm:default``): their seconds,
    the commands each ran and the jobs the last one polled."""
    seconds: list[float] = []
    commands: list[list[str]] = []
    polled = 0
    for _ in range(count):
        engine.runner.commands.clear()
        monitor._poll_soon.add(scheduler)
        start = time.perf_counter()
        stats = monitor.run_cycle()
        seconds.append(time.perf_counter() - start)
        assert not stats.errors, stats.errors
        commands.append(list(engine.runner.commands))
        polled = stats.polled_jobs
    return seconds, commands, polled


def in_chunks(command: Sequence[str], ids: list[str], *, timeout: float, chunk: int = 200) -> None:
    """Run ``command`` on ``ids``, ``chunk`` at a time (``scancel``, ``condor_rm``); failures
    ignored (what is already gone stays gone)."""
    for start in range(0, len(ids), chunk):
        subprocess.run(
            [*command, *ids[start : start + chunk]],
            capture_output=True,
            timeout=timeout,
            check=False,
        )


def commands_used(engine: Any) -> str:
    """The commands the engine ran since ``engine.runner.commands`` was cleared: ``14 sbatch, …``."""
    used = Counter(engine.runner.commands)
    return ", ".join(f"{c} {k}" for k, c in used.most_common())


def median_ms(times: list[float]) -> str:
    return f"{statistics.median(times) * 1000:,.0f} ms (max {max(times) * 1000:,.0f})"


class Rows:
    """The benchmark's results: printed as they come, then a Markdown table (and JSON)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, what: str, value: str, commands: str = "", note: str = "") -> None:
        self.rows.append({"what": what, "value": value, "commands": commands, "note": note})
        print(f"  {what}: {value}  [{commands}] {note}", flush=True)

    def report(self, scheduler_version: str, json_path: Path | None) -> None:
        """The machine, the scheduler's version and the table; the JSON file if asked for."""
        info = machine("sqlite")
        print()
        print(
            f"Machine: {info['cpu']}, {info['nproc']} cores, {info['ram_gb']} GB; Python "
            f"{info['python']}; {info['database']}; {scheduler_version}; {info['date']}"
        )
        print()
        print("| measurement | result | scheduler commands | note |")
        print("|---|---:|---|---|")
        for row in self.rows:
            print(f"| {row['what']} | {row['value']} | {row['commands']} | {row['note']} |")
        if json_path:
            json_path.write_text(json.dumps({"machine": info, "rows": self.rows}, indent=2))
