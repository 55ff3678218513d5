"""track() / track_many(): enrichment, hashing, diagnostics, consent, idempotent bulk storage."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models.signals import post_init, pre_init
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.views.debug import ExceptionReporter

from capi_destinations import counters, track, track_many
from capi_destinations.diagnostics import Diagnostic
from capi_destinations.ingest import TrackResult
from capi_destinations.models import (
    ClickIdSighting,
    ConsentPolicy,
    Destination,
    Event,
    EventStatus,
    HourlyOutcomes,
    MissingConsent,
    QueuedEvent,
    Tenant,
)
from capi_destinations.signals import events_recorded
from tests.conftest import FROZEN_AT, close_thread_connection

pytestmark = pytest.mark.usefixtures("clock")

NOW_SECONDS = int(FROZEN_AT.timestamp())


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def purchase(event_id: str | None = "order-1001", **overrides: Any) -> dict[str, Any]:
    """A raw Purchase as a developer writes it: plaintext PII, aliases, lowercase currency."""
    event: dict[str, Any] = {
        "event_name": "Purchase",
        "event_time": NOW_SECONDS - 60,
        "action_source": "website",
        "event_source_url": "https://shop.example.com/checkout/done",
        "user_data": {
            "email": "  Jane.Doe@Example.COM ",
            "phone": "+1 (650) 555-1212",
            "first_name": "Janine",
            "last_name": "Okonkwo-Smith",
            "city": "Springfield Gardens",
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        },
        "custom_data": {"value": 49.9, "currency": "eur"},
    }
    if event_id is not None:
        event["event_id"] = event_id
    event.update(overrides)
    return event


def codes(findings: list[Diagnostic] | list[dict[str, Any]]) -> list[str]:
    return [f.code if isinstance(f, Diagnostic) else f["code"] for f in findings]


@pytest.fixture
def recorded() -> Iterator[list[dict[str, Any]]]:
    """The events_recorded signals sent during the test."""
    sent: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        sent.append({"sender": sender, **kwargs})

    events_recorded.connect(receiver)
    yield sent
    events_recorded.disconnect(receiver)


# --- storing one event ---------------------------------------------------------------------


def test_a_good_event_is_stored_pending_and_due_now(destination: Destination) -> None:
    result = track(destination, purchase())

    assert isinstance(result, TrackResult)
    assert result.status == "stored"
    assert result.index == 0
    row = Event.objects.get()
    assert row.pk == result.event.pk
    assert row.status == EventStatus.PENDING
    assert row.next_attempt_at == FROZEN_AT
    assert row.event_name == "Purchase"
    assert row.event_id == "order-1001"
    assert row.event_time == FROZEN_AT - timedelta(seconds=60)
    assert row.action_source == "website"
    assert row.status_reason == ""


def test_returned_events_hold_every_field_as_stored(destination: Destination) -> None:
    # The instances are built without Model.__init__: every field must be set, and equal
    # to what a read from the database gives.
    (result,) = track_many(destination, [purchase()])

    stored = Event.objects.get()
    for model_field in Event._meta.concrete_fields:
        assert model_field.attname in result.event.__dict__, model_field.attname
        assert getattr(result.event, model_field.attname) == getattr(stored, model_field.attname)
    assert result.event.destination == destination
    assert result.event._state.adding is False


def test_event_has_no_init_signal_receivers_to_skip() -> None:
    assert not pre_init.has_listeners(Event)
    assert not post_init.has_listeners(Event)


def test_the_stored_payload_is_the_meta_ready_server_event(destination: Destination) -> None:
    row = track(destination, purchase()).event
    row.refresh_from_db()

    payload = row.payload
    assert payload["event_time"] == NOW_SECONDS - 60
    assert payload["event_id"] == "order-1001"
    assert payload["user_data"]["em"] == [sha256("jane.doe@example.com")]
    assert payload["user_data"]["ph"] == [sha256("16505551212")]
    assert payload["user_data"]["fn"] == [sha256("janine")]
    assert payload["user_data"]["client_ip_address"] == "203.0.113.7"
    assert payload["custom_data"] == {"value": 49.9, "currency": "EUR"}
    assert "email" not in payload["user_data"]


def test_payload_hash_is_sha256_of_the_canonical_payload(destination: Destination) -> None:
    row = track(destination, purchase()).event
    row.refresh_from_db()

    canonical = json.dumps(row.payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert row.payload_hash == sha256(canonical)


def test_diagnostics_and_match_quality_are_stored(destination: Destination) -> None:
    event = purchase(custom_data={"value": "49.90", "currency": "EUR"})
    result = track(destination, event)
    row = Event.objects.get()

    assert "value_not_number" in codes(result.diagnostics)
    assert codes(row.diagnostics) == codes(result.diagnostics)
    assert row.diagnostics == [finding.to_dict() for finding in result.diagnostics]
    # email + phone + IP + UA + names + city: a well matched event.
    assert row.match_quality is not None
    assert row.match_quality >= 8
    # Meta wants a number; the text was turned into one.
    assert row.payload["custom_data"]["value"] == 49.9


def test_plaintext_pii_reaches_no_table(destination: Destination) -> None:
    track(destination, purchase("order-pii"))
    track_many(destination, [purchase("order-pii-2"), purchase("order-pii")])

    needles = [
        "Jane.Doe@Example.COM",
        "jane.doe@example.com",
        "+1 (650) 555-1212",
        "16505551212",
        "6505551212",
        "Janine",
        "janine",
        "Okonkwo",
        "okonkwo",
        "Springfield",
        "springfield",
    ]
    found: list[tuple[str, str]] = []
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {quote(table)}")  # noqa: S608 - names from the db
            text = repr(cursor.fetchall())
            found += [(table, needle) for needle in needles if needle in text]
    assert Event.objects.count() == 2
    assert found == []


def test_aliases_and_meta_keys_give_the_same_hashes(destination: Destination) -> None:
    with_aliases = track(destination, purchase("a", user_data={"email": "X@Example.com"}))
    with_keys = track(destination, purchase("b", user_data={"em": "x@example.com"}))

    assert with_aliases.event.payload["user_data"] == with_keys.event.payload["user_data"]


def test_unknown_keys_are_dropped_with_an_info_diagnostic(destination: Destination) -> None:
    user_data = {"email": "a@example.com", "user_agent": "Mozilla/5.0", "shoe_size": "42"}
    event = purchase(coupon="SUMMER", user_data=user_data)
    result = track(destination, event)

    assert "coupon" not in result.event.payload
    assert "shoe_size" not in result.event.payload["user_data"]
    infos = {f.code: f.severity for f in result.diagnostics}
    assert infos["unknown_event_key"] == "info"
    assert infos["unknown_user_data_key"] == "info"
    assert result.status == "stored"


def test_decimal_values_are_sent_as_numbers(destination: Destination) -> None:
    event = purchase(
        custom_data={
            "value": Decimal("49.90"),
            "currency": "EUR",
            "contents": [{"id": "SKU-1", "quantity": 1, "item_price": Decimal("49.90")}],
        }
    )
    result = track(destination, event)

    assert result.status == "stored"
    assert result.event.payload["custom_data"]["value"] == 49.9
    assert result.event.payload["custom_data"]["contents"][0]["item_price"] == 49.9


def test_event_time_defaults_to_now(destination: Destination) -> None:
    event = purchase()
    del event["event_time"]
    result = track(destination, event)

    assert result.event.event_time == FROZEN_AT
    assert result.event.payload["event_time"] == NOW_SECONDS
    assert "missing_event_time" not in codes(result.diagnostics)
    assert "event_time_filled" in codes(result.diagnostics)


def test_a_missing_event_id_is_generated_and_still_warned_about(
    destination: Destination,
) -> None:
    first = track(destination, purchase(event_id=None))
    second = track(destination, purchase(event_id=None))

    assert first.event.event_id.startswith("srv_")
    assert len(first.event.event_id) == len("srv_") + 32
    assert first.event.payload["event_id"] == first.event.event_id
    assert "missing_event_id" in codes(first.diagnostics)
    # Two calls without an id are two events, not duplicates.
    assert second.status == "stored"
    assert second.event.event_id != first.event.event_id


def test_a_numeric_event_id_is_kept_as_text(destination: Destination) -> None:
    result = track(destination, purchase(event_id=123456))

    assert result.event.event_id == "123456"
    assert result.event.payload["event_id"] == "123456"


# --- rejected and suppressed ---------------------------------------------------------------


def test_an_event_with_errors_is_stored_as_rejected_with_the_reason(
    destination: Destination,
    recorded: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        result = track(destination, purchase(custom_data={"value": 10}))

    assert result.status == "rejected"
    row = Event.objects.get()
    assert row.status == EventStatus.REJECTED
    assert row.next_attempt_at is None
    assert "currency" in row.status_reason
    errors = [f for f in result.diagnostics if f.severity == "error"]
    assert codes(errors) == ["missing_currency"]
    # Nothing is waiting to be sent, so nobody is told to send.
    assert recorded == []


def test_events_older_than_seven_days_are_rejected(destination: Destination) -> None:
    result = track(destination, purchase(event_time=NOW_SECONDS - 8 * 86400))

    assert result.status == "rejected"
    assert "event_time_too_old" in codes(result.diagnostics)


def test_require_consent_suppresses_denied_events(make_destination: Callable) -> None:
    destination = make_destination(consent_policy=ConsentPolicy.REQUIRE_CONSENT)
    event = purchase(consent={"ad_storage": "granted", "ad_user_data": "denied", "region": "DE"})
    result = track(destination, event)

    assert result.status == "suppressed"
    row = Event.objects.get()
    assert row.status == EventStatus.SUPPRESSED
    assert "ad_user_data denied" in row.status_reason
    assert row.next_attempt_at is None
    assert row.consent == {"ad_storage": "granted", "ad_user_data": "denied", "region": "DE"}
    assert "consent" not in row.payload


def test_missing_consent_follows_the_destination_default(make_destination: Callable) -> None:
    strict = make_destination(
        consent_policy=ConsentPolicy.REQUIRE_CONSENT, missing_consent=MissingConsent.DENIED
    )
    lenient = make_destination(
        consent_policy=ConsentPolicy.REQUIRE_CONSENT, missing_consent=MissingConsent.GRANTED
    )

    assert track(strict, purchase()).status == "suppressed"
    assert track(lenient, purchase()).status == "stored"


def test_limited_data_use_adds_the_data_processing_options(make_destination: Callable) -> None:
    destination = make_destination(consent_policy=ConsentPolicy.LIMITED_DATA_USE)
    payload = track(destination, purchase()).event.payload

    assert payload["data_processing_options"] == ["LDU"]
    assert payload["data_processing_options_country"] == 0
    assert payload["data_processing_options_state"] == 0


def test_junk_of_any_shape_is_rejected_never_raised(destination: Destination) -> None:
    junk: list[Any] = [
        1,
        "Purchase",
        None,
        [],
        {},
        {"event_name": {"nested": True}, "event_id": ["x"], "user_data": "jane@example.com"},
        {"event_name": "Purchase", "event_time": "yesterday", "custom_data": [1, 2]},
        {"event_name": "Purchase", "event_time": float("nan"), "event_id": "nan"},
    ]
    results = track_many(destination, junk)

    assert [r.index for r in results] == list(range(len(junk)))
    assert {r.status for r in results} == {"rejected"}
    assert Event.objects.filter(status=EventStatus.REJECTED).count() == len(junk)
    # A user_data that is not an object is never stored, not even as text.
    stored = Event.objects.get(pk=results[5].event.pk)
    assert stored.payload["user_data"] == {}
    assert "jane@example.com" not in json.dumps(stored.payload)


def test_text_no_database_accepts_is_cleaned(destination: Destination) -> None:
    event = purchase(
        "order-\x00-nul",
        event_name="Pur\x00chase\ud800",
        custom_data={"value": 1, "currency": "EUR", "note": "a\x00b", "bad": "\udcff"},
        user_data={"email": "a\udcff@example.com", "external_id": "x\ud800", "ua": "\x00"},
    )
    result = track(destination, event)
    row = Event.objects.get(pk=result.event.pk)

    assert "\x00" not in row.event_id
    assert "\x00" not in row.event_name
    assert row.payload["custom_data"]["note"] == "ab"


def test_overlong_keys_are_rejected_and_stored_under_a_generated_id(
    destination: Destination,
) -> None:
    result = track(destination, purchase("x" * 300, event_name="E" * 150))

    assert result.status == "rejected"
    assert codes(result.diagnostics).count("field_too_long") == 2
    assert result.event.event_id.startswith("srv_")
    assert len(result.event.event_name) == 100


# --- idempotency ---------------------------------------------------------------------------


def test_the_same_event_twice_is_a_duplicate_of_the_original(destination: Destination) -> None:
    original = track(destination, purchase())
    again = track(destination, purchase())

    assert again.status == "duplicate"
    assert again.is_duplicate
    assert again.event.pk == original.event.pk
    assert Event.objects.count() == 1
    assert "event_id_reused" not in codes(Event.objects.get().diagnostics)


def test_a_retry_without_event_time_is_a_clean_duplicate(
    destination: Destination, clock: Any
) -> None:
    event = purchase()
    del event["event_time"]
    track(destination, event)
    clock.advance(timedelta(seconds=30))
    again = track(destination, event)

    assert again.status == "duplicate"
    assert "event_id_reused" not in codes(again.diagnostics)


def test_a_reused_event_id_with_other_contents_is_reported_on_the_original(
    destination: Destination,
) -> None:
    original = track(destination, purchase())
    other = purchase(custom_data={"value": 99.0, "currency": "EUR"})
    again = track(destination, other)
    third = track(destination, purchase(user_data={"email": "someone.else@example.com"}))

    assert again.status == "duplicate"
    assert again.event.pk == original.event.pk
    assert "event_id_reused" in codes(again.diagnostics)
    assert third.status == "duplicate"
    row = Event.objects.get()
    # Reported once, however often it happens; the original's payload is untouched.
    assert codes(row.diagnostics).count("event_id_reused") == 1
    assert row.payload["custom_data"]["value"] == 49.9


def test_same_event_id_under_another_event_name_or_destination_is_another_event(
    destination: Destination, make_destination: Callable
) -> None:
    other_destination = make_destination()
    results = [
        track(destination, purchase("shared")),
        track(destination, purchase("shared", event_name="AddToCart")),
        track(other_destination, purchase("shared")),
    ]

    assert [r.status for r in results] == ["stored", "stored", "stored"]
    assert Event.objects.count() == 3


def test_duplicates_inside_one_batch_point_at_the_first(destination: Destination) -> None:
    changed = purchase("order-7", custom_data={"value": 1.0, "currency": "EUR"})
    results = track_many(
        destination, [purchase("order-7"), purchase("order-8"), purchase("order-7"), changed]
    )

    assert [r.status for r in results] == ["stored", "stored", "duplicate", "duplicate"]
    assert results[2].event.pk == results[0].event.pk
    assert results[3].event.pk == results[0].event.pk
    assert "event_id_reused" not in codes(results[2].diagnostics)
    assert "event_id_reused" in codes(results[3].diagnostics)
    assert Event.objects.count() == 2
    first = Event.objects.get(event_id="order-7")
    assert codes(first.diagnostics).count("event_id_reused") == 1


def test_a_row_a_concurrent_request_inserted_first_is_the_original(
    destination: Destination, make_event: Callable
) -> None:
    # Another request commits the same event the instant before our INSERT runs: whatever we
    # might have read before writing would be stale. The unique constraint decides.
    competitor: list[Event] = []
    started: list[bool] = []

    def insert_first(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        # The INSERT into the event table (on PostgreSQL inside a WITH that also fills the
        # delivery queue; on SQLite the queue's own INSERT follows it).
        into_events = re.search(rf'\bINTO "{Event._meta.db_table}" ', sql)
        if not started and into_events:
            started.append(True)  # before creating it, which runs through this wrapper too
            competitor.append(make_event(event_id="order-race"))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(insert_first):
        result = track(destination, purchase("order-race"))

    assert result.status == "duplicate"
    assert result.event.pk == competitor[0].pk
    assert Event.objects.count() == 1
    # Its payload differs from ours, so the original is told its event_id was reused.
    assert "event_id_reused" in codes(Event.objects.get().diagnostics)


def test_bulk_storage_takes_one_query_per_chunk(
    destination: Destination, django_assert_max_num_queries: Any
) -> None:
    events = [purchase(f"order-{n}") for n in range(500)]
    # SQLite has no INSERT inside a WITH: the queue entries are a second INSERT, in one
    # transaction with the first (PostgreSQL writes both in one statement).
    queue = 0 if connection.vendor == "postgresql" else 1
    # The SELECT of click IDs remembered for these customers (click_memory), INSERT … RETURNING.
    with django_assert_max_num_queries(2 + queue):
        results = track_many(destination, events)
    assert {r.status for r in results} == {"stored"}

    changed = [
        purchase(f"order-{n}", custom_data={"value": 1, "currency": "EUR"}) for n in range(500)
    ]
    # Click IDs remembered, INSERT, SELECT of the originals, UPDATE.
    with django_assert_max_num_queries(4 + queue):
        again = track_many(destination, changed)
    assert {r.status for r in again} == {"duplicate"}
    assert Event.objects.count() == 500
    assert all("event_id_reused" in codes(row.diagnostics) for row in Event.objects.all())


def test_a_thousand_events_are_stored_in_order(destination: Destination) -> None:
    results = track_many(destination, [purchase(f"o-{n}") for n in range(1000)])

    assert [r.index for r in results] == list(range(1000))
    assert [r.event.event_id for r in results] == [f"o-{n}" for n in range(1000)]
    assert len({r.event.pk for r in results}) == 1000
    assert Event.objects.count() == 1000


def test_nothing_to_record_is_no_work(destination: Destination) -> None:
    assert track_many(destination, []) == []


# --- after commit ----------------------------------------------------------------------------


def test_events_recorded_is_sent_after_commit_with_the_pending_count(
    destination: Destination,
    recorded: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        track_many(
            destination,
            [purchase("a"), purchase("b"), purchase("c", custom_data={}), purchase("a")],
        )
        assert recorded == []  # not before the transaction commits
    for callback in callbacks:
        callback()

    assert len(recorded) == 1
    assert recorded[0]["sender"] is Event
    assert recorded[0]["destination_id"] == destination.pk
    assert recorded[0]["count"] == 2


def test_a_disabled_destination_still_records(make_destination: Callable) -> None:
    destination = make_destination(enabled=False)

    assert track(destination, purchase()).status == "stored"


# --- request enrichment --------------------------------------------------------------------


def browser_request(**extra: Any) -> Any:
    request = RequestFactory().post(
        "/",
        REMOTE_ADDR="198.51.100.20",
        HTTP_USER_AGENT="Mozilla/5.0 (Macintosh) Safari/605.1",
        **extra,
    )
    request.COOKIES.update(
        {"_fbp": "fb.1.1700000000000.987654321", "_fbc": "fb.1.1700000000001.AbC"}
    )
    return request


def bare_event(**overrides: Any) -> dict[str, Any]:
    """A Purchase whose user_data holds only an email: the rest must come from elsewhere."""
    event = purchase(user_data={"email": "jane@example.com"})
    event.update(overrides)
    return event


def test_the_request_fills_ip_user_agent_and_cookies(destination: Destination) -> None:
    user_data = track(destination, bare_event(), request=browser_request()).event.payload[
        "user_data"
    ]

    assert user_data["client_ip_address"] == "198.51.100.20"
    assert user_data["client_user_agent"] == "Mozilla/5.0 (Macintosh) Safari/605.1"
    assert user_data["fbp"] == "fb.1.1700000000000.987654321"
    assert user_data["fbc"] == "fb.1.1700000000001.AbC"


def test_the_callers_values_win_over_the_request(destination: Destination) -> None:
    event = bare_event(
        user_data={"email": "jane@example.com", "ip": "203.0.113.9", "fbp": "fb.1.1.own"}
    )
    user_data = track(destination, event, request=browser_request()).event.payload["user_data"]

    assert user_data["client_ip_address"] == "203.0.113.9"
    assert user_data["fbp"] == "fb.1.1.own"
    assert user_data["client_user_agent"] == "Mozilla/5.0 (Macintosh) Safari/605.1"


def test_forwarded_for_is_ignored_unless_a_proxy_header_is_trusted(
    destination: Destination, settings: Any
) -> None:
    request = browser_request(HTTP_X_FORWARDED_FOR="192.0.2.1, 10.0.0.1")
    untrusted = track(destination, bare_event(event_id="u"), request=request)
    settings.CAPI_DESTINATIONS = {"TRUSTED_PROXY_HEADER": "HTTP_X_FORWARDED_FOR"}
    trusted = track(destination, bare_event(event_id="t"), request=request)

    assert untrusted.event.payload["user_data"]["client_ip_address"] == "198.51.100.20"
    assert trusted.event.payload["user_data"]["client_ip_address"] == "192.0.2.1"


def test_fbclid_in_the_page_url_becomes_fbc(destination: Destination) -> None:
    url = "https://shop.example.com/landing?utm_source=fb&fbclid=IwAR2xYz_AbC-123"
    result = track(destination, bare_event(event_source_url=url))

    # First seen: the event's own time (a minute ago), never after the conversion.
    millis = (NOW_SECONDS - 60) * 1000
    assert result.event.payload["user_data"]["fbc"] == f"fb.1.{millis}.IwAR2xYz_AbC-123"


def test_an_fbclid_in_the_url_wins_over_an_older_fbc_cookie(destination: Destination) -> None:
    # Meta asks for the most recent click: the URL's fbclid is newer than the cookie's.
    url = "https://shop.example.com/?fbclid=FromTheUrl"
    result = track(destination, bare_event(event_source_url=url), request=browser_request())

    millis = (NOW_SECONDS - 60) * 1000
    assert result.event.payload["user_data"]["fbc"] == f"fb.1.{millis}.FromTheUrl"
    assert "fbc_from_url" in codes(result.diagnostics)


def test_a_retry_with_a_built_fbc_is_a_clean_duplicate(
    destination: Destination, clock: Any
) -> None:
    event = bare_event(event_source_url="https://shop.example.com/?fbclid=Abc123")
    track(destination, event)
    clock.advance(timedelta(seconds=5))
    again = track(destination, event)

    assert again.status == "duplicate"
    assert "event_id_reused" not in codes(again.diagnostics)


def test_racing_requests_store_each_event_once(
    transactional_db: None, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination()
    batch = [purchase(f"race-{n}") for n in range(50)]
    # Each request carries the same events in another order (a deadlock risk if unhandled).
    orders = [batch, batch[::-1], batch[25:] + batch[:25], batch[1::2] + batch[::2]]
    start = threading.Barrier(len(orders))
    outcomes: list[list[TrackResult]] = []
    failures: list[BaseException] = []

    def request(events: list[dict[str, Any]]) -> None:
        try:
            start.wait()
            outcomes.append(track_many(destination, events))
        except BaseException as error:  # reported below; a thread cannot fail the test itself
            failures.append(error)
        finally:
            close_thread_connection()

    threads = [threading.Thread(target=request, args=(events,)) for events in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert Event.objects.count() == 50
    by_event_id: dict[str, list[TrackResult]] = {}
    for outcome in outcomes:
        for result in outcome:
            by_event_id.setdefault(result.event.event_id, []).append(result)
    assert len(by_event_id) == 50
    for results in by_event_id.values():
        assert sorted(r.status for r in results) == ["duplicate"] * 3 + ["stored"]
        assert len({r.event.pk for r in results}) == 1


# --- a corrected resend after a rejection --------------------------------------------------


def without_currency(event_id: str = "order-1001") -> dict[str, Any]:
    """A Purchase our own checks reject (no currency): stored as rejected, never sent."""
    return purchase(event_id, custom_data={"value": 49.9})


def test_a_corrected_event_replaces_its_rejected_copy(
    destination: Destination,
    clock: Any,
    recorded: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    rejected = track(destination, without_currency())
    clock.advance(timedelta(minutes=3))
    with django_capture_on_commit_callbacks(execute=True):
        corrected = track(destination, purchase())

    assert rejected.status == "rejected"
    assert corrected.status == "stored"
    assert corrected.event.pk == rejected.event.pk
    row = Event.objects.get()
    assert row.status == EventStatus.PENDING
    assert row.status_reason == ""
    assert row.next_attempt_at == clock.now()
    assert row.payload["custom_data"] == {"value": 49.9, "currency": "EUR"}
    assert row.payload_hash == corrected.event.payload_hash
    assert "missing_currency" not in codes(row.diagnostics)
    # The row says it replaced a rejected copy, and the caller is told the same.
    assert "replaced_rejected" in codes(row.diagnostics)
    assert "replaced_rejected" in codes(corrected.diagnostics)
    assert corrected.event.diagnostics == row.diagnostics
    # It is waiting to be sent now, so the delivery side is told.
    assert [(r["destination_id"], r["count"]) for r in recorded] == [(destination.pk, 1)]


def test_the_same_rejected_event_sent_again_is_a_duplicate(destination: Destination) -> None:
    first = track(destination, without_currency())
    again = track(destination, without_currency())

    # Nothing would change: the identical copy fails the same checks.
    assert again.status == "duplicate"
    assert again.event.pk == first.event.pk
    assert "replaced_rejected" not in codes(Event.objects.get().diagnostics)


def test_a_resend_that_is_still_wrong_replaces_the_rejection_with_its_own(
    destination: Destination,
) -> None:
    track(destination, without_currency())
    again = track(destination, purchase(custom_data={"currency": "EUR"}))

    assert again.status == "rejected"
    row = Event.objects.get()
    assert row.status == EventStatus.REJECTED
    assert "missing_value" in codes(row.diagnostics)
    assert "missing_currency" not in codes(row.diagnostics)
    assert "value" in row.status_reason


@pytest.mark.parametrize(
    "status",
    [
        EventStatus.PENDING,
        EventStatus.DELIVERED,
        EventStatus.SUPPRESSED,
        EventStatus.FAILED,
        EventStatus.EXPIRED,
    ],
)
def test_only_a_rejected_row_is_replaced(
    destination: Destination, make_event: Callable, status: str
) -> None:
    original = make_event(event_id="order-1001", status=status)
    again = track(destination, purchase())

    assert again.status == "duplicate"
    assert again.event.pk == original.pk
    row = Event.objects.get()
    assert row.status == status
    assert row.payload == original.payload
    assert "replaced_rejected" not in codes(row.diagnostics)


def test_inside_one_batch_a_corrected_copy_replaces_the_rejected_one(
    destination: Destination,
) -> None:
    batch = [
        without_currency("order-7"),
        without_currency("order-7"),
        purchase("order-8"),
        purchase("order-7"),
        purchase("order-7"),
    ]
    results = track_many(destination, batch)

    # As if sent one after another: rejected, the same again, the correction stored in its
    # place, then a duplicate of the correction.
    statuses = ["rejected", "duplicate", "stored", "stored", "duplicate"]
    assert [r.status for r in results] == statuses
    assert len({results[n].event.pk for n in (0, 1, 3, 4)}) == 1
    assert Event.objects.count() == 2
    row = Event.objects.get(event_id="order-7")
    assert row.status == EventStatus.PENDING
    assert row.payload["custom_data"]["currency"] == "EUR"


def test_a_corrected_copy_of_a_row_stored_elsewhere_as_not_rejected_stays_a_duplicate(
    destination: Destination, make_event: Callable
) -> None:
    original = make_event(event_id="order-7", status=EventStatus.DELIVERED)
    batch = [without_currency("order-7"), without_currency("order-7"), purchase("order-7")]
    results = track_many(destination, batch)

    assert [r.status for r in results] == ["duplicate", "duplicate", "duplicate"]
    assert {r.event.pk for r in results} == {original.pk}
    assert Event.objects.get().status == EventStatus.DELIVERED


def test_replacing_rejected_events_takes_one_update_per_chunk(
    destination: Destination, django_assert_max_num_queries: Any
) -> None:
    track_many(destination, [without_currency(f"order-{n}") for n in range(500)])

    # Click IDs remembered, INSERT, SELECT of the originals, one UPDATE (on SQLite each write
    # with its queue entries' INSERT).
    queue = 0 if connection.vendor == "postgresql" else 1
    with django_assert_max_num_queries(4 + queue):
        results = track_many(destination, [purchase(f"order-{n}") for n in range(500)])

    assert {r.status for r in results} == {"stored"}
    assert Event.objects.count() == 500
    assert set(Event.objects.values_list("status", flat=True)) == {EventStatus.PENDING}


def test_a_rejected_row_replaced_by_a_concurrent_request_first_makes_ours_a_duplicate(
    destination: Destination,
) -> None:
    rejected = track(destination, without_currency()).event
    theirs = purchase(custom_data={"value": 10.0, "currency": "EUR"})

    started: list[bool] = []

    def replace_first(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not started and re.search(r"\bUPDATE\b", sql):
            # Another request's replacement commits between our SELECT and our UPDATE.
            started.append(True)  # the competitor's UPDATE runs through this wrapper too
            Event.objects.filter(pk=rejected.pk).update(
                status=EventStatus.PENDING, payload=theirs, diagnostics=[]
            )
        return execute(sql, params, many, context)

    with connection.execute_wrapper(replace_first):
        ours = track(destination, purchase())

    assert ours.status == "duplicate"
    assert ours.event.pk == rejected.pk
    row = Event.objects.get()
    assert row.status == EventStatus.PENDING
    assert row.payload["custom_data"]["value"] == 10.0


def test_racing_corrections_replace_a_rejected_row_once(
    transactional_db: None, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination()
    track_many(destination, [without_currency(f"fix-{n}") for n in range(20)])
    batch = [purchase(f"fix-{n}") for n in range(20)]
    orders = [batch, batch[::-1], batch[10:] + batch[:10], batch[1::2] + batch[::2]]
    start = threading.Barrier(len(orders))
    outcomes: list[list[TrackResult]] = []
    failures: list[BaseException] = []

    def request(events: list[dict[str, Any]]) -> None:
        try:
            start.wait()
            outcomes.append(track_many(destination, events))
        except BaseException as error:  # reported below; a thread cannot fail the test itself
            failures.append(error)
        finally:
            close_thread_connection()

    threads = [threading.Thread(target=request, args=(events,)) for events in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert Event.objects.filter(destination=destination).count() == 20
    assert set(Event.objects.values_list("status", flat=True)) == {EventStatus.PENDING}
    by_event_id: dict[str, list[str]] = {}
    for outcome in outcomes:
        for result in outcome:
            by_event_id.setdefault(result.event.event_id, []).append(result.status)
    assert len(by_event_id) == 20
    for statuses in by_event_id.values():
        assert sorted(statuses) == ["duplicate"] * 3 + ["stored"]


def test_a_lead_with_only_a_name_and_gender_is_rejected_never_sent(
    destination: Destination,
) -> None:
    lead = {
        "event_name": "Lead",
        "event_id": "lead-1",
        "action_source": "system_generated",
        "user_data": {"first_name": "Jane", "gender": "female"},
    }

    result = track(destination, lead)

    assert result.status == "rejected"
    assert "insufficient_customer_information" in codes(result.diagnostics)
    assert Event.objects.get().next_attempt_at is None


# --- one statement for the insert, the click IDs remembered and the hourly counts ------------


def _mixed_batch(prefix: str) -> list[dict[str, Any]]:
    """Stored, rejected (no currency) and suppressed (consent denied) events, with an fbp."""
    events = [purchase(f"{prefix}-{n}") for n in range(4)]
    for n, event in enumerate(events):
        event["user_data"]["fbp"] = f"fb.1.1700000000000.{1_000_000 + n}"
    events[1]["custom_data"] = {"value": 49.9}
    events[2]["consent"] = {"ad_storage": "denied", "ad_user_data": "denied"}
    return events


def test_counts_added_by_the_insert_equal_a_recount_from_the_events(
    transactional_db: None, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination(
        consent_policy=ConsentPolicy.REQUIRE_CONSENT, missing_consent=MissingConsent.GRANTED
    )
    results = track_many(destination, _mixed_batch("count"))
    track_many(destination, _mixed_batch("count"))  # all duplicates: counted nothing more
    counted = list(
        HourlyOutcomes.objects.filter(destination=destination).values(
            "hour", "recorded", "rejected", "suppressed", "quality_events", "quality_sum"
        )
    )
    counters.rebuild(destination_ids=[destination.pk])
    recounted = list(
        HourlyOutcomes.objects.filter(destination=destination).values(
            "hour", "recorded", "rejected", "suppressed", "quality_events", "quality_sum"
        )
    )

    assert sorted(result.status for result in results) == [
        "rejected",
        "stored",
        "stored",
        "suppressed",
    ]
    assert len(counted) == 1
    assert counted[0]["recorded"] == 4
    assert (counted[0]["rejected"], counted[0]["suppressed"]) == (1, 1)
    assert counted[0]["quality_sum"] == pytest.approx(recounted[0].pop("quality_sum"))
    counted[0].pop("quality_sum")
    assert counted == recounted


def test_sightings_are_remembered_only_when_the_events_are_written(
    transactional_db: None, make_destination: Callable[..., Destination]
) -> None:
    kept = make_destination()
    gone = make_destination()
    track_many(kept, _mixed_batch("seen"))
    remembered = ClickIdSighting.objects.count()
    Destination.objects.filter(pk=gone.pk).delete()  # deleted after the caller read it

    with pytest.raises(IntegrityError):
        track_many(gone, _mixed_batch("lost"))

    # Stored events with consent to ad storage: email and phone with fbp, one event rejected.
    assert remembered > 0
    assert ClickIdSighting.objects.count() == remembered
    assert not Event.objects.filter(event_id__startswith="lost-").exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's data-modifying CTEs")
def test_on_postgresql_an_event_costs_the_recall_and_one_insert(
    transactional_db: None, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination()
    event = purchase("one-statement")
    event["user_data"]["fbp"] = "fb.1.1700000000000.42"

    with CaptureQueriesContext(connection) as queries:
        result = track(destination, event)

    assert result.status == "stored"
    # The click memory's recall (the event lacks fbc), then one INSERT that queues the event,
    # remembers its fbp and adds it to the hourly counters, committed durably as one.
    assert len(queries) == 2
    assert HourlyOutcomes._meta.db_table in queries.captured_queries[1]["sql"]
    assert not any("synchronous_commit" in query["sql"] for query in queries.captured_queries)
    assert ClickIdSighting.objects.filter(key="fbp", value="fb.1.1700000000000.42").count() == 2
    assert HourlyOutcomes.objects.get(destination=destination).recorded == 1
    assert QueuedEvent.objects.filter(event_id=result.event.pk).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's commit settings")
def test_counts_not_waiting_for_the_disk_are_a_statement_of_their_own_after_commit(
    transactional_db: None, make_destination: Callable[..., Destination], settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = {"HOURLY_COUNTS_WAIT_FOR_DISK": False}
    destination = make_destination()
    event = purchase("one-statement")
    event["user_data"]["fbp"] = "fb.1.1700000000000.42"

    with CaptureQueriesContext(connection) as queries:
        result = track(destination, event)

    assert result.status == "stored"
    # The recall, the INSERT (queue and fbp, durable), then, committed apart without waiting
    # for the flush, the count: the hour's counter row is every request's, and must not stay
    # locked while a commit of the events waits for the disk.
    assert len(queries) == 3
    insert, count = queries.captured_queries[1]["sql"], queries.captured_queries[2]["sql"]
    assert HourlyOutcomes._meta.db_table not in insert
    assert "synchronous_commit" not in insert
    assert HourlyOutcomes._meta.db_table in count
    assert "'synchronous_commit', 'off'" in count
    assert HourlyOutcomes.objects.get(destination=destination).recorded == 1
    assert QueuedEvent.objects.filter(event_id=result.event.pk).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's commit settings")
def test_counts_added_in_a_callers_transaction_commit_with_it_durably(
    transactional_db: None, make_destination: Callable[..., Destination], settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = {"HOURLY_COUNTS_WAIT_FOR_DISK": False}
    destination = make_destination()

    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        counters.add(destination.pk, delivered=2)

    # Dispatch's outcomes and their counts commit together, waiting for the flush as usual.
    assert not any("synchronous_commit" in query["sql"] for query in queries.captured_queries)
    assert HourlyOutcomes.objects.get(destination=destination).delivered == 2
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("on",)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's commit settings")
def test_a_count_in_autocommit_leaves_the_next_statements_commit_durable(
    transactional_db: None, make_destination: Callable[..., Destination], settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = {"HOURLY_COUNTS_WAIT_FOR_DISK": False}
    destination = make_destination()

    counters.add(destination.pk, recorded=1)

    # set_config(..., true) held for the count's own transaction only.
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("on",)
    assert HourlyOutcomes.objects.get(destination=destination).recorded == 1


# --- a large batch in pieces: PostgreSQL inserts one while the next is prepared --------------


def _varied_batch(prefix: str, count: int) -> list[dict[str, Any]]:
    """Stored, rejected and suppressed events; people who come back (their click IDs are
    remembered), events without fbp that name them (filled from what an earlier call saw)."""
    events = []
    for n in range(count):
        event = purchase(f"{prefix}-{n}")
        event["user_data"]["email"] = f"person{n % 97}@example.com"
        if n % 3:
            event["user_data"]["fbp"] = f"fb.1.1700000000000.{n}"
        if n % 50 == 7:
            event["custom_data"] = {"value": 49.9}  # no currency: rejected
        if n % 50 == 9:
            event["consent"] = {"ad_storage": "denied", "ad_user_data": "denied"}
        events.append(event)
    return events


# What Django's error reports show instead of a hidden variable.
HIDDEN = "********************"


def _inserts_events(sql: str) -> bool:
    return bool(re.search(rf'\bINTO "{Event._meta.db_table}" ', sql))


def _is_recall(sql: str) -> bool:
    return sql.startswith("SELECT lookup.slot")


def _inserts(queries: CaptureQueriesContext) -> int:
    return sum(_inserts_events(query["sql"]) for query in queries)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only overlaps")
def test_a_large_batch_in_autocommit_is_stored_in_pieces_with_the_results_of_one_batch(
    transactional_db: None, make_destination: Callable[..., Destination]
) -> None:
    other_tenant = Tenant.objects.create(name="Other client", slug="other-client")
    consent = {
        "consent_policy": ConsentPolicy.REQUIRE_CONSENT,
        "missing_consent": MissingConsent.GRANTED,
    }
    in_pieces = make_destination(**consent)
    at_once = make_destination(tenant=other_tenant, **consent)
    # Both clients saw these people before, with click IDs: later events lacking them are filled.
    track_many(in_pieces, _varied_batch("before", 120))
    with transaction.atomic():
        track_many(at_once, _varied_batch("before", 120))

    with CaptureQueriesContext(connection) as queries:
        pieces = track_many(in_pieces, _varied_batch("order", 1000))
    # In a transaction the batch is stored as one (two INSERTs of 500, after one recall).
    with transaction.atomic(), CaptureQueriesContext(connection) as one_batch:
        whole = track_many(at_once, _varied_batch("order", 1000))

    assert _inserts(one_batch) == 2
    assert _inserts(queries) == 4  # pieces of 250, each its own INSERT
    # Each piece's recall, all of them before the first INSERT remembers a click ID: no event
    # fills from another of the same call, as in one batch.
    recalls = [n for n, query in enumerate(queries) if _is_recall(query["sql"])]
    inserts = [n for n, query in enumerate(queries) if _inserts_events(query["sql"])]
    assert len(recalls) == 4
    assert max(recalls) < min(inserts)
    assert [r.index for r in pieces] == list(range(1000))

    def outcome(result: TrackResult) -> tuple[Any, ...]:
        # The content hash leaves a filled fbp out: the value filled is compared apart.
        fbp = result.event.payload.get("user_data", {}).get("fbp")
        return (
            result.status,
            result.event.event_id,
            codes(result.diagnostics),
            [note.message for note in result.diagnostics if note.code == "click_id_filled"],
            result.event.payload_hash,
            fbp,
        )

    assert [outcome(r) for r in pieces] == [outcome(r) for r in whole]
    assert {r.status for r in pieces} == {"stored", "rejected", "suppressed"}
    assert any("click_id_filled" in codes(r.diagnostics) for r in pieces)
    stored = {row.event_id: row for row in Event.objects.filter(destination=in_pieces)}
    assert len(stored) == 1120
    assert all(stored[r.event.event_id].pk == r.event.pk for r in pieces)
    for name in ("recorded", "rejected", "suppressed", "quality_events"):
        assert sum(
            HourlyOutcomes.objects.filter(destination=in_pieces).values_list(name, flat=True)
        ) == sum(HourlyOutcomes.objects.filter(destination=at_once).values_list(name, flat=True))
    assert (
        QueuedEvent.objects.filter(destination=in_pieces).count()
        == Event.objects.filter(destination=in_pieces, status=EventStatus.PENDING).count()
    )
    remembered = set(
        ClickIdSighting.objects.filter(tenant=in_pieces.tenant).values_list(
            "identifier", "key", "value"
        )
    )
    assert remembered == set(
        ClickIdSighting.objects.filter(tenant=other_tenant).values_list(
            "identifier", "key", "value"
        )
    )

    again = track_many(in_pieces, _varied_batch("order", 1000))
    assert {r.status for r in again} == {"duplicate"}
    assert Event.objects.filter(destination=in_pieces).count() == 1120


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only overlaps")
def test_a_large_batch_repeating_a_key_is_stored_as_one_batch(
    transactional_db: None, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination()
    events = _varied_batch("order", 1000)
    # Made alike only once NUL characters are taken out: the same stored key.
    events[900]["event_id"] = "order-\x0012"

    with CaptureQueriesContext(connection) as queries:
        results = track_many(destination, events)

    assert _inserts(queries) == 2
    assert results[900].status == "duplicate"
    assert results[900].event.pk == results[12].event.pk
    assert Event.objects.filter(destination=destination).count() == 999


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only overlaps")
def test_a_piece_the_database_refuses_raises_and_the_pieces_before_it_stay_stored(
    transactional_db: None, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination()
    table = Event._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_order_600() RETURNS trigger AS $$ BEGIN "
            "IF NEW.event_id = 'order-600' THEN RAISE EXCEPTION 'refused order-600'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        cursor.execute(
            f'CREATE TRIGGER refuse_order_600 BEFORE INSERT ON "{table}" '
            "FOR EACH ROW EXECUTE FUNCTION refuse_order_600()"
        )
    try:
        with pytest.raises(DatabaseError, match="refused order-600") as refused:
            track_many(destination, _varied_batch("order", 1000))
        # Raised in the thread that waited for the INSERT: its frames (the rows as the
        # statement's parameter) are hidden from an error report as the caller's are.
        report = ExceptionReporter(None, refused.type, refused.value, refused.tb)
        in_thread = [
            frame
            for frame in report.get_traceback_frames()
            if frame["filename"].endswith("bound_sql.py") and frame["function"] == "run"
        ]
        assert in_thread
        assert all(value == HIDDEN for frame in in_thread for _name, value in frame["vars"])
        html = report.get_traceback_html()
        assert "203.0.113.7" not in html  # the events' client_ip_address
        assert "fb.1.1700000000000" not in html  # their fbp
        # The pieces before the refused one (250 events each) were committed, as the chunks
        # before a failing INSERT always were; nothing after it was sent.
        assert Event.objects.filter(destination=destination).count() == 500
        assert not Event.objects.filter(event_id="order-500").exists()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP TRIGGER refuse_order_600 ON "{table}"')
            cursor.execute("DROP FUNCTION refuse_order_600()")

    # The connection is usable, and the same call again stores the rest, once.
    results = track_many(destination, _varied_batch("order", 1000))
    assert sum(r.status == "duplicate" for r in results) == 500
    assert Event.objects.filter(destination=destination).count() == 1000
