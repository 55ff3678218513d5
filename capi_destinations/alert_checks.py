"""Alerts: conditions worth telling someone about, raised once when they start, cleared once.

The health checks (:mod:`capi_destinations.health`) observe, at every run, whether each alert
condition holds on a destination: traffic dropped, the Graph API version ending, match quality
fell, the failure rate crossed its threshold. This module gathers the figures they need from
the database (:func:`collect_alert_facts`, a fixed number of queries for any number of
destinations), turns figures into conditions (``traffic_drop``, ``refusal_rate``,
``match_quality_drop``), and keeps the edge-triggered state (:func:`record_conditions`).

Edge-triggered with a debounce: a condition changes its ``AlertState`` only after the opposite
was observed ``ALERT_DEBOUNCE_CHECKS`` evaluations in a row (two by default, so ten minutes with
the 5-minute schedule); one reading the other way resets the streak. Each change is a
compare-and-set on (``raised``, ``streak``), so two processes never both announce it, and sends
``signals.destination_alert`` exactly once, after commit. A condition that holds stays silent.
The channels that carry alerts receive that signal; nothing here delivers anything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

from django.db import IntegrityError, transaction
from django.db.models import Avg, Count

from capi_destinations import counters, signals
from capi_destinations.conf import app_settings
from capi_destinations.models import AlertKind, AlertState, Destination, Event

logger = logging.getLogger("capi_destinations.alerts")

WEEK = timedelta(days=7)
DAY = timedelta(hours=24)

# Hourly counter sums by (destination, hour), as counters.sums_by_hour returns them.
Counts = dict[tuple[int, datetime], dict[str, int]]


@dataclass(frozen=True)
class Condition:
    """Whether one alert condition holds now, and in plain words why and what fixes it."""

    kind: str
    active: bool
    reason: str = ""
    fix: str = ""


@dataclass
class AlertFacts:
    """What the hourly counters and recent events say, for the alert conditions."""

    # Events recorded in the traffic window, and the usual count for those hours of the week
    # (None: less than a week of history).
    recorded: int = 0
    usual_recorded: float | None = None
    # Outcomes counted over the failure-rate hours.
    refused: int = 0
    outcomes: int = 0
    # Match-quality estimate of the 7 days before the last 24 hours, and over how many events.
    match_quality_before: float | None = None
    match_quality_before_events: int = 0
    # Meta's own scores by event name: the latest fetched, and those fetched on the day a week
    # before it (MatchQualityReport.daily_scores); empty when there is nothing to compare.
    meta_scores: dict[str, float] = field(default_factory=dict)
    meta_scores_week_before: dict[str, float] = field(default_factory=dict)
    # The destination's alert states as read with these figures (by kind).
    states: dict[str, AlertState] = field(default_factory=dict)


def traffic_window(now: datetime) -> list[datetime]:
    """The ``TRAFFIC_DROP_HOURS`` complete UTC hours before the current one, oldest first."""
    current = counters.hour_of(now)
    hours = max(1, int(app_settings.TRAFFIC_DROP_HOURS))
    return [current - timedelta(hours=offset) for offset in range(hours, 0, -1)]


def failure_rate_hours(now: datetime) -> list[datetime]:
    """The ``ALERT_FAILURE_RATE_HOURS`` hours ending with the current one."""
    current = counters.hour_of(now)
    hours = max(1, int(app_settings.ALERT_FAILURE_RATE_HOURS))
    return [current - timedelta(hours=offset) for offset in range(hours)]


def collect_alert_facts(destination_ids: Sequence[int], *, now: datetime) -> dict[int, AlertFacts]:
    """The figures of every alert condition, and the alert states, for many destinations: four
    queries in all."""
    facts = {pk: AlertFacts() for pk in destination_ids}
    if not facts:
        return facts
    ids = list(facts)
    created: dict[int, datetime] = {}
    # Meta's stored scores come with the destinations (a LEFT JOIN, no query of their own).
    for pk, created_at, fetched_at, daily in Destination.objects.filter(pk__in=ids).values_list(
        "pk",
        "created_at",
        "match_quality_report__fetched_at",
        "match_quality_report__daily_scores",
    ):
        created[pk] = created_at
        _add_meta_scores(facts[pk], fetched_at, daily)
    window, rate_hours = traffic_window(now), failure_rate_hours(now)
    weeks = range(1, max(1, int(app_settings.TRAFFIC_HISTORY_WEEKS)) + 1)
    history = [hour - WEEK * week for week in weeks for hour in window]
    counts = counters.sums_by_hour(
        ids,
        [*window, *history, *rate_hours],
        fields=("recorded", "delivered", "failed", "rejected"),
    )
    # Counters older than the retention period are purged: those weeks are unknown, not empty.
    kept_since = now - timedelta(days=int(app_settings.RETENTION_DAYS))
    for pk, item in facts.items():
        # Only weeks the destination existed for the whole window count as history (none for
        # one deleted meanwhile).
        first_hour = counters.hour_of(created[pk]) if pk in created else window[0]
        known = [week for week in weeks if window[0] - WEEK * week >= max(first_hour, kept_since)]
        _add_traffic(item, pk, counts, window, known)
        _add_refusals(item, pk, counts, rate_hours)
    _add_match_quality_before(facts, now=now)
    for state in AlertState.objects.filter(destination_id__in=ids):
        facts[state.destination_id].states[state.kind] = state
    return facts


def _add_traffic(
    item: AlertFacts, pk: int, counts: Counts, window: Sequence[datetime], weeks: Sequence[int]
) -> None:
    def recorded(hours: Iterable[datetime]) -> int:
        return sum(counts.get((pk, hour), {}).get("recorded", 0) for hour in hours)

    item.recorded = recorded(window)
    if weeks:
        past = [recorded(hour - WEEK * week for hour in window) for week in weeks]
        item.usual_recorded = sum(past) / len(weeks)


def _add_refusals(item: AlertFacts, pk: int, counts: Counts, hours: Sequence[datetime]) -> None:
    for hour in hours:
        row = counts.get((pk, hour), {})
        refused = row.get("failed", 0) + row.get("rejected", 0)
        item.refused += refused
        item.outcomes += row.get("delivered", 0) + refused


def _add_match_quality_before(facts: dict[int, AlertFacts], *, now: datetime) -> None:
    # The week before the last 24 hours, from the hourly counters (up to 168 rows each), not
    # from a week of events.
    before = counters.sums_between(
        list(facts), now - DAY - WEEK, now - DAY, fields=("quality_sum", "quality_events")
    )
    for pk, sums in before.items():
        rated = int(sums["quality_events"] or 0)
        if rated:
            facts[pk].match_quality_before = float(sums["quality_sum"] or 0.0) / rated
            facts[pk].match_quality_before_events = rated


def _add_meta_scores(item: AlertFacts, fetched_at: datetime | None, daily: object) -> None:
    if fetched_at is None or not isinstance(daily, dict):
        return
    day = fetched_at.astimezone(UTC).date()
    latest, before = daily.get(day.isoformat()), daily.get((day - WEEK).isoformat())
    if not isinstance(latest, dict) or not isinstance(before, dict):
        return
    item.meta_scores = {k: float(v) for k, v in latest.items() if isinstance(v, int | float)}
    item.meta_scores_week_before = {
        k: float(v) for k, v in before.items() if isinstance(v, int | float)
    }


def match_quality_averages(
    destination_ids: Sequence[int], *, since: datetime
) -> dict[int, tuple[float, int]]:
    """``{destination_id: (average estimated match quality, events)}`` of the events recorded
    since ``since``, in one query; destinations without any are absent."""
    rows = (
        Event.objects.filter(
            destination_id__in=list(destination_ids),
            created_at__gte=since,
            match_quality__isnull=False,
        )
        .values("destination_id")
        .annotate(average=Avg("match_quality"), count=Count("pk"))
        .values_list("destination_id", "average", "count")
    )
    return {pk: (average, count) for pk, average, count in rows}


# --- the conditions ----------------------------------------------------------------------------


def traffic_drop(facts: AlertFacts) -> str | None:
    """Why traffic counts as dropped (plain words), or None when it flows or cannot be judged.

    Recording is what is watched, so a destination with sending turned off still counts.
    """
    usual = facts.usual_recorded
    if usual is None or usual < float(app_settings.TRAFFIC_MIN_USUAL):
        return None
    ratio = float(app_settings.TRAFFIC_DROP_RATIO)
    if facts.recorded >= usual * ratio:
        return None
    hours = max(1, int(app_settings.TRAFFIC_DROP_HOURS))
    if facts.recorded == 0:
        return (
            f"No events were recorded in the last {hours} h, where this destination usually "
            f"records about {usual:.0f} at this time of the week."
        )
    return (
        f"Only {facts.recorded} events were recorded in the last {hours} h, where this "
        f"destination usually records about {usual:.0f} at this time of the week."
    )


def refusal_rate(facts: AlertFacts) -> Condition:
    """Failure rate: the share of events refused (failed or rejected) crossed the threshold."""
    threshold = float(app_settings.ALERT_FAILURE_RATE)
    enough = facts.outcomes >= max(1, int(app_settings.ALERT_FAILURE_RATE_MIN_EVENTS))
    if not enough or facts.refused <= threshold * facts.outcomes:
        return Condition(AlertKind.FAILURE_RATE, False)
    hours = max(1, int(app_settings.ALERT_FAILURE_RATE_HOURS))
    share = facts.refused / facts.outcomes
    return Condition(
        AlertKind.FAILURE_RATE,
        True,
        f"{facts.refused} of the {facts.outcomes} events of the last {hours} h were refused "
        f"({share:.0%}, above the {threshold:.0%} threshold).",
        "Open the failed and rejected events: each names the field that was refused. A release "
        "that changed what your site sends (for example purchases without a currency) is the "
        "usual cause.",
    )


def match_quality_drop(facts: AlertFacts, recent: float | None, recent_events: int) -> Condition:
    """Match quality fell: our estimate of the last 24 hours against the 7 days before them,
    or Meta's own score of an event (where fetched) against the one fetched a week before.

    Both by ``ALERT_MATCH_QUALITY_DROP`` points or more; ours only over at least
    ``ALERT_MATCH_QUALITY_MIN_EVENTS`` events in each period (Meta's score is Meta's to judge).
    """
    before = facts.match_quality_before
    least = max(1, int(app_settings.ALERT_MATCH_QUALITY_MIN_EVENTS))
    drop = float(app_settings.ALERT_MATCH_QUALITY_DROP)
    reasons = []
    if (
        recent is not None
        and before is not None
        and recent_events >= least
        and facts.match_quality_before_events >= least
        and before - recent >= drop
    ):
        reasons.append(
            f"Estimated match quality fell from {before:.1f} to {recent:.1f} out of 10 (the last "
            "24 hours against the week before)."
        )
    for name in sorted(facts.meta_scores):
        was, now = facts.meta_scores_week_before.get(name), facts.meta_scores[name]
        if was is not None and was - now >= drop:
            reasons.append(
                f"Meta's Event Match Quality of {name} fell from {was:.1f} to {now:.1f} out of 10 "
                "(against a week before)."
            )
    if not reasons:
        return Condition(AlertKind.MATCH_QUALITY_FELL, False)
    return Condition(
        AlertKind.MATCH_QUALITY_FELL,
        True,
        " ".join(reasons),
        "Look at a recent event's diagnostics for the identifiers it lacks: a release may have "
        "stopped sending the email, phone or the fbp/fbc cookies.",
    )


# --- edge-triggered state ----------------------------------------------------------------------


def record_conditions(
    destination: Destination,
    conditions: Sequence[Condition],
    *,
    now: datetime,
    states: dict[str, AlertState] | None = None,
) -> list[Condition]:
    """Fold this evaluation's observations into the alert states; returns the changes.

    A change (raised or cleared) needs ``ALERT_DEBOUNCE_CHECKS`` observations in a row; it is
    written with a compare-and-set and announced with ``signals.destination_alert`` once,
    after commit. ``states`` are the destination's states as read before (by
    :func:`collect_alert_facts`); without them they are read here. No query when nothing
    changes and the states were given; a state changed meanwhile by another process fails its
    compare-and-set, and this observation is simply not counted.
    """
    needed = max(1, int(app_settings.ALERT_DEBOUNCE_CHECKS))
    if states is None:
        states = {
            state.kind: state for state in AlertState.objects.filter(destination_id=destination.pk)
        }
    changes: list[Condition] = []
    for condition in conditions:
        state = states.get(condition.kind)
        if state is None:
            if not condition.active:
                continue  # never raised, still clear: nothing to remember
            state = _new_state(destination, condition.kind)
            if state is None:
                continue  # another process created it: it counts this observation
        if condition.active == state.raised:
            if state.streak:
                AlertState.objects.filter(pk=state.pk, raised=state.raised).update(streak=0)
            continue
        streak = state.streak + 1
        flips = streak >= needed
        updates: dict[str, object] = {"streak": streak}
        if flips:
            updates = {"raised": condition.active, "streak": 0, "changed_at": now}
            if condition.active:
                # The reason and fix stay after it ends: what it was about.
                updates.update(raised_at=now, reason=condition.reason, fix=condition.fix)
        with transaction.atomic():
            written = AlertState.objects.filter(
                pk=state.pk, raised=state.raised, streak=state.streak
            ).update(**updates)
            if written and flips:
                changes.append(condition)
                transaction.on_commit(partial(_announce, destination, condition))
    return changes


def _new_state(destination: Destination, kind: str) -> AlertState | None:
    try:
        with transaction.atomic():
            return AlertState.objects.create(destination_id=destination.pk, kind=kind)
    except IntegrityError:
        return None


def _announce(destination: Destination, condition: Condition) -> None:
    try:
        signals.destination_alert.send(
            sender=Destination,
            destination=destination,
            kind=condition.kind,
            raised=condition.active,
            reason=condition.reason if condition.active else _ended(condition.kind),
            fix=condition.fix if condition.active else "",
        )
    except Exception:
        # A failing receiver must not undo or hide the recorded change.
        logger.exception("A receiver of destination_alert failed for %s", destination.pk)


def _ended(kind: str) -> str:
    return f"{AlertKind(kind).label}: the condition has ended."


def raised_alerts(destination_ids: Sequence[int]) -> dict[int, list[AlertState]]:
    """The alerts currently raised on these destinations, in one query."""
    raised: dict[int, list[AlertState]] = {pk: [] for pk in destination_ids}
    for state in AlertState.objects.filter(
        destination_id__in=list(destination_ids), raised=True
    ).order_by("kind"):
        raised[state.destination_id].append(state)
    return raised
