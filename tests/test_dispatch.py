"""The delivery engine against the real Graph sandbox over a socket, with a controllable clock."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection
from datetime import timedelta
from importlib import import_module
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from capi_destinations import clock as app_clock
from capi_destinations import delivery_state, destinations, dispatch, graph, health, signals
from capi_destinations.models import (
    AttemptOutcome,
    AuditAction,
    AuditEntry,
    BlockKind,
    DeliveryAttempt,
    Destination,
    Event,
    EventStatus,
    Health,
    QueuedEvent,
)
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token, other_session, queue_events, server_event

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def env(clock: Any, use_sandbox: Sandbox) -> Sandbox:
    """A frozen clock and the app pointed at a fresh sandbox."""
    return use_sandbox


def add_events(
    destination: Destination,
    count: int,
    *,
    prefix: str = "evt",
    bad: Collection[int] = (),
    event_time: Any = None,
) -> list[Event]:
    """``count`` due pending events in one INSERT; indexes in ``bad`` carry an unhashed email."""
    when = event_time or app_clock.now()
    rows = []
    for index in range(count):
        payload = server_event(f"{prefix}-{index}", event_time=when)
        if index in bad:
            payload["user_data"]["em"] = ["not-hashed@example.com"]
        rows.append(
            Event(
                destination=destination,
                event_name="Purchase",
                event_id=f"{prefix}-{index}",
                event_time=when,
                action_source="website",
                payload=payload,
            )
        )
    events = Event.objects.bulk_create(rows)
    queue_events(events)
    return events


def statuses(destination: Destination | None = None) -> dict[str, int]:
    events = Event.objects.all() if destination is None else destination.events.all()
    counts: dict[str, int] = {}
    for status in events.values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def sent_event_ids(sandbox: Sandbox, **filters: Any) -> list[str]:
    return [record["event_id"] for record in sandbox.events(**filters)]


# --- delivering --------------------------------------------------------------------------------


def test_due_events_are_delivered_once_and_recorded(env: Sandbox, destination: Destination) -> None:
    events = add_events(destination, 5)

    report = dispatch.dispatch_pending()

    assert report.delivered == 5
    assert report.requests == 1
    assert sorted(sent_event_ids(env)) == sorted(event.event_id for event in events)
    for event in Event.objects.all():
        assert event.status == EventStatus.DELIVERED
        assert event.delivered_at == app_clock.now()
        assert event.attempts == 1
    assert not QueuedEvent.objects.exists()
    attempt = DeliveryAttempt.objects.get()
    assert attempt.outcome == AttemptOutcome.DELIVERED
    assert attempt.events_received == 5
    assert attempt.event_count == 5
    assert attempt.http_status == 200
    assert attempt.fbtrace_id
    # Delivered events name the request that delivered them (no link row per event).
    assert set(attempt.delivered_events.values_list("pk", flat=True)) == {e.pk for e in events}
    assert not attempt.events.exists()
    assert Event.objects.get(pk=events[0].pk).delivery_history() == [attempt]
    assert not attempt.received_mismatch
    destination.refresh_from_db()
    assert destination.last_delivered_at == app_clock.now()


def test_the_payload_is_sent_as_stored(env: Sandbox, make_event: Callable[..., Event]) -> None:
    event = make_event(event_id="order-1")

    dispatch.dispatch_pending()

    assert env.events()[0]["event"] == event.payload


def test_the_token_never_reaches_the_attempt(env: Sandbox, destination: Destination) -> None:
    add_events(destination, 1)
    env.revoke(destination.access_token)

    dispatch.dispatch_pending()

    attempt = DeliveryAttempt.objects.get()
    values = DeliveryAttempt.objects.filter(pk=attempt.pk).values().get()
    assert destination.access_token not in repr(values)
    assert attempt.outcome == AttemptOutcome.BLOCKED


def test_requests_hold_at_most_batch_size_events(
    env: Sandbox, destination: Destination, settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "BATCH_SIZE": 10}
    add_events(destination, 25)

    report = dispatch.dispatch_pending()

    assert report.delivered == 25
    assert sorted(request["event_count"] for request in env.requests()) == [5, 10, 10]


def test_requests_stay_under_the_byte_limit(
    env: Sandbox, destination: Destination, settings: Any
) -> None:
    # Each stored payload is about 420 bytes: a 5 kB limit (less the request overhead) fits
    # a handful per request.
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "BATCH_MAX_BYTES": 5000}
    add_events(destination, 20)

    dispatch.dispatch_pending()

    counts = [request["event_count"] for request in env.requests()]
    assert sum(counts) == 20
    assert len(counts) > 1
    assert max(counts) <= 8


def test_one_request_per_destination(
    env: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    first, second = make_destination(), make_destination()
    add_events(first, 3, prefix="a")
    add_events(second, 4, prefix="b")

    dispatch.dispatch_pending()

    assert sorted(request["event_count"] for request in env.requests()) == [3, 4]
    assert env.stats()["pixels"][first.pixel_id]["events"] == 3
    assert env.stats()["pixels"][second.pixel_id]["events"] == 4


def test_only_the_named_destination_is_dispatched(
    env: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    first, second = make_destination(), make_destination()
    add_events(first, 2, prefix="a")
    add_events(second, 2, prefix="b")

    dispatch.dispatch_pending(first.pk)

    assert statuses(first) == {EventStatus.DELIVERED: 2}
    assert statuses(second) == {EventStatus.PENDING: 2}


def test_queries_per_1000_event_batch_are_constant(env: Sandbox, destination: Destination) -> None:
    def queries_for_one_pass() -> int:
        with CaptureQueriesContext(connection) as captured:
            dispatch.dispatch_pending()
        return len(captured.captured_queries)

    empty = queries_for_one_pass()
    add_events(destination, 1000, prefix="one")
    one_batch = queries_for_one_pass()
    add_events(destination, 2000, prefix="two")
    two_batches = queries_for_one_pass()

    per_batch = one_batch - empty
    assert two_batches - empty == 2 * per_batch
    # About ten statements (plus savepoints inside the test transaction), whatever the size.
    assert per_batch <= 15
    assert statuses() == {EventStatus.DELIVERED: 3000}


def test_the_next_claim_and_the_last_record_are_written_while_a_request_is_on_the_wire(
    env: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    # Two claims of one request each (two destinations). While the first request is on the
    # wire the worker claims the second batch; while the second is, it records the first. Meta
    # (the sandbox) holds each answer until the worker has run that statement: a worker that
    # claimed or recorded only after the answer would leave it waiting, and the test would fail.
    add_events(make_destination(), 1000, prefix="p")
    add_events(make_destination(), 500, prefix="q")
    done = {"claims": 0, "records": 0}
    changed = threading.Condition()
    seen: list[tuple[str, bool]] = []

    def watch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        claim = "SET lease_token = %s, lease_expires_at" in sql
        record = "DELETE FROM" in sql and "queuedevent" in sql
        if claim or record:
            with changed:
                done["claims" if claim else "records"] += 1
                changed.notify_all()
        return result

    def hold_the_answer(method: str, path: str) -> None:
        # The first request waits for the second claim, the second for the first record.
        name, count = ("claims", 2) if not seen else ("records", 1)
        with changed:
            seen.append((name, changed.wait_for(lambda: done[name] >= count, timeout=30)))

    env.app.before_answer = hold_the_answer
    with connection.execute_wrapper(watch):
        report = dispatch.dispatch_pending()

    assert seen == [("claims", True), ("records", True)]
    assert (report.requests, report.delivered) == (2, 1500)
    assert statuses() == {EventStatus.DELIVERED: 1500}
    assert QueuedEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_an_outcome_is_written_on_another_connection_during_the_next_claim(
    env: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    # Three claims of one request each. The first request's outcome is written by the
    # recorder thread on a connection of its own, while the worker's thread claims the third
    # batch. Another session locks the attempts table, so that outcome cannot be written until
    # the third claim is done: a worker writing outcomes on its own connection (between
    # sending and claiming) would wait for the lock, and the lock would only go on the timeout.
    if connection.vendor != "postgresql":
        pytest.skip("outcomes go to another connection on PostgreSQL only")
    for prefix in "abc":
        add_events(make_destination(), 300, prefix=prefix)
    claims = 0
    third_claim = threading.Event()

    def watch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal claims
        result = execute(sql, params, many, context)
        if "SET lease_token = %s, lease_expires_at" in sql:
            claims += 1
            if claims == 3:
                third_claim.set()
        return result

    attempts = DeliveryAttempt._meta.db_table
    with other_session() as other:
        other.execute(f"LOCK TABLE {attempts} IN EXCLUSIVE MODE")
        released_by_claim: list[bool] = []

        def release() -> None:
            released_by_claim.append(third_claim.wait(timeout=15))
            other.commit()

        releaser = threading.Thread(target=release)
        releaser.start()
        with connection.execute_wrapper(watch):
            report = dispatch.dispatch_pending()
        releaser.join(timeout=30)

    assert released_by_claim == [True]
    assert (report.requests, report.delivered) == (3, 900)
    assert statuses() == {EventStatus.DELIVERED: 900}
    assert QueuedEvent.objects.count() == 0
    assert DeliveryAttempt.objects.filter(outcome=AttemptOutcome.DELIVERED).count() == 3


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_claim_is_one_statement_committed_on_its_own(
    clock: Any, destination: Destination
) -> None:
    # No BEGIN, SET LOCAL and COMMIT round trips around it: the statement sets its commit's
    # durability itself, and runs in autocommit.
    if connection.vendor != "postgresql":
        pytest.skip("one statement on PostgreSQL only")
    add_events(destination, 3)

    with CaptureQueriesContext(connection) as captured:
        claim = dispatch.claim_due_events([destination.pk])

    assert len(claim.events) == 3
    assert len(captured.captured_queries) == 1
    assert "set_config('synchronous_commit', 'off', true)" in captured[0]["sql"]
    assert connection.get_autocommit()
    with other_session() as other:
        # Committed: another session sees the lease.
        (leased,) = other.execute(
            f"SELECT count(*) FROM {QueuedEvent._meta.db_table} WHERE lease_token = %s",  # noqa: S608
            [claim.lease_token],
        ).fetchone()
    assert leased == 3


def test_nothing_of_the_destination_on_the_wire_is_claimed_ahead(
    env: Sandbox, destination: Destination
) -> None:
    # Its events on the wire could come back to the queue meanwhile (a lease that ran out) and
    # be claimed again by the worker sending them: the claim made ahead skips the destination.
    # Meta rate-limits the first request, so nothing more of it is claimed in this pass.
    add_events(destination, 1500, prefix="r")
    env.set_faults(rate_limit_every=1)

    report = dispatch.dispatch_pending()

    assert report.requests == 1
    assert (report.claimed, report.held, report.delivered) == (1000, 1000, 0)
    assert QueuedEvent.objects.filter(lease_token__isnull=True).count() == 1500
    assert set(Event.objects.values_list("attempts", flat=True)) == {0}
    env.set_faults(rate_limit_every=0)
    app_clock.advance(timedelta(minutes=2))
    dispatch.dispatch_pending()
    assert statuses() == {EventStatus.DELIVERED: 1500}
    received = [event["event_id"] for event in env.events(pixel_id=destination.pixel_id)]
    assert len(received) == len(set(received)) == 1500


def test_an_event_lists_its_failed_attempts_and_the_delivering_one(
    env: Sandbox, destination: Destination
) -> None:
    (event,) = add_events(destination, 1)
    env.set_faults(failure_rate=1.0)
    dispatch.dispatch_pending()
    env.set_faults(failure_rate=0.0)
    app_clock.advance(timedelta(minutes=1))
    dispatch.dispatch_pending()

    event.refresh_from_db()
    retry, delivery = DeliveryAttempt.objects.order_by("started_at")
    assert (retry.outcome, delivery.outcome) == (AttemptOutcome.RETRY, AttemptOutcome.DELIVERED)
    assert event.status == EventStatus.DELIVERED
    assert event.delivered_by_id == delivery.pk
    assert event.delivery_history() == [delivery, retry]  # newest first
    assert event.delivery_history(limit=1) == [delivery]
    # Purging the attempts leaves the event readable.
    DeliveryAttempt.objects.all().delete()
    event.refresh_from_db()
    assert event.delivery_history() == []


def test_a_received_count_mismatch_is_recorded(env: Sandbox, destination: Destination) -> None:
    add_events(destination, 3)
    env.answer_next(status=200, body={"events_received": 2, "messages": [], "fbtrace_id": "Ax"})

    dispatch.dispatch_pending()

    attempt = DeliveryAttempt.objects.get()
    assert attempt.received_mismatch
    assert attempt.events_received == 2
    event = Event.objects.first()
    assert event.status == EventStatus.DELIVERED
    assert "2 events received for a request of 3" in event.status_reason


# --- invalid events: bisecting -----------------------------------------------------------------


def test_bisecting_fails_exactly_the_bad_events_in_few_requests(
    env: Sandbox, destination: Destination
) -> None:
    bad = {17, 500, 999}
    events = add_events(destination, 1000, bad=bad)
    bad_ids = {events[index].pk for index in bad}

    report = dispatch.dispatch_pending()

    assert report.delivered == 997
    assert report.failed == 3
    assert set(Event.objects.filter(status=EventStatus.FAILED).values_list("pk", flat=True)) == (
        bad_ids
    )
    assert statuses() == {EventStatus.DELIVERED: 997, EventStatus.FAILED: 3}
    # Each bad event costs at most two requests per level of a halving tree.
    assert report.requests <= 1 + 2 * len(bad) * math.ceil(math.log2(1000))
    assert len(env.requests()) == report.requests
    assert len(env.events()) == 997
    failed = Event.objects.filter(status=EventStatus.FAILED).first()
    diagnostic = failed.diagnostics[-1]
    assert diagnostic["code"] == "meta_rejected"
    assert diagnostic["field"] == "user_data.em"
    assert diagnostic["severity"] == "error"
    assert diagnostic["meta_code"] == 100
    assert diagnostic["meta_subcode"] == 2804016
    assert diagnostic["message"]
    assert diagnostic["fix"]
    assert "Meta rejected this event" in failed.status_reason
    outcomes = set(DeliveryAttempt.objects.values_list("outcome", flat=True))
    assert outcomes == {AttemptOutcome.BISECTED, AttemptOutcome.INVALID, AttemptOutcome.DELIVERED}
    assert DeliveryAttempt.objects.filter(outcome=AttemptOutcome.INVALID).count() == 3


def test_a_lone_invalid_event_fails_without_bisecting(
    env: Sandbox, make_event: Callable[..., Event]
) -> None:
    payload = server_event("lonely")
    del payload["action_source"]
    event = make_event(event_id="lonely", payload=payload)

    report = dispatch.dispatch_pending()

    event.refresh_from_db()
    assert report.requests == 1
    assert event.status == EventStatus.FAILED
    assert event.diagnostics[-1]["field"] == "action_source"
    assert event.attempts == 1


# --- transient errors and the retry schedule ---------------------------------------------------


def test_retry_delays_follow_the_schedule_with_jitter() -> None:
    expected = [*dispatch.RETRY_DELAYS, dispatch.RETRY_DELAY_AFTER_SCHEDULE]
    for failures, base in enumerate(expected, start=1):
        for _ in range(20):
            delay = dispatch.retry_delay(failures)
            assert base * 0.8 <= delay <= base * 1.2
    assert dispatch.RETRY_DELAYS[0] == timedelta(seconds=10)
    assert dispatch.retry_delay(30) <= timedelta(hours=12) * 1.2


def test_a_server_error_schedules_a_retry(env: Sandbox, make_event: Callable[..., Event]) -> None:
    event = make_event()
    env.set_faults(failure_rate=1.0)

    report = dispatch.dispatch_pending()

    event.refresh_from_db()
    assert report.retrying == 1
    assert event.status == EventStatus.PENDING
    assert event.attempts == 1
    wait = event.next_attempt_at - app_clock.now()
    assert timedelta(seconds=8) <= wait <= timedelta(seconds=12)
    assert "Attempt 1 failed" in event.status_reason
    assert DeliveryAttempt.objects.get().outcome == AttemptOutcome.RETRY

    # Not due yet: nothing is sent.
    env.set_faults(failure_rate=0.0)
    assert dispatch.dispatch_pending().requests == 0

    app_clock.advance(timedelta(seconds=13))
    dispatch.dispatch_pending()
    event.refresh_from_db()
    assert event.status == EventStatus.DELIVERED
    assert event.attempts == 2


def test_dropped_connections_and_unreadable_answers_are_retried(
    env: Sandbox, destination: Destination
) -> None:
    add_events(destination, 2)
    env.set_faults(drop_next=1)
    dispatch.dispatch_pending()
    assert statuses() == {EventStatus.PENDING: 2}

    app_clock.advance(timedelta(seconds=13))
    env.answer_next(status=502, text="<html>Bad gateway</html>")
    dispatch.dispatch_pending()
    assert statuses() == {EventStatus.PENDING: 2}
    assert set(Event.objects.values_list("attempts", flat=True)) == {2}

    app_clock.advance(timedelta(minutes=2))
    dispatch.dispatch_pending()
    assert statuses() == {EventStatus.DELIVERED: 2}


def test_retries_walk_the_schedule_until_the_window_closes(
    env: Sandbox, make_event: Callable[..., Event]
) -> None:
    event = make_event()
    deadline = event.event_time + timedelta(days=7)
    env.set_faults(failure_rate=1.0)
    expected = [*dispatch.RETRY_DELAYS, *[dispatch.RETRY_DELAY_AFTER_SCHEDULE] * 20]

    waits = []
    for _ in range(40):
        dispatch.dispatch_pending()
        event.refresh_from_db()
        if event.status != EventStatus.PENDING:
            break
        wait = event.next_attempt_at - app_clock.now()
        waits.append(wait)
        app_clock.advance(wait)

    assert event.status == EventStatus.EXPIRED
    assert event.status_reason.startswith(dispatch.LAST_ERROR_PREFIX)
    assert "code 2" in event.status_reason
    assert event.attempts == len(waits) + 1
    assert app_clock.now() < deadline
    for wait, base in zip(waits, expected, strict=False):
        assert base * 0.8 <= wait <= base * 1.2
    # It expired because the next attempt would have fallen outside the window.
    assert app_clock.now() + dispatch.RETRY_DELAY_AFTER_SCHEDULE * 1.2 >= deadline - timedelta(
        minutes=1
    )
    assert len(waits) >= len(dispatch.RETRY_DELAYS) + 10


def test_the_lease_of_a_dead_worker_is_given_back(env: Sandbox, destination: Destination) -> None:
    add_events(destination, 4)
    # A worker claims the events and sends them, then dies before recording anything.
    claim = dispatch.claim_due_events([destination.pk])
    graph.send_events(destination, [event.payload_json for event in claim.events])
    assert statuses() == {EventStatus.PENDING: 4}
    assert QueuedEvent.objects.filter(lease_token=claim.lease_token).count() == 4

    # Its lease is still running: nobody else takes the events.
    assert dispatch.dispatch_pending().claimed == 0

    app_clock.advance(timedelta(seconds=301))
    report = dispatch.dispatch_pending()

    assert report.leases_released == 4
    assert report.delivered == 4
    assert statuses() == {EventStatus.DELIVERED: 4}
    assert set(Event.objects.values_list("attempts", flat=True)) == {1}
    # Meta saw each event twice, with the same event_id, which it deduplicates.
    assert env.stats()["duplicates"]
    assert sorted(sent_event_ids(env)) == sorted([f"evt-{i}" for i in range(4)] * 2)


# --- expiry and disabled destinations ----------------------------------------------------------


def test_an_event_older_than_seven_days_expires_without_being_sent(
    env: Sandbox, make_event: Callable[..., Event]
) -> None:
    event = make_event(event_time=app_clock.now() - timedelta(days=7, seconds=1))

    report = dispatch.dispatch_pending()

    event.refresh_from_db()
    assert report.expired == 1
    assert event.status == EventStatus.EXPIRED
    assert event.status_reason == dispatch.TOO_OLD_REASON
    assert env.requests() == []


def test_an_expired_retry_keeps_its_last_error(
    env: Sandbox, make_event: Callable[..., Event]
) -> None:
    event = make_event(event_time=app_clock.now() - timedelta(days=6, hours=23, minutes=58))
    env.set_faults(failure_rate=1.0)
    dispatch.dispatch_pending()
    event.refresh_from_db()
    assert event.status == EventStatus.PENDING

    app_clock.advance(timedelta(minutes=2))
    dispatch.dispatch_pending()

    event.refresh_from_db()
    assert event.status == EventStatus.EXPIRED
    assert event.status_reason.startswith(dispatch.LAST_ERROR_PREFIX + "Attempt 1 failed")
    assert len(env.requests()) == 1


def test_a_disabled_destination_stores_but_never_sends(
    env: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination(enabled=False)
    add_events(destination, 3)

    dispatch.dispatch_pending()
    assert statuses() == {EventStatus.PENDING: 3}
    assert env.requests() == []

    app_clock.advance(7 * DAY)
    report = dispatch.dispatch_pending()

    assert report.expired == 3
    assert set(Event.objects.values_list("status_reason", flat=True)) == {dispatch.DISABLED_REASON}
    assert "sending was disabled" in dispatch.DISABLED_REASON
    assert env.requests() == []


def test_enabling_a_destination_sends_what_it_held(
    env: Sandbox,
    make_destination: Callable[..., Destination],
    django_capture_on_commit_callbacks: Any,
) -> None:
    destination = make_destination(enabled=False)
    add_events(destination, 3)

    destination.enabled = True
    destination.save()
    with django_capture_on_commit_callbacks(execute=True):
        signals.destination_enabled_changed.send(
            sender=Destination, destination=destination, enabled=True, actor=None
        )

    assert statuses() == {EventStatus.DELIVERED: 3}


def test_test_mode_sends_the_test_event_code(
    env: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination(test_event_code="TEST4242")
    add_events(destination, 2)

    dispatch.dispatch_pending()

    assert {record["test_event_code"] for record in env.events()} == {"TEST4242"}
    assert env.requests()[0]["test_event_code"] == "TEST4242"
    assert DeliveryAttempt.objects.get().test_event_code == "TEST4242"


# --- rate limits -------------------------------------------------------------------------------


def test_a_rate_limit_pauses_the_destination_without_spending_attempts(
    env: Sandbox, destination: Destination
) -> None:
    add_events(destination, 3)
    env.set_faults(rate_limit_every=1, rate_limit_code=80004, rate_limit_minutes=5)

    report = dispatch.dispatch_pending()

    destination.refresh_from_db()
    assert report.held == 3
    assert destination.paused_until == app_clock.now() + timedelta(minutes=5)
    assert "Rate limited" in destination.pause_reason
    assert statuses() == {EventStatus.PENDING: 3}
    assert set(Event.objects.values_list("attempts", flat=True)) == {0}
    assert DeliveryAttempt.objects.get().outcome == AttemptOutcome.RATE_LIMITED

    env.set_faults(rate_limit_every=0)
    app_clock.advance(timedelta(minutes=4))
    assert dispatch.dispatch_pending().requests == 0

    app_clock.advance(timedelta(minutes=1))
    dispatch.dispatch_pending()
    assert statuses() == {EventStatus.DELIVERED: 3}
    assert set(Event.objects.values_list("attempts", flat=True)) == {1}


def test_a_rate_limit_without_a_time_backs_off(env: Sandbox, destination: Destination) -> None:
    add_events(destination, 1)
    env.answer_error(4, 1504022, message="(#4) Application request limit reached")

    dispatch.dispatch_pending()

    destination.refresh_from_db()
    assert destination.paused_until == app_clock.now() + dispatch.RATE_LIMIT_BACKOFF


# --- refused tokens ----------------------------------------------------------------------------


def test_a_revoked_token_blocks_only_its_destination(
    env: Sandbox,
    make_destination: Callable[..., Destination],
    django_capture_on_commit_callbacks: Any,
) -> None:
    revoked, healthy = make_destination(), make_destination()
    add_events(revoked, 3, prefix="r")
    add_events(healthy, 3, prefix="h")
    env.revoke(revoked.access_token)

    report = dispatch.dispatch_pending()

    revoked.refresh_from_db()
    assert report.held == 3
    assert revoked.blocked_reason
    assert revoked.block_kind == BlockKind.TOKEN
    assert revoked.blocked_at == app_clock.now()
    assert revoked.health == Health.UNHEALTHY
    assert revoked.token_hint not in revoked.blocked_reason
    assert statuses(revoked) == {EventStatus.PENDING: 3}
    assert set(revoked.events.values_list("attempts", flat=True)) == {0}
    assert statuses(healthy) == {EventStatus.DELIVERED: 3}

    # New events keep flowing for the healthy destination and wait for the blocked one.
    add_events(revoked, 1, prefix="r-late")
    add_events(healthy, 1, prefix="h-late")
    dispatch.dispatch_pending()
    assert statuses(revoked) == {EventStatus.PENDING: 4}
    assert statuses(healthy) == {EventStatus.DELIVERED: 4}

    # A new token clears the block and sends what was held.
    revoked.access_token = make_token("a-brand-new-token")
    revoked.save()
    with django_capture_on_commit_callbacks(execute=True):
        signals.destination_token_replaced.send(sender=Destination, destination=revoked, actor=None)

    revoked.refresh_from_db()
    assert revoked.blocked_reason == ""
    assert revoked.block_kind == ""
    assert statuses(revoked) == {EventStatus.DELIVERED: 4}
    assert len(sent_event_ids(env, pixel_id=revoked.pixel_id)) == 4


def test_a_token_without_access_to_the_pixel_blocks_the_destination(
    env: Sandbox, destination: Destination
) -> None:
    # The token is good, but for another pixel.
    env.register_pixel("9990000000000001", "The token's own pixel", [destination.access_token])
    env.register_pixel(destination.pixel_id, "Someone else's pixel", [make_token("other")])
    add_events(destination, 2)

    dispatch.dispatch_pending()

    destination.refresh_from_db()
    assert destination.is_blocked
    assert destination.health == Health.UNHEALTHY
    attempt = DeliveryAttempt.objects.get()
    assert attempt.category == graph.PERMISSION
    assert attempt.outcome == AttemptOutcome.BLOCKED
    assert statuses() == {EventStatus.PENDING: 2}


def test_clearing_a_block_sends_the_held_events(
    env: Sandbox, destination: Destination, django_capture_on_commit_callbacks: Any
) -> None:
    Destination.objects.filter(pk=destination.pk).update(
        blocked_reason="Meta refused the token.", blocked_at=app_clock.now()
    )
    add_events(destination, 2)
    dispatch.dispatch_pending()
    assert statuses() == {EventStatus.PENDING: 2}

    with django_capture_on_commit_callbacks(execute=True):
        assert delivery_state.clear_block(destination)

    assert statuses() == {EventStatus.DELIVERED: 2}
    assert not delivery_state.clear_block(destination)


def test_held_events_of_a_blocked_destination_expire_with_the_reason(
    env: Sandbox, destination: Destination
) -> None:
    Destination.objects.filter(pk=destination.pk).update(
        blocked_reason="Meta refused the access token.", blocked_at=app_clock.now()
    )
    add_events(destination, 1)

    app_clock.advance(7 * DAY)
    dispatch.dispatch_pending()

    event = Event.objects.get()
    assert event.status == EventStatus.EXPIRED
    assert event.status_reason == dispatch.LAST_ERROR_PREFIX + "Meta refused the access token."


# --- redelivery --------------------------------------------------------------------------------


def test_redeliver_puts_failed_and_expired_events_inside_the_window_back(
    env: Sandbox,
    make_event: Callable[..., Event],
    make_user: Callable[..., Any],
    tenant: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    user = make_user(tenant, "editor")
    failed = make_event(status=EventStatus.FAILED, attempts=1)
    expired = make_event(
        status=EventStatus.EXPIRED, event_time=app_clock.now() - timedelta(days=6), attempts=9
    )
    too_old = make_event(status=EventStatus.EXPIRED, event_time=app_clock.now() - 8 * DAY)
    delivered = make_event(status=EventStatus.DELIVERED)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        count = destinations.redeliver(Event.objects.all(), actor=user)

    assert count == 2
    failed.refresh_from_db()
    expired.refresh_from_db()
    too_old.refresh_from_db()
    delivered.refresh_from_db()
    assert failed.status == expired.status == EventStatus.PENDING
    assert failed.attempts == expired.attempts == 0
    assert failed.next_attempt_at == app_clock.now()
    assert user.username in failed.status_reason
    assert too_old.status == EventStatus.EXPIRED
    assert delivered.status == EventStatus.DELIVERED
    entry = AuditEntry.objects.get()
    assert entry.action == AuditAction.REDELIVERED
    assert entry.actor == user
    assert entry.detail == {"count": 2}

    for callback in callbacks:
        callback()
    failed.refresh_from_db()
    assert failed.status == EventStatus.DELIVERED


def test_redeliver_accepts_ids(env: Sandbox, make_event: Callable[..., Event]) -> None:
    failed = make_event(status=EventStatus.FAILED)

    assert destinations.redeliver([failed.pk], actor=None) == 1
    assert destinations.redeliver([failed.pk], actor=None) == 0
    assert AuditEntry.objects.get().actor is None


# --- a request refused whatever its events ---------------------------------------------------


@pytest.mark.parametrize(
    ("subcode", "message"),
    [
        (None, "Invalid parameter"),
        (2804030, "Invalid parameter"),
    ],
)
def test_a_request_refused_whatever_its_events_stops_bisecting(
    env: Sandbox,
    destination: Destination,
    django_capture_on_commit_callbacks: Any,
    subcode: int | None,
    message: str,
) -> None:
    add_events(destination, 1000)
    # Meta refuses every request, whatever it carries, and names no event (a wrong test event
    # code, Limited Data Use required [TP:ocfu-25]).
    user_msg = "This request cannot be processed for this dataset."
    env.answer_error(100, subcode, message=message, error_user_msg=user_msg, times=100)

    report = dispatch.dispatch_pending()

    # Depth first down to single events; three unrelated lone events refused alike with
    # nothing accepted stop it: about log2(n) requests, not ~2000 failing every event.
    assert report.requests <= 2 * math.ceil(math.log2(1000)) - 5
    assert len(env.requests()) == report.requests
    assert report.failed == 0
    assert statuses() == {EventStatus.PENDING: 1000}
    assert set(Event.objects.values_list("attempts", flat=True)) == {0}
    destination.refresh_from_db()
    assert destination.is_blocked
    assert user_msg in destination.blocked_reason
    assert destination.canary_due_at is not None
    assert destination.health == Health.UNHEALTHY
    assert user_msg in destination.health_reasons[0]["message"]
    assert "test event code" in destination.health_reasons[0]["fix"]
    held = Event.objects.first()
    assert user_msg in held.status_reason
    assert "working token" not in held.status_reason

    # Once Meta takes requests again, the next health check makes a canary due: one of the
    # destination's own events goes alone, then the rest; nothing made up is ever sent.
    env.reset()
    with django_capture_on_commit_callbacks(execute=True):
        health.check_destination(destination)

    assert statuses() == {EventStatus.DELIVERED: 1000}
    assert set(Event.objects.values_list("attempts", flat=True)) == {1}
    ours = set(Event.objects.values_list("event_id", flat=True))
    received = [item["event_id"] for item in env.events()]
    assert sorted(received) == sorted(ours)


def test_halves_refused_alike_are_bisected_until_the_events_tell(
    env: Sandbox, destination: Destination
) -> None:
    add_events(destination, 1000)
    # The request, a half and a quarter are refused without naming an event; the other
    # requests are accepted, so no lone event was ever refused.
    env.answer_error(100, message="Invalid parameter", times=3)

    report = dispatch.dispatch_pending()

    assert not Destination.objects.get(pk=destination.pk).is_blocked
    assert statuses() == {EventStatus.DELIVERED: 1000}
    # 1000, 500, 250 refused; then 125, 125, 250, 500 accepted. No synthetic event.
    assert len(env.requests()) == report.requests == 7
    assert len(env.events()) == 1000


def test_a_half_refused_for_another_reason_is_bisected(
    env: Sandbox, destination: Destination
) -> None:
    add_events(destination, 4, bad={3})
    env.answer_error(100, message="(#100) Invalid parameter", times=1)

    dispatch.dispatch_pending()

    # The first half goes through; the second is split until its bad event stands alone and fails.
    assert statuses() == {EventStatus.DELIVERED: 3, EventStatus.FAILED: 1}
    assert not Destination.objects.get(pk=destination.pk).is_blocked


# --- the delivery's UPDATE is a HOT update on PostgreSQL (docs/BENCHMARKS.md, issue 21) -------


def _hot_updates(table: str = Event._meta.db_table) -> tuple[int, int]:
    """(updates, HOT updates) of ``table`` so far: the shared statistics plus this
    backend's not yet flushed ones, read in one statement so a flush cannot fall between."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT shared.n_tup_upd + pending.n_tup_upd, "
            "shared.n_tup_hot_upd + pending.n_tup_hot_upd FROM pg_stat_user_tables AS shared "
            "JOIN pg_stat_xact_user_tables AS pending USING (relid) "
            "WHERE shared.relid = %s::regclass",
            [table],
        )
        updates, hot = cursor.fetchone()
    return int(updates), int(hot)


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="HOT updates and fillfactor are PostgreSQL's"
)
def test_the_delivery_updates_each_event_row_in_place_on_postgresql(
    env: Sandbox, destination: Destination
) -> None:
    # No index of the event table holds a column the delivery writes, and the table's
    # fillfactor leaves room on each page: every delivered event's UPDATE is HOT (no new index
    # entry). An index on status, updated_at, delivered_at… or a full page fails this.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", [Event._meta.db_table]
        )
        (options,) = cursor.fetchone()
    fillfactor = import_module("capi_destinations.migrations.0002_event_fillfactor").FILLFACTOR
    assert f"fillfactor={fillfactor}" in (options or [])
    count = 400  # rows of several pages, delivered in one request
    add_events(destination, count)
    updates_before, hot_before = _hot_updates()

    report = dispatch.dispatch_pending()

    assert report.delivered == count
    updates, hot = _hot_updates()
    assert updates - updates_before >= count
    assert hot - hot_before >= count


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="HOT updates and fillfactor are PostgreSQL's"
)
def test_the_claim_updates_each_queue_entry_in_place_on_postgresql(
    env: Sandbox, destination: Destination
) -> None:
    # The claim writes only the lease (lease_token, lease_expires_at), which no index holds,
    # and the queue's fillfactor leaves room on each page: every claimed entry's UPDATE is HOT.
    # A claim that moved due_at (indexed), or a full page, fails this.
    queue = QueuedEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass", [queue])
        (options,) = cursor.fetchone()
    migration = import_module("capi_destinations.migrations.0002_event_fillfactor")
    fillfactor = migration.QUEUE_FILLFACTOR
    assert f"fillfactor={fillfactor}" in (options or [])
    count = 400
    add_events(destination, count)
    updates_before, hot_before = _hot_updates(queue)

    claim = dispatch.claim_due_events([destination.pk])

    assert len(claim.events) == count
    updates, hot = _hot_updates(queue)
    assert updates - updates_before == count
    assert hot - hot_before == count
