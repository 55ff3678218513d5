"""The books of a soak: every ingested event accounted for, in the database and at "Meta".

Three promises are checked (issue 9):

- ingested = delivered + failed + rejected + suppressed + expired + pending (pending counts
  the events a worker holds under a live lease: work in hand, never lost), and the delivery
  queue holds exactly the pending events;
- every delivered ``event_id`` reached the sandbox exactly once — a second copy is tolerated only
  for an event whose worker was killed or lost its database connection after Meta received the
  request (Meta deduplicates on event_id; the soak names each one);
- no queue entry is held under a lease that ran out (a worker died and nobody took it back).

Must be imported after ``django.setup()``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count
from django.utils import timezone

from capi_destinations.models import DeliveryAttempt, Destination, Event, EventStatus, QueuedEvent

Key = tuple[str, bool, str, str]
BUCKETS = ("delivered", "failed", "rejected", "suppressed", "expired", "pending")


@dataclass
class Books:
    """Counts by status, the events held by workers split by lease, and the checks' verdicts."""

    ingested: int
    by_status: dict[str, int]
    sending_live_lease: int
    sending_dead_lease: int
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ingested": self.ingested,
            **{status: self.by_status.get(status, 0) for status in BUCKETS},
            "sending_with_live_lease": self.sending_live_lease,
            "sending_without_live_lease": self.sending_dead_lease,
            "balanced": not self.problems,
            "problems": self.problems,
        }


def event_books(destination_ids: list[int], *, now: datetime | None = None) -> Books:
    """Count the destinations' events by status and check that the sum is the whole."""
    now = now or timezone.now()
    events = Event.objects.filter(destination_id__in=destination_ids)
    by_status = dict(events.values_list("status").annotate(count=Count("pk")).order_by())
    queue = QueuedEvent.objects.filter(destination_id__in=destination_ids)
    leased = queue.filter(lease_token__isnull=False)
    dead_count = leased.filter(lease_expires_at__lte=now).count()
    books = Books(
        ingested=events.count(),
        by_status=by_status,
        sending_live_lease=leased.count() - dead_count,
        sending_dead_lease=dead_count,
    )
    accounted = sum(by_status.get(status, 0) for status in BUCKETS)
    if accounted != books.ingested:
        books.problems.append(
            f"ingested {books.ingested} != delivered + failed + rejected + suppressed + expired "
            f"+ pending = {accounted}"
        )
    queued = queue.count()
    queued_pending = queue.filter(event__status=EventStatus.PENDING).count()
    if queued != queued_pending or queued != by_status.get(EventStatus.PENDING, 0):
        books.problems.append(
            f"the delivery queue holds {queued} entries ({queued_pending} of pending events) "
            f"for {by_status.get(EventStatus.PENDING, 0)} pending events"
        )
    if dead_count:
        books.problems.append(f"{dead_count} events are held under a lease that ran out")
    unknown = set(by_status) - set(BUCKETS)
    if unknown:
        books.problems.append(f"unknown statuses: {sorted(unknown)}")
    return books


def stored_keys(destination_ids: list[int]) -> set[tuple[int, str, str]]:
    """(destination_id, event_name, event_id) of every stored event."""
    return set(
        Event.objects.filter(destination_id__in=destination_ids).values_list(
            "destination_id", "event_name", "event_id"
        )
    )


def delivered_keys(destination_ids: list[int]) -> set[Key]:
    """(pixel, sent as a test event?, event_name, event_id) of every delivered event."""
    test_mode = dict(
        Destination.objects.filter(pk__in=destination_ids).values_list("pk", "test_event_code")
    )
    rows = Event.objects.filter(
        destination_id__in=destination_ids, status=EventStatus.DELIVERED
    ).values_list("destination__pixel_id", "destination_id", "event_name", "event_id")
    return {
        (pixel_id, bool(test_mode[destination_id]), event_name, event_id)
        for pixel_id, destination_id, event_name, event_id in rows
    }


def compare_with_sandbox(
    delivered: set[Key],
    received: Counter[Key],
    first_received_at: dict[Key, float],
    excused_windows: list[tuple[float, float]],
) -> dict[str, Any]:
    """Each delivered event received once; extra copies only when first sent in a fault window."""
    missing = sorted(key for key in delivered if received.get(key, 0) == 0)
    duplicates = {key: count for key, count in received.items() if count > 1}
    excused = {
        key: count
        for key, count in duplicates.items()
        if any(start <= first_received_at[key] <= end for start, end in excused_windows)
    }
    unexplained = {key: count for key, count in duplicates.items() if key not in excused}
    not_marked_delivered = sorted(key for key in received if key not in delivered)
    problems = []
    if missing:
        problems.append(f"{len(missing)} delivered events never reached the sandbox: {missing[:5]}")
    if unexplained:
        sample = list(unexplained.items())[:5]
        problems.append(f"{len(unexplained)} events reached the sandbox twice: {sample}")
    return {
        "delivered": len(delivered),
        "received_distinct": len(received),
        "received_total": sum(received.values()),
        "never_received": len(missing),
        "received_more_than_once": len(duplicates),
        "of_which_after_a_kill_or_lost_connection": len(excused),
        "received_but_not_marked_delivered": len(not_marked_delivered),
        "problems": problems,
    }


def delivery_latency(destination_ids: list[int], since: datetime) -> dict[str, float]:
    """Seconds from recording to delivery for events recorded since ``since``."""
    rows = Event.objects.filter(
        destination_id__in=destination_ids,
        status=EventStatus.DELIVERED,
        created_at__gte=since,
    ).values_list("created_at", "delivered_at")
    seconds = sorted((delivered - created).total_seconds() for created, delivered in rows)
    if not seconds:
        return {"events": 0}
    return {
        "events": len(seconds),
        "p50_s": round(seconds[len(seconds) // 2], 2),
        "p99_s": round(seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))], 2),
        "max_s": round(seconds[-1], 2),
    }


def attempt_outcomes(destination_ids: list[int]) -> dict[str, int]:
    """How the requests to Meta ended, by outcome."""
    return dict(
        DeliveryAttempt.objects.filter(destination_id__in=destination_ids)
        .values_list("outcome")
        .annotate(count=Count("pk"))
        .order_by()
    )
