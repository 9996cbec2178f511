"""Suite-wide rules and fixtures.

Tests marked ``postgres`` (and every test using ``fresh_postgres_url``) need a real PostgreSQL server.
They live under tests/integration, run when ``OFFLOAD_TEST_DB=postgres``, and are skipped otherwise,
except where engines are required (``OFFLOAD_REQUIRE_ENGINES=1`` or ``CI=true``): there they run, and a
server that does not answer stops the whole run with an error instead of a quiet skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import dbtools

INTEGRATION_DIR = Path(__file__).parent / "integration"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Before -m selection, so that `-m "not postgres"` also deselects tests that use the fixture.
    for item in items:
        if "fresh_postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def pytest_collection_finish(session: pytest.Session) -> None:
    postgres_items = [item for item in session.items if item.get_closest_marker("postgres")]
    misplaced = [item.nodeid for item in postgres_items if INTEGRATION_DIR not in item.path.parents]
    if misplaced:
        raise pytest.UsageError(
            "tests that need PostgreSQL belong under tests/integration (scripts/test runs only that "
            "directory on PostgreSQL); move: " + ", ".join(misplaced)
        )

    use_postgres = dbtools.database_kind() == "postgres"
    if (use_postgres and session.items) or (postgres_items and dbtools.engines_required()):
        reason = dbtools.postgres_unreachable_reason(dbtools.postgres_server_url())
        if reason:
            why = "OFFLOAD_TEST_DB=postgres" if use_postgres else "engines are required here (CI)"
            pytest.exit(f"{reason}\n({why}, so this is an error, not a skip)", returncode=1)
    elif postgres_items:
        skip = pytest.mark.skip(reason="needs PostgreSQL: run with OFFLOAD_TEST_DB=postgres")
        for item in postgres_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def postgres_template(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dbtools.PostgresTemplate]:
    """The session's migrated template database on the test server."""
    server_url = dbtools.postgres_server_url()
    reason = dbtools.postgres_unreachable_reason(server_url)
    if reason:
        pytest.fail(reason)
    template = dbtools.PostgresTemplate.for_this_session(server_url)
    template.create(home=tmp_path_factory.mktemp("postgres-template-home"))
    yield template
    template.destroy()


@pytest.fixture
def fresh_postgres_url(postgres_template: dbtools.PostgresTemplate) -> Iterator[str]:
    """The URL of a new, migrated PostgreSQL database of this test alone, dropped afterwards."""
    name = postgres_template.clone()
    yield postgres_template.url_of(name)
    postgres_template.drop(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> dbtools.SqliteTemplate:
    """The session's migrated template SQLite file."""
    directory = tmp_path_factory.mktemp("sqlite-template")
    template = dbtools.SqliteTemplate(directory / "template.sqlite3")
    template.create(home=directory / "home")
    return template


@pytest.fixture
def fresh_sqlite_url(sqlite_template: dbtools.SqliteTemplate, tmp_path: Path) -> str:
    """The URL of a new, migrated SQLite file of this test alone (under its tmp_path)."""
    return sqlite_template.clone(tmp_path / "offload.sqlite3")
