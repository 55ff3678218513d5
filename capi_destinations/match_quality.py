"""Meta's own Event Match Quality beside our estimate: fetched, stored, and laid out for pages.

Meta's Dataset Quality API (``graph.get_dataset_quality``) gives, per web event name, Meta's
Event Match Quality score (0-10) and ``match_key_feedback``: the share of events carrying each
match key. :func:`fetch_match_quality` asks it for one destination and stores the answer in
the destination's :class:`~capi_destinations.models.MatchQualityReport`, replacing the last one
(each day's last scores are kept a week, for the "match quality fell" alert);
:func:`fetch_all_match_quality` does so for every enabled destination (the hourly task).

What Meta may refuse is normal: Meta says the token generated in Events Manager "will be able to
fetch quality data", while a token made in a dataset's Conversions API settings "can't be used
to run API GET data requests". A ``permission`` refusal is stored as *not available with this
token*, and **nothing else changes**: not the destination's health, not its sending. Any other
failure (an outage, a timeout, a rate limit, a token Meta refuses everywhere, which the health
check reports) keeps the last report as it was.

:func:`match_quality_panel` lays Meta's scores beside ours (the average of ``Event.match_quality``
per event name over the last 24 hours) and turns Meta's per-key feedback into the diagnostics
summary's words ("12% of Purchase events have no email") with the health card's fix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import InvalidToken
from django.db.models import Avg, Count
from django.views.decorators.debug import sensitive_variables

from capi_destinations import clock, diagnostics, fan_out, graph
from capi_destinations.conf import app_settings
from capi_destinations.models import Destination, Event, MatchQualityReport, MetaScoreStatus
from capi_destinations.user_data_keys import ALIASES, IDENTIFIER_LABELS, TOP_IDENTIFIERS

__all__ = [
    "EventQualityRow",
    "KeyFeedbackRow",
    "MatchQualityPanel",
    "fetch_all_match_quality",
    "fetch_match_quality",
    "match_quality_panel",
    "match_quality_panels",
    "user_data_key",
]

logger = logging.getLogger("capi_destinations.match_quality")

# Our estimate is averaged over the same 24 hours the diagnostics summary covers.
OUR_ESTIMATE_WINDOW = timedelta(hours=24)
# Page states besides MetaScoreStatus: nothing fetched yet.
NOT_FETCHED = "not_fetched"


def user_data_key(identifier: str) -> str:
    """Our ``user_data`` key for one of Meta's match-key identifiers (``email`` → ``em``).

    Meta names keys in words (``email``, ``phone``, ``ip_address``, ``user_agent``; its own
    examples); our input aliases already map those words, and keys Meta spells as we do
    (``external_id``, ``fbc``, ``fbp``, ``country``) stay as they are.
    """
    lowered = identifier.strip().lower()
    return ALIASES.get(lowered, lowered)


# --- fetching ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """What Meta said for one destination: scores, or the error."""

    quality: graph.DatasetQuality | None = None
    error: graph.GraphError | None = None


# Error reports print local variables (also of called frames): never the token.
@sensitive_variables()
def _ask_meta(destination: Destination) -> _Answer:
    try:
        return _Answer(quality=graph.get_dataset_quality(destination))
    except graph.GraphError as error:
        return _Answer(error=error)


def fetch_match_quality(destination: Destination) -> MatchQualityReport | None:
    """Ask Meta for the destination's Event Match Quality now and store the answer.

    Returns the stored report: the new one, or the last one when Meta could not be asked (None
    when there is none). Never changes the destination itself.
    """
    return _record(destination, _ask_meta(destination))


def fetch_all_match_quality(
    *, destination_ids: Iterable[int] | None = None, max_workers: int | None = None
) -> dict[str, int]:
    """Fetch Meta's Event Match Quality for every enabled destination (or only some).

    The Graph calls run on at most ``max_workers`` threads (``HEALTH_CHECK_CONCURRENCY`` by
    default); the calling thread writes each answer as it arrives. Returns counts by outcome:
    ``available``, ``not_available`` and ``kept`` (Meta could not be asked; last report kept).
    """
    destinations = _enabled_destinations(destination_ids)
    counts = {MetaScoreStatus.AVAILABLE.value: 0, MetaScoreStatus.NOT_AVAILABLE.value: 0, "kept": 0}
    if not destinations:
        return counts

    def record(destination: Destination, answer: _Answer) -> None:
        _record(destination, answer)
        counts[_outcome(answer)] += 1

    fan_out.ask_each(
        destinations,
        _ask_meta,
        record,
        max_workers=max_workers or app_settings.HEALTH_CHECK_CONCURRENCY,
        name="emq",
        what="Match quality fetch",
        logger=logger,
    )
    return counts


def _outcome(answer: _Answer) -> str:
    if answer.quality is not None:
        return MetaScoreStatus.AVAILABLE.value
    if answer.error is not None and answer.error.category == graph.PERMISSION:
        return MetaScoreStatus.NOT_AVAILABLE.value
    return "kept"


def _enabled_destinations(destination_ids: Iterable[int] | None) -> list[Destination]:
    queryset = Destination.objects.filter(enabled=True).order_by("pk")
    if destination_ids is not None:
        queryset = queryset.filter(pk__in=list(destination_ids))
    try:
        return list(queryset)
    except InvalidToken:
        # A token that cannot be decrypted with the current FERNET_KEYS: skip that destination
        # (its health card says why) and fetch the others.
        readable = []
        for pk in queryset.values_list("pk", flat=True):
            try:
                readable.append(Destination.objects.get(pk=pk))
            except InvalidToken:
                continue
        return readable


def _our_estimate(destination: Destination, now: datetime) -> dict[str, list[float | int]]:
    """Our average per event name over the last 24 hours, stored beside Meta's score."""
    rows = (
        Event.objects.filter(destination=destination, created_at__gte=now - OUR_ESTIMATE_WINDOW)
        .values("event_name")
        .annotate(average=Avg("match_quality"), events=Count("pk"))
        .order_by("event_name")
    )
    return {
        row["event_name"]: [round(float(row["average"]), 1), row["events"]]
        for row in rows
        if row["average"] is not None
    }


def _record(destination: Destination, answer: _Answer) -> MatchQualityReport | None:
    """Store Meta's answer; a failure that is not a refusal keeps the last report."""
    now = clock.now()
    if answer.quality is not None:
        events = [
            {
                "event_name": item.event_name,
                "composite_score": item.composite_score,
                "match_key_feedback": [
                    {"identifier": key.identifier, "coverage": key.coverage}
                    for key in item.match_key_feedback
                ],
            }
            for item in answer.quality.events
        ]
        scores = [item["composite_score"] for item in events if item["composite_score"] is not None]
        report, _ = MatchQualityReport.objects.update_or_create(
            destination=destination,
            defaults={
                "status": MetaScoreStatus.AVAILABLE,
                "events": events,
                "lowest_score": min(scores, default=None),
                "fetched_at": now,
                "ours": _our_estimate(destination, now),
                "daily_scores": _daily_scores(destination, events, now),
            },
        )
        return report
    error = answer.error
    if _outcome(answer) == MetaScoreStatus.NOT_AVAILABLE:
        logger.info(
            "Meta's match quality is not available with the token of destination %s: %s",
            destination.pk,
            error,
        )
        report, _ = MatchQualityReport.objects.update_or_create(
            destination=destination,
            defaults={
                "status": MetaScoreStatus.NOT_AVAILABLE,
                "events": [],
                "lowest_score": None,
                "fetched_at": now,
                "ours": _our_estimate(destination, now),
            },
        )
        return report
    logger.warning(
        "Meta's match quality of destination %s could not be fetched; the last report is kept: %s",
        destination.pk,
        error,
    )
    return MatchQualityReport.objects.filter(destination=destination).first()


def _daily_scores(
    destination: Destination, events: list[dict[str, Any]], now: datetime
) -> dict[str, dict[str, float]]:
    """The stored daily scores with today's replaced by this answer's, the oldest dropped."""
    stored = (
        MatchQualityReport.objects.filter(destination=destination)
        .values_list("daily_scores", flat=True)
        .first()
    )
    today = now.astimezone(UTC).date()
    first_kept = (today - timedelta(days=MatchQualityReport.DAYS_KEPT - 1)).isoformat()
    days = {
        day: scores
        for day, scores in (stored if isinstance(stored, dict) else {}).items()
        if isinstance(day, str) and day >= first_kept
    }
    days[today.isoformat()] = {
        item["event_name"]: float(item["composite_score"])
        for item in events
        if isinstance(item["composite_score"], int | float)
    }
    return days


# --- the page ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyFeedbackRow:
    """One match key Meta sees on too few events: "12% of Purchase events have no email"."""

    key: str
    label: str
    # Share of the event name's events without the key, per Meta (100: Meta lists no coverage).
    percent: int


@dataclass(frozen=True)
class EventQualityRow:
    """One event name: Meta's score beside ours, and what Meta says is missing."""

    event_name: str
    meta_score: float | None
    our_score: float | None
    our_events: int
    missing: list[KeyFeedbackRow] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)

    @property
    def meta_low(self) -> bool:
        return self.meta_score is not None and self.meta_score < low_score()

    @property
    def our_low(self) -> bool:
        return self.our_score is not None and self.our_score < low_score()


@dataclass(frozen=True)
class MatchQualityPanel:
    """What the destination page's match-quality panel shows."""

    # MetaScoreStatus value, or NOT_FETCHED.
    status: str
    fetched_at: datetime | None
    rows: list[EventQualityRow]

    @property
    def available(self) -> bool:
        return self.status == MetaScoreStatus.AVAILABLE

    @property
    def not_available(self) -> bool:
        return self.status == MetaScoreStatus.NOT_AVAILABLE


def low_score() -> float:
    """The score under which a destination needs attention (``HEALTH_LOW_MATCH_QUALITY``), for
    Meta's score as for ours."""
    return float(app_settings.HEALTH_LOW_MATCH_QUALITY)


def match_quality_panel(
    destination: Destination, *, now: datetime | None = None
) -> MatchQualityPanel:
    """Meta's scores (stored) beside our estimate per event name, with Meta's missing keys.

    Two queries (see :func:`match_quality_panels`). Event names come in Meta's order, then ours
    that Meta has not scored.
    """
    return match_quality_panels([destination.pk], now=now)[destination.pk]


def match_quality_panels(
    destination_ids: Iterable[int], *, now: datetime | None = None
) -> dict[int, MatchQualityPanel]:
    """:func:`match_quality_panel` for many destinations at once, by destination id.

    Two queries however many destinations and event names: the stored reports, and our
    average per destination and event name over the last 24 hours. For a page of cards.
    """
    ids = list(destination_ids)
    reports = {
        report.destination_id: report
        for report in MatchQualityReport.objects.filter(destination_id__in=ids)
    }
    since = (now or clock.now()) - OUR_ESTIMATE_WINDOW
    ours: dict[int, dict[str, tuple[float | None, int]]] = {pk: {} for pk in ids}
    for row in (
        Event.objects.filter(destination_id__in=ids, created_at__gte=since)
        .values("destination_id", "event_name")
        .annotate(average=Avg("match_quality"), events=Count("pk"))
        .order_by("destination_id", "event_name")
    ):
        ours[row["destination_id"]][row["event_name"]] = (row["average"], row["events"])
    return {pk: _panel(reports.get(pk), ours[pk]) for pk in ids}


def _panel(
    report: MatchQualityReport | None, ours: Mapping[str, tuple[float | None, int]]
) -> MatchQualityPanel:
    meta_events = report.events if report is not None and isinstance(report.events, list) else []
    rows = []
    seen: set[str] = set()
    for entry in meta_events:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("event_name"), str):
            continue
        name = entry["event_name"]
        seen.add(name)
        average, count = ours.get(name, (None, 0))
        rows.append(_row(name, entry, average, count))
    for name, (average, count) in ours.items():
        if name not in seen:
            rows.append(_row(name, None, average, count))
    return MatchQualityPanel(
        status=report.status if report is not None else NOT_FETCHED,
        fetched_at=report.fetched_at if report is not None else None,
        rows=rows,
    )


def _row(
    name: str, entry: Mapping[str, Any] | None, average: float | None, count: int
) -> EventQualityRow:
    missing = _missing_keys(entry.get("match_key_feedback")) if entry is not None else []
    fixes = []
    if missing:
        fixes.append(diagnostics.MATCH_KEYS_FIX)
        if any(row.key == "client_user_agent" for row in missing):
            fixes.append(diagnostics.USER_AGENT_FIX)
    score = entry.get("composite_score") if entry is not None else None
    return EventQualityRow(
        event_name=name,
        meta_score=float(score) if isinstance(score, int | float) else None,
        our_score=round(float(average), 1) if average is not None else None,
        our_events=count,
        missing=missing,
        fixes=fixes,
    )


def _missing_keys(feedback: Any) -> list[KeyFeedbackRow]:
    """The top identifiers Meta sees on fewer than all events, most valuable first.

    Meta's examples list only the keys being sent, so a top identifier Meta does not list is
    taken as sent with no event (*unconfirmed*: Meta may also list a key at 0).
    """
    coverage: dict[str, float] = {}
    for item in feedback if isinstance(feedback, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("identifier"), str):
            value = item.get("coverage")
            coverage[user_data_key(item["identifier"])] = (
                float(value) if isinstance(value, int | float) else 0.0
            )
    rows = []
    for key in TOP_IDENTIFIERS:
        percent = round(100 - coverage.get(key, 0.0))
        if percent >= 1:
            rows.append(KeyFeedbackRow(key=key, label=IDENTIFIER_LABELS[key], percent=percent))
    return rows
