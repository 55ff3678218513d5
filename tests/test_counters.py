"""Hourly outcome counters: written where outcomes happen, summed by the overview."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import transaction

from capi_destinations import clock as app_clock
from capi_destinations import counters, destinations, dispatch, reports, track_many
from capi_destinations.models import Destination, Event, EventStatus, HourlyOutcomes
from capi_destinations.sandbox import Sandbox
from tests.conftest import server_event
from tests.test_dispatch import add_events

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def env(clock: Any, use_sandbox: Sandbox) -> Sandbox:
    return use_sandbox


def shown(destination: Destination) -> dict[str, int]:
    return counters.last_day([destination.pk]).get(
        destination.pk, {"delivered": 0, "failed": 0, "rejected": 0, "suppressed": 0}
    )


def from_the_events(destination: Destination) -> dict[str, int]:
    """What the events themselves say (no event here changed outcome twice)."""
    since = counters.hours_shown(app_clock.now())[0]
    events = destination.events.filter(updated_at__gte=since)
    return {
        outcome: events.filter(status__in=statuses).count()
        for outcome, statuses in counters.STATUSES_OF_OUTCOME.items()
    }


def test_the_hour_is_the_utc_hour() -> None:
    cet = datetime(2026, 11, 24, 13, 59, 59, 999999, tzinfo=UTC).astimezone(
        ZoneInfo("Europe/Paris")
    )
    assert counters.hour_of(cet) == datetime(2026, 11, 24, 13, tzinfo=UTC)
    shown_hours = counters.hours_shown(datetime(2026, 11, 24, 13, 30, tzinfo=UTC))
    assert len(shown_hours) == 24
    assert shown_hours[0] == datetime(2026, 11, 23, 14, tzinfo=UTC)
    assert shown_hours[-1] == datetime(2026, 11, 24, 13, tzinfo=UTC)


def test_adds_accumulate_in_one_row_per_destination_and_hour(
    clock: Any, destination: Destination, make_destination: Callable[..., Destination]
) -> None:
    other = make_destination()
    counters.add(destination.pk, delivered=1000)
    counters.add(destination.pk, delivered=3, failed=2)
    counters.add(destination.pk, rejected=1)
    counters.add(other.pk, failed=7)
    counters.add(destination.pk)  # nothing to add: no statement, no row
    clock.advance(timedelta(hours=1))
    counters.add(destination.pk, delivered=5)

    assert HourlyOutcomes.objects.filter(destination=destination).count() == 2
    assert counters.last_day([destination.pk, other.pk]) == {
        destination.pk: {"delivered": 1008, "failed": 2, "rejected": 1, "suppressed": 0},
        other.pk: {"delivered": 0, "failed": 7, "rejected": 0, "suppressed": 0},
    }


def test_the_day_shown_is_the_current_hour_and_the_23_before(
    clock: Any, destination: Destination
) -> None:
    counters.add(destination.pk, delivered=1, at=app_clock.now() - timedelta(hours=24))
    counters.add(destination.pk, delivered=10, at=app_clock.now() - timedelta(hours=23))
    counters.add(destination.pk, delivered=100)
    assert shown(destination)["delivered"] == 110

    clock.advance(timedelta(hours=1))
    assert shown(destination)["delivered"] == 100
    assert counters.last_day([]) == {}


def test_ingest_counts_rejected_events_once_after_commit(
    env: Sandbox, destination: Destination, django_capture_on_commit_callbacks: Any
) -> None:
    bad = server_event("bad-1")
    bad["user_data"]["em"] = ["not-hashed@example.com"]
    del bad["action_source"]
    with django_capture_on_commit_callbacks(execute=True):
        results = track_many(destination, [server_event("good-1"), bad, bad])
        # Counted once the caller's transaction commits, never while it holds its locks.
        assert shown(destination)["rejected"] == 0
    assert [result.status for result in results] == ["stored", "rejected", "duplicate"]
    with django_capture_on_commit_callbacks(execute=True):
        track_many(destination, [bad])  # the same rejected event again: a duplicate

    assert shown(destination) == {"delivered": 0, "failed": 0, "rejected": 1, "suppressed": 0}
    assert shown(destination) == from_the_events(destination)


def test_a_rolled_back_ingest_counts_nothing(
    env: Sandbox, destination: Destination, django_capture_on_commit_callbacks: Any
) -> None:
    bad = server_event("bad-1")
    del bad["action_source"]

    def failing_caller() -> None:
        with transaction.atomic():
            assert track_many(destination, [bad])[0].status == "rejected"
            raise RuntimeError("the caller's transaction fails")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        failing_caller()
    assert not Event.objects.exists()
    assert shown(destination)["rejected"] == 0


def test_delivery_counts_the_events_meta_accepted(env: Sandbox, destination: Destination) -> None:
    add_events(destination, 1200)

    dispatch.dispatch_pending()

    assert shown(destination) == {"delivered": 1200, "failed": 0, "rejected": 0, "suppressed": 0}
    assert HourlyOutcomes.objects.count() == 1


def test_events_meta_refused_count_as_failed(env: Sandbox, destination: Destination) -> None:
    add_events(destination, 100, bad={3, 50})

    dispatch.dispatch_pending()

    assert shown(destination) == {"delivered": 98, "failed": 2, "rejected": 0, "suppressed": 0}
    assert shown(destination) == from_the_events(destination)


def test_events_that_expire_count_as_failed(
    env: Sandbox, destination: Destination, make_destination: Callable[..., Destination]
) -> None:
    add_events(
        destination, 2, prefix="old", event_time=app_clock.now() - timedelta(days=7, seconds=1)
    )
    retried = add_events(
        destination,
        3,
        prefix="late",
        event_time=app_clock.now() - timedelta(days=6, hours=23, minutes=58),
    )
    disabled = make_destination(enabled=False)
    add_events(disabled, 4, prefix="held")

    env.set_faults(failure_rate=1.0)
    dispatch.dispatch_pending()  # the old ones expire at once, the late ones wait for a retry
    assert shown(destination)["failed"] == 2
    app_clock.advance(timedelta(minutes=2))
    dispatch.dispatch_pending()  # the retry comes too late: expired
    assert (
        Event.objects.filter(pk__in=[e.pk for e in retried], status=EventStatus.EXPIRED).count()
        == 3
    )
    app_clock.advance(7 * DAY)
    dispatch.dispatch_pending()  # the disabled destination's held events leave the window

    assert shown(destination) == {
        "delivered": 0,
        "failed": 0,
        "rejected": 0,
        "suppressed": 0,
    }  # a week later
    assert shown(disabled) == {"delivered": 0, "failed": 4, "rejected": 0, "suppressed": 0}
    week_ago = app_clock.now() - 7 * DAY
    assert (
        sum(
            HourlyOutcomes.objects.filter(
                destination=destination, hour__gte=week_ago - DAY
            ).values_list("failed", flat=True)
        )
        == 5
    )


def test_a_redelivered_event_counts_as_failed_then_delivered(
    env: Sandbox, destination: Destination
) -> None:
    add_events(destination, 10, bad={4})
    dispatch.dispatch_pending()
    failed = Event.objects.get(status=EventStatus.FAILED)
    # The fix: the event is sent again with a correct payload.
    Event.objects.filter(pk=failed.pk).update(payload=server_event(failed.event_id))
    clock_hour = app_clock.now()
    app_clock.advance(timedelta(hours=1))

    destinations.redeliver([failed.pk], actor=None)
    dispatch.dispatch_pending()

    # Both happened: the failure an hour ago stays counted in its hour.
    assert shown(destination) == {"delivered": 10, "failed": 1, "rejected": 0, "suppressed": 0}
    assert HourlyOutcomes.objects.get(hour=counters.hour_of(clock_hour)).failed == 1


def test_the_overview_counts_from_the_counters_in_one_query(
    clock: Any,
    destination: Destination,
    make_event: Callable[..., Event],
    django_assert_num_queries: Any,
) -> None:
    make_event(status=EventStatus.DELIVERED)
    make_event(status=EventStatus.EXPIRED)
    Event.objects.all().delete()  # the counts stay: they say what happened that hour
    with django_assert_num_queries(1):
        counts = reports.counts_last_24h([destination.pk])
    assert counts == {destination.pk: {"delivered": 1, "failed": 1, "rejected": 0, "suppressed": 0}}


def test_rebuild_recounts_the_hours_from_the_events(
    clock: Any, destination: Destination, make_event: Callable[..., Event]
) -> None:
    make_event(status=EventStatus.DELIVERED)
    make_event(status=EventStatus.REJECTED)
    with clock.held_at(app_clock.now() - timedelta(hours=5)):
        make_event(status=EventStatus.FAILED)
    make_event(status=EventStatus.PENDING)
    make_event(status=EventStatus.SUPPRESSED)
    HourlyOutcomes.objects.all().delete()
    counters.add(destination.pk, delivered=99)  # a wrong count, to be replaced

    assert counters.rebuild() == 2
    assert shown(destination) == {"delivered": 1, "failed": 1, "rejected": 1, "suppressed": 1}
    assert (
        HourlyOutcomes.objects.get(
            hour=counters.hour_of(app_clock.now() - timedelta(hours=5))
        ).failed
        == 1
    )


def test_purge_drops_hours_past_retention(clock: Any, destination: Destination) -> None:
    counters.add(destination.pk, delivered=1)
    clock.advance(timedelta(days=40))
    counters.add(destination.pk, delivered=2)

    assert counters.purge(app_clock.now() - timedelta(days=30)) == 1
    assert list(HourlyOutcomes.objects.values_list("delivered", flat=True)) == [2]
