"""Statements whose parameters PostgreSQL binds itself, whatever the site's ``DATABASES`` say.

Django's psycopg 3 backend binds parameters on the client unless the site sets
``OPTIONS["server_side_binding"]``: every value is escaped and written into the SQL text. For
the app's bulk statements, which carry a chunk of hundreds of rows as ONE JSON parameter, that
escaping costs more Python time than preparing the rows, and PostgreSQL must parse a literal
of hundreds of kilobytes; bound as a parameter it is read as it is. So those statements run
here on a server-binding cursor of the same connection (the same transaction), through Django's
cursor wrapper (errors wrapped, queries counted and logged as any other). Anywhere else (SQLite,
psycopg 2, a site that binds on the server already) they run on Django's ordinary cursor.

**Prepared statements.** Django opens psycopg connections with ``prepare_threshold=None``
(nothing is ever prepared, so that transaction-pooling proxies keep working), so PostgreSQL
parses and plans every statement again on every run: for the ingest endpoint's INSERT that
planning costs more than the insert. A statement passed with ``prepare=True`` is prepared on
its first run on a connection and reused after, but only where the site allows prepared
statements: ``DATABASES[...]["OPTIONS"]["prepare_threshold"]`` set to a number (README →
"Running in production"). Only statements whose generic plan is as good as a custom one ask
for it (a key lookup, an INSERT of rows given as one parameter, the click memory's recall,
whose lookups come from its array so that every plan uses the same index); every other
statement here is never prepared, whatever the threshold, since a generic plan can be far
worse.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from django.db import DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.views.decorators.debug import sensitive_variables

__all__ = ["execute", "fetch_all", "fetch_all_started", "text_array"]


def fetch_all(
    connection: BaseDatabaseWrapper,
    sql: str,
    params: Sequence[Any],
    *,
    prepare: bool = False,
    read_only: bool = False,
) -> list[tuple[Any, ...]]:
    """Run ``sql`` with ``params`` bound by the server where it can; every row it returns.

    ``prepare``: prepared once per connection where the site allows it (see the module).

    ``read_only``: the statement changes nothing, so it can serve as the request's connection
    health check (``CONN_HEALTH_CHECKS``) instead of Django's ``SELECT 1`` before it: run on
    the reused connection, it fails at once if the server dropped that connection, and is then
    run again on a new one. One round trip fewer on every request of the ingest endpoint.
    Outside a transaction only (in one, nothing could be run again).
    """
    if read_only and _health_check_pending(connection):
        try:
            with _cursor(connection, prepare=prepare, check=False) as cursor:
                cursor.execute(sql, params)
                rows = list(cursor.fetchall())
        except DatabaseError:
            if connection.is_usable():
                raise  # the statement's own error, on a sound connection
            connection.close()  # dropped: the statement is run again on a new one, below
        else:
            # As Django's own check would have marked it (not in django-stubs).
            connection.health_check_done = True  # type: ignore[attr-defined]
            return rows
    with _cursor(connection, prepare=prepare) as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _health_check_pending(connection: BaseDatabaseWrapper) -> bool:
    """Whether the next statement on ``connection`` would first check it (a reused connection,
    ``CONN_HEALTH_CHECKS`` on, not yet checked in this request), outside any transaction."""
    return (
        connection.connection is not None
        # Django's own flags of the connection's health check (not in django-stubs).
        and getattr(connection, "health_check_enabled", False)
        and not getattr(connection, "health_check_done", True)
        and not connection.in_atomic_block
        and connection.get_autocommit()
    )


def execute(
    connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any], *, prepare: bool = False
) -> None:
    """Run ``sql`` with ``params`` bound by the server where it can (``prepare``: as above)."""
    with _cursor(connection, prepare=prepare) as cursor:
        cursor.execute(sql, params)


def fetch_all_started(
    connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any], *, prepare: bool = False
) -> Callable[[], list[tuple[Any, ...]]]:
    """Start ``fetch_all`` and return at once; the function returned waits for its rows.

    The statement runs in a thread of its own on the SAME connection (so in the same
    transaction, in order), while this one goes on with Python work: the driver waits for the
    server without holding the GIL. Until the function returned has been called, the caller
    must send nothing else on ``connection`` (the driver's lock would serialize it, in no
    given order). An error of the statement is raised by that function.
    """
    # Made here: Django's connection belongs to this thread. A cursor of its own, not the
    # connection's reused one (``_cursor``): it is closed when the rows are in.
    cursor = _new_cursor(connection, prepare=prepare)
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


def text_array(texts: Iterable[str]) -> str:
    """Texts as one PostgreSQL array literal, to bind as ONE text parameter cast to an array
    type that reads its items from text (``text[]``, ``timestamptz[]``).

    psycopg's adapter of a Python list checks and converts every item in Python: for the click
    memory's thousands of lookups per batch that cost more than the statement itself.
    """
    items = list(texts)
    body = '","'.join(items)
    # Most batches hold no quote or backslash (digests, click IDs): joined in one step.
    if "\\" not in body and body.count('"') == 2 * (len(items) - 1):
        return '{"' + body + '"}' if items else "{}"
    return "{" + ",".join(map(_array_item, items)) + "}"


def _array_item(text: str) -> str:
    # Always quoted: an unquoted item is read as NULL when it spells NULL, and trimmed.
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _cursor(
    connection: BaseDatabaseWrapper, *, prepare: bool, check: bool = True
) -> AbstractContextManager[Any]:
    """A cursor for one statement, as a context manager.

    On a psycopg 3 connection, the connection's own server-binding cursor, reused from one
    statement to the next (``_reused_cursor``) and never closed here: making one costs about
    as much Python as a small statement's round trip, and the ingest endpoint sends three of
    them a request. Elsewhere Django's ordinary cursor, closed after the statement.
    """
    server_binding = _server_binding(connection, check=check)
    if server_binding is None:
        return connection.cursor()
    database, raw = server_binding
    cursor = _reused_cursor(connection, database, raw, prepare)
    # Django's wrapper (the debug one when queries are recorded), as connection.cursor() gives,
    # made for each statement: whether queries are recorded can change between two.
    return nullcontext(connection._prepare_cursor(cursor))  # type: ignore[attr-defined]  # not in the stubs


def _new_cursor(connection: BaseDatabaseWrapper, *, prepare: bool) -> Any:
    """A cursor of its own for one statement (the caller closes it), as ``_cursor``'s."""
    server_binding = _server_binding(connection, check=True)
    if server_binding is None:
        return connection.cursor()
    database, raw = server_binding
    return connection._prepare_cursor(  # type: ignore[attr-defined]  # not in the stubs
        _server_cursor(connection, database, raw, prepare)
    )


def _server_binding(connection: BaseDatabaseWrapper, *, check: bool) -> tuple[Any, Any] | None:
    """(the psycopg module, the open psycopg 3 connection) where the app's statements are
    bound by the server; None where Django's ordinary cursor runs them."""
    if connection.vendor != "postgresql":
        return None
    # The driver Django's backend loaded (psycopg 3, or psycopg2, which binds on the client
    # only): psycopg is an extra of the app's, never imported here.
    database: Any = getattr(connection, "Database", None)
    # As Django's own cursor() does: the first statement of a request checks the reused
    # connection (CONN_HEALTH_CHECKS) and replaces one the server dropped. Skipped, the ingest
    # endpoint (all of whose statements come here) answered 500 on a dropped connection.
    if check:
        connection.close_if_health_check_failed()
    connection.ensure_connection()
    raw = connection.connection
    client_cursor = getattr(database, "ClientCursor", None)
    if client_cursor is None or not issubclass(raw.cursor_factory, client_cursor):
        return None
    return database, raw


# Where a Django connection keeps its reused cursors: (the psycopg connection they belong to,
# {prepare: cursor}). A new psycopg connection (after a close) gets new cursors.
_REUSED_CURSORS = "_capi_destinations_cursors"


def _reused_cursor(connection: BaseDatabaseWrapper, database: Any, raw: Any, prepare: bool) -> Any:
    """The connection's server-binding cursor that prepares (or never prepares), made once.

    Django's connection belongs to one thread, so its cursor is never used by two at once
    (``fetch_all_started``'s thread gets a cursor of its own).
    """
    reused = connection.__dict__.get(_REUSED_CURSORS)
    if reused is None or reused[0] is not raw:
        reused = connection.__dict__[_REUSED_CURSORS] = (raw, {})
    cursors: dict[bool, Any] = reused[1]
    # Keyed by what the cursor does, read now: the site's threshold decides it.
    prepares = prepare and raw.prepare_threshold is not None
    cursor = cursors.get(prepares)
    if cursor is None or cursor.closed:
        cursor = cursors[prepares] = _server_cursor(connection, database, raw, prepares)
    return cursor


def _server_cursor(connection: BaseDatabaseWrapper, database: Any, raw: Any, prepare: bool) -> Any:
    """A new psycopg server-binding cursor of ``raw``, reading timestamps as Django's do."""
    # Django's cursor wrapper passes no keyword on to psycopg's execute(): the cursor's class
    # says whether the statement is prepared. Prepared only where the site allows it (a
    # threshold in its OPTIONS); never otherwise, whatever psycopg's threshold would do.
    cursor = _cursor_class(database.Cursor, prepare and raw.prepare_threshold is not None)(raw)
    # As Django's own cursors: timestamps read in the connection's time zone.
    from django.db.backends.postgresql.psycopg_any import (  # type: ignore[import-untyped]
        register_tzloader,
    )

    timezone = connection.timezone
    loader = raw.adapters.get_loader(raw.adapters.types["timestamptz"].oid, database.pq.Format.TEXT)
    if loader is None or timezone != getattr(loader, "timezone", None):
        register_tzloader(timezone, cursor)
    return cursor


_CURSOR_CLASSES: dict[tuple[type, bool], type] = {}


def _cursor_class(base: type, prepare: bool) -> type:
    """psycopg's server-binding cursor whose ``execute`` prepares always or never."""
    found = _CURSOR_CLASSES.get((base, prepare))
    if found is None:

        def execute(
            self: Any, query: Any, params: Any = None, *, binary: bool | None = None, **_: Any
        ) -> Any:
            return base.execute(self, query, params, prepare=prepare, binary=binary)  # type: ignore[attr-defined]

        found = _CURSOR_CLASSES[(base, prepare)] = type(
            f"{base.__name__}Prepared" if prepare else f"{base.__name__}Unprepared",
            (base,),
            {"execute": execute, "__slots__": ()},
        )
    return found
