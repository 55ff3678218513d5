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

import threading
from collections.abc import Callable, Sequence
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.views.decorators.debug import sensitive_variables

__all__ = ["execute", "fetch_all", "fetch_all_started"]


def fetch_all(
    connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any]
) -> list[tuple[Any, ...]]:
    """Run ``sql`` with ``params`` bound by the server where it can; every row it returns."""
    with _cursor(connection) as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def fetch_all_started(
    connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any]
) -> Callable[[], list[tuple[Any, ...]]]:
    """Start ``fetch_all`` and return at once; the function returned waits for its rows.

    The statement runs in a thread of its own on the SAME connection (so in the same
    transaction, in order), while this one goes on with Python work: the driver waits for the
    server without holding the GIL. Until the function returned has been called, the caller
    must send nothing else on ``connection`` (the driver's lock would serialize it, in no
    given order). An error of the statement is raised by that function.
    """
    cursor = _cursor(connection)  # made here: Django's connection belongs to this thread
    outcome: list[Any] = []

    # The thread's frames have no caller of ours: an error report of an exception raised in
    # them hides their variables (the rows: IP addresses, click IDs) only by this decorator.
    @sensitive_variables()
    def run() -> None:
        try:
            cursor.execute(sql, params)
            outcome.append(list(cursor.fetchall()))
        except BaseException as error:  # handed to the waiting thread
            outcome.append(error)

    worker = threading.Thread(target=run, name="capi-destinations-statement", daemon=True)
    worker.start()

    def rows() -> list[tuple[Any, ...]]:
        worker.join()
        cursor.close()
        (result,) = outcome
        if isinstance(result, BaseException):
            raise result
        return result

    return rows


def execute(connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any]) -> None:
    """Run ``sql`` with ``params`` bound by the server where it can."""
    with _cursor(connection) as cursor:
        cursor.execute(sql, params)


def _cursor(connection: BaseDatabaseWrapper) -> Any:
    if connection.vendor != "postgresql":
        return connection.cursor()
    # The driver Django's backend loaded (psycopg 3, or psycopg2, which binds on the client
    # only): psycopg is an extra of the app's, never imported here.
    database: Any = getattr(connection, "Database", None)
    connection.ensure_connection()
    raw = connection.connection
    client_cursor = getattr(database, "ClientCursor", None)
    if client_cursor is None or not issubclass(raw.cursor_factory, client_cursor):
        return connection.cursor()
    cursor = database.Cursor(raw)
    # As Django's own cursors: timestamps read in the connection's time zone.
    from django.db.backends.postgresql.psycopg_any import (  # type: ignore[import-untyped]
        register_tzloader,
    )

    timezone = connection.timezone
    loader = raw.adapters.get_loader(raw.adapters.types["timestamptz"].oid, database.pq.Format.TEXT)
    if loader is None or timezone != getattr(loader, "timezone", None):
        register_tzloader(timezone, cursor)
    # Django's wrapper (the debug one when queries are recorded), as connection.cursor() gives.
    return connection._prepare_cursor(cursor)  # type: ignore[attr-defined]  # not in the stubs
