"""Demo data for ``offload serve --demo``: a ``demo`` user and three LOCAL jobs to watch.

The user's password is replaced by a new random one on every start, so it can be printed (a
stored password cannot be read back). The jobs are created once: one that succeeds, one that
fails and one that runs for two minutes, printing its progress.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass, field

DEMO_USER = "demo"
DEMO_APP = "demo"

SUCCEEDS = """\
import time
for step in range(1, 6):
    print(f"computing step {step} of 5", flush=True)
    time.sleep(0.5)
print("result: 42", flush=True)
"""

FAILS = """\
import sys
print("reading the input data", flush=True)
print("error: input file 'observations.csv' does not exist", file=sys.stderr, flush=True)
sys.exit(3)
"""

RUNS_A_WHILE = """\
import time
total = 60
for step in range(1, total + 1):
    print(f"simulating: step {step} of {total} ({100 * step // total}%)", flush=True)
    time.sleep(2)
print("simulation finished", flush=True)
"""

#: name, description, program
DEMO_JOBS: tuple[tuple[str, str, str], ...] = (
    ("Demo: succeeds", "prints a few lines and exits 0", SUCCEEDS),
    ("Demo: fails", "writes an error to stderr and exits with code 3", FAILS),
    ("Demo: runs for two minutes", "prints its progress every two seconds", RUNS_A_WHILE),
)


@dataclass
class DemoInfo:
    username: str
    password: str
    created_jobs: list[int] = field(default_factory=list)


def ensure_demo_user() -> tuple[object, str]:
    """The ``demo`` user (created if missing) with a freshly generated password."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    lookup = {user_model.USERNAME_FIELD: DEMO_USER}
    user = user_model._default_manager.filter(**lookup).first() or user_model(**lookup)
    password = secrets.token_urlsafe(9)
    user.set_password(password)
    user.is_active = True
    user.save()
    return user, password


def ensure_demo_jobs(user: object) -> list[int]:
    """Create and execute the demo jobs unless the demo user already has jobs in the demo app."""
    from offload.manager import JobManager
    from offload.models import EventSource

    manager = JobManager(DEMO_APP)
    if manager.list_jobs(user=user).exists():
        return []
    created: list[int] = []
    for name, description, program in DEMO_JOBS:
        job = manager.create_job(
            name,
            user,
            job_type="LOCAL",
            description=description,
            executable=sys.executable,
            arguments=["-u", "-c", program],
        )
        job.execute(source=EventSource.APP)
        created.append(job.id)
    return created


def setup_demo() -> DemoInfo:
    user, password = ensure_demo_user()
    return DemoInfo(DEMO_USER, password, ensure_demo_jobs(user))
