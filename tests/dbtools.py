"""Fresh, migrated databases for tests that run offload in subprocesses against a committed database.

A template is migrated once per session (``python -m django migrate`` with the portal's settings),
then each test gets its own copy: ``CREATE DATABASE … TEMPLATE`` on PostgreSQL, a file copy on SQLite.
``portal_environment`` gives the environment a subprocess (``offload monitor``, ``offload serve`` …)
needs to use such a database.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
START_POSTGRES_HINT = 'start one with: eval "$(scripts/start-postgres)"'


def database_kind() -> str:
    """``OFFLOAD_TEST_DB``: ``sqlite`` (default) or ``postgres``."""
    return os.environ.get("OFFLOAD_TEST_DB", "sqlite")


def engines_required() -> bool:
    """True in CI: a test whose engine is missing must fail, not skip."""
    return os.environ.get("OFFLOAD_REQUIRE_ENGINES") == "1" or os.environ.get("CI") == "true"


def postgres_server_url() -> str:
    """The server the tests use: ``$OFFLOAD_TEST_POSTGRES_URL``, as printed by scripts/start-postgres."""
    return os.environ.get("OFFLOAD_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


@functools.cache
def postgres_unreachable_reason(url: str) -> str | None:
    """Why a login to ``url`` fails, or None when it works. Asked once per URL and process."""
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at {url} is unreachable ({detail}); {START_POSTGRES_HINT}"
    return None


def with_database_name(url: str, name: str) -> str:
    """``url`` with its database (the path) replaced by ``name``."""
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def portal_environment(database_url: str, home: Path) -> dict[str, str]:
    """The environment for an offload process on ``database_url`` with the portal's settings."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "offload.portal.settings",
        "OFFLOAD_DATABASE_URL": database_url,
        "OFFLOAD_HOME": str(home),
        "OFFLOAD_SECRET_KEY": "offload-tests-only-not-secret",
    }


def migrate(database_url: str, home: Path) -> None:
    """Apply every migration to ``database_url``, in a subprocess, as an operator would."""
    home.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "--skip-checks", "-v", "0"],
        env=portal_environment(database_url, home),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"migrating {database_url} failed (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )


@dataclass(frozen=True)
class PostgresTemplate:
    """A migrated template database on ``server_url`` and the per-test clones made from it."""

    server_url: str
    name: str = "offload_template"

    @classmethod
    def for_this_session(cls, server_url: str) -> PostgresTemplate:
        # pytest-xdist workers run sessions in parallel: each needs its own template.
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        # One template per pytest process: two sessions on one server must not collide.
        suffix = f"{worker}_{os.getpid()}" if worker else str(os.getpid())
        return cls(server_url, f"offload_template_{suffix}")

    def _execute(self, statement: sql.Composed) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(statement)

    def url_of(self, name: str) -> str:
        return with_database_name(self.server_url, name)

    def create(self, home: Path) -> None:
        """(Re)create the template and migrate it; a template left by a killed session is replaced."""
        self.drop(self.name)
        self._execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        migrate(self.url_of(self.name), home)

    def clone(self) -> str:
        """A new database copied from the template; returns its name."""
        name = f"offload_t_{secrets.token_hex(6)}"
        self._execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(self.name)
            )
        )
        return name

    def drop(self, name: str) -> None:
        """Drop ``name``, first terminating its connections (a monitor subprocess may linger)."""
        self._execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def destroy(self) -> None:
        self.drop(self.name)


@dataclass(frozen=True)
class SqliteTemplate:
    """A migrated SQLite file, copied for each test."""

    path: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def create(self, home: Path) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        migrate(self.url, home)

    def clone(self, destination: Path) -> str:
        """Copy the template to ``destination`` (SQLite's backup API: WAL content included)."""
        with (
            contextlib.closing(sqlite3.connect(self.path)) as source,
            contextlib.closing(sqlite3.connect(destination)) as target,
        ):
            source.backup(target)
        return f"sqlite:///{destination}"
