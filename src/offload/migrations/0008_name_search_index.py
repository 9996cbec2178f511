"""A trigram index for searching jobs by name on PostgreSQL (``name__icontains``, which Django
writes as ``UPPER(name) LIKE UPPER('%…%')``), so a text search costs about the same for a user with
100,000 jobs as for one with 100.

It needs the ``pg_trgm`` extension, which a database owner may create (it is a trusted extension
since PostgreSQL 13). Where it cannot be created, the migration leaves a note and goes on: search
still works, by reading the user's jobs. Nothing happens on other databases."""

from typing import Any

from django.db import migrations

INDEX = "offload_job_name_trgm"


def create_index(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name("offload_job")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
        if cursor.fetchone() is None:
            cursor.execute("SAVEPOINT offload_trgm")
            try:
                cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            except Exception as exc:  # no privilege, or the extension is not installed
                cursor.execute("ROLLBACK TO SAVEPOINT offload_trgm")
                print(
                    f"\n  offload: no trigram index for job-name search ({exc}); search still works"
                )
                return
            cursor.execute("RELEASE SAVEPOINT offload_trgm")
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON {table} USING gin (UPPER(name) gin_trgm_ops)"
        )


def drop_index(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("offload", "0007_job_list_indexes")]

    operations = [migrations.RunPython(create_index, drop_index, elidable=False)]
