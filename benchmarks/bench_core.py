"""Benchmarks of offload's core: creating, listing and reading jobs, and one monitor cycle.

    python benchmarks/bench_core.py --db sqlite|postgres [--jobs 10000] [--table 100000] [--json FILE]
    python benchmarks/bench_core.py --markdown sqlite.json postgres.json   (README table from results)

The script sets Django up itself (auth, contenttypes and offload; the database options of the
ready-made portal) on a throwaway database: a temporary SQLite file, or a fresh PostgreSQL database
``offload_bench_<pid>`` created on the server of ``--postgres-url`` and dropped at the end. Timings are
taken without query capture; queries per call are counted on separate calls with Django's
``CaptureQueriesContext`` (SQL statements; BEGIN/COMMIT are not counted). Monitor cycles issue more queries than Django's query log holds (9000),
so those are counted with a ``connection.execute_wrapper`` counter instead.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LABELS = ("bench", "hydrology", "climate")
USERS = 100
#: execute() calls timed in section 4; the other jobs are put in the same state by the harness.
EXECUTE_SAMPLE = 1000


# -- results ------------------------------------------------------------------------------------
@dataclass
class Row:
    """One measured line of the table."""

    key: str
    what: str
    unit: str
    median: float
    p95: float | None = None
    queries: float | None = None
    writes: float | None = None
    n: int = 1
    note: str = ""


#: Row key → (Tethys 4.6.1 SQLite, Tethys PostgreSQL, target) as the issue states them.
REFERENCE: dict[str, tuple[str, str, str]] = {
    "create_save": ("5.0 ms", "6.3 ms", "≤ 1 ms (PostgreSQL)"),
    "bulk_create": ("-", "-", "≥ 10,000 jobs/s (PostgreSQL)"),
    "list_user_iterate": ("614 ms", "668 ms", "≤ 60 ms, constant queries"),
    "page_app": ("-", "-", "< 20 ms"),
    "page_user": ("-", "-", "< 20 ms"),
    "page_user_deep": ("-", "-", "< 20 ms"),
    "get_job": ("1.9 ms", "3.8 ms", "-"),
    "status_read": ("2.9 ms, 1 write", "2.4 ms, 1 write", "≤ 0.05 ms, no write"),
    "status_read_many": ("2.9 ms, 1 write", "2.4 ms, 1 write", "≤ 0.05 ms, no write"),
    "monitor_local_steady": ("-", "-", "queries not growing with jobs"),
}


class Results:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(f"  {format_row(row)}", flush=True)
        return row


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "count" or (unit == "" and value == int(value)):
        return f"{value:,.0f}"
    if unit == "jobs/s" or value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_row(row: Row) -> str:
    p95 = f" p95 {fmt(row.p95)}" if row.p95 is not None else ""
    queries = f"  queries {fmt(row.queries)}" if row.queries is not None else ""
    writes = f"  writes {fmt(row.writes)}" if row.writes is not None else ""
    note = f"  ({row.note})" if row.note else ""
    return (
        f"{row.what:<58} {fmt(row.median, row.unit):>9} {row.unit:<6}{p95}{queries}{writes}{note}"
    )


# -- measuring ----------------------------------------------------------------------------------
def time_calls(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Seconds per call of ``fn``, ``repeat`` times."""
    durations: list[float] = []
    perf = time.perf_counter
    for _ in range(repeat):
        start = perf()
        fn()
        durations.append(perf() - start)
    return durations


def ms(durations: list[float]) -> tuple[float, float]:
    return median(durations) * 1000, percentile(durations, 0.95) * 1000


#: Transaction control is not counted as a query (Django logs BEGIN/COMMIT on some backends only).
TRANSACTION_CONTROL = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"})
WRITES = frozenset({"INSERT", "UPDATE", "DELETE"})


def verb(sql: str) -> str:
    return sql.lstrip().split(None, 1)[0].upper()


class QueryCounter:
    """Counts the statements the default connection executes (no cap, unlike Django's query log)."""

    def __init__(self) -> None:
        self.queries = 0
        self.writes = 0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        kind = verb(sql)
        if kind not in TRANSACTION_CONTROL:
            self.queries += 1
            self.writes += kind in WRITES
        return execute(sql, params, many, context)


@contextlib.contextmanager
def counting() -> Iterator[QueryCounter]:
    from django.db import connection

    counter = QueryCounter()
    with connection.execute_wrapper(counter):
        yield counter


def captured(fn: Callable[[], Any], calls: int = 1) -> tuple[float, float]:
    """Queries and writes per call of ``fn`` (Django's CaptureQueriesContext over ``calls`` calls)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        for _ in range(calls):
            fn()
    kinds = [verb(q["sql"]) for q in ctx.captured_queries]
    kinds = [kind for kind in kinds if kind not in TRANSACTION_CONTROL]
    return len(kinds) / calls, sum(kind in WRITES for kind in kinds) / calls


# -- the database -------------------------------------------------------------------------------
def with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def create_postgres(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_postgres(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_settings(db_url: str) -> dict[str, Any]:
    """The database as the portal configures it (offload.portal.settings): for SQLite a lock
    timeout, BEGIN IMMEDIATE and WAL with synchronous=NORMAL; PostgreSQL as parsed, with psycopg
    preparing statements a connection runs often (prepare_threshold 5)."""
    import dj_database_url

    config: dict[str, Any] = dict(dj_database_url.parse(db_url))
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["OPTIONS"] = {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    else:
        config["OPTIONS"] = {"prepare_threshold": 5}  # the portal's default
    return config


def setup_django(db_url: str, home: Path) -> None:
    """Minimal settings of our own (auth, contenttypes, offload), so the benchmark measures the
    core whatever state the web parts are in."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    settings.configure(
        DEBUG=False,
        SECRET_KEY="offload-benchmark-not-secret",
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "offload"],
        DATABASES={"default": database_settings(db_url)},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
        TIME_ZONE="UTC",
        # Every cycle polls: the benchmark measures monitor cycles back to back.
        OFFLOAD={"HOME": str(home), "POLL_INTERVAL": 0},
    )
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def clear_jobs() -> None:
    from django.db import connection

    from offload.models import Job, JobEvent, JobIntent

    with connection.cursor() as cursor:
        for model in (JobEvent, JobIntent, Job.groups.through, Job):
            cursor.execute(f"DELETE FROM {connection.ops.quote_name(model._meta.db_table)}")


def analyze() -> None:
    """Fresh planner statistics on PostgreSQL, as autovacuum would have gathered them. SQLite
    gets none: nothing runs ANALYZE there in a real deployment either."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def machine(db: str) -> dict[str, Any]:
    import django
    from django.db import connection

    cpu = ""
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    with connection.cursor() as cursor:
        if db == "postgres":
            cursor.execute("SHOW server_version")
            server = f"PostgreSQL {cursor.fetchone()[0]}"
        else:
            import sqlite3

            cursor.execute("PRAGMA journal_mode")
            server = f"SQLite {sqlite3.sqlite_version} (journal {cursor.fetchone()[0]})"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu or platform.processor(),
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "django": django.get_version(),
        "database": server,
        "platform": platform.platform(),
    }


# -- the benchmarks -----------------------------------------------------------------------------
def make_users(count: int) -> list[Any]:
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    user_model.objects.bulk_create(
        [user_model(username=f"user{i:03d}", password="!") for i in range(count)]
    )
    return list(user_model.objects.order_by("id"))


def bench_calibrate(results: Results, users: list[Any]) -> None:
    """0. The database's own latency, to read the other numbers by: one round trip, and one
    committed transaction of a single-row UPDATE (a WAL flush on PostgreSQL)."""
    from django.db import connection, transaction

    print("0. calibration", flush=True)

    def select_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    def commit_one() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE auth_user SET last_login = NULL WHERE id = %s", [users[0].pk])

    time_calls(select_one, 200)
    durations = time_calls(select_one, 2000)
    results.add(Row("rt_select", "calibration: SELECT 1 (one round trip)", "ms", *ms(durations)))
    time_calls(commit_one, 50)
    durations = time_calls(commit_one, 1000)
    results.add(
        Row("rt_commit", "calibration: BEGIN; UPDATE one row; COMMIT", "ms", *ms(durations))
    )


def bench_create(results: Results, users: list[Any], jobs: int) -> None:
    """1. create_job + save one at a time, and the bulk path."""
    from offload import JobManager
    from offload.models import Job, JobEvent

    print(f"1. creating jobs ({jobs:,} one at a time, then {jobs:,} at once)", flush=True)
    manager = JobManager("bench")
    owner = users[0]

    def create_one() -> Job:
        job = manager.create_job(name="job {id}", user=owner, job_type="BASIC")
        job.save()
        return job

    time_calls(create_one, 50)  # warm-up
    gc.collect()
    durations = time_calls(create_one, jobs)
    queries, writes = captured(create_one, 20)
    last = create_one()
    assert last.name == f"job {last.id}", last.name
    assert JobEvent.objects.filter(job_id=last.id).count() == 1
    median_ms, p95_ms = ms(durations)
    results.add(
        Row(
            "create_save",
            "create_job + save, one at a time",
            "ms",
            median_ms,
            p95_ms,
            queries,
            writes,
            jobs,
        )
    )

    def bulk() -> list[Job]:
        return manager.bulk_create(
            manager.create_job(name="job {id}", user=owner, job_type="BASIC") for _ in range(jobs)
        )

    rates: list[float] = []
    insert_rates: list[float] = []
    for _ in range(3):
        gc.collect()
        start = time.perf_counter()
        new = [
            manager.create_job(name="job {id}", user=owner, job_type="BASIC") for _ in range(jobs)
        ]
        built = time.perf_counter()
        manager.bulk_create(new)
        done = time.perf_counter()
        rates.append(jobs / (done - start))
        insert_rates.append(jobs / (done - built))
    before = Job.objects.count()
    queries, writes = captured(bulk)
    assert Job.objects.count() == before + jobs
    created = Job.objects.order_by("-id").first()
    assert created is not None and created.name == f"job {created.id}"
    assert JobEvent.objects.filter(job_id=created.id).count() == 1
    results.add(
        Row(
            "bulk_create",
            f"bulk path: JobManager.bulk_create of {jobs:,} create_job()s",
            "jobs/s",
            median(rates),
            None,
            queries,
            writes,
            3,
            f"create_job()s included; bulk_create alone {median(insert_rates):,.0f} jobs/s",
        )
    )
    clear_jobs()


def fill_table(results: Results, users: list[Any], table: int, heavy: int) -> list[int]:
    """100,000 jobs over 100 users and 3 apps; users[0] has ``heavy`` jobs in app 'bench'."""
    from offload import JobManager

    print(f"2. filling the table with {table:,} jobs", flush=True)
    managers = {label: JobManager(label) for label in LABELS}
    others = users[1:]
    every = max(1, table // heavy)
    plan: list[tuple[str, Any]] = []
    heavy_left = heavy
    for i in range(table):
        if heavy_left and i % every == 0:
            plan.append(("bench", users[0]))
            heavy_left -= 1
        else:
            plan.append((LABELS[i % len(LABELS)], others[i % len(others)]))
    start = time.perf_counter()
    heavy_ids: list[int] = []
    for chunk_start in range(0, table, 10_000):
        chunk = plan[chunk_start : chunk_start + 10_000]
        jobs = [
            managers[label].create_job(name="job {id}", user=user, job_type="BASIC")
            for label, user in chunk
        ]
        for job in managers["bench"].bulk_create(jobs):
            if job.user_id == users[0].pk:
                heavy_ids.append(job.id)
    seconds = time.perf_counter() - start
    results.add(
        Row(
            "bulk_fill",
            f"bulk path at scale: {table:,} jobs, {table // 10_000} calls of 10,000",
            "jobs/s",
            table / seconds,
            n=1,
        )
    )
    analyze()
    return heavy_ids


def bench_read(
    results: Results, users: list[Any], table: int, heavy_ids: list[int], repeat: int
) -> None:
    """2. list_jobs and get_job with the table full."""
    from offload import JobManager
    from offload.models import BasicJob, Job

    assert Job.objects.count() == table
    manager = JobManager("bench")
    heavy = users[0]

    def iterating(queryset: Callable[[], Any]) -> Callable[[], int]:
        def iterate() -> int:
            count = 0
            for job in queryset():
                job.status  # noqa: B018 - reading it is the point
                count += 1
            return count

        return iterate

    def add_timed(key: str, what: str, fn: Callable[[], Any]) -> None:
        durations = time_calls(fn, repeat)
        queries, writes = captured(fn)
        results.add(Row(key, what, "ms", *ms(durations), queries, writes, repeat))

    iterate_user = iterating(lambda: manager.list_jobs(user=heavy))
    assert iterate_user() == len(heavy_ids)
    assert all(isinstance(j, BasicJob) for j in manager.list_jobs(user=heavy)[:5])
    queries, _ = captured(lambda: [j.user.username for j in manager.list_jobs(user=heavy)[:100]])
    assert queries == 1, f"job.user cost {queries - 1} extra queries"
    gc.collect()
    add_timed(
        "list_user_iterate",
        f"list_jobs(user) iterating {len(heavy_ids):,} jobs (reading .status)",
        iterate_user,
    )
    # A table's columns only (as Tethys's jobs table shows them): the other fields stay unloaded,
    # and reading one later loads it for all 10,000 jobs in one query (offload.loading.Peers).
    shown = ("id", "name", "description", "creation_time", "execute_time", "start_time")
    shown += ("completion_time", "_status", "status_message")
    iterate_shown = iterating(lambda: manager.list_jobs(user=heavy).only(*shown))
    assert iterate_shown() == len(heavy_ids)
    add_timed(
        "list_user_only",
        f"  the same with only() the {len(shown)} columns a jobs table shows",
        iterate_shown,
    )
    # Where that time goes: the same query without model objects, and without Django at all.
    columns = [f.attname for f in Job._meta.concrete_fields]
    floors: list[tuple[str, str, Callable[[], Any]]] = [
        (
            "list_user_values",
            "  same rows as tuples: list_jobs(user).values_list(all fields)",
            lambda: list(manager.list_jobs(user=heavy).values_list(*columns)),
        ),
        (
            "list_user_raw",
            "  same rows, driver only: cursor.execute + fetchall",
            lambda: raw_fetch(manager.list_jobs(user=heavy)),
        ),
    ]
    for key, what, fetch in floors:
        durations = time_calls(fetch, repeat)
        results.add(Row(key, what, "ms", *ms(durations), 1.0, 0.0, repeat))

    deep = len(heavy_ids) // 2
    pages: list[tuple[str, str, Callable[[], list[Job]]]] = [
        (
            "page_app",
            "page of 50: list_jobs(order_by='-id')[:50] (app of ~40k)",
            lambda: list(manager.list_jobs(order_by="-id")[:50]),
        ),
        (
            "page_user",
            "page of 50: list_jobs(user, order_by='-id')[:50]",
            lambda: list(manager.list_jobs(user=heavy, order_by="-id")[:50]),
        ),
        (
            "page_user_deep",
            f"page of 50 at offset {deep:,}: list_jobs(user, order_by='-id')[{deep}:{deep + 50}]",
            lambda: list(manager.list_jobs(user=heavy, order_by="-id")[deep : deep + 50]),
        ),
    ]
    for key, what, page in pages:
        assert len(page()) == 50
        durations = time_calls(page, 300)
        queries, writes = captured(page)
        results.add(Row(key, what, "ms", *ms(durations), queries, writes, 300))

    sample = random.Random(2).sample(heavy_ids, min(2000, len(heavy_ids)))
    ids = iter(sample)
    assert manager.get_job(sample[0]) is not None
    durations = time_calls(lambda: manager.get_job(next(ids)), len(sample) // 2)
    queries, writes = captured(lambda: manager.get_job(next(ids)), 10)
    results.add(
        Row("get_job", "get_job(id)", "ms", *ms(durations), queries, writes, len(sample) // 2)
    )
    durations = time_calls(lambda: manager.get_job(next(ids), user=heavy), len(sample) // 2 - 20)
    results.add(
        Row(
            "get_job_user",
            "get_job(id, user=...)",
            "ms",
            *ms(durations),
            queries,
            writes,
            len(sample) // 2 - 20,
        )
    )


def raw_fetch(queryset: Any) -> int:
    from django.db import connection

    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return len(cursor.fetchall())


def bench_status(results: Results, users: list[Any], heavy_ids: list[int]) -> None:
    """3. Reading job.status: no query, no write."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from offload import JobManager

    print("3. status reads", flush=True)
    manager = JobManager("bench")
    job = manager.get_job(heavy_ids[0])
    assert job is not None
    batch = 1000
    per_read: list[float] = []
    perf = time.perf_counter
    for _ in range(200):
        start = perf()
        for _ in range(batch):
            job.status  # noqa: B018
        per_read.append((perf() - start) / batch)
    with CaptureQueriesContext(connection) as ctx:
        for _ in range(10_000):
            job.status  # noqa: B018
    assert len(ctx.captured_queries) == 0, ctx.captured_queries[:3]
    results.add(
        Row(
            "status_read",
            "job.status on a loaded job (per read)",
            "µs",
            median(per_read) * 1e6,
            percentile(per_read, 0.95) * 1e6,
            0.0,
            0.0,
            200 * batch,
            "10,000 reads captured: 0 queries",
        )
    )

    jobs = list(manager.list_jobs(user=users[0]))
    per_read = []
    for _ in range(20):
        start = perf()
        for j in jobs:
            j.status  # noqa: B018
        per_read.append((perf() - start) / len(jobs))
    with CaptureQueriesContext(connection) as ctx:
        for j in jobs:
            j.status  # noqa: B018
    assert len(ctx.captured_queries) == 0
    results.add(
        Row(
            "status_read_many",
            f"job.status across {len(jobs):,} loaded jobs (per read)",
            "µs",
            median(per_read) * 1e6,
            percentile(per_read, 0.95) * 1e6,
            0.0,
            0.0,
            20 * len(jobs),
        )
    )


def run_cycle(monitor: Any) -> tuple[float, QueryCounter, Any]:
    with counting() as counter:
        start = time.perf_counter()
        stats = monitor.run_cycle()
        seconds = time.perf_counter() - start
    assert not stats.errors, stats.errors
    return seconds, counter, stats


def cycle_row(key: str, what: str, cycles: list[tuple[float, QueryCounter, Any]], note: str) -> Row:
    seconds = [c[0] * 1000 for c in cycles]
    return Row(
        key,
        what,
        "ms",
        median(seconds),
        percentile(seconds, 0.95) if len(cycles) > 1 else None,
        median([c[1].queries for c in cycles]),
        median([c[1].writes for c in cycles]),
        len(cycles),
        note,
    )


def bench_monitor(results: Results, users: list[Any], jobs: int) -> None:
    """4. A monitor cycle over ``jobs`` executed BASIC jobs, then over ``jobs`` active LOCAL jobs."""
    from django.utils import timezone

    from offload import JobManager
    from offload.engines.base import attempt_dir
    from offload.engines.local_runner import proc_start_time
    from offload.models import IntentAction, Job, JobIntent
    from offload.monitor.loop import Monitor
    from offload.status import Status

    print(f"4. monitor cycles ({jobs:,} BASIC jobs, then {jobs:,} LOCAL jobs)", flush=True)
    manager = JobManager("monitor")
    owners = users[:10]
    sample = min(jobs, EXECUTE_SAMPLE)

    def executed_by_harness(batch: list[Job], **fields: Any) -> None:
        # What execute() leaves behind (Submitted, attempt 1), for the jobs beyond the timed
        # sample: the cycles are what this section measures, and it keeps the run short.
        ids = [job.pk for job in batch]
        for start in range(0, len(ids), 1000):
            Job.objects.filter(pk__in=ids[start : start + 1000]).update(
                _status=Status.SUBMITTED.value, attempt=1, execute_time=timezone.now(), **fields
            )

    basic = manager.bulk_create(
        manager.create_job(name="basic {id}", user=owners[i % 10], job_type="BASIC")
        for i in range(jobs)
    )
    executes = iter(basic)
    durations = time_calls(lambda: next(executes).execute(), sample)
    executed_by_harness(basic[sample:])
    results.add(Row("execute_basic", "execute() a BASIC job", "ms", *ms(durations), n=sample))

    monitor = Monitor(name="bench-monitor")
    cycles = [run_cycle(monitor) for _ in range(5)]
    assert all(c[2].polled_jobs == 0 for c in cycles)
    results.add(
        cycle_row(
            "monitor_basic",
            f"monitor cycle, {jobs:,} executed BASIC jobs (nothing to poll)",
            cycles,
            "BASIC runs nothing",
        )
    )

    local = manager.bulk_create(
        manager.create_job(
            name="local {id}",
            user=owners[i % 10],
            job_type="LOCAL",
            executable="true",
            arguments=[],
            environment={},
        )
        for i in range(jobs)
    )
    executes = iter(local)
    durations = time_calls(lambda: next(executes).execute(), sample)
    executed_by_harness(local[sample:])
    results.add(
        Row(
            "execute_local",
            "execute() a LOCAL job (queues a submit intent)",
            "ms",
            *ms(durations),
            n=sample,
        )
    )
    # Make the jobs active without 10,000 processes: the harness plays the part of a submission
    # whose runner is alive (runner.json naming this very process), as the local engine records it.
    local_ids = [j.id for j in local]
    JobIntent.objects.filter(
        job_id__in=Job.objects.filter(label="monitor", job_type="LOCAL").values("id"),
        action=IntentAction.EXECUTE,
        done_at__isnull=True,
    ).update(done_at=timezone.now(), outcome="benchmark: started by the harness")
    pid = os.getpid()
    start = proc_start_time(pid)
    runner = {
        "runner_pid": pid,
        "runner_start": start,
        "pid": pid,
        "pgid": os.getpgid(pid),
        "start": start,
        "started": time.time(),
    }
    for job in local:
        folder = attempt_dir(job.workspace, job.pk, 1)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "runner.json").write_text(json.dumps(runner))
    Job.objects.filter(label="monitor", job_type="LOCAL").update(
        native_id=str(pid), engine_state={"host": socket.gethostname(), **runner}
    )

    first = run_cycle(monitor)
    assert first[2].polled_jobs == jobs and first[2].changed == jobs, first[2]
    results.add(
        cycle_row(
            "monitor_local_first",
            f"monitor cycle, {jobs:,} LOCAL jobs Submitted → Running",
            [first],
            f"{jobs:,} changes applied",
        )
    )
    steady = [run_cycle(monitor) for _ in range(5)]
    assert all(c[2].polled_jobs == jobs and c[2].changed == 0 for c in steady)
    results.add(
        cycle_row(
            "monitor_local_steady",
            f"monitor cycle, {jobs:,} running LOCAL jobs, nothing changes",
            steady,
            "steady state",
        )
    )
    exit_json = json.dumps({"returncode": 0, "started": time.time(), "finished": time.time()})
    for job in local:
        (attempt_dir(job.workspace, job.pk, 1) / "exit.json").write_text(exit_json)
    last = run_cycle(monitor)
    assert last[2].changed == jobs, last[2]
    results.add(
        cycle_row(
            "monitor_local_finish",
            f"monitor cycle, {jobs:,} LOCAL jobs Running → Complete",
            [last],
            f"{jobs:,} changes applied (exit.json read)",
        )
    )
    idle = [run_cycle(monitor) for _ in range(5)]
    results.add(cycle_row("monitor_idle", "monitor cycle, nothing active", idle, ""))
    done = Job.objects.filter(pk__in=local_ids[:100], _status=Status.COMPLETE.value).count()
    assert done == min(100, jobs)
    monitor.shutdown()


# -- reporting ----------------------------------------------------------------------------------
def markdown(paths: list[str]) -> str:
    """The README table: one column per results file, queries per call, Tethys and the targets."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    names = " | ".join(run["db"] for run in runs)
    lines = [
        f"| measurement | {names} | queries per call ({' / '.join(r['db'] for r in runs)}) "
        "| Tethys 4.6.1 (SQLite / PostgreSQL) | target |",
        "|---|" + "---:|" * len(runs) + "---|---|---|",
    ]
    keys: list[str] = []
    what: dict[str, str] = {}
    for run in runs:
        for row in run["rows"]:
            if row["key"] not in what:
                keys.append(row["key"])
                what[row["key"]] = row["what"]
    for key in keys:
        cells: list[str] = []
        counts: list[str] = []
        for run in runs:
            row = next((r for r in run["rows"] if r["key"] == key), None)
            if row is None:
                cells.append("-")
                counts.append("-")
                continue
            cell = f"{fmt(row['median'], row['unit'])} {row['unit']}"
            if row["p95"] is not None:
                cell += f" (p95 {fmt(row['p95'])})"
            cells.append(cell)
            if row["queries"] is None:
                counts.append("-")
            else:
                count = fmt(row["queries"], "count")
                if row["writes"]:
                    count += f" ({fmt(row['writes'], 'count')} writes)"
                counts.append(count)
        ref = REFERENCE.get(key, ("-", "-", "-"))
        tethys = "-" if ref[0] == "-" and ref[1] == "-" else f"{ref[0]} / {ref[1]}"
        lines.append(
            f"| {what[key]} | {' | '.join(cells)} | {' / '.join(counts)} | {tethys} | {ref[2]} |"
        )
    out = ["\n".join(lines), ""]
    for run in runs:
        m = run["machine"]
        out.append(
            f"- {run['db']}: {m['date']}; {m['nproc']} x {m['cpu']}, {m['ram_gb']} GB RAM; "
            f"Python {m['python']}, Django {m['django']}, {m['database']}; "
            f"{run['jobs']:,} jobs, {run['table']:,} in the table; the run took {run['seconds']:.0f} s"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"))
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per create/monitor step")
    parser.add_argument("--table", type=int, default=100_000, help="jobs in the table for reads")
    parser.add_argument("--repeat", type=int, default=15, help="repeats of the 10,000-job listing")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OFFLOAD_BENCH_POSTGRES_URL")
        or os.environ.get("OFFLOAD_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES_URL,
        help="a PostgreSQL server (any database on it) where offload_bench_<pid> can be created",
    )
    parser.add_argument(
        "--markdown", nargs="+", metavar="RESULTS_JSON", help="print a README table"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown))
        return 0
    if args.db is None:
        parser.error("--db sqlite|postgres is required")
    if args.jobs < 10 or args.table < 2 * args.jobs:
        parser.error("--jobs must be at least 10 and --table at least twice --jobs")

    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="offload-bench-"))
    pg_name = f"offload_bench_{os.getpid()}"
    created_pg = False
    try:
        if args.db == "postgres":
            create_postgres(args.postgres_url, pg_name)
            created_pg = True
            db_url = with_database(args.postgres_url, pg_name)
        else:
            db_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
        setup_django(db_url, tmp / "home")
        info = machine(args.db)
        print(
            f"offload core benchmark on {args.db}: {info['database']}; {info['nproc']} x "
            f"{info['cpu']}, {info['ram_gb']} GB, Python {info['python']}, Django {info['django']}",
            flush=True,
        )
        results = Results()
        users = make_users(USERS)
        bench_calibrate(results, users)
        bench_create(results, users, args.jobs)
        heavy_ids = fill_table(results, users, args.table, args.jobs)
        bench_read(results, users, args.table, heavy_ids, args.repeat)
        bench_status(results, users, heavy_ids)
        bench_monitor(results, users, args.jobs)
        seconds = time.perf_counter() - began
        print(f"done in {seconds:.0f} s", flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(
                json.dumps(
                    {
                        "db": args.db,
                        "jobs": args.jobs,
                        "table": args.table,
                        "seconds": seconds,
                        "machine": info,
                        "rows": [asdict(r) for r in results.rows],
                    },
                    indent=1,
                )
            )
    finally:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        if created_pg:
            drop_postgres(args.postgres_url, pg_name)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
