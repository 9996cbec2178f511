"""The checked-in migrations match the models, and the test database has them all applied."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_no_model_change_lacks_a_migration() -> None:
    out = StringIO()
    # Exits with SystemExit(1) when a model change has no migration.
    call_command("makemigrations", "offload", "--check", "--dry-run", stdout=out, stderr=out)
    assert "No changes detected" in out.getvalue()


def test_the_check_fails_without_the_migrations(settings: Any) -> None:
    # Negative control: with offload's migrations hidden, the same check must fail.
    settings.MIGRATION_MODULES = {"offload": "offload.no_such_migrations_module"}
    out = StringIO()
    with pytest.raises(SystemExit) as info:
        call_command("makemigrations", "offload", "--check", "--dry-run", stdout=out, stderr=out)
    assert info.value.code == 1
    assert "Create model Job" in out.getvalue()


def test_every_migration_is_applied() -> None:
    out = StringIO()
    call_command("migrate", "--check", stdout=out, stderr=out)  # SystemExit(1) if unapplied
    call_command("showmigrations", "offload", stdout=out)
    assert "[ ]" not in out.getvalue()
    assert "[X] 0001_initial" in out.getvalue()


@pytest.mark.django_db
def test_job_name_search_has_a_trigram_index_on_postgresql() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            return  # nothing to index elsewhere: search reads the user's jobs
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'offload_job_name_trgm'")
        row = cursor.fetchone()
    assert row is not None, "migration 0008 made no trigram index"
    assert "gin_trgm_ops" in row[0] and "upper" in row[0].lower()
