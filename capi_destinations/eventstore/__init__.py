"""Where events are stored: one interface, one implementation per supported database.

``ingest`` prepares events and decides what to store with the pure rules of ``plan`` (which
copy of a key is kept, which one replaces a rejected original, which is a duplicate); an
``EventStore`` writes that with the fewest statements its database allows. The app supports
PostgreSQL and SQLite (3.35 or later); ``store_for`` refuses any other database.
"""

from __future__ import annotations

from django.db import NotSupportedError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from capi_destinations.eventstore.base import CHUNK_SIZE, Candidate, EventStore
from capi_destinations.eventstore.plan import BatchPlan, Planned, corrects, plan_batch, reuses
from capi_destinations.eventstore.postgresql import PostgreSQLEventStore
from capi_destinations.eventstore.sqlite import SQLiteEventStore

__all__ = [
    "CHUNK_SIZE",
    "BatchPlan",
    "Candidate",
    "EventStore",
    "Planned",
    "PostgreSQLEventStore",
    "SQLiteEventStore",
    "corrects",
    "plan_batch",
    "reuses",
    "store_for",
    "store_on",
]

_STORES: dict[str, type[EventStore]] = {
    "postgresql": PostgreSQLEventStore,
    "sqlite": SQLiteEventStore,
}


def store_for(database: str) -> EventStore:
    """The event store of the database alias ``database``.

    Raises ``NotSupportedError`` for a database the app does not support.
    """
    return store_on(connections[database])


def store_on(connection: BaseDatabaseWrapper) -> EventStore:
    """The event store writing through ``connection``; see ``store_for``."""
    store = _STORES.get(connection.vendor)
    if store is None:
        raise NotSupportedError(
            f"capi_destinations stores events on PostgreSQL or SQLite, not {connection.vendor}."
        )
    return store(connection)
