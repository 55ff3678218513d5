"""Shared fixtures: a controllable clock, tenants, users with roles, destinations, tokens."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection

from capi_destinations import clock as app_clock
from capi_destinations import counters
from capi_destinations.models import (
    Destination,
    Event,
    EventStatus,
    Membership,
    QueuedEvent,
    Role,
    Tenant,
)

pytest_plugins = [
    "tests.fixtures.sandbox",
    "tests.fixtures.receivers",
    "tests.fixtures.live_server",
]

FROZEN_AT = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)

_counter = itertools.count(1)


def close_thread_connection() -> None:
    """At the end of a test's own thread: close that thread's database connection.

    Django ignores ``close()`` on an in-memory SQLite database (closing the last connection
    would drop it); a thread's own handle to the shared test database is safe to close, and
    Python 3.13 warns (``ResourceWarning``) about one left open.
    """
    in_memory = connection.vendor == "sqlite" and connection.is_in_memory_db()
    if in_memory and connection.connection is not None:
        connection.connection.close()
        connection.connection = None
    connection.close()


def other_session(*, autocommit: bool = False) -> Any:
    """A psycopg connection of its own to the test database (PostgreSQL): another session, to
    hold a lock, to see only what is committed, or to end this one's backend."""
    import psycopg  # only the PostgreSQL tests call this

    database = connection.settings_dict
    return psycopg.connect(
        host=database["HOST"] or "127.0.0.1",
        port=database["PORT"] or 5432,
        user=database["USER"] or "postgres",
        dbname=database["NAME"],
        autocommit=autocommit,
    )


def terminate_backend(pid: int) -> None:
    """End PostgreSQL backend ``pid`` as the server does when it drops a connection, and wait
    (up to 5 s) until it is gone."""
    with other_session(autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])


def make_token(seed: str = "token") -> str:
    """A well-formed fake CAPI token (EAA + letters and digits, 190 characters)."""
    body = ""
    index = 0
    while len(body) < 187:
        body += hashlib.sha256(f"{seed}-{index}".encode()).hexdigest()
        index += 1
    # Mix cases so it looks like a real token but stays letters and digits only.
    mixed = "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(body[:187]))
    return "EAA" + mixed


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    """Each test starts with an empty cache: rate-limit and login counters of one test, counted
    at the same frozen moment, must not spend the next test's budget."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def clock() -> Iterator[Any]:
    """The app clock, frozen at FROZEN_AT; move it with ``clock.advance(timedelta(...))``."""
    app_clock.freeze(FROZEN_AT)
    yield app_clock
    app_clock.unfreeze()


@pytest.fixture
def token() -> str:
    return make_token("default")


@pytest.fixture
def make_tenant(db: None) -> Callable[..., Tenant]:
    def factory(name: str | None = None, slug: str | None = None) -> Tenant:
        number = next(_counter)
        name = name or f"Client {number}"
        return Tenant.objects.create(name=name, slug=slug or f"client-{number}")

    return factory


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant("Acme Shoes", "acme")


@pytest.fixture
def other_tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant("Globex Coffee", "globex")


@pytest.fixture
def make_user(db: None, django_user_model: Any) -> Callable[..., Any]:
    """``make_user(tenant, role)`` → a user with that membership (no tenant → no membership)."""

    def factory(
        tenant: Tenant | None = None,
        role: str = Role.VIEWER,
        *,
        username: str | None = None,
        is_staff: bool = False,
        is_superuser: bool = False,
    ) -> Any:
        username = username or f"user{next(_counter)}"
        user = django_user_model.objects.create_user(
            username=username,
            password="correct horse battery staple",
            is_staff=is_staff,
            is_superuser=is_superuser,
        )
        if tenant is not None:
            Membership.objects.create(user=user, tenant=tenant, role=role)
        return user

    return factory


@pytest.fixture
def make_destination(db: None, tenant: Tenant) -> Callable[..., Destination]:
    def factory(**fields: Any) -> Destination:
        number = next(_counter)
        fields.setdefault("tenant", tenant)
        fields.setdefault("name", f"Shop pixel {number}")
        fields.setdefault("pixel_id", str(1_000_000_000_000_000 + number))
        fields.setdefault("access_token", make_token(f"destination-{number}"))
        return Destination.objects.create(**fields)

    return factory


@pytest.fixture
def destination(make_destination: Callable[..., Destination]) -> Destination:
    return make_destination(name="Acme web pixel")


def server_event(
    event_id: str,
    *,
    event_name: str = "Purchase",
    event_time: datetime | None = None,
    email: str = "jane.doe@example.com",
) -> dict[str, Any]:
    """A Meta-ready server event (user_data already hashed), as the dispatcher sends it."""
    when = event_time or app_clock.now()
    return {
        "event_name": event_name,
        "event_time": int(when.timestamp()),
        "event_id": event_id,
        "action_source": "website",
        "event_source_url": "https://shop.example.com/checkout",
        "user_data": {
            "em": [hashlib.sha256(email.encode()).hexdigest()],
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "client_ip_address": "203.0.113.7",
        },
        "custom_data": {"value": 49.9, "currency": "EUR"},
    }


def queue_events(
    events: Iterable[Event],
    *,
    due_at: datetime | None = None,
    lease_token: uuid.UUID | None = None,
    lease_expires_at: datetime | None = None,
) -> None:
    """Put pending events made without ``track()`` (``bulk_create``) in the delivery queue,
    due at ``due_at`` (now by default), as ingest does; held by a worker with a
    ``lease_token`` until ``lease_expires_at``."""
    QueuedEvent.objects.bulk_create(
        QueuedEvent(
            event_id=event.pk,
            destination_id=event.destination_id,
            due_at=due_at or app_clock.now(),
            lease_token=lease_token,
            lease_expires_at=lease_expires_at,
        )
        for event in events
    )


@pytest.fixture
def make_event(db: None, destination: Destination) -> Callable[..., Event]:
    """``make_event(destination=..., event_id=..., **fields)`` → a pending, due Event row.

    With a ``status`` the overview counts (delivered, failed, expired, rejected), the hourly
    counter of the clock's hour goes up by one, as if the event had just reached it.
    """

    def factory(**fields: Any) -> Event:
        event_id = fields.pop("event_id", f"evt-{next(_counter)}")
        event_name = fields.pop("event_name", "Purchase")
        event_time = fields.pop("event_time", app_clock.now())
        fields.setdefault("destination", destination)
        fields.setdefault(
            "payload", server_event(event_id, event_name=event_name, event_time=event_time)
        )
        fields.setdefault("status", EventStatus.PENDING)
        # The queue entry of a pending event: due at ``next_attempt_at`` (now by default), or
        # held by a worker until ``lease_expires_at``.
        due_at = fields.pop("next_attempt_at", app_clock.now())
        lease_expires_at = fields.pop("lease_expires_at", None)
        event = Event.objects.create(
            event_id=event_id,
            event_name=event_name,
            event_time=event_time,
            action_source=fields["payload"].get("action_source", ""),
            **fields,
        )
        if event.status == EventStatus.PENDING:
            leased = lease_expires_at is not None
            queue_events(
                [event],
                due_at=due_at or app_clock.now(),
                lease_token=uuid.uuid4() if leased else None,
                lease_expires_at=lease_expires_at,
            )
        # An event made with an outcome reached it now, as the code that gives outcomes counts.
        for outcome, statuses in counters.STATUSES_OF_OUTCOME.items():
            if event.status in statuses:
                counters.add(event.destination_id, **{outcome: 1}, at=event.updated_at)
        return event

    return factory
