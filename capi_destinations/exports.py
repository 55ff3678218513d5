"""CSV exports of the pages: the overview, a destination's event log and its delivery attempts.

Rows are generated lazily: the event log and the attempts are read in chunks from the database
and written line by line, so an export of a million events never sits in memory whole. Times
are UTC in ISO 8601. Nothing secret is exported (no token, no ingest key or secret), and of an
event's payload only what the log shows: no customer data, not even hashed, no IP address, no
user agent. Every text cell that a spreadsheet would read as a formula is defused.
"""

from __future__ import annotations

import csv
import heapq
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from django.db.models import QuerySet

from capi_destinations.models import DeliveryAttempt, Event
from capi_destinations.reports import DestinationCard

# Rows read from the database at a time.
CHUNK_SIZE = 2000

# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets
# (OWASP, "CSV Injection"); tab and carriage return too, since some strip them first.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

OVERVIEW_HEADER = (
    "client",
    "destination",
    "pixel_id",
    "health",
    "reason",
    "enabled",
    "delivered_24h",
    "failed_24h",
    "rejected_24h",
    "suppressed_24h",
    "waiting",
    "waiting_for",
    "last_delivery_utc",
)

EVENT_HEADER = (
    "received_utc",
    "event_time_utc",
    "event_name",
    "event_id",
    "order_id",
    "action_source",
    "status",
    "status_reason",
    "attempts",
    "match_quality",
    "diagnostics",
    "delivered_utc",
)

ATTEMPT_HEADER = (
    "attempt_id",
    "started_utc",
    "event_name",
    "event_id",
    "outcome",
    "http_status",
    "events_in_request",
    "events_received",
    "fbtrace_id",
    "error_code",
    "error_subcode",
    "error_message",
    "duration_ms",
)


def safe_cell(value: Any) -> Any:
    """``value`` as a CSV cell: a text that a spreadsheet would run as a formula gets a leading
    ``'`` (shown, never run); ``None`` is empty; numbers stay numbers."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return f"'{value}"
    return value


def utc_iso(moment: datetime | None) -> str:
    """``moment`` in UTC, ISO 8601 to the second ("2026-12-06T13:40:05Z"); "" for none."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class _Line:
    """A file-like sink for ``csv.writer`` that hands back the line just written."""

    def write(self, text: str) -> str:
        return text


def csv_lines(rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """``rows`` as CSV lines, each cell through :func:`safe_cell`, one line at a time."""
    writer = csv.writer(_Line())
    for row in rows:
        yield writer.writerow([safe_cell(value) for value in row])


def overview_rows(cards: Iterable[DestinationCard]) -> Iterator[tuple[Any, ...]]:
    """The header, then one row per overview card."""
    yield OVERVIEW_HEADER
    for card in cards:
        destination = card.destination
        yield (
            destination.tenant.name,
            destination.name,
            destination.pixel_id,
            destination.get_health_display(),
            card.first_reason,
            destination.enabled,
            card.delivered_24h,
            card.failed_24h,
            card.rejected_24h,
            card.suppressed_24h,
            card.waiting,
            card.waiting_text,
            destination.last_delivered_at,
        )


def event_rows(events: QuerySet[Event]) -> Iterator[tuple[Any, ...]]:
    """The header, then one row per event of ``events`` (the filtered log), in its order."""
    yield EVENT_HEADER
    columns = events.values_list(
        "created_at",
        "event_time",
        "event_name",
        "event_id",
        "payload__custom_data__order_id",
        "action_source",
        "status",
        "status_reason",
        "attempts",
        "match_quality",
        "diagnostics",
        "delivered_at",
    )
    for row in columns.iterator(chunk_size=CHUNK_SIZE):
        *head, diagnostics, delivered_at = row
        yield (*head, _diagnostic_codes(diagnostics), delivered_at)


def _diagnostic_codes(diagnostics: Any) -> str:
    if not isinstance(diagnostics, list):
        return ""
    return " ".join(
        str(item["code"]) for item in diagnostics if isinstance(item, dict) and "code" in item
    )


_ATTEMPT_COLUMNS = (
    "started_at",
    "outcome",
    "http_status",
    "event_count",
    "events_received",
    "fbtrace_id",
    "error_code",
    "error_subcode",
    "error_message",
    "duration_ms",
)


def attempt_rows(events: QuerySet[Event]) -> Iterator[tuple[Any, ...]]:
    """The header, then one row per delivery attempt of each event of ``events``, newest first.

    An attempt carrying several of the events gives a row for each. The requests that failed to
    deliver an event are linked to it through ``DeliveryAttempt.events``, the one that delivered
    it through ``Event.delivered_by``: two ordered reads, merged as they stream.
    """
    yield ATTEMPT_HEADER
    event_ids = events.order_by().values("pk")
    carried = (
        DeliveryAttempt.events.through.objects.filter(event_id__in=event_ids)
        .order_by("-deliveryattempt__started_at", "-deliveryattempt_id", "event_id")
        .values_list(
            "deliveryattempt_id",
            "event__event_name",
            "event__event_id",
            *(f"deliveryattempt__{column}" for column in _ATTEMPT_COLUMNS),
        )
    )
    delivered = (
        # A purged attempt reads as none (``Event.delivered_by`` has no constraint).
        Event.objects.filter(pk__in=event_ids, delivered_by__started_at__isnull=False)
        .order_by("-delivered_by__started_at", "-delivered_by_id", "pk")
        .values_list(
            "delivered_by_id",
            "event_name",
            "event_id",
            *(f"delivered_by__{column}" for column in _ATTEMPT_COLUMNS),
        )
    )
    merged = heapq.merge(
        carried.iterator(chunk_size=CHUNK_SIZE),
        delivered.iterator(chunk_size=CHUNK_SIZE),
        key=lambda row: (row[3], row[0]),
        reverse=True,
    )
    for attempt_id, event_name, event_id, started_at, *rest in merged:
        yield (attempt_id, started_at, event_name, event_id, *rest)
