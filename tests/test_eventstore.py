"""The event store: the pure duplicate/replace plan, and each database's statements.

The store tests run on whichever database the suite runs on (SQLite by default, PostgreSQL
with ``DATABASE_URL``); ``make test`` runs both.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.db import NotSupportedError, connection
from django.db.backends.dummy.base import DatabaseWrapper as DummyDatabase

from capi_destinations import clock as app_clock
from capi_destinations import eventstore
from capi_destinations.eventstore import PostgreSQLEventStore, SQLiteEventStore
from capi_destinations.models import Destination, Event, EventStatus
from tests.conftest import server_event


@dataclass
class _Row:
    status: str
    payload_hash: str


@dataclass
class _Item:
    key: tuple[str, str]
    row: _Row


def item(event_id: str, status: str = EventStatus.PENDING, payload_hash: str = "h") -> _Item:
    return _Item(("Purchase", event_id), _Row(status, payload_hash))


def test_the_first_event_of_a_key_is_kept_and_later_copies_point_at_it() -> None:
    first, copy, other = item("a"), item("a", payload_hash="other"), item("b")

    plan = eventstore.plan_batch([first, copy, other])

    assert plan.kept == {("Purchase", "a"): first, ("Purchase", "b"): other}
    assert plan.later == [(copy, first)]
    assert plan.superseded == []
    assert eventstore.reuses(copy, first.row)
    assert not eventstore.reuses(item("a"), first.row)


def test_a_copy_that_corrects_a_rejected_event_takes_its_place() -> None:
    rejected = item("a", EventStatus.REJECTED)
    same_again = item("a", EventStatus.REJECTED)
    corrected = item("a", EventStatus.PENDING)
    after = item("a", EventStatus.PENDING, payload_hash="later")

    plan = eventstore.plan_batch([rejected, same_again, corrected, after])

    assert plan.kept == {("Purchase", "a"): corrected}
    assert plan.superseded == [rejected]
    # The same rejected contents again change nothing; a copy of a pending event never replaces.
    assert plan.later == [(same_again, rejected), (after, corrected)]
    assert eventstore.corrects(item("a", EventStatus.REJECTED, "new"), rejected.row)
    assert not eventstore.corrects(corrected, after.row)


def test_events_are_inserted_in_key_order() -> None:
    plan = eventstore.plan_batch([item("c"), item("a"), item("b")])

    assert [kept.key[1] for kept in plan.to_insert()] == ["a", "b", "c"]


# --- the store of the database the suite runs on -----------------------------------------------


@dataclass
class _Candidate:
    row: Event
    payload_json: str


def candidate(destination: Destination, event_id: str, **fields: Any) -> _Candidate:
    now = app_clock.now()
    payload = server_event(event_id)
    row = Event(
        destination=destination,
        event_name="Purchase",
        event_id=event_id,
        event_time=now,
        action_source="website",
        payload=payload,
        payload_hash=fields.pop("payload_hash", "hash-" + event_id),
        status=fields.pop("status", EventStatus.PENDING),
        created_at=now,
        updated_at=now,
        **fields,
    )
    return _Candidate(row, json.dumps(payload))


@pytest.fixture
def store(db: None) -> eventstore.EventStore:
    return eventstore.store_for(connection.alias)


def test_the_store_matches_the_database(store: eventstore.EventStore) -> None:
    expected = {"postgresql": PostgreSQLEventStore, "sqlite": SQLiteEventStore}
    assert type(store) is expected[connection.vendor]
    assert 1 <= store.chunk_size() <= eventstore.CHUNK_SIZE


def test_other_databases_are_refused() -> None:
    # Django's own placeholder backend stands for any database the app does not support.
    other = DummyDatabase({"ENGINE": "django.db.backends.dummy", "NAME": ""}, alias="other")

    with pytest.raises(NotSupportedError, match="PostgreSQL or SQLite, not unknown"):
        eventstore.store_on(other)


def test_insert_returns_only_the_rows_it_inserted(
    clock: Any, store: eventstore.EventStore, destination: Destination
) -> None:
    inserted = store.insert([candidate(destination, "a"), candidate(destination, "b")])
    again = store.insert([candidate(destination, "a"), candidate(destination, "c")])

    assert sorted(key for _, _, key in inserted) == ["a", "b"]
    assert [(name, key) for _, name, key in again] == [("Purchase", "c")]
    stored = {event.event_id: event for event in Event.objects.all()}
    assert sorted(stored) == ["a", "b", "c"]
    assert {pk for pk, _, _ in inserted + again} == {event.pk for event in stored.values()}
    assert stored["a"].payload == server_event("a")
    assert stored["a"].payload_hash == "hash-a"


def test_a_finding_is_appended_once(
    clock: Any, store: eventstore.EventStore, make_event: Callable[..., Event]
) -> None:
    event = make_event(diagnostics=[{"code": "earlier"}])
    finding = {"code": "event_id_reused", "message": "Reused."}

    store.append_finding([event.pk], finding, app_clock.now())
    store.append_finding([event.pk], finding, app_clock.now())

    event.refresh_from_db()
    assert event.diagnostics == [{"code": "earlier"}, finding]


def test_only_rows_still_rejected_are_replaced(
    clock: Any,
    store: eventstore.EventStore,
    destination: Destination,
    make_event: Callable[..., Event],
) -> None:
    rejected = make_event(event_id="r", status=EventStatus.REJECTED)
    pending = make_event(event_id="p")
    correction = candidate(destination, "r", payload_hash="fixed")
    not_allowed = candidate(destination, "p", payload_hash="other")

    replaced = store.replace_rejected([(rejected.pk, correction), (pending.pk, not_allowed)])

    assert replaced == {rejected.pk}
    rejected.refresh_from_db()
    pending.refresh_from_db()
    assert (rejected.event_id, rejected.status, rejected.payload_hash) == ("r", "pending", "fixed")
    assert pending.payload_hash != "other"


def test_originals_are_read_by_key(
    store: eventstore.EventStore, destination: Destination, make_event: Callable[..., Event]
) -> None:
    first = make_event(event_id="x")
    make_event(event_id="y", event_name="Lead")

    found = store.originals(destination.pk, [("Purchase", "x"), ("Purchase", "y")])

    assert found == {("Purchase", "x"): first}


_JSON_SAMPLES: list[Any] = [
    {"b": 1, "a": [1.5, 1e-07, 1e16, -0.0, 10**30, True, None], "é": 'Zoë \u2028 " \\ \n'},
    {"nested": {"z": {"y": [{"x": "\x00"}]}}, "int": 7, "float": 49.9},
    ["plain", 3, 2.5e-10, {"k": "v"}],
    "a string alone: ünïcode",
    42,
    None,
]


@pytest.mark.parametrize("canonical", [True, False])
def test_the_json_writer_writes_what_json_dumps_writes(canonical: bool) -> None:
    write = eventstore.base.json_writer(canonical=canonical)
    options: dict[str, Any] = {"sort_keys": True, "separators": (",", ":")} if canonical else {}

    for value in _JSON_SAMPLES:
        assert write(value) == json.dumps(value, ensure_ascii=False, allow_nan=False, **options)
    with pytest.raises(ValueError, match="JSON compliant"):
        write({"value": float("nan")})
    with pytest.raises(TypeError, match="Decimal is not JSON serializable"):
        write({"value": Decimal("1.5")})
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(RecursionError):
        write(looped)
