"""The ready-made portal's database options, read in a fresh interpreter (the settings module
builds them from the environment at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHOW = (
    "import json, offload.portal.settings as s; "
    "print(json.dumps(s.DATABASES['default'].get('OPTIONS', {})))"
)


def portal_options(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SHOW],
        env={
            **os.environ,
            "OFFLOAD_HOME": str(tmp_path),
            "OFFLOAD_DATABASE_URL": "postgresql://someone@db.invalid:5432/offload",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("value", "expected"), [(None, 5), ("10", 10), ("0", 0), ("off", None), ("none", None)]
)
def test_postgres_prepare_threshold_comes_from_the_environment(
    tmp_path: Path, value: str | None, expected: int | None
) -> None:
    env = {} if value is None else {"OFFLOAD_DB_PREPARE_THRESHOLD": value}
    result = portal_options(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"prepare_threshold": expected}


@pytest.mark.parametrize("value", ["five", "-1"])
def test_a_bad_prepare_threshold_names_the_variable(tmp_path: Path, value: str) -> None:
    result = portal_options(tmp_path, OFFLOAD_DB_PREPARE_THRESHOLD=value)
    assert result.returncode != 0
    assert "OFFLOAD_DB_PREPARE_THRESHOLD" in result.stderr


def test_sqlite_has_no_prepare_threshold(tmp_path: Path) -> None:
    result = portal_options(tmp_path, OFFLOAD_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    assert result.returncode == 0, result.stderr
    assert "prepare_threshold" not in json.loads(result.stdout)
