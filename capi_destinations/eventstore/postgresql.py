"""Event storage on PostgreSQL: each statement carries its rows as ONE jsonb parameter.

Django's bulk insert costs more than the rest of ingestion put together on PostgreSQL (it
builds one array per column; thousands of placeholders are slow to bind), so the statements are
written out here: the chunk travels as a JSON array unpacked by ``jsonb_to_recordset``. Only the
model's own table and column names are formatted in; values are parameters.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import DateTimeField

from capi_destinations import bound_sql
from capi_destinations.conf import app_settings
from capi_destinations.eventstore.base import (
    INSERT_FIELDS,
    PENDING,
    REPLACED_FIELDS,
    Candidate,
    EventStore,
    json_writer,
)
from capi_destinations.models import Event, EventStatus, HourlyOutcomes

__all__ = ["PostgreSQLEventStore"]

# The INSERT statement per database alias, built once (the columns never change at run time).
_INSERT_SQL: dict[tuple[str, str, bool], str] = {}
# add_counts's UPSERT in autocommit, per (alias, counted columns).
_UNFLUSHED_COUNTS_SQL: dict[tuple[str, tuple[str, ...]], str] = {}
# A row travels as a JSON object whose keys are short names of the columns ("c0", "c1", …, in
# INSERT_FIELDS' order), not the columns' own: the keys are most of the text of a row but its
# payload, which Python encodes and PostgreSQL parses for every row.
_RECORD_KEYS = {f.attname: f"c{number}" for number, f in enumerate(INSERT_FIELDS)}
# (key, attname, whether it holds a time) of every inserted column but the payload, whose JSON
# text is ready-made.
_RECORD_COLUMNS = [
    (_RECORD_KEYS[f.attname], f.attname, isinstance(f, DateTimeField))
    for f in INSERT_FIELDS
    if f.attname != "payload"
]
_PAYLOAD_KEY = _RECORD_KEYS["payload"]
_write_record = json_writer(canonical=False, compact=True)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The delivery's statement per database alias.
_DELIVER_SQL: dict[str, str] = {}


class PostgreSQLEventStore(EventStore):
    """``INSERT … ON CONFLICT DO NOTHING RETURNING`` and ``UPDATE … FROM`` over jsonb records."""

    combines_statements = True

    overlaps = True

    claims_in_one_statement = True

    def insert(
        self,
        chunk: Sequence[Candidate],
        *,
        along: tuple[str, Sequence[Any]] | None = None,
        count_hour: datetime | None = None,
    ) -> list[tuple[int, str, str]]:
        # Prepared where the site allows it (bound_sql): planning this statement costs
        # PostgreSQL more than inserting one event, and its generic plan is the custom one.
        sql, params = self._insert_statement(chunk, along, count_hour)
        return bound_sql.fetch_all(self.connection, sql, params, prepare=True)

    def insert_started(
        self,
        chunk: Sequence[Candidate],
        *,
        along: tuple[str, Sequence[Any]] | None = None,
        count_hour: datetime | None = None,
    ) -> Callable[[], list[tuple[int, str, str]]]:
        # The parameter is built here (Python: it would only compete for the GIL in the
        # thread); the thread sends it and waits for PostgreSQL without holding the GIL.
        sql, params = self._insert_statement(chunk, along, count_hour)
        return bound_sql.fetch_all_started(self.connection, sql, params, prepare=True)

    def _insert_statement(
        self,
        chunk: Sequence[Candidate],
        along: tuple[str, Sequence[Any]] | None,
        count_hour: datetime | None,
    ) -> tuple[str, list[Any]]:
        """The INSERT of ``insert`` and its parameters."""
        counted = count_hour is not None
        key = (self.alias, along[0] if along is not None else "", counted)
        sql = _INSERT_SQL.get(key)
        if sql is None:
            # One statement: the rows, the queue entries of the pending ones, and what goes
            # with them (the click IDs remembered, the hourly counts).
            extra = f", along AS ({along[0]})" if along is not None else ""
            if counted:
                extra += f", counted AS ({self._count_sql()})"
            sql = _INSERT_SQL[key] = (
                f"WITH inserted AS (INSERT INTO {self.table} ({self._columns()}) "  # noqa: S608
                f"SELECT {', '.join(_RECORD_KEYS.values())} FROM jsonb_to_recordset(%s::jsonb) "
                f"AS chunk({self._record_types()}) ON CONFLICT DO NOTHING "
                "RETURNING id, event_name, event_id, destination_id, status, created_at, "
                f"match_quality), queued AS ({self._enqueue_sql('inserted')}){extra} "
                "SELECT id, event_name, event_id FROM inserted"
            )
        # Most rows share their timestamps (the batch's "now"): format each one once.
        iso_times: dict[datetime, str] = {}
        records = ",".join(_json_record(candidate, iso_times) for candidate in chunk)
        params: list[Any] = [f"[{records}]", PENDING]
        if along is not None:
            params.extend(along[1])
        if count_hour is not None:
            params.extend(
                [
                    chunk[0].row.destination_id,
                    count_hour,
                    EventStatus.REJECTED.value,
                    EventStatus.SUPPRESSED.value,
                ]
            )
        return sql, params

    def _count_sql(self) -> str:
        """``counters.add`` of the rows of ``inserted`` (all of one destination), if any."""
        quote, table = self.quote, self.quote(HourlyOutcomes._meta.db_table)
        names = (
            "delivered",
            "failed",
            "rejected",
            "suppressed",
            "recorded",
            "quality_sum",
            "quality_events",
        )
        added = ", ".join(
            f"{quote(name)} = {table}.{quote(name)} + EXCLUDED.{quote(name)}" for name in names
        )
        key = f"{quote('destination_id')}, {quote('hour')}"
        return (
            f"INSERT INTO {table} ({key}, {', '.join(quote(name) for name in names)}) "  # noqa: S608
            "SELECT %s, %s, 0, 0, count(*) FILTER (WHERE status = %s), "
            "count(*) FILTER (WHERE status = %s), count(*), "
            "coalesce(sum(match_quality), 0), count(match_quality) FROM inserted "
            f"HAVING count(*) > 0 ON CONFLICT ({key}) DO UPDATE SET {added}"
        )

    def add_counts(self, destination_id: int, hour: datetime, counts: dict[str, float]) -> None:
        """As the base UPSERT; with ``HOURLY_COUNTS_WAIT_FOR_DISK`` off (the default is on),
        in autocommit, its commit does not wait for the WAL flush.

        Every ingest request of a destination adds to the same row of the hour. Committed the
        usual way, each holds that row's lock until its commit is on disk, so concurrent
        requests are served one flush after another. A count is not an event: a server crash
        may lose the last fraction of a second of counts (``counters.rebuild`` recounts them),
        never an event, which was committed durably before. Inside a caller's transaction
        (dispatch's outcomes) nothing changes: the counts commit with it, durably.
        """
        connection = self.connection
        if (
            app_settings.HOURLY_COUNTS_WAIT_FOR_DISK
            or connection.in_atomic_block
            or not connection.get_autocommit()
        ):
            super().add_counts(destination_id, hour, counts)
            return
        names = tuple(counts)
        sql = _UNFLUSHED_COUNTS_SQL.get((self.alias, names))
        if sql is None:
            quote, table = self.quote, self.quote(HourlyOutcomes._meta.db_table)
            added = ", ".join(
                f"{quote(name)} = {table}.{quote(name)} + EXCLUDED.{quote(name)}" for name in names
            )
            key = f"{quote('destination_id')}, {quote('hour')}"
            # set_config(..., true) holds for this statement's own transaction only; the
            # subquery makes sure it runs (an unreferenced CTE would not).
            sql = _UNFLUSHED_COUNTS_SQL[(self.alias, names)] = (
                f"INSERT INTO {table} ({key}, {', '.join(quote(name) for name in names)}) "  # noqa: S608
                f"SELECT %s, %s{', %s' * len(names)} FROM (SELECT set_config("
                "'synchronous_commit', 'off', true)) AS unflushed "
                f"ON CONFLICT ({key}) DO UPDATE SET {added}"
            )
        hour_value = connection.ops.adapt_datetimefield_value(hour)
        bound_sql.execute(
            connection, sql, [destination_id, hour_value, *counts.values()], prepare=True
        )

    def replace_rejected(self, replacements: Sequence[tuple[int, Candidate]]) -> set[int]:
        quote = self.quote
        assignments = ", ".join(
            f"{quote(f.column)} = incoming.{_RECORD_KEYS[f.attname]}" for f in REPLACED_FIELDS
        )
        id_type = Event._meta.pk.rel_db_type(self.connection)  # type: ignore[attr-defined]  # not in the stubs
        sql = (
            f"WITH replaced AS (UPDATE {self.table} AS stored SET {assignments} "  # noqa: S608
            f"FROM jsonb_to_recordset(%s::jsonb) AS incoming(id {id_type}, "
            f"{self._record_types()}) "
            "WHERE stored.id = incoming.id AND stored.status = %s "
            "RETURNING stored.id, stored.destination_id, stored.status, stored.created_at), "
            f"queued AS ({self._enqueue_sql('replaced')}) SELECT id FROM replaced"
        )
        iso_times: dict[datetime, str] = {}
        records = ",".join(
            f'{{"id":{int(pk)},{_json_record(candidate, iso_times)[1:]}'
            for pk, candidate in replacements
        )
        rows = self._fetch(sql, [f"[{records}]", EventStatus.REJECTED.value, PENDING])
        return {pk for (pk,) in rows}

    def append_finding(self, ids: Sequence[int], finding: dict[str, Any], now: datetime) -> None:
        sql = (
            f"UPDATE {self.table} SET diagnostics = diagnostics || %s::jsonb, "  # noqa: S608
            "updated_at = %s WHERE id = ANY(%s) AND NOT diagnostics @> %s::jsonb"
        )
        self._execute(
            sql,
            [json.dumps([finding]), now, list(ids), json.dumps([{"code": finding["code"]}])],
        )

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        # The chunk bound as a parameter, not escaped into the SQL text (see bound_sql).
        return bound_sql.fetch_all(self.connection, sql, params)

    def claim(
        self,
        destination_ids: Sequence[int],
        limit: int,
        now: datetime,
        lease_token: uuid.UUID,
        lease_expires_at: datetime,
    ) -> list[tuple[Any, ...]]:
        # One statement: choose (skipping entries other workers are claiming), lease, and read
        # the events' payloads. It writes only unindexed columns: a HOT update (see
        # QueuedEvent). Its commit does not wait for the WAL flush: a claim lost in a
        # server crash leaves its events due, as if never claimed (an outcome's commit is
        # durable as usual). set_config(..., true) holds for the statement's transaction only
        # (in autocommit, the statement itself), so the claim needs no BEGIN, SET and COMMIT
        # round trips of its own.
        due, params = self._due_sql(destination_ids, " FOR UPDATE SKIP LOCKED")
        queue = self.queue_table
        sql = (
            f"WITH due AS ({due}), claimed AS (UPDATE {queue} SET lease_token = %s, "  # noqa: S608
            f"lease_expires_at = %s FROM due WHERE {queue}.event_id = due.event_id RETURNING "
            f"{queue}.event_id) SELECT event.id, event.destination_id, "
            "(extract(epoch FROM event.event_time) * 1000000)::bigint, "
            "event.attempts, event.payload::text, event.action_source FROM claimed "
            f"JOIN {self.table} AS event ON event.id = claimed.event_id CROSS JOIN "
            "(SELECT set_config('synchronous_commit', 'off', true)) AS unflushed"
        )
        rows = self._fetch(sql, [*params, now, now, now, now, limit, lease_token, lease_expires_at])
        # event_time travels as microseconds since the epoch: parsing a thousand timestamps
        # from text (and setting their time zone) cost the worker more than this addition.
        return [
            (pk, destination_id, _EPOCH + timedelta(microseconds=micros), *rest)
            for pk, destination_id, micros, *rest in rows
        ]

    def deliver(
        self,
        ids: Sequence[int],
        lease_token: uuid.UUID,
        *,
        attempt_id: int,
        reason: str,
        now: datetime,
    ) -> int:
        # One statement, the ids as one array parameter, bound and prepared by the server: the
        # ORM's ``pk__in`` wrote a thousand placeholders into the text of each delivery, whose
        # formatting cost the worker more Python time than anything else it does per event.
        sql = _DELIVER_SQL.get(self.alias)
        if sql is None:
            sql = _DELIVER_SQL[self.alias] = (
                f"WITH left_queue AS (DELETE FROM {self.queue_table} "  # noqa: S608
                "WHERE event_id = ANY(%s::bigint[]) AND lease_token = %s RETURNING event_id), "
                f"delivered AS (UPDATE {self.table} AS event SET status = %s, "
                "status_reason = %s, delivered_at = %s, delivered_by_id = %s, "
                "attempts = event.attempts + 1, updated_at = %s FROM left_queue "
                "WHERE event.id = left_queue.event_id RETURNING 1) SELECT count(*) FROM delivered"
            )
        ((count,),) = self._fetch(
            sql,
            [
                _bigint_array(ids),
                lease_token,
                EventStatus.DELIVERED.value,
                reason,
                now,
                attempt_id,
                now,
            ],
        )
        return int(count)

    def _id_in(self, column: str, ids: Sequence[int]) -> tuple[str, list[Any]]:
        # One array parameter: a thousand placeholders cost more to send and to parse.
        return f"{column} = ANY(%s::bigint[])", [_bigint_array(ids)]

    def _columns(self) -> str:
        return ", ".join(self.quote(model_field.column) for model_field in INSERT_FIELDS)

    def _record_types(self) -> str:
        """The record's keys (``_RECORD_KEYS``) with their columns' types."""
        return ", ".join(
            f"{_RECORD_KEYS[model_field.attname]} {model_field.db_type(self.connection)}"
            for model_field in INSERT_FIELDS
        )


def _bigint_array(ids: Sequence[int]) -> str:
    """Ids as one array literal in a text parameter: the driver's adapter of a Python list
    checks and converts each item in Python, a thousand times per delivery."""
    return "{" + ",".join(str(int(pk)) for pk in ids) + "}"


def _json_record(candidate: Candidate, iso_times: dict[datetime, str]) -> str:
    """One row as a JSON object: JSON columns nested, times in ISO, the payload spliced in."""
    # Every column is a plain instance attribute (see ingest._new_event): read the dict, not
    # getattr.
    values = candidate.row.__dict__
    record: dict[str, Any] = {}
    for key, attname, is_time in _RECORD_COLUMNS:
        value = values[attname]
        if is_time and value is not None:
            text = iso_times.get(value)
            if text is None:
                text = iso_times[value] = value.isoformat()
            value = text
        record[key] = value
    text = _write_record(record)
    # The payload's JSON text already exists (it was hashed): splice it in, not encode again.
    return f'{text[:-1]},"{_PAYLOAD_KEY}":{candidate.payload_json}}}'
