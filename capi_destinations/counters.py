"""Hourly counters per destination: what the overview's 24-hour numbers add up, and the calls
the ingest endpoint refused.

Counting a day of events on every overview load grows with the traffic (180,000 rows took
100 ms of a 170 ms page; docs/BENCHMARKS.md, pages). Instead, the code that gives events an
outcome adds to one ``HourlyOutcomes`` row per destination and UTC hour, once per request or
batch, and the overview sums at most 24 rows per destination.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from django.db import DatabaseError, router, transaction
from django.db.models import Count, Sum
from django.db.models.functions import TruncHour

from capi_destinations import clock, eventstore
from capi_destinations.models import Event, EventStatus, HourlyOutcomes, RefusedCalls

logger = logging.getLogger("capi_destinations.counters")

OUTCOMES = ("delivered", "failed", "rejected", "suppressed")
# How much of a refused call's Origin is kept (a browser may claim anything, of any length).
ORIGIN_KEPT = 200

# The status each outcome is read from when the counters are rebuilt from the events.
STATUSES_OF_OUTCOME = {
    "delivered": (EventStatus.DELIVERED,),
    "failed": (EventStatus.FAILED, EventStatus.EXPIRED),
    "rejected": (EventStatus.REJECTED,),
    "suppressed": (EventStatus.SUPPRESSED,),
}

HOURS_SHOWN = 24


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour ``moment`` falls in."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hours_shown(now: datetime) -> list[datetime]:
    """The 24 hour starts ending with the current hour, oldest first (the overview's day)."""
    current = hour_of(now)
    return [current - timedelta(hours=offset) for offset in range(HOURS_SHOWN - 1, -1, -1)]


def add(
    destination_id: int,
    *,
    delivered: int = 0,
    failed: int = 0,
    rejected: int = 0,
    suppressed: int = 0,
    recorded: int = 0,
    quality_sum: float = 0.0,
    quality_events: int = 0,
    at: datetime | None = None,
    using: str | None = None,
) -> None:
    """Add to the destination's counts of the UTC hour of ``at`` (now): one UPSERT.

    Call it in the transaction that gives the events their outcome, so both commit together.
    ``recorded`` counts events stored at ingest (any status), the traffic the alerts watch;
    ``quality_sum``/``quality_events`` add up their estimated match quality.
    """
    if not (delivered or failed or rejected or suppressed or recorded or quality_events):
        return
    database = using or router.db_for_write(HourlyOutcomes)
    # Every column is written: the table has no database defaults.
    counts: dict[str, float] = {
        "delivered": delivered,
        "failed": failed,
        "rejected": rejected,
        "suppressed": suppressed,
        "recorded": recorded,
        "quality_sum": quality_sum,
        "quality_events": quality_events,
    }
    eventstore.store_for(database).add_counts(destination_id, hour_of(at or clock.now()), counts)


def last_day(
    destination_ids: Sequence[int], *, now: datetime | None = None
) -> dict[int, dict[str, int]]:
    """``{destination_id: {"delivered": n, "failed": n, "rejected": n}}`` over the 24 hours
    shown (the current one and the 23 before it), in one query over at most 24 rows each."""
    if not destination_ids:
        return {}
    since = hours_shown(now or clock.now())[0]
    # Rows of destination_id and the summed outcomes (annotated names the stubs cannot see).
    rows: Iterable[dict[str, Any]] = cast(
        "Iterable[dict[str, Any]]",
        HourlyOutcomes.objects.filter(destination_id__in=list(destination_ids), hour__gte=since)
        .values("destination_id")
        .annotate(**{name: Sum(name) for name in OUTCOMES})
        .order_by(),
    )
    return {row.pop("destination_id"): row for row in rows}


def by_hour(destination_id: int, *, now: datetime | None = None) -> dict[datetime, dict[str, int]]:
    """``{hour: {"delivered": n, "failed": n, "rejected": n}}`` of one destination's 24 hours
    shown (hours with nothing are absent), in one query."""
    since = hours_shown(now or clock.now())[0]
    rows = HourlyOutcomes.objects.filter(destination_id=destination_id, hour__gte=since)
    return {hour_of(row.pop("hour")): row for row in rows.values("hour", *OUTCOMES)}


def sums_by_hour(
    destination_ids: Sequence[int], hours: Iterable[datetime], *, fields: Sequence[str]
) -> dict[tuple[int, datetime], dict[str, int]]:
    """``{(destination_id, hour): {field: n}}`` for the given hour starts (absent: nothing
    counted), in one query whatever the number of destinations."""
    wanted = sorted({hour_of(hour) for hour in hours})
    if not destination_ids or not wanted:
        return {}
    rows = HourlyOutcomes.objects.filter(
        destination_id__in=list(destination_ids), hour__in=wanted
    ).values_list("destination_id", "hour", *fields)
    return {(row[0], hour_of(row[1])): dict(zip(fields, row[2:], strict=True)) for row in rows}


def sums_between(
    destination_ids: Sequence[int], since: datetime, until: datetime, *, fields: Sequence[str]
) -> dict[int, dict[str, Any]]:
    """``{destination_id: {field: sum}}`` over the hours from ``since`` up to (not including)
    ``until``, in one query; destinations with no row are absent."""
    if not destination_ids:
        return {}
    rows: Iterable[dict[str, Any]] = cast(
        "Iterable[dict[str, Any]]",
        HourlyOutcomes.objects.filter(
            destination_id__in=list(destination_ids),
            hour__gte=hour_of(since),
            hour__lt=hour_of(until),
        )
        .values("destination_id")
        .annotate(**{name: Sum(name) for name in fields})
        .order_by(),
    )
    return {row.pop("destination_id"): row for row in rows}


def rebuild(*, since: datetime | None = None, destination_ids: Iterable[int] | None = None) -> int:
    """Recount the hours from ``since`` (24 hours ago) from the events; returns rows written.

    Each event counts as recorded in the hour it was stored, and as an outcome in the hour of
    its latest status change. That differs from what the
    counters record as outcomes happen in one way only: an event that failed and was then
    redelivered no longer counts as failed. For repairs and imported data, not the hot path.
    """
    since = hour_of(since or clock.now() - timedelta(hours=HOURS_SHOWN))
    events = Event.objects.filter(updated_at__gte=since)
    existing = HourlyOutcomes.objects.filter(hour__gte=since)
    if destination_ids is not None:
        ids = list(destination_ids)
        events = events.filter(destination_id__in=ids)
        existing = existing.filter(destination_id__in=ids)
    outcome_of_status = {
        status: outcome for outcome, statuses in STATUSES_OF_OUTCOME.items() for status in statuses
    }
    totals: dict[tuple[int, datetime], dict[str, float]] = defaultdict(
        lambda: dict.fromkeys((*OUTCOMES, "recorded", "quality_events"), 0) | {"quality_sum": 0.0}
    )
    rows = (
        events.filter(status__in=list(outcome_of_status))
        .annotate(hour=TruncHour("updated_at", tzinfo=UTC))
        .values_list("destination_id", "hour", "status")
        .annotate(count=Count("id"))
        .order_by()
    )
    for destination_id, hour, status, count in rows:
        totals[(destination_id, hour_of(hour))][outcome_of_status[status]] += count
    created = Event.objects.filter(created_at__gte=since)
    if destination_ids is not None:
        created = created.filter(destination_id__in=ids)
    recorded_rows = (
        created.annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values_list("destination_id", "hour")
        .annotate(count=Count("id"), quality=Sum("match_quality"), rated=Count("match_quality"))
        .order_by()
    )
    for destination_id, hour, count, quality, rated in recorded_rows:
        row = totals[(destination_id, hour_of(hour))]
        row["recorded"] += count
        row["quality_sum"] += quality or 0.0
        row["quality_events"] += rated
    with transaction.atomic():
        existing.delete()
        HourlyOutcomes.objects.bulk_create(
            HourlyOutcomes(destination_id=destination_id, hour=hour, **counts)
            for (destination_id, hour), counts in totals.items()
        )
    return len(totals)


def purge(before: datetime) -> int:
    """Delete the counts of hours before ``before``; returns how many rows went."""
    deleted, _ = HourlyOutcomes.objects.filter(hour__lt=hour_of(before)).delete()
    return deleted


# --- refused ingest calls --------------------------------------------------------------------


def add_refused_call(
    destination_id: int, reason: str, *, origin: str = "", at: datetime | None = None
) -> None:
    """Count one call the ingest endpoint refused for ``destination_id``: one UPSERT, no row per
    call. Only for a destination the call named by its key; never raises (a refused call is
    answered whether or not it could be counted)."""
    now = at or clock.now()
    database = router.db_for_write(RefusedCalls)
    try:
        with transaction.atomic(using=database):
            eventstore.store_for(database).add_refused_call(
                destination_id, hour_of(now), reason, (origin or "")[:ORIGIN_KEPT], now
            )
    except DatabaseError:
        logger.exception("Could not count a refused call of destination %s", destination_id)


def refused_last_day(destination_id: int, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """The refused calls of the 24 hours shown, per reason, most calls first (one query).

    Each: ``reason``, ``count``, ``last_at`` and ``origins`` (the latest refused origins, newest
    first, at most three).
    """
    since = hours_shown(now or clock.now())[0]
    rows = RefusedCalls.objects.filter(destination_id=destination_id, hour__gte=since).order_by(
        "-last_at"
    )
    by_reason: dict[str, dict[str, Any]] = {}
    for reason, count, origin, last_at in rows.values_list(
        "reason", "count", "last_origin", "last_at"
    ):
        entry = by_reason.setdefault(
            reason, {"reason": reason, "count": 0, "last_at": last_at, "origins": []}
        )
        entry["count"] += count
        if origin and origin not in entry["origins"] and len(entry["origins"]) < 3:
            entry["origins"].append(origin)
    return sorted(by_reason.values(), key=lambda entry: -entry["count"])


def purge_refused(before: datetime) -> int:
    """Delete the refused-call counts of hours before ``before``; returns how many rows went."""
    deleted, _ = RefusedCalls.objects.filter(hour__lt=hour_of(before)).delete()
    return deleted
