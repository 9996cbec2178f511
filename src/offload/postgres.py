"""Faster timestamps from PostgreSQL (psycopg 3).

Django loads every ``timestamptz`` value with a pure-Python subclass of psycopg's loader (to set the
time zone on it), which turns off psycopg's C parser for that type: on a jobs listing, with a few
timestamps per job, that parsing was the largest single cost of reading the rows. When the session
time zone is UTC and Django wants UTC datetimes (``USE_TZ = True``, the default database time zone),
psycopg's C loader already returns exactly what Django's returns, so each new connection gets a
loader that Django recognises (it has the ``timezone`` attribute Django checks) but whose ``load``
is the C one. Any other time-zone set-up keeps Django's loader. ``OFFLOAD["FAST_TIMESTAMPS"] =
False`` turns this off.
"""

from __future__ import annotations

import datetime
from typing import Any


def install_fast_timestamps(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver: the C ``timestamptz`` loader on a UTC PostgreSQL
    connection (see the module's docstring)."""
    from django.conf import settings

    if connection.vendor != "postgresql" or not settings.USE_TZ:
        return
    if not (getattr(settings, "OFFLOAD", None) or {}).get("FAST_TIMESTAMPS", True):
        return
    raw = connection.connection
    try:
        import psycopg
        from psycopg.pq import Format
        from psycopg.types.datetime import TimestamptzLoader
    except ImportError:  # psycopg2: nothing to do
        return
    if not isinstance(raw, psycopg.Connection) or psycopg.pq.__impl__ == "python":
        return
    if connection.timezone != datetime.UTC or raw.info.parameter_status("TimeZone") != "UTC":
        return
    oid = psycopg.postgres.types["timestamptz"].oid
    c_loader = psycopg.adapters.get_loader(oid, Format.TEXT)
    if c_loader is None or c_loader.__module__.startswith("psycopg.types"):
        return  # no C loader in this build

    class UTCTimestamptzLoader(TimestamptzLoader):
        #: What Django compares with the connection's time zone before each cursor.
        timezone = datetime.UTC

        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            # An instance attribute: psycopg calls the C method directly, no Python frame.
            self.load = c_loader(oid, context).load  # type: ignore[method-assign,misc]

    raw.adapters.register_loader(oid, UTCTimestamptzLoader)
