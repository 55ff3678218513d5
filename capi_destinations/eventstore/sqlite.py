"""Event storage on SQLite (3.35 or later): multi-row ``INSERT OR IGNORE … RETURNING``.

SQLite has one writer at a time anyway, and threads sharing an in-memory database (shared
cache: tests, some demos) fail with "table is locked" instead of waiting; so the threads of one
process take turns to store (``writing``). Only the model's own table and column names are
formatted into the statements; values are parameters.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from django.db import NotSupportedError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, TextField
from django.db.models.functions import Cast

from capi_destinations.eventstore.base import (
    INSERT_FIELDS,
    PENDING,
    REPLACED_FIELDS,
    Candidate,
    EventStore,
    dumps,
)
from capi_destinations.models import Event, EventStatus

__all__ = ["SQLiteEventStore"]

_WRITES = threading.Lock()


class SQLiteEventStore(EventStore):
    """Plain placeholders, one row of values per event; ``UPDATE … FROM`` a ``VALUES`` list."""

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        if not connection.features.can_return_rows_from_bulk_insert:
            raise NotSupportedError(
                "capi_destinations needs SQLite 3.35 or later (INSERT … RETURNING); this is "
                f"SQLite {sqlite3.sqlite_version}."
            )
        super().__init__(connection)

    def writing(self) -> AbstractContextManager[Any]:
        return _WRITES

    def _max_query_params(self) -> int | None:
        # Django assumes SQLite's historic 999 parameters; the linked library usually allows
        # far more, and one statement per chunk is what keeps ingestion fast.
        self.connection.ensure_connection()
        return int(self.connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))

    def insert(
        self,
        chunk: Sequence[Candidate],
        *,
        along: tuple[str, Sequence[Any]] | None = None,
        count_hour: datetime | None = None,
    ) -> list[tuple[int, str, str]]:
        self._refuse_combined(along, count_hour)
        columns = ", ".join(self.quote(model_field.column) for model_field in INSERT_FIELDS)
        row_sql = "(" + ", ".join(["%s"] * len(INSERT_FIELDS)) + ")"
        sql = (
            f"INSERT OR IGNORE INTO {self.table} ({columns}) "  # noqa: S608
            f"VALUES {', '.join([row_sql] * len(chunk))}{self._returning()}"
        )
        adapt = self.connection.ops.adapt_datetimefield_value
        params = [
            _value(candidate, model_field, adapt)
            for candidate in chunk
            for model_field in INSERT_FIELDS
        ]
        # Two statements (SQLite's INSERT has no data-modifying CTE), one transaction (the
        # caller's if there is one: no savepoint round trips): no pending row without its
        # queue entry.
        with transaction.atomic(using=self.alias, savepoint=False):
            inserted = self._fetch(sql, params)
            self._enqueue([pk for pk, _, _ in inserted])
        return inserted

    def replace_rejected(self, replacements: Sequence[tuple[int, Candidate]]) -> set[int]:
        quote, table = self.quote, self.table
        columns = ", ".join(quote(f.column) for f in REPLACED_FIELDS)
        assignments = ", ".join(
            f"{quote(f.column)} = incoming.{quote(f.column)}" for f in REPLACED_FIELDS
        )
        row_sql = "(" + ", ".join(["%s"] * (len(REPLACED_FIELDS) + 1)) + ")"
        sql = (
            f"WITH incoming (id, {columns}) AS "  # noqa: S608
            f"(VALUES {', '.join([row_sql] * len(replacements))}) "
            f"UPDATE {table} SET {assignments} FROM incoming "
            f"WHERE {table}.id = incoming.id AND {table}.status = %s RETURNING {table}.id"
        )
        adapt = self.connection.ops.adapt_datetimefield_value
        params: list[Any] = []
        for pk, candidate in replacements:
            params.append(int(pk))
            params.extend(_value(candidate, f, adapt) for f in REPLACED_FIELDS)
        params.append(EventStatus.REJECTED.value)
        with transaction.atomic(using=self.alias, savepoint=False):
            replaced = {pk for (pk,) in self._fetch(sql, params)}
            self._enqueue(sorted(replaced))
        return replaced

    def claim(
        self,
        destination_ids: Sequence[int],
        limit: int,
        now: datetime,
        lease_token: uuid.UUID,
        lease_expires_at: datetime,
    ) -> list[tuple[Any, ...]]:
        # One UPDATE: it takes the write lock before it reads (no lock upgrade on SQLite).
        due, params = self._due_sql(destination_ids, "")
        sql = (
            f"UPDATE {self.queue_table} SET lease_token = %s, lease_expires_at = %s "  # noqa: S608
            f"WHERE event_id IN ({due}) AND due_at <= %s AND {self.NOT_LEASED}"
        )
        adapt = self._time
        self._execute(
            sql,
            [
                lease_token.hex,
                adapt(lease_expires_at),
                *params,
                adapt(now),
                adapt(now),
                adapt(now),
                adapt(now),
                limit,
                adapt(now),
                adapt(now),
            ],
        )
        rows = Event.objects.using(self.alias).filter(queued__lease_token=lease_token)
        return list(
            rows.values_list(
                "pk",
                "destination_id",
                "event_time",
                "attempts",
                Cast("payload", output_field=TextField()),
                "action_source",
            )
        )

    def _uuid(self, value: uuid.UUID) -> Any:
        # Django stores a UUIDField as 32 hex digits on SQLite.
        return value.hex

    def _enqueue(self, ids: Sequence[int]) -> None:
        if ids:
            condition = f"id IN ({', '.join(['%s'] * len(ids))})"
            self._execute(self._enqueue_sql(self.table, condition), [*ids, PENDING])

    def append_finding(self, ids: Sequence[int], finding: dict[str, Any], now: datetime) -> None:
        table = self.table
        sql = (
            f"UPDATE {table} SET diagnostics = json_insert(diagnostics, '$[#]', json(%s)), "  # noqa: S608
            f"updated_at = %s WHERE id IN ({', '.join(['%s'] * len(ids))}) AND NOT EXISTS "
            f"(SELECT 1 FROM json_each({table}.diagnostics) AS finding "
            "WHERE json_extract(finding.value, '$.code') = %s)"
        )
        params = [
            json.dumps(finding),
            self.connection.ops.adapt_datetimefield_value(now),
            *ids,
            finding["code"],
        ]
        self._execute(sql, params)


def _value(candidate: Candidate, model_field: Field[Any, Any], adapt: Callable[[Any], Any]) -> Any:
    """One column's value as SQLite takes it."""
    if model_field.attname == "payload":
        return candidate.payload_json
    value = getattr(candidate.row, model_field.attname)
    if isinstance(value, list | dict):
        return dumps(value)
    if isinstance(value, datetime):
        return adapt(value)
    if isinstance(value, uuid.UUID):
        return value.hex
    return value
