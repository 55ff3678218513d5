"""django-q2 tasks, their schedules, the enqueue on recording, and the two commands."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django_q.conf import Conf
from django_q.models import OrmQ, Schedule
from django_q.signing import SignedPackage

from capi_destinations import clock as app_clock
from capi_destinations import queueing, retention, signals, tasks
from capi_destinations.models import (
    AttemptOutcome,
    DeliveryAttempt,
    Destination,
    Event,
    EventStatus,
    HourlyOutcomes,
)
from capi_destinations.sandbox import Sandbox

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def queued_tasks(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[dict[str, Any]]]:
    """Turn off django-q2's sync mode, so tasks land in the ORM broker; read them back."""
    monkeypatch.setattr(Conf, "SYNC", False)

    def read() -> list[dict[str, Any]]:
        return [SignedPackage.loads(item.payload) for item in OrmQ.objects.order_by("pk")]

    return read


def test_enqueue_dispatch_queues_one_task_per_waiting_destination(
    queued_tasks: Callable[[], list[dict[str, Any]]], destination: Destination
) -> None:
    assert queueing.enqueue_dispatch(destination.pk)
    assert not queueing.enqueue_dispatch(destination.pk)
    assert not queueing.enqueue_dispatch(destination.pk)

    (task,) = queued_tasks()
    assert task["func"] == tasks.DISPATCH_TASK
    # The task lingers a moment so events arriving one by one leave in one request.
    assert task["args"] == (destination.pk, 1.0)

    # Another destination gets its own task.
    assert queueing.enqueue_dispatch(destination.pk + 1000)
    assert len(queued_tasks()) == 2


def test_a_started_dispatch_lets_the_next_events_queue_again(
    queued_tasks: Callable[[], list[dict[str, Any]]], destination: Destination
) -> None:
    assert queueing.enqueue_dispatch(destination.pk)

    tasks.dispatch_due(destination.pk)

    assert queueing.enqueue_dispatch(destination.pk)
    assert len(queued_tasks()) == 2


def test_recording_events_enqueues_a_dispatch(
    queued_tasks: Callable[[], list[dict[str, Any]]], destination: Destination
) -> None:
    for _ in range(50):
        signals.events_recorded.send(sender=None, destination_id=destination.pk, count=1)

    (task,) = queued_tasks()
    assert task["args"][0] == destination.pk


def test_recording_never_sends_inline_in_sync_mode(
    clock: Any, use_sandbox: Sandbox, make_event: Callable[..., Event]
) -> None:
    assert Conf.SYNC
    event = make_event()

    signals.events_recorded.send(sender=None, destination_id=event.destination_id, count=1)

    event.refresh_from_db()
    assert event.status == EventStatus.PENDING
    assert use_sandbox.requests() == []
    assert OrmQ.objects.count() == 0


def test_an_enqueued_dispatch_delivers_the_destination_s_events(
    clock: Any, use_sandbox: Sandbox, make_event: Callable[..., Event], settings: Any
) -> None:
    # Sync mode (the test settings) runs the task inline, as a cluster would soon after.
    settings.CAPI_DESTINATIONS = {
        **settings.CAPI_DESTINATIONS,
        "GRAPH_API_BASE_URL": use_sandbox.url,
        "DISPATCH_LINGER_SECONDS": 0.01,
    }
    event = make_event()

    assert queueing.enqueue_dispatch(event.destination_id)

    event.refresh_from_db()
    assert event.status == EventStatus.DELIVERED


def test_dispatch_due_returns_the_pass_report(
    clock: Any, use_sandbox: Sandbox, make_event: Callable[..., Event]
) -> None:
    make_event()
    make_event()

    report = tasks.dispatch_due()

    assert report["delivered"] == 2
    assert report["requests"] == 1
    assert set(report) >= {"claimed", "failed", "retrying", "expired", "held", "leases_released"}


# --- purge -------------------------------------------------------------------------------------


def test_purge_deletes_old_delivered_and_expired_records_only(
    clock: Any, make_event: Callable[..., Event], destination: Destination
) -> None:
    old_delivered = make_event(status=EventStatus.DELIVERED)
    old_expired = make_event(status=EventStatus.EXPIRED)
    old_failed = make_event(status=EventStatus.FAILED)
    old_attempt = DeliveryAttempt.objects.create(
        destination=destination, started_at=app_clock.now(), outcome=AttemptOutcome.DELIVERED
    )
    old_attempt.events.add(old_delivered, old_failed)

    app_clock.advance(timedelta(days=31))
    recent_delivered = make_event(status=EventStatus.DELIVERED)
    recent_attempt = DeliveryAttempt.objects.create(
        destination=destination, started_at=app_clock.now(), outcome=AttemptOutcome.DELIVERED
    )

    purged = retention.purge_old_records()

    assert purged["events"] == 2
    assert purged["attempts"] == 1
    assert "health_checks" in purged
    # The old hour's counts went with them; the recent hour's stayed.
    assert purged["hourly_counts"] == 1
    assert list(HourlyOutcomes.objects.values_list("delivered", flat=True)) == [1]
    remaining = set(Event.objects.values_list("pk", flat=True))
    assert remaining == {old_failed.pk, recent_delivered.pk}
    assert not Event.objects.filter(pk__in=[old_delivered.pk, old_expired.pk]).exists()
    assert list(DeliveryAttempt.objects.values_list("pk", flat=True)) == [recent_attempt.pk]


def test_purge_reaches_every_destination_and_judges_by_the_last_change(
    clock: Any,
    make_event: Callable[..., Event],
    make_destination: Callable[..., Destination],
    destination: Destination,
) -> None:
    # The purge goes one destination at a time (the event table has no index on status or
    # updated_at); an old event whose outcome is recent stays, whatever its created_at.
    other = make_destination()
    old_here = make_event(status=EventStatus.DELIVERED)
    old_there = make_event(status=EventStatus.EXPIRED, destination=other)
    delivered_late = make_event(status=EventStatus.FAILED, destination=other)
    app_clock.advance(timedelta(days=31))
    Event.objects.filter(pk=delivered_late.pk).update(
        status=EventStatus.DELIVERED, updated_at=app_clock.now() - timedelta(days=1)
    )

    assert retention.purge_old_records()["events"] == 2

    assert not Event.objects.filter(pk__in=[old_here.pk, old_there.pk]).exists()
    assert Event.objects.filter(pk=delivered_late.pk).exists()


def test_purge_follows_the_retention_setting(
    clock: Any, make_event: Callable[..., Event], settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = {"RETENTION_DAYS": 3}
    make_event(status=EventStatus.DELIVERED)
    app_clock.advance(timedelta(days=2))
    assert retention.purge_old_records()["events"] == 0

    app_clock.advance(timedelta(days=2))
    assert retention.purge_old_records()["events"] == 1


def test_capi_purge_command_reports_what_it_deleted(
    clock: Any, make_event: Callable[..., Event]
) -> None:
    make_event(status=EventStatus.EXPIRED)
    app_clock.advance(timedelta(days=40))
    out = StringIO()

    call_command("capi_purge", stdout=out)

    assert "1 events" in out.getvalue()
    assert Event.objects.count() == 0


# --- schedules ---------------------------------------------------------------------------------


def schedule_counts() -> dict[str, int]:
    return {
        name: Schedule.objects.filter(name=name).count()
        for name in (
            tasks.DISPATCH_SCHEDULE,
            tasks.PURGE_SCHEDULE,
            tasks.HEALTH_SCHEDULE,
            tasks.ALERT_SCHEDULE,
            tasks.MATCH_QUALITY_SCHEDULE,
            tasks.DIGEST_SCHEDULE,
            tasks.STALLED_IMPORTS_SCHEDULE,
        )
    }


def test_each_schedule_exists_once_after_repeated_migrate() -> None:
    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)

    assert schedule_counts() == {
        tasks.DISPATCH_SCHEDULE: 1,
        tasks.PURGE_SCHEDULE: 1,
        tasks.HEALTH_SCHEDULE: 1,
        tasks.ALERT_SCHEDULE: 1,
        tasks.MATCH_QUALITY_SCHEDULE: 1,
        tasks.DIGEST_SCHEDULE: 1,
        tasks.STALLED_IMPORTS_SCHEDULE: 1,
    }
    stalled_imports = Schedule.objects.get(name=tasks.STALLED_IMPORTS_SCHEDULE)
    assert (stalled_imports.func, stalled_imports.minutes) == (tasks.STALLED_IMPORTS_TASK, 5)
    alert_schedule = Schedule.objects.get(name=tasks.ALERT_SCHEDULE)
    assert (alert_schedule.func, alert_schedule.minutes) == (tasks.ALERT_TASK, 1)
    dispatch_schedule = Schedule.objects.get(name=tasks.DISPATCH_SCHEDULE)
    assert dispatch_schedule.func == tasks.DISPATCH_TASK
    assert dispatch_schedule.schedule_type == Schedule.MINUTES
    assert dispatch_schedule.minutes == 1
    assert dispatch_schedule.repeats == -1
    assert Schedule.objects.get(name=tasks.PURGE_SCHEDULE).schedule_type == Schedule.DAILY
    health = Schedule.objects.get(name=tasks.HEALTH_SCHEDULE)
    assert health.func == tasks.HEALTH_TASK
    assert health.minutes == 5
    emq = Schedule.objects.get(name=tasks.MATCH_QUALITY_SCHEDULE)
    assert (emq.func, emq.schedule_type) == (tasks.MATCH_QUALITY_TASK, Schedule.HOURLY)


def test_ensure_schedules_follows_settings_and_removes_duplicates(settings: Any) -> None:
    tasks.ensure_schedules()
    Schedule.objects.create(
        name=tasks.DISPATCH_SCHEDULE, func=tasks.DISPATCH_TASK, schedule_type=Schedule.MINUTES
    )
    settings.CAPI_DESTINATIONS = {"HEALTH_CHECK_INTERVAL": 90}

    tasks.ensure_schedules()

    assert set(schedule_counts().values()) == {1}
    assert Schedule.objects.get(name=tasks.HEALTH_SCHEDULE).minutes == 2


# --- the capi_dispatch command -----------------------------------------------------------------


def test_capi_dispatch_runs_one_pass(
    clock: Any, use_sandbox: Sandbox, make_event: Callable[..., Event]
) -> None:
    make_event()
    make_event()
    out = StringIO()

    call_command("capi_dispatch", stdout=out)

    assert "delivered=2" in out.getvalue()
    assert set(Event.objects.values_list("status", flat=True)) == {EventStatus.DELIVERED}


def test_capi_dispatch_can_serve_one_destination(
    clock: Any,
    use_sandbox: Sandbox,
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Event],
) -> None:
    chosen, other = make_destination(), make_destination()
    make_event(destination=chosen)
    waiting = make_event(destination=other)

    call_command("capi_dispatch", "--destination", str(chosen.pk), stdout=StringIO())

    waiting.refresh_from_db()
    assert waiting.status == EventStatus.PENDING
    assert chosen.events.get().status == EventStatus.DELIVERED


@pytest.mark.django_db(transaction=True)
def test_capi_dispatch_loop_stops_cleanly_on_sigterm(
    use_sandbox: Sandbox, make_event: Callable[..., Event]
) -> None:
    make_event()
    previous_handler = signal.getsignal(signal.SIGTERM)
    out = StringIO()
    # The loop keeps polling until told to stop; stop it once its first pass is surely done.
    stopper = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    stopper.start()

    call_command("capi_dispatch", "--loop", "--interval", "0.05", stdout=out)
    stopper.join()

    assert "delivered=1" in out.getvalue()
    assert Event.objects.get().status == EventStatus.DELIVERED
    assert signal.getsignal(signal.SIGTERM) == previous_handler


def test_run_health_checks_checks_every_destination(
    clock: Any, use_sandbox: Sandbox, make_destination: Callable[..., Destination]
) -> None:
    make_destination()
    make_destination()

    assert tasks.run_health_checks() == 2


def test_purge_drops_rejected_and_suppressed_events_and_failed_ones_once_meta_cannot_take_them(
    clock: Any, make_event: Callable[..., Event]
) -> None:
    rejected = make_event(status=EventStatus.REJECTED)
    suppressed = make_event(status=EventStatus.SUPPRESSED)
    failed = make_event(status=EventStatus.FAILED)
    pending = make_event()

    # Past RETENTION_DAYS (30): rejected and suppressed go; a failed event may still be fixed
    # and redelivered inside Meta's longest window (62 days for store events), so it stays.
    app_clock.advance(timedelta(days=31))
    assert retention.purge_old_records()["events"] == 2
    assert set(Event.objects.values_list("pk", flat=True)) == {failed.pk, pending.pk}
    assert not Event.objects.filter(pk__in=[rejected.pk, suppressed.pk]).exists()

    # Once that window has closed on it (and the clock skew ingest allows), nothing more can
    # happen to it. A pending event is never purged: it expires by Meta's window first.
    app_clock.advance(timedelta(days=31, minutes=4))
    assert retention.purge_old_records()["events"] == 0
    app_clock.advance(timedelta(minutes=2))
    assert retention.purge_old_records()["events"] == 1
    assert list(Event.objects.values_list("pk", flat=True)) == [pending.pk]
