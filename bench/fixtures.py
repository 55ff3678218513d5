"""Database set-up for the benchmarks: tenants, destinations, and many pending events, fast.

Set-up is not what is measured, so pending events are written with PostgreSQL's COPY (or one
``executemany`` on SQLite) rather than through ``track_many``; their payloads are the
Meta-ready server events ``track_many`` would have stored.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from bench.data import server_event

_pixel_numbers = itertools.count(1)


def make_token(seed: str) -> str:
    """A well-formed fake CAPI token (``EAA`` + 187 letters and digits), distinct per seed."""
    body = ""
    index = 0
    while len(body) < 187:
        body += hashlib.sha256(f"{seed}-{index}".encode()).hexdigest()
        index += 1
    return "EAA" + "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(body[:187]))


def create_destinations(
    count: int, *, tenants: int = 1, prefix: str = "bench", **fields: Any
) -> list[Any]:
    """``count`` destinations spread over ``tenants`` tenants, with distinct pixels and tokens."""
    from capi_destinations.models import Destination, Tenant

    tenant_rows = [
        Tenant.objects.create(name=f"{prefix} client {number}", slug=f"{prefix}-client-{number}")
        for number in range(tenants)
    ]
    destinations = []
    for number in range(count):
        values = {
            "tenant": tenant_rows[number % tenants],
            "name": f"{prefix} pixel {number}",
            # Distinct across calls too, so the sandbox's per-pixel read-back is per set.
            "pixel_id": str(1_000_000_000_000_000 + next(_pixel_numbers)),
            "access_token": make_token(f"{prefix}-{number}"),
            **fields,
        }
        destinations.append(Destination.objects.create(**values))
    return destinations


def _rows(
    destination_ids: Sequence[int], count: int, *, now: datetime, prefix: str
) -> Iterator[tuple[Any, ...]]:
    event_time = int((now - timedelta(minutes=30)).timestamp())
    when = now - timedelta(minutes=30)
    for number in range(count):
        destination_id = destination_ids[number % len(destination_ids)]
        event_id = f"{prefix}-{number}"
        payload = server_event(event_id, event_time, number=number)
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        yield (
            destination_id,
            payload["event_name"],
            event_id,
            when,
            "website",
            text,
            hashlib.sha256(text.encode()).hexdigest(),
            "pending",
            "",
            0,
            "[]",
            6.5,
            when,
            when,
        )


_COLUMNS = (
    "destination_id",
    "event_name",
    "event_id",
    "event_time",
    "action_source",
    "payload",
    "payload_hash",
    "status",
    "status_reason",
    "attempts",
    "diagnostics",
    "match_quality",
    "created_at",
    "updated_at",
)


def insert_pending_events(
    destination_ids: Sequence[int], count: int, *, now: datetime, prefix: str = "evt"
) -> None:
    """Insert ``count`` due pending events round-robin over the destinations.

    Event IDs are ``<prefix>-<n>``; each event's time is half an hour before ``now``.
    """
    from django.db import connection

    from capi_destinations.models import Event, QueuedEvent

    table = Event._meta.db_table
    rows = _rows(destination_ids, count, now=now, prefix=prefix)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            columns = ", ".join(_COLUMNS)
            raw = cursor.cursor  # psycopg's own cursor, for COPY
            with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            placeholders = ", ".join("%s" for _ in _COLUMNS)
            statement = f"INSERT INTO {table} ({', '.join(_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608
            # Datetimes as Django writes them to SQLite (naive UTC text).
            adapt = connection.ops.adapt_datetimefield_value
            batch: list[tuple[Any, ...]] = []
            for row in rows:
                batch.append(
                    tuple(adapt(value) if isinstance(value, datetime) else value for value in row)
                )
                if len(batch) == 5000:
                    cursor.executemany(statement, batch)
                    batch = []
            if batch:
                cursor.executemany(statement, batch)
        # Pending events wait in the delivery queue, due when they were recorded.
        queue = QueuedEvent._meta.db_table
        cursor.execute(
            f"INSERT INTO {queue} (event_id, destination_id, due_at) "  # noqa: S608
            f"SELECT id, destination_id, created_at FROM {table} WHERE status = 'pending' "
            "ON CONFLICT DO NOTHING"
        )
