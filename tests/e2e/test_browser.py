"""The portal in a real browser: the ready-made portal runs as a subprocess (uvicorn, SQLite in a
temporary home), a real headless Chromium signs in, sees a job in the list and opens its page.

Skipped when ``/usr/bin/chromium`` is missing, except where engines are required (``CI=true`` or
``OFFLOAD_REQUIRE_ENGINES=1``): there a missing browser fails the test. Screenshots are written to
``$OFFLOAD_E2E_SCREENSHOTS`` if set, else to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]

#: Run in the portal's environment: a user, a LOCAL job run to the end by a monitor, a BASIC job.
SETUP = """
import json, os, sys
from django.contrib.auth import get_user_model
from offload import JobManager
from offload.monitor import Monitor

user = get_user_model().objects.create_user(os.environ["E2E_USER"], password=os.environ["E2E_PASSWORD"])
manager = JobManager("e2e_app")
local = manager.create_job(
    "e2e local {id}", user, job_type="LOCAL", executable=sys.executable,
    arguments=["-c", "import sys; print('hello from the e2e job <ok>'); print('a note', file=sys.stderr)"],
    description="a short local job run by the monitor",
)
local.execute()
code = Monitor(name="e2e-setup").run(until_idle=True, timeout=60)
basic = manager.create_job("e2e basic {id}", user, job_type="BASIC")
basic.execute()
basic.update_status("Running", message="halfway there")
print(json.dumps({"monitor": code, "local": local.pk, "basic": basic.pk}))
"""


def engines_required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("OFFLOAD_REQUIRE_ENGINES") == "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Portal:
    url: str
    username: str
    password: str
    jobs: dict[str, int]
    log: Path
    env: dict[str, str]


def _run(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args[:4])}… failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the server answers HTTP at all (what it answers is the test's business)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the portal exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the portal did not answer at {url}:\n{log.read_text()}")


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[Portal]:
    """The ready-made portal, migrated, with a user and two jobs, served by uvicorn."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium"
        if engines_required():
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OFFLOAD_", "DJANGO_")) or key == "OFFLOAD_REQUIRE_ENGINES"
    }
    env.update(
        DJANGO_SETTINGS_MODULE="offload.portal.settings",
        OFFLOAD_HOME=str(home),
        OFFLOAD_DATABASE_URL=f"sqlite:///{home / 'portal.sqlite3'}",
        OFFLOAD_POLL_INTERVAL="0.2",
        OFFLOAD_IDLE_INTERVAL="0.1",
        E2E_USER="erin",
        E2E_PASSWORD="e2e-Pass-word-17",
        PYTHONUNBUFFERED="1",
    )
    _run([sys.executable, "-m", "django", "migrate", "--no-input", "-v", "0"], env)
    out = _run([sys.executable, "-m", "django", "shell", "-c", SETUP], env)
    jobs = json.loads(out.strip().splitlines()[-1])
    assert jobs.pop("monitor") == 0, "the setup monitor did not finish the local job in time"

    port = free_port()
    log = tmp_path / "portal.log"
    with open(log, "wb") as out_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "offload.portal.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            cwd=ROOT,
            stdout=out_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{url}/update-job-status/0/", proc, log)
        yield Portal(url, env["E2E_USER"], env["E2E_PASSWORD"], jobs, log, env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def test_sign_in_see_jobs_and_open_one(portal: Portal, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("OFFLOAD_E2E_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    local_id, basic_id = portal.jobs["local"], portal.jobs["basic"]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            # Signed out, the jobs page sends us to the login form, which brings us back.
            page.goto(f"{portal.url}/jobs/")
            expect(page).to_have_url(f"{portal.url}/accounts/login/?next=/jobs/")
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            page.get_by_label("Username").fill(portal.username)
            page.get_by_label("Password").fill("not the password")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_be_visible()
            page.screenshot(path=str(shots / "login.png"), full_page=True)
            page.get_by_label("Password").fill(portal.password)
            page.get_by_role("button", name="Sign in").click()
            expect(page).to_have_url(f"{portal.url}/jobs/")

            # The list: both jobs, newest first, with their statuses.
            expect(page.get_by_role("heading", name="My jobs")).to_be_visible()
            rows = page.locator("table.jobs tbody tr")
            expect(rows).to_have_count(2)
            expect(rows.nth(0)).to_have_id(f"job-{basic_id}")
            local_row = page.locator(f"#job-{local_id}")
            expect(local_row).to_contain_text(f"e2e local {local_id}")
            expect(local_row).to_contain_text("Complete")
            expect(local_row).to_contain_text("e2e_app")
            expect(page.locator(f"#job-{basic_id}")).to_contain_text("Running")
            page.screenshot(path=str(shots / "jobs.png"), full_page=True)

            # The job's page: fields, history and its logs (escaped).
            local_row.get_by_role("link", name=f"e2e local {local_id}").click()
            expect(page).to_have_url(f"{portal.url}/jobs/{local_id}/")
            expect(page.get_by_role("heading", level=1)).to_contain_text(f"Job {local_id}")
            expect(page.locator("table.events")).to_contain_text("Running → Complete")
            expect(page.locator("pre.log").first).to_contain_text("hello from the e2e job <ok>")
            expect(page.locator("pre.log").nth(1)).to_contain_text("a note")
            expect(page.get_by_role("button", name="Resubmit")).to_be_visible()
            expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
            page.screenshot(path=str(shots / "job_detail.png"), full_page=True)

            # Cancel the running BASIC job from its page.
            page.goto(f"{portal.url}/jobs/{basic_id}/")
            page.get_by_role("button", name="Cancel").click()
            expect(page.get_by_role("status")).to_contain_text(f"Job {basic_id} cancelled.")
            expect(page.get_by_role("heading", level=1)).to_contain_text("Aborted")
            page.screenshot(path=str(shots / "job_cancelled.png"), full_page=True)

            # The status endpoint answers at the site root, without signing in.
            response = page.request.get(f"{portal.url}/update-job-status/{local_id}/")
            assert response.status == 200
            assert response.json() == {"success": True}
            assert errors == []
        finally:
            browser.close()
    assert "Traceback" not in portal.log.read_text()


#: A LOCAL job of erin's that runs for a few seconds (not yet executed), and a job of mallory's.
LIVE_SETUP = """
import json, sys
from django.contrib.auth import get_user_model
from offload import JobManager

users = get_user_model().objects
erin = users.get(username="erin")
mallory = users.create_user("mallory", password="mallory-Pass-17")
manager = JobManager("e2e_app")
live = manager.create_job(
    "e2e live {id}", erin, job_type="LOCAL", executable=sys.executable,
    arguments=["-c", "import time; print('working', flush=True); time.sleep(3); print('done')"],
)
live.save()
secret = manager.create_job("mallory secret {id}", mallory, job_type="BASIC")
secret.save()
print(json.dumps({"live": live.pk, "secret": secret.pk}))
"""

MONITOR = "from offload.monitor import Monitor; Monitor(name='e2e-live').run(timeout=120)"


def _sign_in(page: Any, portal: Portal) -> None:
    page.goto(f"{portal.url}/accounts/login/?next=/jobs/")
    page.get_by_label("Username").fill(portal.username)
    page.get_by_label("Password").fill(portal.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{portal.url}/jobs/")


def test_live_status_updates_and_other_users_jobs_are_invisible(
    portal: Portal, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("OFFLOAD_E2E_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    out = _run([sys.executable, "-m", "django", "shell", "-c", LIVE_SETUP], portal.env)
    ids = json.loads(out.strip().splitlines()[-1])
    live_id, secret_id = ids["live"], ids["secret"]
    monitor_log = tmp_path / "monitor.log"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        monitor: subprocess.Popen[bytes] | None = None
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            _sign_in(page, portal)

            # Mallory's job is nowhere: not in the list, its page and its API are 404s.
            expect(page.locator(f"#job-{secret_id}")).to_have_count(0)
            expect(page.locator("table.jobs")).not_to_contain_text("mallory secret")
            assert page.request.get(f"{portal.url}/jobs/{secret_id}/").status == 404
            assert page.request.get(f"{portal.url}/jobs/api/jobs/{secret_id}").status == 404

            row = page.locator(f"#job-{live_id}")
            expect(row).to_contain_text("Pending")
            expect(page.locator("#live-state")).to_contain_text("live")
            # Only what the status allows is shown: Run and Delete while Pending.
            expect(row.get_by_role("button", name="Run")).to_be_visible()
            expect(row.get_by_role("button", name="Terminate")).to_be_hidden()
            page.evaluate("window.__notReloaded = true")

            # Execute it through the API (session + CSRF) and start a monitor: the row follows.
            csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
            response = page.request.post(
                f"{portal.url}/jobs/api/jobs/{live_id}/execute", headers={"X-CSRFToken": csrf}
            )
            assert response.status == 200, response.text()
            with open(monitor_log, "wb") as log_file:
                monitor = subprocess.Popen(
                    [sys.executable, "-m", "django", "shell", "-c", MONITOR],
                    env=portal.env,
                    cwd=ROOT,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            expect(row.locator("[data-status]")).to_have_text("Running", timeout=30_000)
            # The stream also switches the actions: no Run any more, Terminate instead.
            expect(row.get_by_role("button", name="Run")).to_be_hidden()
            expect(row.get_by_role("button", name="Terminate")).to_be_visible()
            page.screenshot(path=str(shots / "jobs_live_running.png"), full_page=True)
            expect(row.locator("[data-status]")).to_have_text("Complete", timeout=30_000)
            expect(row.locator("[data-status]")).to_have_class("badge badge-complete")
            expect(row.get_by_role("button", name="Resubmit")).to_be_visible()
            expect(row.get_by_role("button", name="Terminate")).to_be_hidden()
            assert page.evaluate("window.__notReloaded") is True  # no reload happened
            page.screenshot(path=str(shots / "jobs_live_complete.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
            if monitor is not None:
                monitor.terminate()
                try:
                    monitor.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    monitor.kill()
                    monitor.wait(timeout=15)
    assert "Traceback" not in portal.log.read_text()


def test_terminate_from_the_table_asks_first(portal: Portal, tmp_path: Path) -> None:
    """The jobs table's Terminate asks for confirmation; dismissed, nothing happens; accepted,
    the job is stopped and the user is back on the table."""
    from playwright.sync_api import expect, sync_playwright

    basic_id = portal.jobs["basic"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            _sign_in(page, portal)
            row = page.locator(f"#job-{basic_id}")
            expect(row.locator("[data-status]")).to_have_text("Running")
            asked: list[str] = []

            def dismiss(dialog: Any) -> None:
                asked.append(dialog.message)
                dialog.dismiss()

            page.once("dialog", dismiss)
            row.get_by_role("button", name="Terminate").click()
            page.wait_for_timeout(300)
            assert asked == [f"Terminate job {basic_id} (e2e basic {basic_id})?"]
            expect(page).to_have_url(f"{portal.url}/jobs/")
            expect(row.locator("[data-status]")).to_have_text("Running")

            page.once("dialog", lambda dialog: dialog.accept())
            row.get_by_role("button", name="Terminate").click()
            expect(page.get_by_role("status").filter(has_text="cancelled")).to_contain_text(
                f"Job {basic_id} cancelled."
            )
            expect(page).to_have_url(f"{portal.url}/jobs/")
            expect(page.locator(f"#job-{basic_id} [data-status]")).to_have_text("Aborted")
            expect(
                page.locator(f"#job-{basic_id}").get_by_role("button", name="Delete")
            ).to_be_visible()
            assert errors == []
        finally:
            browser.close()


#: A LOCAL job of erin's that prints a line every 0.7 s and writes a result file, executed now.
TAIL_SETUP = """
import json, sys
from django.contrib.auth import get_user_model
from offload import JobManager

erin = get_user_model().objects.get(username="erin")
script = '''
import time
for i in range(6):
    print(f"step {i} of 6", flush=True)
    time.sleep(0.7)
with open("result.csv", "w") as out:
    out.write("step,value\\\\n" + "".join(f"{i},{i * i}\\\\n" for i in range(6)))
print("all done", flush=True)
'''
job = JobManager("e2e_app").create_job(
    "e2e tail {id}", erin, job_type="LOCAL", executable=sys.executable, arguments=["-c", script]
)
job.execute()
print(json.dumps({"tail": job.pk}))
"""


def test_live_log_tail_and_result_download(portal: Portal, tmp_path: Path) -> None:
    """A running local job's page shows its log lines as they are printed, without a reload, stops
    following when the job completes, then lists its result file, which downloads."""
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("OFFLOAD_E2E_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    out = _run([sys.executable, "-m", "django", "shell", "-c", TAIL_SETUP], portal.env)
    job_id = json.loads(out.strip().splitlines()[-1])["tail"]
    monitor_log = tmp_path / "monitor.log"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        monitor: subprocess.Popen[bytes] | None = None
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            _sign_in(page, portal)
            with open(monitor_log, "wb") as log_file:
                monitor = subprocess.Popen(
                    [sys.executable, "-m", "django", "shell", "-c", MONITOR],
                    env=portal.env,
                    cwd=ROOT,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            # Open the page while the job runs: it follows the log.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                page.goto(f"{portal.url}/jobs/{job_id}/")
                if page.locator("#logs-box[data-follow='1']").count():
                    break
                page.wait_for_timeout(200)
            expect(page.locator("#logs-box")).to_have_attribute("data-follow", "1")
            page.evaluate("window.__notReloaded = true")
            stdout = page.locator('section[data-log="stdout"] pre')
            expect(stdout).to_contain_text("step 2 of 6", timeout=20_000)
            first_seen = stdout.inner_text()
            expect(stdout).to_contain_text("step 5 of 6", timeout=20_000)
            assert "step 5 of 6" not in first_seen  # it grew on screen
            page.screenshot(path=str(shots / "job_log_tail.png"), full_page=True)
            expect(stdout).to_contain_text("all done", timeout=20_000)
            expect(page.locator("#log-state")).to_contain_text("Complete", timeout=20_000)
            expect(page.locator("h1 [data-job-status]")).to_have_text("Complete")
            text = stdout.inner_text()
            assert text.count("step 0 of 6") == 1 and text.count("all done") == 1  # no repeats
            assert page.evaluate("window.__notReloaded") is True

            # The result file is listed after a reload, and downloads.
            page.reload()
            link = page.get_by_role("link", name="result.csv")
            expect(link).to_be_visible()
            with page.expect_download() as info:
                link.click()
            download = info.value
            assert download.suggested_filename == "result.csv"
            saved = tmp_path / "result.csv"
            download.save_as(saved)
            assert saved.read_text() == "step,value\n" + "".join(f"{i},{i * i}\n" for i in range(6))
            ranged = page.request.get(
                f"{portal.url}/jobs/{job_id}/files/result.csv", headers={"Range": "bytes=0-9"}
            )
            assert ranged.status == 206 and ranged.body() == b"step,value"
            page.screenshot(path=str(shots / "job_files.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
            if monitor is not None:
                monitor.terminate()
                try:
                    monitor.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    monitor.kill()
                    monitor.wait(timeout=15)
    assert "Traceback" not in portal.log.read_text()
