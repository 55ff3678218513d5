"""Statements whose parameters PostgreSQL binds itself, whatever the site's ``DATABASES`` say.

Django's psycopg 3 backend binds parameters on the client unless the site sets
``OPTIONS["server_side_binding"]``: every value is escaped and written into the SQL text. For
the app's bulk statements, which carry a chunk of hundreds of rows as ONE JSON parameter, that
escaping costs more Python time than preparing the rows, and PostgreSQL must parse a literal
of hundreds of kilobytes; bound as a parameter it is read as it is, and a statement run again
on the same connection is prepared once (psycopg's ``prepare_threshold``, which a site behind a
transaction-pooling proxy sets to ``None``). So those statements run here on a server-binding
cursor of the same connection (the same transaction), through Django's cursor wrapper (errors
wrapped, queries counted and logged as any other). Anywhere else (SQLite, psycopg 2, a site that
binds on the server already) they run on Django's ordinary cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

try:  # psycopg 3 is optional: the app runs on SQLite without it.
    import psycopg
except ImportError:  # pragma: no cover - psycopg is installed wherever tests run
    psycopg = None  # type: ignore[assignment]

__all__ = ["execute", "fetch_all"]


def fetch_all(
    connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any]
) -> list[tuple[Any, ...]]:
    """Run ``sql`` with ``params`` bound by the server where it can; every row it returns."""
    with _cursor(connection) as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def execute(connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any]) -> None:
    """Run ``sql`` with ``params`` bound by the server where it can."""
    with _cursor(connection) as cursor:
        cursor.execute(sql, params)


def _cursor(connection: BaseDatabaseWrapper) -> Any:
    if connection.vendor != "postgresql" or psycopg is None:
        return connection.cursor()
    connection.ensure_connection()
    raw = connection.connection
    if not isinstance(raw, psycopg.Connection) or not issubclass(
        raw.cursor_factory, psycopg.ClientCursor
    ):
        return connection.cursor()
    cursor = psycopg.Cursor(raw)
    # As Django's own cursors: timestamps read in the connection's time zone.
    from django.db.backends.postgresql.psycopg_any import (  # type: ignore[import-untyped]
        register_tzloader,
    )
    from psycopg.pq import Format

    timezone = connection.timezone
    loader = raw.adapters.get_loader(1184, Format.TEXT)  # 1184: timestamptz
    if loader is None or timezone != getattr(loader, "timezone", None):
        register_tzloader(timezone, cursor)
    # Django's wrapper (the debug one when queries are recorded), as connection.cursor() gives.
    return connection._prepare_cursor(cursor)  # type: ignore[attr-defined]  # not in the stubs
