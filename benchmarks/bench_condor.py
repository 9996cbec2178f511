"""Benchmark of the HTCondor engine through the monitor, on the personal pool of
scripts/start-htcondor: submitting 1,000 jobs batched (one condor_submit per monitor batch), some
one by one, and one cluster of 1,000 procs (``num_jobs``), beside the schedd's own rate for the same
submissions by hand, and refreshing 1,000 active jobs (time per monitor cycle and the scheduler
commands it runs: one condor_q, at most one condor_history).

    eval "$(scripts/start-htcondor)"     # as root; the benchmark also starts it when it is missing
    .venv/bin/python benchmarks/bench_condor.py [--jobs 1000] [--one-by-one 200] [--json out.json]

The jobs never match a machine (``requirements = False``), so all of them stay idle (Submitted)
while the cycles are measured; every cluster this run submitted is removed at the end, whatever
happens. The database is a throwaway SQLite file (WAL), set up as bench_core.py does.
"""

from __future__ import annotations

import argparse
import os
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

NEVER = {"requirements": "False"}


def remove(clusters: list[str]) -> None:
    in_chunks(["condor_rm"], clusters, timeout=300)


def raw_submissions(folder: Path, count: int) -> tuple[float, float, float, list[str]]:
    """The schedd's own rate: ``count`` condor_submit calls of one job each, one condor_submit
    of 10 * ``count`` procs, and one condor_submit of 10 * ``count`` clusters of one job (one
    ``queue`` statement each, as offload batches jobs); seconds per job, procs per second,
    clusters per second, the clusters made."""
    folder.mkdir(parents=True, exist_ok=True)
    sub = folder / "raw.sub"
    sub.write_text("executable = /bin/true\nrequirements = False\nlog = raw.log\nqueue 1\n")
    clusters: list[str] = []
    started = time.perf_counter()
    for _ in range(count):
        out = subprocess.run(
            ["condor_submit", "-terse", str(sub)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=folder,
        ).stdout
        clusters.append(out.split(".")[0].strip())
    per_job = (time.perf_counter() - started) / count
    many = folder / "many.sub"
    many.write_text(
        f"executable = /bin/true\nrequirements = False\nlog = raw.log\nqueue {count * 10}\n"
    )
    started = time.perf_counter()
    out = subprocess.run(
        ["condor_submit", "-terse", str(many)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=folder,
    ).stdout
    rate = count * 10 / (time.perf_counter() - started)
    clusters.append(out.split(".")[0].strip())
    sections = folder / "sections.sub"
    sections.write_text(
        "".join(
            f"executable = {'/bin/true' if i % 2 == 0 else '/bin//true'}\n"
            "requirements = False\nlog = raw.log\nqueue 1\n"
            for i in range(count * 10)
        )
    )
    started = time.perf_counter()
    out = subprocess.run(
        ["condor_submit", "-terse", str(sections)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=folder,
    ).stdout
    cluster_rate = count * 10 / (time.perf_counter() - started)
    clusters += [line.split(".")[0].strip() for line in out.splitlines() if line.strip()]
    return per_job, rate, cluster_rate, clusters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--one-by-one",
        type=int,
        default=200,
        help="also submit this many jobs with batching off (0: not)",
    )
    args = parser.parse_args()
    n = args.jobs

    user, manager, monitor, engine = prepare("condor", start="htcondor", timeout=600)

    from offload.models import Job

    rows = Rows()
    add = rows.add
    submitted: list[str] = []

    try:
        # 0. The schedd's own rate, by hand (the wrappers' chroot included, as for offload).
        raw_folder = Path(os.environ["OFFLOAD_CONDOR_WORK"]) / "jobs" / f"bench-{os.getpid()}"
        per_job, rate, cluster_rate, clusters = raw_submissions(raw_folder, min(n, 100))
        submitted += clusters
        add(
            f"by hand: condor_submit of one job, {min(n, 100)} times",
            f"{1 / per_job:,.0f} jobs/s ({per_job * 1000:,.0f} ms each)",
            f"{min(n, 100)} condor_submit",
            "the schedd's own rate for one job per call",
        )
        add(
            f"by hand: one condor_submit of {min(n, 100) * 10:,} procs",
            f"{rate:,.0f} procs/s",
            "1 condor_submit",
        )
        add(
            f"by hand: one condor_submit of {min(n, 100) * 10:,} clusters of one job",
            f"{cluster_rate:,.0f} clusters/s",
            "1 condor_submit",
            "one queue statement per cluster, as offload batches",
        )
        remove(clusters)

        # 1. n jobs, batched: one condor_submit per monitor batch (the intents claimed in a cycle).
        singles = manager.bulk_create(
            manager.create_job(
                name="bench {id}",
                user=user,
                job_type="CONDOR",
                executable="/bin/true",
                attributes=NEVER,
            )
            for _ in range(n)
        )
        engine.runner.commands.clear()
        seconds = submit_all(monitor, singles)
        submitted += [j.native_id for j in Job.objects.filter(pk__in=[j.pk for j in singles])]
        add(
            f"submit {n:,} jobs batched (execute() + monitor cycles)",
            f"{n / seconds:,.0f} jobs/s ({seconds:.1f} s)",
            commands_used(engine),
            "one condor_submit per monitor batch of "
            f"{min(monitor.claim_limit, monitor.settings.submit_batch_size)} jobs; "
            "each job's submit file also written to its workspace",
        )

        # 2. Refresh n active jobs: one condor_q, no history (none left the queue).
        times, commands, polled = poll_cycles(monitor, engine, "condor:default", args.cycles)
        assert polled == n, polled
        assert all(c == ["condor_q"] for c in commands), commands
        add(
            f"monitor cycle refreshing {n:,} idle jobs",
            median_ms(times),
            "1 condor_q",
            f"median of {len(times)} cycles; nothing changed, nothing written",
        )
        started = time.perf_counter()
        engine.run(engine.status_command(submitted))
        add(
            f"  of which: the condor_q -json for {n:,} jobs alone",
            f"{(time.perf_counter() - started) * 1000:,.0f} ms",
            "1 condor_q",
        )
        # A tenth leave the queue: the same cycle asks the history about them, once.
        tenth = [j.native_id for j in Job.objects.filter(pk__in=[j.pk for j in singles[: n // 10]])]
        remove(tenth)
        times, commands, polled = poll_cycles(monitor, engine, "condor:default", 1)
        assert commands == [["condor_q", "condor_history"]], commands
        aborted = Job.objects.filter(pk__in=[j.pk for j in singles], _status="ABT").count()
        add(
            f"monitor cycle, {n:,} jobs of which {n // 10:,} just removed",
            f"{times[0] * 1000:,.0f} ms",
            "1 condor_q + 1 condor_history",
            f"{aborted:,} changes applied (Aborted)",
        )
        remove(submitted)
        poll_cycles(monitor, engine, "condor:default", 1)

        if args.one_by_one:
            # 1b. The same without batching: one condor_submit per job.
            alone = manager.bulk_create(
                manager.create_job(
                    name="bench {id}",
                    user=user,
                    job_type="CONDOR",
                    executable="/bin/true",
                    attributes=NEVER,
                )
                for _ in range(args.one_by_one)
            )
            engine.batching = False
            engine.runner.commands.clear()
            seconds = submit_all(monitor, alone)
            engine.batching = True
            made = [j.native_id for j in Job.objects.filter(pk__in=[j.pk for j in alone])]
            submitted += made
            add(
                f"submit {args.one_by_one:,} jobs one by one (batching off)",
                f"{args.one_by_one / seconds:,.0f} jobs/s ({seconds:.1f} s)",
                commands_used(engine),
                "one condor_submit per job",
            )
            remove(made)
            poll_cycles(monitor, engine, "condor:default", 1)

        # 3. One CondorJob of n procs: one condor_submit.
        [cluster] = manager.bulk_create(
            [
                manager.create_job(
                    name="bench procs",
                    user=user,
                    job_type="CONDOR",
                    executable="/bin/true",
                    attributes=NEVER,
                    num_jobs=n,
                )
            ]
        )
        engine.runner.commands.clear()
        seconds = submit_all(monitor, [cluster])
        cluster.refresh_from_db()
        submitted.append(cluster.native_id)
        add(
            f"submit one CondorJob of {n:,} procs (num_jobs)",
            f"{n / seconds:,.0f} procs/s ({seconds * 1000:,.0f} ms)",
            commands_used(engine),
        )
        times, commands, polled = poll_cycles(monitor, engine, "condor:default", args.cycles)
        assert all(c == ["condor_q"] for c in commands), commands
        tasks = (Job.objects.get(pk=cluster.pk).engine_state or {}).get("tasks", {})
        assert len(tasks) == n, len(tasks)
        add(
            f"monitor cycle refreshing one job of {n:,} idle procs",
            median_ms(times),
            "1 condor_q",
            f"{n:,} proc states in the job's engine state",
        )
    finally:
        remove([s for s in submitted if s])
        monitor.shutdown()

    version = subprocess.run(
        ["condor_version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.splitlines()
    rows.report(version[0] if version else "HTCondor", args.json)


if __name__ == "__main__":
    main()
