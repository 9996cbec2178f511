"""Benchmark of the Slurm engine through the monitor, on the real cluster of scripts/start-slurm:
submitting 1,000 jobs one by one and as one array of 1,000 tasks, and refreshing 1,000 active
jobs (time per monitor cycle and the scheduler commands it runs: one squeue, at most one sacct).

    eval "$(scripts/start-slurm)"        # as root; the benchmark also starts it when it is missing
    .venv/bin/python benchmarks/bench_slurm.py [--jobs 1000] [--json out.json]

The jobs wait in the queue (``--begin=now+2hours``) so that all of them stay active while the
cycles are measured; every job this run submitted is cancelled at the end, whatever happens. The
database is a throwaway SQLite file (WAL), set up as bench_core.py does.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_support import (  # noqa: E402
    Rows,
    commands_used,
    in_chunks,
    median_ms,
    poll_cycles,
    prepare,
    submit_all,
)

#: Keeps every job queued (PENDING, reason BeginTime) for the whole run.
WAIT = "--begin=now+7200"


def cancel(native_ids: list[str]) -> None:
    in_chunks(["scancel"], native_ids, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    n = args.jobs

    user, manager, monitor, engine = prepare("slurm", start="slurm")

    from offload.models import Job

    rows = Rows()
    add = rows.add
    submitted: list[str] = []

    try:
        # 1. n jobs, one sbatch each.
        singles = manager.bulk_create(
            manager.create_job(
                name="bench {id}",
                user=user,
                job_type="SLURM",
                executable="true",
                extra_directives=[WAIT],
            )
            for _ in range(n)
        )
        engine.runner.commands.clear()
        seconds = submit_all(monitor, singles)
        submitted += [j.native_id for j in Job.objects.filter(pk__in=[j.pk for j in singles])]
        add(
            f"submit {n:,} jobs one by one (execute() + monitor cycles)",
            f"{n / seconds:,.0f} jobs/s ({seconds:.1f} s)",
            commands_used(engine),
            "one sbatch per job; the script written to each workspace",
        )

        # 2. Refresh n active jobs: one squeue, no accounting (none left the queue).
        times, commands, polled = poll_cycles(monitor, engine, "slurm:default", args.cycles)
        assert polled == n, polled
        assert all(c == ["squeue"] for c in commands), commands
        add(
            f"monitor cycle refreshing {n:,} queued jobs",
            median_ms(times),
            "1 squeue",
            f"median of {len(times)} cycles; nothing changed, nothing written",
        )
        started = time.perf_counter()
        raw = subprocess.run(
            ["squeue", "--noheader", "--array", f"--jobs={','.join(submitted)}", "--format=%i"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert len(raw.stdout.splitlines()) == n
        add(
            f"  of which: the squeue for {n:,} ids alone",
            f"{(time.perf_counter() - started) * 1000:,.0f} ms",
            "1 squeue",
        )
        # A tenth leave the queue: the same cycle asks the accounting about them, once.
        cancel(submitted[: n // 10])
        times, commands, polled = poll_cycles(monitor, engine, "slurm:default", 1)
        assert commands == [["squeue", "sacct"]], commands
        aborted = Job.objects.filter(pk__in=[j.pk for j in singles], _status="ABT").count()
        assert aborted == n // 10, aborted
        add(
            f"monitor cycle, {n:,} jobs of which {n // 10:,} just ended",
            f"{times[0] * 1000:,.0f} ms",
            "1 squeue + 1 sacct",
            f"{aborted:,} changes applied (Aborted)",
        )
        cancel(submitted)
        times, commands, _ = poll_cycles(monitor, engine, "slurm:default", 1)

        # 3. One array of n tasks: one sbatch.
        [array] = manager.bulk_create(
            [
                manager.create_job(
                    name="bench array",
                    user=user,
                    job_type="SLURM",
                    executable="true",
                    array=f"1-{n}",
                    extra_directives=[WAIT],
                )
            ]
        )
        engine.runner.commands.clear()
        seconds = submit_all(monitor, [array])
        array.refresh_from_db()
        submitted.append(array.native_id)
        add(
            f"submit one array of {n:,} tasks",
            f"{n / seconds:,.0f} tasks/s ({seconds * 1000:,.0f} ms)",
            commands_used(engine),
        )
        times, commands, polled = poll_cycles(monitor, engine, "slurm:default", args.cycles)
        assert all(c == ["squeue"] for c in commands), commands
        tasks = (Job.objects.get(pk=array.pk).engine_state or {}).get("tasks", {})
        assert len(tasks) == n, len(tasks)
        add(
            f"monitor cycle refreshing one array of {n:,} queued tasks",
            median_ms(times),
            "1 squeue",
            f"{n:,} task states in the job's engine state",
        )
    finally:
        cancel([s for s in submitted if s])
        monitor.shutdown()

    rows.report(slurm_version(), args.json)


def slurm_version() -> str:
    result = subprocess.run(
        ["sinfo", "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout.strip() or "slurm"


if __name__ == "__main__":
    main()
