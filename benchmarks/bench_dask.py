"""Benchmark of the Dask engine: 1,000 tiny DaskJobs end to end, the status calls they cost, the
latency of pushed status (the scheduler plugin), beside Dask's own per-task overhead.

    python benchmarks/bench_dask.py [--db sqlite|postgres] [--jobs 1000] [--push-jobs 20] [--json FILE]

The Dask cluster is ``OFFLOAD_ENGINE_DASK`` when it is set, else one started with scripts/start-dask
in a temporary folder (and stopped at the end). Django is set up as in bench_core.py (a throwaway
SQLite file, or a fresh PostgreSQL database), plus the portal's URLs served by Django's threaded
WSGI server on a free loopback port, for the plugin to push to.

1. Dask alone: ``client.submit`` of N tiny tasks one by one, then ``client.map`` of N (one
   graph), each followed by ``client.gather`` (tasks/s).
2. offload: N DaskJobs made with ``JobManager.bulk_create`` and ``execute()``d in one transaction,
   then a monitor until every job is Complete (result gathered and stored in its workspace):
   jobs/s from the first ``execute()`` to the last Complete recorded, the monitor's share, its
   cycles and its status calls (one ``run_on_scheduler`` per poll of the scheduler).
3. Push latency, with :class:`offload.engines.dask_plugin.OffloadPlugin` registered on the
   scheduler and a poll interval of 30 s (so nothing is learnt by polling): for jobs whose task
   sleeps 0.3 s, the time from the task starting to Running in the database (pushed), and from
   the task ending to Complete in the database (pushed "memory", then the monitor's poll it asks
   for, the gathering and storing of the result).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core  # the Django setup and machine description of the core benchmark

ROOT = Path(__file__).resolve().parents[1]


def add(a: int, b: int) -> int:
    return a + b


def stamped(seconds: float) -> tuple[float, float]:
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


# -- set-up -----------------------------------------------------------------------------------------
def setup_django(db_url: str, home: Path, poll_interval: float) -> None:
    import django
    from django.conf import settings
    from django.core.management import call_command
    from django.urls import include, path

    urlconf = types.ModuleType("bench_dask_urls")  # its urlpatterns once the apps are loaded
    sys.modules[urlconf.__name__] = urlconf
    settings.configure(
        DEBUG=False,
        SECRET_KEY="offload-benchmark-not-secret",
        ALLOWED_HOSTS=["127.0.0.1"],
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "offload",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        ROOT_URLCONF=urlconf.__name__,
        DATABASES={"default": bench_core.database_settings(db_url)},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
        TIME_ZONE="UTC",
        OFFLOAD={"HOME": str(home), "POLL_INTERVAL": poll_interval, "IDLE_INTERVAL": 0.05},
    )
    django.setup()
    urlconf.urlpatterns = [path("jobs/", include("offload.urls"))]  # type: ignore[attr-defined]
    call_command("migrate", verbosity=0, interactive=False)


def set_poll_interval(seconds: float) -> None:
    from django.conf import settings

    settings.OFFLOAD = {**settings.OFFLOAD, "POLL_INTERVAL": seconds}


def start_portal() -> tuple[str, Any]:
    """The portal's URLs on a free loopback port (Django's threaded WSGI server)."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadedWSGIServer(("127.0.0.1", 0), Quiet, allow_reuse_address=False)
    server.set_app(WSGIHandler())
    threading.Thread(target=server.serve_forever, name="portal", daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def dask_address(folder: Path) -> tuple[str, bool]:
    """The cluster's address, and whether this run started it."""
    configured = os.environ.get("OFFLOAD_ENGINE_DASK")
    if configured:
        return str(json.loads(configured)["address"]), False
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "start-dask")],
        env={**os.environ, "OFFLOAD_DASK_DIR": str(folder)},
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )
    line = next(x for x in result.stdout.splitlines() if "OFFLOAD_ENGINE_DASK=" in x)
    value = line.split("=", 1)[1].strip("'")
    os.environ["OFFLOAD_ENGINE_DASK"] = value
    return str(json.loads(value)["address"]), True


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max": ordered[-1],
    }


# -- the measurements -------------------------------------------------------------------------------
def bench_dask_alone(address: str, count: int) -> dict[str, Any]:
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        client.gather(client.map(add, range(50), [1] * 50, pure=False))  # warm
        began = time.perf_counter()
        futures = [client.submit(add, i, 1, pure=False) for i in range(count)]
        results = client.gather(futures)
        seconds = time.perf_counter() - began
        assert results == [i + 1 for i in range(count)]
        began = time.perf_counter()
        mapped = client.gather(client.map(add, range(count), [2] * count, pure=False))
        map_seconds = time.perf_counter() - began
        assert mapped == [i + 2 for i in range(count)]
    return {
        "tasks": count,
        "seconds": seconds,
        "tasks_per_s": count / seconds,
        "map_seconds": map_seconds,
        "map_tasks_per_s": count / map_seconds,
    }


def bench_end_to_end(user: Any, count: int) -> dict[str, Any]:
    from django.db import transaction

    from offload import JobManager
    from offload.engines.dask import DaskEngine
    from offload.models import Job
    from offload.monitor import Monitor

    set_poll_interval(0.2)
    manager = JobManager("bench_dask")
    jobs = manager.bulk_create(
        manager.create_job(f"tiny {i}", user, job_type="DASK") for i in range(count)
    )
    began = time.perf_counter()
    with transaction.atomic():
        for i, job in enumerate(jobs):
            job.execute(add, i, 1)
    executed = time.perf_counter() - began
    monitor = Monitor("bench-dask")
    cycles = {"cycles": 0, "polls": 0}
    engines: dict[str, Any] = {}

    def counted(stats: Any) -> None:
        cycles["cycles"] += 1
        cycles["polls"] += stats.polled_groups
        engines.update(monitor.engines)

    monitor_began = time.perf_counter()
    code = monitor.run(until_idle=True, timeout=600, on_cycle=counted)
    monitor_seconds = time.perf_counter() - monitor_began
    total = time.perf_counter() - began
    done = Job.objects.filter(label="bench_dask", _status="COM").count()
    assert code == 0 and done == count, (code, done)
    engine = next(e for e in engines.values() if isinstance(e, DaskEngine))
    return {
        "jobs": count,
        "execute_seconds": executed,
        "monitor_seconds": monitor_seconds,
        "seconds": total,
        "jobs_per_s": count / total,
        "monitor_jobs_per_s": count / monitor_seconds,
        "cycles": cycles["cycles"],
        "polls": cycles["polls"],
        "status_calls": engine.status_calls,
    }


def bench_push(user: Any, address: str, portal: str, count: int) -> dict[str, Any]:
    from distributed import Client

    from offload import JobManager
    from offload.engines import dask_plugin
    from offload.models import Job
    from offload.monitor import Monitor
    from offload.web.access import create_api_token

    set_poll_interval(30.0)
    token = create_api_token(user, "bench")[1]
    client = Client(address, set_as_default=False)
    dask_plugin.register(client, f"{portal}/jobs/api/push", token, interval=0.05)
    monitor = Monitor("bench-dask-push")
    thread = threading.Thread(
        target=monitor.run, kwargs={"until_idle": False, "timeout": 600}, daemon=True
    )
    thread.start()
    manager = JobManager("bench_dask_push")
    jobs = []
    try:
        for i in range(count):
            job = manager.create_job(f"push {i}", user, job_type="DASK")
            job.execute(stamped, 0.3)
            jobs.append(job)
            time.sleep(0.5)
        deadline = time.monotonic() + 120
        while Job.objects.filter(pk__in=[j.pk for j in jobs], _status="COM").count() < count:
            assert time.monotonic() < deadline, "the pushed jobs did not complete"
            time.sleep(0.1)
    finally:
        monitor.stopping.set()
        thread.join(timeout=30)
        client.unregister_scheduler_plugin(dask_plugin.OffloadPlugin.name)
        client.close()
    running: list[float] = []
    complete: list[float] = []
    sources: dict[str, int] = {}
    for job in jobs:
        fresh = Job.objects.get(pk=job.pk)
        started, ended = fresh.result
        events = {e.to_status: e for e in fresh.events}
        sources[events["RUN"].source] = sources.get(events["RUN"].source, 0) + 1
        running.append(events["RUN"].time.timestamp() - started)
        complete.append(events["COM"].time.timestamp() - ended)
    return {
        "jobs": count,
        "running_sources": sources,
        "start_to_running_s": summary(running),
        "end_to_complete_s": summary(complete),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--push-jobs", type=int, default=20)
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OFFLOAD_BENCH_POSTGRES_URL")
        or os.environ.get("OFFLOAD_TEST_POSTGRES_URL")
        or bench_core.DEFAULT_POSTGRES_URL,
    )
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="offload-bench-dask-"))
    pg_name = f"offload_bench_dask_{os.getpid()}"
    started_dask = False
    created_pg = False
    try:
        address, started_dask = dask_address(tmp / "dask")
        if args.db == "postgres":
            bench_core.create_postgres(args.postgres_url, pg_name)
            created_pg = True
            db_url = bench_core.with_database(args.postgres_url, pg_name)
        else:
            db_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
        setup_django(db_url, tmp / "home", poll_interval=0.2)
        from django.contrib.auth import get_user_model

        info = bench_core.machine(args.db)
        print(f"offload Dask benchmark on {args.db}: {info['database']}; Dask at {address}")
        user = get_user_model().objects.create_user("bench")
        portal, server = start_portal()
        results = {
            "db": args.db,
            "machine": info,
            "load_average_before": os.getloadavg(),
            "dask_alone": bench_dask_alone(address, args.jobs),
            "end_to_end": bench_end_to_end(user, args.jobs),
            "push": bench_push(user, address, portal, args.push_jobs),
        }
        results["load_average_after"] = os.getloadavg()
        server.shutdown()
        print(json.dumps(results, indent=2, default=str))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    finally:
        if started_dask:
            subprocess.run(
                ["bash", str(ROOT / "scripts" / "stop-dask")],
                env={**os.environ, "OFFLOAD_DASK_DIR": str(tmp / "dask")},
                capture_output=True,
                check=False,
                timeout=60,
            )
        if created_pg:
            from django.db import connections

            connections.close_all()
            bench_core.drop_postgres(args.postgres_url, pg_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
