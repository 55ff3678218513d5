"""The ``EventStore`` interface and what its implementations share."""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any, Protocol

from django.db import NotSupportedError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import AutoField, F

from capi_destinations import bound_sql
from capi_destinations.models import Event, EventStatus, HourlyOutcomes, QueuedEvent, RefusedCalls

__all__ = [
    "CHUNK_SIZE",
    "INSERT_FIELDS",
    "PENDING",
    "REPLACED_FIELDS",
    "Candidate",
    "EventStore",
    "dumps",
    "json_writer",
]

# Statements built once per database alias (the table and column names never change).
_SQL: dict[tuple[str, str, tuple[str, ...]], str] = {}

#: The status whose rows are in the delivery queue.
PENDING = EventStatus.PENDING.value

# Rows per INSERT: big enough that a 1000-event request is two statements, small enough to stay
# far below PostgreSQL's 65535 parameters (about 20 per row).
CHUNK_SIZE = 500

#: The columns an INSERT writes: all but the id.
# Not the generated column (problem_status): the database computes it.
INSERT_FIELDS = [
    f
    for f in Event._meta.concrete_fields
    if not isinstance(f, AutoField) and not getattr(f, "generated", False)
]
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
    conditional on the row's state. A row stored ``pending`` gets its ``QueuedEvent`` (due at
    once) in the same statement, or in the same transaction where one statement cannot do it.
    """

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.connection = connection
        self.alias: str = connection.alias
        self.quote = connection.ops.quote_name
        self.table = self.quote(Event._meta.db_table)
        self.queue_table = self.quote(QueuedEvent._meta.db_table)

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

    #: Whether ``insert`` runs ``along`` and ``count_hour`` in its own statement (PostgreSQL's
    #: data-modifying CTEs); where it does not, the caller runs them on its own.
    combines_statements = False

    @abstractmethod
    def insert(
        self,
        chunk: Sequence[Candidate],
        *,
        along: tuple[str, Sequence[Any]] | None = None,
        count_hour: datetime | None = None,
    ) -> list[tuple[int, str, str]]:
        """INSERT the chunk in one statement, skipping keys that exist.

        Returns (id, event_name, event_id) of the rows really inserted, so a row a concurrent
        request inserted first is told apart from ours without reading before writing.

        Only where ``combines_statements``: ``along`` is another data-modifying statement
        (SQL and its parameters) run in the same statement, so it takes effect exactly when the
        rows do; with ``count_hour``, the rows inserted are added to their destination's
        ``HourlyOutcomes`` of that hour (recorded, rejected, suppressed, match quality) in the
        same statement too, as ``counters.add`` would (the counter row then stays locked until
        the rows' commit is on disk, so ``ingest`` does not use it: see ``ingest._count_hour``).
        """

    #: Whether ``insert_started`` returns before the database has run the INSERT (PostgreSQL),
    #: so the caller can prepare the next chunk meanwhile.
    overlaps = False

    def insert_started(
        self,
        chunk: Sequence[Candidate],
        *,
        along: tuple[str, Sequence[Any]] | None = None,
        count_hour: datetime | None = None,
    ) -> Callable[[], list[tuple[int, str, str]]]:
        """``insert``, started; the function returned waits for it and returns its rows (or
        raises its error). Nothing else may be sent on the connection before that function
        is called. Here the INSERT runs at once (see ``overlaps``)."""
        rows = self.insert(chunk, along=along, count_hour=count_hour)
        return lambda: rows

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
        names = tuple(counts)
        sql = _SQL.get((self.alias, "add_counts", names))
        if sql is None:
            quote, table = self.quote, self.quote(HourlyOutcomes._meta.db_table)
            added = ", ".join(
                f"{quote(name)} = {table}.{quote(name)} + EXCLUDED.{quote(name)}" for name in names
            )
            key = f"{quote('destination_id')}, {quote('hour')}"
            sql = _SQL[(self.alias, "add_counts", names)] = (
                f"INSERT INTO {table} ({key}, {', '.join(quote(name) for name in names)}) "  # noqa: S608
                f"VALUES (%s, %s{', %s' * len(names)}) ON CONFLICT ({key}) DO UPDATE SET {added}"
            )
        hour_value = self.connection.ops.adapt_datetimefield_value(hour)
        self._execute_bound(sql, [destination_id, hour_value, *counts.values()])

    def add_refused_call(
        self, destination_id: int, hour: datetime, reason: str, origin: str, at: datetime
    ) -> None:
        """Count one refused ingest call in the destination's row of ``hour`` and ``reason``.

        One UPSERT, the same on both databases; an empty ``origin`` keeps the last one known.
        """
        sql = _SQL.get((self.alias, "add_refused_call", ()))
        if sql is None:
            quote, table = self.quote, self.quote(RefusedCalls._meta.db_table)
            count, origin_column = quote("count"), quote("last_origin")
            key = f"{quote('destination_id')}, {quote('hour')}, {quote('reason')}"
            sql = _SQL[(self.alias, "add_refused_call", ())] = (
                f"INSERT INTO {table} ({key}, {count}, {origin_column}, {quote('last_at')}) "  # noqa: S608
                f"VALUES (%s, %s, %s, 1, %s, %s) ON CONFLICT ({key}) DO UPDATE SET "
                f"{count} = {table}.{count} + 1, "
                f"{quote('last_at')} = EXCLUDED.{quote('last_at')}, "
                f"{origin_column} = CASE WHEN EXCLUDED.{origin_column} = '' "
                f"THEN {table}.{origin_column} ELSE EXCLUDED.{origin_column} END"
            )
        adapt = self.connection.ops.adapt_datetimefield_value
        self._execute_bound(sql, [destination_id, adapt(hour), reason, origin, adapt(at)])

    def _refuse_combined(self, along: object, count_hour: object) -> None:
        if along is not None or count_hour is not None:
            raise NotSupportedError(
                f"Event storage on {self.connection.vendor} runs no other statement with its "
                "INSERT: run it apart."
            )

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

    def _enqueue_sql(self, source: str, condition: str = "") -> str:
        """INSERT the queue entries of the ``pending`` rows of ``source`` (the event table or a
        CTE with its ``id``, ``destination_id``, ``status`` and ``created_at``) that meet
        ``condition``, due when they were recorded; the last placeholder is the pending
        status."""
        where = f"{condition} AND " if condition else ""
        return (
            f"INSERT INTO {self.queue_table} (event_id, destination_id, due_at) "  # noqa: S608
            f"SELECT id, destination_id, created_at FROM {source} WHERE {where}status = %s "
            "ON CONFLICT DO NOTHING"
        )

    # --- the delivery queue (QueuedEvent) -----------------------------------------------------

    #: The claim is one statement (its commit's durability set inside it): outside a
    #: transaction it runs in autocommit, without a BEGIN and a COMMIT of its own to wait for.
    claims_in_one_statement = False

    @abstractmethod
    def claim(
        self,
        destination_ids: Sequence[int],
        limit: int,
        now: datetime,
        lease_token: uuid.UUID,
        lease_expires_at: datetime,
    ) -> list[tuple[Any, ...]]:
        """Lease up to ``limit`` due events of one of ``destination_ids`` (the one whose oldest
        due event is the oldest, its events oldest first) under ``lease_token`` until
        ``lease_expires_at``, inside the caller's transaction (or, where
        ``claims_in_one_statement``, in autocommit).

        Returns (id, destination_id, event_time, attempts, payload JSON text, action_source)
        of each event really leased: the lease is a conditional write of the queue entry
        (still due), so two workers never both take one, even without row locks.
        """

    def _due_sql(self, destination_ids: Sequence[int], lock: str) -> tuple[str, list[Any]]:
        """SELECT the ids of the due queue entries a claim takes (see :meth:`claim`); its
        parameters after ``destination_ids``: now, now, now, now, limit."""
        condition, params = self._id_in("destination_id", destination_ids)
        queue = self.queue_table
        sql = (
            f"SELECT event_id FROM {queue} WHERE destination_id = ("  # noqa: S608
            f"SELECT destination_id FROM {queue} WHERE {condition} AND due_at <= %s "
            f"AND {self.NOT_LEASED} ORDER BY due_at LIMIT 1{lock}) AND due_at <= %s "
            f"AND {self.NOT_LEASED} ORDER BY due_at LIMIT %s{lock}"
        )
        return sql, params

    #: A queue entry no worker holds now (no lease, or one that ran out); parameter: now.
    NOT_LEASED = "(lease_expires_at IS NULL OR lease_expires_at <= %s)"

    def enqueue(self, ids: Sequence[int], due_at: datetime) -> None:
        """Put the ``pending`` events among ``ids`` in the queue, due at ``due_at`` (those
        already in it stay as they are). For an event made ``pending`` again, in the same
        transaction."""
        if not ids:
            return
        condition, params = self._id_in("id", ids)
        sql = (
            f"INSERT INTO {self.queue_table} (event_id, destination_id, due_at) "  # noqa: S608
            f"SELECT id, destination_id, %s FROM {self.table} WHERE {condition} AND status = %s "
            "ON CONFLICT DO NOTHING"
        )
        self._execute(sql, [self._time(due_at), *params, PENDING])

    def leave_queue(self, ids: Sequence[int], lease_token: uuid.UUID | None) -> list[int]:
        """Delete the queue entries of ``ids`` held under ``lease_token`` (``None``: the ones
        no worker holds); returns the event ids really taken out, whose outcome the caller
        then writes in the same transaction."""
        return self._queue_write("DELETE FROM {queue}", [], ids, lease_token)

    def deliver(
        self,
        ids: Sequence[int],
        lease_token: uuid.UUID,
        *,
        attempt_id: int,
        reason: str,
        now: datetime,
    ) -> int:
        """Take the events among ``ids`` still held under ``lease_token`` out of the queue and
        mark them delivered by the attempt ``attempt_id`` (one more attempt each), inside the
        caller's transaction; returns how many."""
        left = self.leave_queue(ids, lease_token)
        return (
            Event.objects.using(self.alias)
            .filter(pk__in=left)
            .update(
                status=EventStatus.DELIVERED,
                status_reason=reason,
                delivered_at=now,
                delivered_by_id=attempt_id,
                attempts=F("attempts") + 1,
                updated_at=now,
            )
        )

    def requeue_owned(
        self, ids: Sequence[int], lease_token: uuid.UUID, due_at: datetime
    ) -> list[int]:
        """Give back the lease on ``ids`` (those still held under ``lease_token``), due at
        ``due_at``; returns the event ids given back."""
        return self._queue_write(
            "UPDATE {queue} SET lease_token = NULL, lease_expires_at = NULL, due_at = %s",
            [self._time(due_at)],
            ids,
            lease_token,
        )

    def extend_lease(
        self, ids: Sequence[int], lease_token: uuid.UUID, lease_expires_at: datetime
    ) -> None:
        """Move the end of the lease on ``ids`` still held under ``lease_token``."""
        self._queue_write(
            "UPDATE {queue} SET lease_expires_at = %s",
            [self._time(lease_expires_at)],
            ids,
            lease_token,
        )

    def _queue_write(
        self,
        statement: str,
        params: list[Any],
        ids: Sequence[int],
        lease_token: uuid.UUID | None,
    ) -> list[int]:
        if not ids:
            return []
        condition, id_params = self._id_in("event_id", ids)
        if lease_token is None:
            lease = "lease_token IS NULL"
            lease_params: list[Any] = []
        else:
            lease = "lease_token = %s"
            lease_params = [self._uuid(lease_token)]
        sql = (
            f"{statement.format(queue=self.queue_table)} WHERE {condition} AND {lease} "
            "RETURNING event_id"
        )
        return [pk for (pk,) in self._fetch(sql, [*params, *id_params, *lease_params])]

    def _id_in(self, column: str, ids: Sequence[int]) -> tuple[str, list[Any]]:
        """``column IN (…)`` of ``ids``, and its parameters."""
        return f"{column} IN ({', '.join(['%s'] * len(ids))})", [int(pk) for pk in ids]

    def _time(self, value: datetime) -> Any:
        return self.connection.ops.adapt_datetimefield_value(value)

    def _uuid(self, value: uuid.UUID) -> Any:
        return value

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

    def _execute_bound(self, sql: str, params: Sequence[Any]) -> None:
        """``_execute`` for a statement run on every request: bound by the server where it
        can, and prepared once per connection where the site allows it (see ``bound_sql``)."""
        bound_sql.execute(self.connection, sql, params, prepare=True)


def json_writer(*, canonical: bool, compact: bool = False) -> Callable[[Any], str]:
    """``json.dumps(value, ensure_ascii=False, allow_nan=False)`` (with ``canonical``: sorted
    keys and no spaces; with ``compact``: no spaces), the same text, made by one encoder built
    once.

    ``json.dumps`` with any argument of its own builds a ``JSONEncoder`` and a C encoder on
    every call: half the cost of encoding an event's small record. Without the C encoder
    (another Python), ``json.dumps`` itself. No check for circular containers: one ends in
    ``RecursionError``, as nesting too deep does (``ValueError`` with the check).
    """
    separators = (",", ":") if canonical or compact else (", ", ": ")
    make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_encoder is None:  # pragma: no cover  # CPython has it

        def written(value: Any) -> str:
            return json.dumps(
                value,
                sort_keys=canonical,
                separators=separators,
                ensure_ascii=False,
                allow_nan=False,
            )

        return written
    encode = make_encoder(
        None,  # no check for circular containers
        _not_json,
        json.encoder.encode_basestring,  # as ensure_ascii=False
        None,  # no indent
        separators[1],
        separators[0],
        canonical,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )

    def write(value: Any) -> str:
        if isinstance(value, str):
            return json.encoder.encode_basestring(value)  # as JSONEncoder.encode does
        return "".join(encode(value, 0))

    return write


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


#: JSON text as the JSON columns store it (``json_writer``).
dumps = json_writer(canonical=False)
