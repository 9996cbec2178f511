"""Benchmarks of offload's web part: the jobs page for users with 100 / 10,000 / 100,000 jobs, and
how long a status change takes to reach a row in a real browser.

    python benchmarks/bench_web.py [--db sqlite|postgres] [--sizes 100,10000,100000] [--json FILE]
                                   [--no-browser] [--changes 30]

1. **First page**: the portal's settings (``offload.portal.settings``) on a throwaway database
   (a temporary SQLite file, or a fresh PostgreSQL database ``offload_bench_web_<pid>``), three
   users with 100, 10,000 and 100,000 BASIC jobs (one table, 110,100 jobs; 2 % of them Running, 1 %
   Various with 8 tasks each for the progress bars), and Django's test client signed in as each:
   the time for ``GET /jobs/`` to return the rendered page (median and p95 of 30 calls after 3
   warm-ups), its size and its queries; also with a status filter, a sort by name, a text search
   and page 100.
2. **Event → row latency**: the portal served by uvicorn (ASGI, as ``offload serve`` does) on the
   same database, headless Chromium (``/usr/bin/chromium``) signed in on the jobs page of the user
   with 10,000 jobs. For each of ``--changes`` jobs on that page the benchmark changes the status
   through ``offload.store`` (what a monitor does), stamping the wall-clock time just before the
   write; a ``MutationObserver`` in the page stamps the time the row's badge changes. Latency is
   the difference (same machine, same clock).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PASSWORD = "bench-Pass-word-17"
TASKS = {str(i): {"status": "COM" if i < 5 else "RUN"} for i in range(8)}


@dataclass
class Row:
    key: str
    what: str
    jobs: int
    median_ms: float
    p95_ms: float
    #: CPU time of this process per call (median): what the machine's other load does not inflate.
    cpu_ms: float = 0.0
    queries: int = 0
    kib: float = 0.0
    n: int = 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def setup(db_url: str, home: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "offload.portal.settings"
    os.environ["OFFLOAD_DATABASE_URL"] = db_url
    os.environ["OFFLOAD_HOME"] = str(home)
    os.environ.setdefault("OFFLOAD_SECRET_KEY", "offload-benchmark-not-secret")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def fill(sizes: list[int]) -> dict[int, Any]:
    """One user per size, each with that many BASIC jobs (some Running, some Various)."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from offload import JobManager
    from offload.models import Job

    manager = JobManager("bench_web")
    users: dict[int, Any] = {}
    for size in sizes:
        user = get_user_model().objects.create_user(f"user{size}", password=PASSWORD)
        users[size] = user
        made = 0
        started = time.perf_counter()
        while made < size:
            batch = min(10_000, size - made)
            jobs = [manager.create_job(f"job {{id}} of {size}", user) for _ in range(batch)]
            created = manager.bulk_create(jobs)
            ids = [job.pk for job in created]
            running = ids[::50]
            various = ids[1::100]
            Job.objects.filter(pk__in=running).update(_status="RUN", attempt=1)
            Job.objects.filter(pk__in=various).update(
                _status="VAR", attempt=1, engine_state={"tasks": TASKS}
            )
            made += batch
        print(f"  user{size}: {size:,} jobs in {time.perf_counter() - started:.1f} s", flush=True)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return users


def bench_pages(users: dict[int, Any], repeat: int) -> list[Row]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    rows: list[Row] = []
    variants = [
        ("first", "GET /jobs/ (first page of 50, newest first)", ""),
        ("status", "GET /jobs/?status=Running", "?status=Running"),
        ("sort", "GET /jobs/?sort=name", "?sort=name"),
        ("search", "GET /jobs/?q=job 12", "?q=job+12"),
        ("search_broad", "GET /jobs/?q=job (matches every job)", "?q=job"),
        ("type", "GET /jobs/?type=LOCAL (matches none)", "?type=LOCAL"),
        ("deep", "GET /jobs/?page=100", "?page=100"),
    ]
    for size, user in users.items():
        client = Client()
        client.force_login(user)
        for key, what, query in variants:
            url = "/jobs/" + query
            for _ in range(3):
                assert client.get(url).status_code == 200
            times = []
            cpu = []
            size_bytes = 0
            for _ in range(repeat):
                began, began_cpu = time.perf_counter(), time.process_time()
                response = client.get(url)
                times.append((time.perf_counter() - began) * 1000)
                cpu.append((time.process_time() - began_cpu) * 1000)
                size_bytes = len(response.content)
            with CaptureQueriesContext(connection) as ctx:
                client.get(url)
            queries = sum(1 for q in ctx.captured_queries if not _is_tx(q["sql"]))
            row = Row(
                key=f"{key}_{size}",
                what=what,
                jobs=size,
                median_ms=statistics.median(times),
                p95_ms=percentile(times, 0.95),
                cpu_ms=statistics.median(cpu),
                queries=queries,
                kib=size_bytes / 1024,
                n=repeat,
            )
            rows.append(row)
            print(
                f"  {size:>7,} jobs  {what:<48} {row.median_ms:7.1f} ms (p95 {row.p95_ms:6.1f}, "
                f"CPU {row.cpu_ms:6.1f})"
                f"  {row.queries} queries  {row.kib:5.0f} KiB",
                flush=True,
            )
    return rows


def _is_tx(sql: str) -> bool:
    return sql.split(None, 1)[0].upper() in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")


# -- the browser ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_portal(port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "offload.portal.asgi:application"),
                *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
            ],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the portal exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=2):
                return proc
        except urllib.error.HTTPError:
            return proc
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the portal did not answer:\n{log.read_text()}")


OBSERVER = """
() => {
  window.__seen = {};
  const table = document.querySelector("table.jobs");
  new MutationObserver((records) => {
    const now = performance.timeOrigin + performance.now();
    for (const record of records) {
      const node = record.target.nodeType === 1 ? record.target : record.target.parentElement;
      const badge = node && node.closest("[data-status]");
      const row = badge && badge.closest("tr[data-job]");
      if (row && badge.textContent === "Running" && !(row.dataset.job in window.__seen)) {
        window.__seen[row.dataset.job] = now;
      }
    }
  }).observe(table, {subtree: true, childList: true, characterData: true});
}
"""


def bench_browser(user: Any, size: int, changes: int, tmp: Path) -> list[Row]:
    from playwright.sync_api import sync_playwright

    from offload import JobManager
    from offload.models import Job

    manager = JobManager("bench_web")
    targets = []
    for index in range(changes):
        job = manager.create_job(f"latency {index}", user)
        job.save()
        job.execute()
        targets.append(job)
    port = free_port()
    proc = start_portal(port, tmp / "portal.log")
    url = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    # Playwright's sync API runs an event loop in this thread; the ORM calls below are plain
    # blocking calls between its steps, which Django otherwise refuses in a thread with a loop.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"{url}/accounts/login/?next=/jobs/")
            page.get_by_label("Username").fill(user.username)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{url}/jobs/")
            page.wait_for_function(
                "document.getElementById('live-state').textContent.includes('live')"
            )
            page.evaluate(OBSERVER)
            for job in targets:
                fresh = Job.objects.get(pk=job.pk)
                # A random pause, so that changes land at random points of the stream's 0.5 s
                # polling cycle (a fixed one would lock onto its phase).
                time.sleep(random.uniform(0.05, 0.65))
                stamp = time.time() * 1000
                fresh.update_status("Running")
                page.wait_for_function(f"window.__seen['{job.pk}'] !== undefined", timeout=10_000)
                seen = page.evaluate(f"window.__seen['{job.pk}']")
                latencies.append(seen - stamp)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    row = Row(
        key="latency",
        what="status change in the database → row updated in Chromium",
        jobs=size,
        median_ms=statistics.median(latencies),
        p95_ms=percentile(latencies, 0.95),
        n=len(latencies),
    )
    print(
        f"  event → row: median {row.median_ms:.0f} ms, p95 {row.p95_ms:.0f} ms, "
        f"max {max(latencies):.0f} ms over {len(latencies)} changes",
        flush=True,
    )
    row.queries = 0
    return [row]


def machine(db: str) -> dict[str, Any]:
    import django
    from django.db import connection

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("select sqlite_version()")
            database = f"SQLite {cursor.fetchone()[0]}"
        else:
            cursor.execute("show server_version")
            database = f"PostgreSQL {cursor.fetchone()[0]}"
    return {
        "db": db,
        "database": database,
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--sizes", default="100,10000,100000")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--json")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("OFFLOAD_BENCH_POSTGRES_URL")
        or os.environ.get("OFFLOAD_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES_URL,
    )
    args = parser.parse_args(argv)
    sizes = [int(part) for part in args.sizes.split(",") if part.strip()]
    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="offload-bench-web-"))
    pg_name = f"offload_bench_web_{os.getpid()}"
    created_pg = False
    try:
        if args.db == "postgres":
            sys.path.insert(0, str(Path(__file__).parent))
            from bench_core import create_postgres

            create_postgres(args.postgres_url, pg_name)
            created_pg = True
            db_url = with_database(args.postgres_url, pg_name)
        else:
            db_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
        (tmp / "home").mkdir()
        setup(db_url, tmp / "home")
        info = machine(args.db)
        print(f"offload web benchmark on {info['database']}", flush=True)
        users = fill(sizes)
        rows = bench_pages(users, args.repeat)
        if not args.no_browser:
            if not CHROMIUM.exists():
                print(f"  {CHROMIUM} is missing: no browser latency", flush=True)
            else:
                middle = sorted(sizes)[len(sizes) // 2]
                rows += bench_browser(users[middle], middle, args.changes, tmp)
        seconds = time.perf_counter() - began
        print(f"done in {seconds:.0f} s", flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(
                json.dumps(
                    {"machine": info, "seconds": seconds, "rows": [asdict(r) for r in rows]},
                    indent=2,
                )
            )
    finally:
        from django.db import connections

        connections.close_all()
        if created_pg:
            from bench_core import drop_postgres

            drop_postgres(args.postgres_url, pg_name)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
