"""Read-side figures for the pages: overview cards, hourly counts, diagnostics summary.

Each function costs a fixed number of queries, whatever the number of destinations or events:
the overview of 500 destinations runs the same queries as the overview of 3.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.paginator import Page, Paginator
from django.db.models import (
    Avg,
    Case,
    Count,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.expressions import Combinable
from django.db.models.functions import Coalesce, TruncHour
from django.urls import reverse

from capi_destinations import clock, counters, graph, match_quality, problems
from capi_destinations.conf import app_settings
from capi_destinations.models import (
    PROBLEM_EVENT_STATUSES,
    BlockKind,
    DeliveryAttempt,
    Destination,
    Event,
    EventStatus,
    Health,
    MetaScoreStatus,
    QueuedEvent,
)
from capi_destinations.user_data_keys import IDENTIFIER_LABELS, TOP_IDENTIFIERS

DAY = timedelta(hours=24)

# "Failed" on the pages: events sent for Meta that will not reach it without someone acting
# (Meta refused them, or they were not delivered inside its window (7 days; 62 for store events)).
FAILED_STATUSES = counters.STATUSES_OF_OUTCOME["failed"]
# "Rejected" is counted apart: our own checks refused them, so they were never sent.
REJECTED_STATUSES = counters.STATUSES_OF_OUTCOME["rejected"]
# "Pending" (waiting, retried or on its way) is counted from the queue: an event is pending
# exactly while it has a QueuedEvent, found through the queue's (destination, due_at) index.
# The event table has no index on ``status`` or ``updated_at``, so that the delivery's UPDATE
# of the event row is a HOT update (docs/BENCHMARKS.md, issue 21).

# The overview's status filter: a health value, "disabled", or "attention" (Meta's match-quality
# score of some event name under HEALTH_LOW_MATCH_QUALITY).
STATUS_FILTERS = {
    "unhealthy": "Unhealthy",
    "unknown": "Not checked yet",
    "healthy": "Healthy",
    "disabled": "Disabled",
    "attention": "Needs attention: Meta's score low",
}

# Secrets are never needed to draw a page; not loading them also spares a decryption per row.
SECRET_COLUMNS = ("access_token", "app_secret")


@dataclass(frozen=True)
class DestinationCard:
    """One overview card: the destination and its last-24-hour counts."""

    destination: Destination
    delivered_24h: int = 0
    failed_24h: int = 0
    rejected_24h: int = 0
    suppressed_24h: int = 0  # recorded, never to be sent (consent, filter, exclusions)
    url: str = ""  # the destination page
    waiting: int = 0  # events not delivered yet, however old: pending or being sent

    @property
    def first_reason(self) -> str:
        """The first thing to fix, in plain words ("" when nothing is wrong)."""
        return first_reason(self.destination)

    @property
    def first_problem(self) -> Reason | None:
        """The first thing to fix with its fix (None when nothing is wrong)."""
        return first_problem(self.destination)

    @property
    def notes(self) -> list[problems.Problem]:
        """The card's notes (test mode, low match quality, …), see :func:`notes`."""
        return notes(self.destination)

    @property
    def waiting_text(self) -> str:
        """What is waiting and for what ("" when nothing is), see :func:`waiting_text`."""
        return waiting_text(self.destination, self.waiting)

    @property
    def match_quality_text(self) -> str:
        """ "Purchase: Meta 6.8 / ours 7.1" from the last match-quality report ("" without one);
        Meta's part says when the token may not read Meta's score."""
        try:
            report = self.destination.match_quality_report
        except ObjectDoesNotExist:
            return ""
        headline = report.headline()
        if headline is None:
            return ""
        name, meta, ours = headline
        if meta is not None:
            meta_text = f"Meta {meta:.1f}"
        elif report.status == MetaScoreStatus.NOT_AVAILABLE:
            meta_text = "Meta's score not available with this token"
        else:
            meta_text = "Meta —"
        ours_text = f"ours {ours:.1f}" if ours is not None else "ours —"
        return f"{name}: {meta_text} / {ours_text}"


def waiting_text(destination: Destination, waiting: int, *, now: datetime | None = None) -> str:
    """``waiting`` events of ``destination`` in words, with what they wait for.

    "15 events waiting for a new token", "… waiting while sending is off", "… waiting" when
    they are simply on their way; "" when nothing waits. A held destination thus never reads
    "0 failed · 0 rejected" alone.
    """
    if not waiting:
        return ""
    events = f"{waiting} event{'' if waiting == 1 else 's'} waiting"
    if not destination.enabled:
        return f"{events} while sending is off"
    if destination.blocked_reason:
        if destination.block_kind == BlockKind.EVERY_REQUEST:
            return f"{events} until Meta accepts this destination's requests again"
        return f"{events} for a new token"
    if destination.paused_until is not None and destination.paused_until > (now or clock.now()):
        return f"{events} while Meta's rate limit lasts"
    return events


@dataclass(frozen=True)
class Reason:
    """Why a destination is not healthy, with its fix and the problem it is (``problems``)."""

    message: str
    fix: str = ""
    problem: str = ""

    @property
    def action(self) -> str:
        """The control that applies the fix (``problems.REPLACE_TOKEN``, …), or ""."""
        found = problems.problem(self.problem)
        return found.action if found is not None else ""


def first_reason(destination: Destination) -> str:
    """The destination's first failing reason: a token block wins, then the health check's."""
    reason = first_problem(destination)
    return reason.message if reason is not None else ""


def first_problem(destination: Destination) -> Reason | None:
    """The destination's first failing reason with its fix: a block wins, then the checks'.

    A block's own fix is the one its health reason stored (Meta's answer, worded in
    ``problems``); a block from before reasons were stored gets its kind's fix.
    """
    reasons = [
        Reason(str(item["message"]), str(item.get("fix") or ""), str(item.get("problem") or ""))
        if isinstance(item, Mapping)
        else Reason(str(item))
        for item in destination.health_reasons or []
        if (isinstance(item, Mapping) and item.get("message")) or (isinstance(item, str) and item)
    ]
    if destination.blocked_reason:
        stored = next(
            (
                item
                for item in destination.health_reasons or []
                if isinstance(item, Mapping) and item.get("name") == "deliveries_accepted"
            ),
            None,
        )
        if stored is not None and stored.get("fix"):
            fix, key = str(stored["fix"]), str(stored.get("problem") or "")
        else:
            kind = (
                problems.EVERY_REQUEST_REFUSED
                if destination.block_kind == BlockKind.EVERY_REQUEST
                else problems.TOKEN_REVOKED
            )
            fix, key = kind.fix, kind.key
        return Reason(destination.blocked_reason, fix, key)
    return reasons[0] if reasons else None


def notes(destination: Destination) -> list[problems.Problem]:
    """The notes a card shows beside its numbers: never a reason for red, always worth saying.

    Test mode comes from the destination itself (right after an edit); the others (low match
    quality, a send-only token, a Graph API version ending soon) from its latest full check
    (``Destination.health_notes``). No query: both are columns of the destination's row.
    """
    found = [problems.TEST_MODE] if destination.test_event_code else []
    for key in destination.health_notes or []:
        note = problems.problem(str(key))
        if note is not None and note not in found:
            found.append(note)
    return found


@dataclass(frozen=True)
class RefusedCallsRow:
    """Calls of one kind the ingest endpoint refused in the last 24 hours, with the fix."""

    reason: str
    count: int
    last_at: datetime
    origins: list[str]

    @property
    def problem(self) -> problems.Problem | None:
        """What the refusal means and what fixes it (``problems.REFUSED_CALLS``)."""
        return problems.REFUSED_CALLS.get(self.reason)

    @property
    def fix(self) -> str:
        """The fix, naming the origin refused last ("Add https://shop.example.com to …")."""
        found = self.problem
        if found is None:
            return ""
        if self.origins:
            return found.fix.replace(problems.THE_REFUSED_ORIGIN, self.origins[0], 1)
        return found.fix


def refused_calls(
    destination: Destination, *, now: datetime | None = None
) -> list[RefusedCallsRow]:
    """The destination's refused ingest calls of the last 24 hours, by reason (one query)."""
    return [
        RefusedCallsRow(row["reason"], row["count"], row["last_at"], row["origins"])
        for row in counters.refused_last_day(destination.pk, now=now)
    ]


def unhealthy_first() -> Case:
    """An ordering expression: unhealthy, then not checked yet, then healthy."""
    return Case(
        When(health=Health.UNHEALTHY, then=Value(0)),
        When(health=Health.UNKNOWN, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )


def waiting_count() -> Coalesce:
    """An annotation: the destination's events not delivered yet (pending or being sent).

    A subquery of the destinations' own query (counting the destination's queue entries
    through the queue's index), so the overview gains no query for it.
    """
    waiting = (
        QueuedEvent.objects.filter(destination=OuterRef("pk"))
        .order_by()
        .values("destination")
        .annotate(count=Count("pk"))
        .values("count")
    )
    return Coalesce(Subquery(waiting, output_field=IntegerField()), Value(0))


def waiting_counts(destination_ids: Sequence[int]) -> dict[int, int]:
    """``{destination_id: events not delivered yet}``, one query (absent means none)."""
    rows = (
        QueuedEvent.objects.filter(destination_id__in=destination_ids)
        .order_by()
        .values("destination_id")
        .annotate(count=Count("pk"))
        .values_list("destination_id", "count")
    )
    return dict(rows)


def overview_destinations(
    user: Any, *, tenant_slug: str = "", status: str = "", search: str = "", sort: str = ""
) -> QuerySet[Destination]:
    """The destinations ``user`` may see, filtered (:func:`matching_destinations`), unhealthy
    first (``sort="attention"``: lowest Meta match-quality score first), no secrets loaded,
    each with its ``waiting`` count and its match-quality report (one join)."""
    order: list[str | Combinable] = [unhealthy_first(), "tenant__name", "name", "pk"]
    if sort == "attention":
        order.insert(0, F("match_quality_report__lowest_score").asc(nulls_last=True))
    return (
        matching_destinations(user, tenant_slug=tenant_slug, status=status, search=search)
        .select_related("tenant", "match_quality_report")
        .defer(*SECRET_COLUMNS)
        .annotate(waiting=waiting_count())
        .order_by(*order)
    )


def matching_destinations(
    user: Any, *, tenant_slug: str = "", status: str = "", search: str = ""
) -> QuerySet[Destination]:
    """The destinations ``user`` may see, of the tenant ``tenant_slug``, with ``status`` (a
    health value, "disabled", or "attention": Meta's score of some event name is low), and
    whose client (tenant) name, name or Pixel ID contains ``search`` whatever the case; an
    empty filter keeps all."""
    destinations = Destination.objects.for_user(user)
    if tenant_slug:
        destinations = destinations.filter(tenant__slug=tenant_slug)
    if status == "disabled":
        destinations = destinations.filter(enabled=False)
    elif status == "attention":
        destinations = destinations.filter(
            match_quality_report__lowest_score__lt=match_quality.low_score()
        )
    elif status in Health.values:
        destinations = destinations.filter(health=status)
    if search:
        destinations = destinations.filter(
            Q(tenant__name__icontains=search)
            | Q(name__icontains=search)
            | Q(pixel_id__icontains=search)
        )
    return destinations


def counts_last_24h(
    destination_ids: Sequence[int], *, now: datetime | None = None
) -> dict[int, dict[str, int]]:
    """``{destination_id: {"delivered": n, "failed": n, "rejected": n}}``, one query.

    The sum of the hourly counters (``counters``) of the current hour and the 23 before it: the
    same hours as a destination's chart, without counting the day's events.
    """
    return counters.last_day(destination_ids, now=now)


def overview_cards(
    user: Any,
    *,
    tenant_slug: str = "",
    status: str = "",
    search: str = "",
    sort: str = "",
    now: datetime | None = None,
) -> list[DestinationCard]:
    """The overview's cards for ``user``: two queries however many destinations there are."""
    destinations = overview_destinations(
        user, tenant_slug=tenant_slug, status=status, search=search, sort=sort
    )
    return cards_of(list(destinations), now=now)


def cards_of(
    destinations: Sequence[Destination], *, now: datetime | None = None
) -> list[DestinationCard]:
    """Cards for ``destinations`` (from :func:`overview_destinations`): one query for all their
    24-hour counts."""
    counts = counts_last_24h([destination.pk for destination in destinations], now=now)
    url_of = destination_url_maker()
    return [
        card_for(destination, counts.get(destination.pk), url_of) for destination in destinations
    ]


@dataclass(frozen=True)
class OverviewPage:
    """One page of the overview: its cards, and the health totals of every matching
    destination (not only this page's)."""

    cards: list[DestinationCard]
    page: Page[Destination]
    health_totals: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.health_totals.values())


def overview_page(
    user: Any,
    *,
    page_number: Any = 1,
    per_page: int = 30,
    tenant_slug: str = "",
    status: str = "",
    search: str = "",
    sort: str = "",
    now: datetime | None = None,
) -> OverviewPage:
    """Page ``page_number`` of ``user``'s overview (out-of-range numbers give the nearest page).

    Three queries however many destinations match: the health totals (which are also the
    paginator's count), the page's destinations, and their 24-hour counts.
    """
    filters = {"tenant_slug": tenant_slug, "status": status, "search": search}
    totals = (
        matching_destinations(user, **filters)
        .order_by()
        .aggregate(
            **{
                health.value: Count("pk", filter=Q(health=health))
                for health in (Health.UNHEALTHY, Health.UNKNOWN, Health.HEALTHY)
            }
        )
    )
    paginator = Paginator(overview_destinations(user, **filters, sort=sort), per_page)
    # The totals already counted the rows: the paginator needs no COUNT query of its own.
    paginator.count = sum(totals.values())
    page = paginator.get_page(page_number)
    return OverviewPage(
        cards=cards_of(list(page.object_list), now=now),
        page=page,
        health_totals=totals,
    )


def card_for(
    destination: Destination,
    counts: Mapping[str, int] | None,
    url_of: Callable[[Destination], str] | None = None,
    waiting: int | None = None,
) -> DestinationCard:
    """Pair a destination with its counts (missing counts mean zero), its waiting events (the
    ``waiting`` annotation of :func:`overview_destinations` unless given) and its page's URL."""
    counts = counts or {}
    return DestinationCard(
        destination=destination,
        delivered_24h=counts.get("delivered", 0),
        failed_24h=counts.get("failed", 0),
        rejected_24h=counts.get("rejected", 0),
        suppressed_24h=counts.get("suppressed", 0),
        url=(url_of or destination_url_maker())(destination),
        waiting=waiting if waiting is not None else getattr(destination, "waiting", 0),
    )


_URL_PLACEHOLDER = uuid.UUID(int=0)


def destination_url_maker() -> Callable[[Destination], str]:
    """``url_of(destination)``: its page's URL, from one ``reverse()`` for any number of them.

    Reversing once per card was a quarter of the overview's template time with 500 cards.
    """
    pattern = reverse("capi_destinations:destination", kwargs={"code": _URL_PLACEHOLDER})
    head, _, tail = pattern.partition(str(_URL_PLACEHOLDER))
    return lambda destination: f"{head}{destination.code}{tail}"


def single_card(destination: Destination, *, now: datetime | None = None) -> DestinationCard:
    """The overview card of one destination (for its own htmx refresh)."""
    return card_for(
        destination,
        counts_last_24h([destination.pk], now=now).get(destination.pk),
        waiting=waiting_counts([destination.pk]).get(destination.pk, 0),
    )


# --- The destination page -----------------------------------------------------------------------


@dataclass(frozen=True)
class HourCounts:
    """One hour of a destination's chart: outcomes reached in it, events waiting since it."""

    hour: datetime
    delivered: int = 0
    failed: int = 0
    pending: int = 0
    rejected: int = 0

    @property
    def total(self) -> int:
        return self.delivered + self.failed + self.pending + self.rejected


def hourly_counts(destination: Destination, *, now: datetime | None = None) -> list[HourCounts]:
    """24 hourly buckets of delivered / failed / rejected / pending events, in two queries.

    Outcomes come from the hourly counters, as on the overview card, so the card's numbers are
    the sums of the chart's bars. Pending events (still on their way) are counted in the hour
    they last changed.
    """
    now = now or clock.now()
    slots = counters.hours_shown(now)
    outcomes = counters.by_hour(destination.pk, now=now)
    waiting = Counter(
        counters.hour_of(row["hour"])
        for row in QueuedEvent.objects.filter(
            destination=destination, event__updated_at__gte=slots[0]
        )
        .annotate(hour=TruncHour("event__updated_at", tzinfo=UTC))
        .values("hour")
    )
    empty = dict.fromkeys(counters.OUTCOMES, 0)
    return [
        HourCounts(
            hour=slot,
            delivered=outcomes.get(slot, empty)["delivered"],
            failed=outcomes.get(slot, empty)["failed"],
            rejected=outcomes.get(slot, empty)["rejected"],
            pending=waiting[slot],
        )
        for slot in slots
    ]


def hourly_match_quality(
    destination: Destination, *, now: datetime | None = None
) -> list[tuple[datetime, float | None]]:
    """The average match-quality estimate of the events received in each of the last 24 hours."""
    now = now or clock.now()
    slots = counters.hours_shown(now)
    rows = (
        Event.objects.filter(
            destination=destination, created_at__gte=slots[0], match_quality__isnull=False
        )
        .annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values("hour")
        .annotate(average=Avg("match_quality"))
        .order_by()
    )
    averages = {counters.hour_of(row["hour"]): row["average"] for row in rows}
    return [
        (slot, round(averages[slot], 1) if averages.get(slot) is not None else None)
        for slot in slots
    ]


@dataclass(frozen=True)
class AttemptRow:
    """A delivery attempt with Meta's error in plain words."""

    attempt: DeliveryAttempt
    explanation: str
    fix: str


def recent_attempts(destination: Destination, *, limit: int = 20) -> list[AttemptRow]:
    """The destination's latest delivery attempts, newest first."""
    rows = []
    for attempt in destination.attempts.all()[:limit]:
        explanation = fix = ""
        if attempt.error_code is not None or (attempt.http_status or 200) >= 300:
            info = graph.classify(
                attempt.http_status,
                attempt.error_code,
                attempt.error_subcode,
                None,
                message=attempt.error_message,
            )
            explanation, fix = info.explanation, info.fix
        elif attempt.received_mismatch:
            explanation = (
                f"Meta counted {attempt.events_received} of the {attempt.event_count} events sent."
            )
        rows.append(AttemptRow(attempt=attempt, explanation=explanation, fix=fix))
    return rows


# --- Diagnostics summary ------------------------------------------------------------------------


@dataclass(frozen=True)
class DiagnosticRow:
    """One diagnostic code for one event name: how many events have it, and the fix."""

    event_name: str
    code: str
    field: str
    severity: str
    message: str
    fix: str
    count: int
    of_events: int

    @property
    def percent(self) -> int:
        return round(100 * self.count / self.of_events) if self.of_events else 0


@dataclass(frozen=True)
class MissingIdentifierRow:
    """The share of one event name's events without one identifier ("41% … have no fbc")."""

    event_name: str
    key: str
    label: str
    count: int
    of_events: int

    @property
    def percent(self) -> int:
        return round(100 * self.count / self.of_events) if self.of_events else 0


@dataclass(frozen=True)
class PhoneCountryRow:
    """The share of one event name's phone numbers sent without a country code.

    Meta: phone numbers "must include a country code to be used for matching", so this is an
    error-level finding for the destination (its default country fixes it), although each
    event is still sent: digits without a + may already start with the country code.
    """

    event_name: str
    count: int
    of_phones: int
    severity: str = "error"

    @property
    def percent(self) -> int:
        return round(100 * self.count / self.of_phones) if self.of_phones else 0


@dataclass(frozen=True)
class ClickIdsFilledRow:
    """How many of one event name's events gained ``fbc`` or ``fbp`` from an earlier visit."""

    event_name: str
    key: str  # "fbc" or "fbp"
    count: int
    of_events: int


@dataclass(frozen=True)
class DiagnosticsSummary:
    """The most frequent diagnostics and missing identifiers over the last 24 hours."""

    events: int
    sampled: bool
    diagnostics: list[DiagnosticRow] = field(default_factory=list)
    missing_identifiers: list[MissingIdentifierRow] = field(default_factory=list)
    phones_without_country: list[PhoneCountryRow] = field(default_factory=list)
    click_ids_filled: list[ClickIdsFilledRow] = field(default_factory=list)
    click_id_fill_days: int = 0  # CLICK_ID_FILL_DAYS, for the explanation beside the rows


def diagnostics_summary(
    destination: Destination,
    *,
    now: datetime | None = None,
    limit: int = 10,
    sample_size: int = 2000,
) -> DiagnosticsSummary:
    """Summarize the diagnostics of the destination's events of the last 24 hours.

    Reads at most ``sample_size`` of the most recent events (one query) and says so when the
    figures are from a sample.
    """
    since = (now or clock.now()) - DAY
    rows = list(
        Event.objects.filter(destination=destination, created_at__gte=since)
        .order_by("-created_at")
        .values_list("event_name", "diagnostics", "payload__user_data")[: sample_size + 1]
    )
    sampled = len(rows) > sample_size
    rows = rows[:sample_size]
    return DiagnosticsSummary(
        events=len(rows),
        sampled=sampled,
        diagnostics=_top_diagnostics(rows, limit),
        missing_identifiers=_top_missing_identifiers(rows, limit),
        phones_without_country=_phones_without_country(rows),
        click_ids_filled=_click_ids_filled(rows),
        click_id_fill_days=int(app_settings.CLICK_ID_FILL_DAYS),
    )


_CLICK_ID_FILLED = "click_id_filled"


def _click_ids_filled(rows: Iterable[tuple[str, Any, Any]]) -> list[ClickIdsFilledRow]:
    """Per event name and key: the events that gained fbc/fbp from click_memory."""
    per_name: Counter[str] = Counter()
    filled: Counter[tuple[str, str]] = Counter()
    for event_name, diagnostics, _user_data in rows:
        per_name[event_name] += 1
        for diagnostic in diagnostics or []:
            if isinstance(diagnostic, Mapping) and diagnostic.get("code") == _CLICK_ID_FILLED:
                filled[(event_name, str(diagnostic.get("field", "")).rpartition(".")[2])] += 1
    return [
        ClickIdsFilledRow(event_name=name, key=key, count=count, of_events=per_name[name])
        for (name, key), count in sorted(filled.items(), key=lambda item: (-item[1], item[0]))
    ]


_NO_COUNTRY_CODE = "phone_missing_country_code"


def _phones_without_country(rows: Iterable[tuple[str, Any, Any]]) -> list[PhoneCountryRow]:
    """Per event name: of the events with a phone number, how many had no country code."""
    phones: Counter[str] = Counter()
    without: Counter[str] = Counter()
    for event_name, diagnostics, user_data in rows:
        flagged = any(
            isinstance(diagnostic, Mapping) and diagnostic.get("code") == _NO_COUNTRY_CODE
            for diagnostic in diagnostics or []
        )
        if flagged or (isinstance(user_data, Mapping) and user_data.get("ph")):
            phones[event_name] += 1
            without[event_name] += flagged
    return [
        PhoneCountryRow(event_name=event_name, count=count, of_phones=phones[event_name])
        for event_name, count in sorted(without.items(), key=lambda item: (-item[1], item[0]))
        if count
    ]


def _top_diagnostics(rows: Iterable[tuple[str, Any, Any]], limit: int) -> list[DiagnosticRow]:
    per_name: Counter[str] = Counter()
    counts: Counter[tuple[str, str]] = Counter()
    example: dict[tuple[str, str], Mapping[str, Any]] = {}
    for event_name, diagnostics, _user_data in rows:
        per_name[event_name] += 1
        seen: set[str] = set()
        for diagnostic in diagnostics or []:
            if not isinstance(diagnostic, Mapping) or "code" not in diagnostic:
                continue
            code = str(diagnostic["code"])
            if code in seen:
                continue  # count an event once per code, however many fields it names
            seen.add(code)
            counts[(event_name, code)] += 1
            example.setdefault((event_name, code), diagnostic)
    return [
        DiagnosticRow(
            event_name=event_name,
            code=code,
            field=str(example[(event_name, code)].get("field", "")),
            severity=str(example[(event_name, code)].get("severity", "")),
            message=str(example[(event_name, code)].get("message", "")),
            fix=str(example[(event_name, code)].get("fix", "")),
            count=count,
            of_events=per_name[event_name],
        )
        for (event_name, code), count in counts.most_common(limit)
    ]


def _top_missing_identifiers(
    rows: Iterable[tuple[str, Any, Any]], limit: int
) -> list[MissingIdentifierRow]:
    per_name: Counter[str] = Counter()
    missing: Counter[tuple[str, str]] = Counter()
    for event_name, _diagnostics, user_data in rows:
        per_name[event_name] += 1
        present = user_data if isinstance(user_data, Mapping) else {}
        for key in TOP_IDENTIFIERS:
            if not present.get(key):
                missing[(event_name, key)] += 1
    rank = {key: position for position, key in enumerate(TOP_IDENTIFIERS)}
    # Most events affected first, so one odd event does not push the real gaps off the list;
    # then the more valuable identifier.
    ordered = sorted(
        missing.items(),
        key=lambda item: (-item[1], rank[item[0][1]], item[0][0]),
    )
    return [
        MissingIdentifierRow(
            event_name=event_name,
            key=key,
            label=IDENTIFIER_LABELS[key],
            count=count,
            of_events=per_name[event_name],
        )
        for (event_name, key), count in ordered[:limit]
    ]


# --- The event log ------------------------------------------------------------------------------


def event_log(
    destination: Destination,
    *,
    status: str = "",
    event_name: str = "",
    search: str = "",
    received_from: datetime | None = None,
    received_to: datetime | None = None,
) -> QuerySet[Event]:
    """The destination's events, newest first, filtered by status, event name, an exact
    ``event_id`` or order id (``custom_data.order_id``, as a text or a number) and the time they
    were received (``received_from`` ≤ received < ``received_to``). Filters combine: an event
    is listed when it passes every one given."""
    events = Event.objects.filter(destination=destination).order_by("-created_at", "-pk")
    if status in PROBLEM_EVENT_STATUSES:
        # The same rows as status=…, found by the partial index on problem_status (no index may
        # hold ``status``, which the delivery writes; models.Event).
        events = events.filter(problem_status=status)
    elif status in EventStatus.values:
        events = events.filter(status=status)
    if event_name:
        events = events.filter(event_name=event_name)
    if search:
        events = events.filter(event_id_or_order_id(search))
    if received_from is not None:
        events = events.filter(created_at__gte=received_from)
    if received_to is not None:
        events = events.filter(created_at__lt=received_to)
    return events.defer("payload", "consent")


def event_id_or_order_id(search: str) -> Q:
    """Events whose ``event_id`` is ``search`` or whose ``custom_data.order_id`` is, whether the
    order id was sent as a text or as a whole number (JSON lookups: PostgreSQL and SQLite)."""
    matches = Q(event_id=search) | Q(payload__custom_data__order_id=search)
    if search.isascii() and search.isdigit() and len(search) < 19:
        matches |= Q(payload__custom_data__order_id=int(search))
    return matches


def event_names(destination: Destination, *, limit: int = 100) -> list[str]:
    """The event names this destination has received (for the log's filter)."""
    return list(
        Event.objects.filter(destination=destination)
        .values_list("event_name", flat=True)
        .distinct()
        .order_by("event_name")[:limit]
    )
