"""The ``EventStore`` interface and what its implementations share."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any, Protocol

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import AutoField

from capi_destinations.models import Event, HourlyOutcomes, RefusedCalls

__all__ = ["CHUNK_SIZE", "INSERT_FIELDS", "REPLACED_FIELDS", "Candidate", "EventStore"]

# Rows per INSERT: big enough that a 1000-event request is two statements, small enough to stay
# far below PostgreSQL's 65535 parameters (about 20 per row).
CHUNK_SIZE = 500

#: The columns an INSERT writes: all but the id.
INSERT_FIELDS = [f for f in Event._meta.concrete_fields if not isinstance(f, AutoField)]
#: What replacing a rejected row writes: everything but the key, so the row keeps its id and
#: links to it stay valid.
REPLACED_FIELDS = [
    f for f in INSERT_FIELDS if f.attname not in ("destination_id", "event_name", "event_id")
]


class Candidate(Protocol):
    """An event to store: an unsaved ``Event`` whose columns are plain instance attributes
    (``ingest._new_event``), and its payload's JSON text (already made, to be hashed)."""

    row: Event
    payload_json: str


class EventStore(ABC):
    """Writes events to one database with the fewest statements it allows.

    Every write is safe alone and against concurrent requests: inserts skip keys already
    there and say which rows went in; replacing a rejected row and noting a reused event_id are
    conditional on the row's state. No method opens a transaction of its own.
    """

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.connection = connection
        self.alias: str = connection.alias
        self.quote = connection.ops.quote_name
        self.table = self.quote(Event._meta.db_table)

    def writing(self) -> AbstractContextManager[Any]:
        """Held around one call's writes (SQLite: one thread of the process at a time)."""
        return nullcontext()

    def chunk_size(self) -> int:
        """How many events one INSERT may carry on this database."""
        limit = self._max_query_params()
        if limit is None:
            return CHUNK_SIZE
        return max(1, min(CHUNK_SIZE, limit // len(INSERT_FIELDS)))

    def _max_query_params(self) -> int | None:
        return self.connection.features.max_query_params

    @abstractmethod
    def insert(self, chunk: Sequence[Candidate]) -> list[tuple[int, str, str]]:
        """INSERT the chunk in one statement, skipping keys that exist.

        Returns (id, event_name, event_id) of the rows really inserted, so a row a concurrent
        request inserted first is told apart from ours without reading before writing.
        """

    @abstractmethod
    def replace_rejected(self, replacements: Sequence[tuple[int, Candidate]]) -> set[int]:
        """Write each candidate over the row ``id`` it names, if that row is still rejected.

        One statement; returns the ids really replaced.
        """

    @abstractmethod
    def append_finding(self, ids: Sequence[int], finding: dict[str, Any], now: datetime) -> None:
        """Append ``finding`` to the diagnostics of the rows ``ids`` that have none of its code.

        One UPDATE, the append done in SQL, so two requests at once neither lose each other's
        write nor add the finding twice.
        """

    def add_counts(self, destination_id: int, hour: datetime, counts: dict[str, float]) -> None:
        """Add ``counts`` (``{"delivered": n, …}``) to the destination's row of ``hour``.

        One UPSERT (the same on both databases), so concurrent adds never lose a count.
        """
        quote, table = self.quote, self.quote(HourlyOutcomes._meta.db_table)
        names = list(counts)
        added = ", ".join(
            f"{quote(name)} = {table}.{quote(name)} + EXCLUDED.{quote(name)}" for name in names
        )
        key = f"{quote('destination_id')}, {quote('hour')}"
        sql = (
            f"INSERT INTO {table} ({key}, {', '.join(quote(name) for name in names)}) "  # noqa: S608
            f"VALUES (%s, %s{', %s' * len(names)}) ON CONFLICT ({key}) DO UPDATE SET {added}"
        )
        hour_value = self.connection.ops.adapt_datetimefield_value(hour)
        self._execute(sql, [destination_id, hour_value, *counts.values()])

    def add_refused_call(
        self, destination_id: int, hour: datetime, reason: str, origin: str, at: datetime
    ) -> None:
        """Count one refused ingest call in the destination's row of ``hour`` and ``reason``.

        One UPSERT, the same on both databases; an empty ``origin`` keeps the last one known.
        """
        quote, table = self.quote, self.quote(RefusedCalls._meta.db_table)
        count, origin_column = quote("count"), quote("last_origin")
        key = f"{quote('destination_id')}, {quote('hour')}, {quote('reason')}"
        sql = (
            f"INSERT INTO {table} ({key}, {count}, {origin_column}, {quote('last_at')}) "  # noqa: S608
            f"VALUES (%s, %s, %s, 1, %s, %s) ON CONFLICT ({key}) DO UPDATE SET "
            f"{count} = {table}.{count} + 1, {quote('last_at')} = EXCLUDED.{quote('last_at')}, "
            f"{origin_column} = CASE WHEN EXCLUDED.{origin_column} = '' "
            f"THEN {table}.{origin_column} ELSE EXCLUDED.{origin_column} END"
        )
        adapt = self.connection.ops.adapt_datetimefield_value
        self._execute(sql, [destination_id, adapt(hour), reason, origin, adapt(at)])

    def originals(
        self, destination_id: int, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], Event]:
        """The stored events of ``destination_id`` under ``keys``, by key: one SELECT."""
        keys = list(keys)
        names = {name for name, _ in keys}
        ids = {event_id for _, event_id in keys}
        rows = Event.objects.using(self.alias).filter(
            destination_id=destination_id, event_name__in=names, event_id__in=ids
        )
        return {(event.event_name, event.event_id): event for event in rows}

    def _returning(self) -> str:
        quote = self.quote
        return f" RETURNING {quote('id')}, {quote('event_name')}, {quote('event_id')}"

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def _execute(self, sql: str, params: Sequence[Any]) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)


def dumps(value: Any) -> str:
    """JSON text as the JSON columns store it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False)
