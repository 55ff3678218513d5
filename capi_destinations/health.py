"""Health checks: is each destination Healthy or Unhealthy, why, and what fixes it.

One run of :func:`check_destination` asks six questions and records every answer (``ok``, a
plain-language ``message``, a ``fix``, a ``severity``) on a ``HealthCheck`` row:

1. ``sending_enabled`` — is "Send events via Conversions API" ticked?
2. ``token_format`` — is a token stored, and does it look whole (the rules of ``tokens.py``)?
3. ``meta_accepts_token`` — does Meta accept the token? Asked with one read of the pixel's
   ``id`` and ``name`` (``graph.get_pixel``); the name is stored. Reading the pixel is a bonus,
   not a condition: Meta says a token made in a dataset's Conversions API settings "can't be
   used to run API GET data requests" (Conversions API end-to-end implementation guide,
   "Integration as a platform"). When the read is refused (code 100/33 or a permission code)
   but Meta accepted this destination's real events in the last 24 hours, the token is fine
   and only the pixel's name cannot be shown. With no recent delivery to tell, the status is
   left as it was (``unknown`` for a new destination) and the card says why.
4. ``deliveries_accepted``, ``delivery_failure_rate``, ``queue_moving`` — has Meta refused the
   token while delivering, do most recent requests succeed, are due events being sent? While
   a refusal blocks delivery, reading the pixel is no proof that the token may send (Meta can
   allow one and refuse the other), so the check sends nothing itself: it makes the
   destination's canary due (``delivery_state.request_canary``), and the dispatcher sends one
   of the destination's own waiting events alone and lifts the block if Meta accepts it.
5. ``traffic_flowing`` — does a destination that usually records events at this time of the
   week still record them (``alert_checks.traffic_drop``; never judged on less than a week of
   history)? Recording is watched, not sending, so it counts with sending turned off too.
5. ``graph_api_version`` — is the Graph API version in use (the destination's own, else the
   ``GRAPH_API_VERSION`` setting) still available (``graph_versions.py``)? A note 90 days
   before its end, a failing check after it.
6. ``test_mode``, ``match_quality`` — informational: they never change the status.

After each run the alert conditions (traffic dropped, version ending, match quality fell,
failure rate) are folded into the destination's alert states
(:mod:`capi_destinations.alert_checks`), which raise ``signals.destination_alert`` once when a
condition starts and once when it ends.

A health check never sends an event: a test event is live data to Meta ("Events sent with
test_event_code are not dropped. They flow into Events Manager and are used for targeting and
ads measurement purposes", Conversions API "Using the API"), so only a person pressing **Send
test event** sends one (``destinations.send_test_event``). A block set by a refused delivery is
lifted by a new token or by the dispatcher's canary, never by a check.

The destination is ``healthy`` when every ``error``-severity check passes, ``unhealthy``
otherwise, ``unknown`` before its first check. Not reaching Meta (an outage, a timeout, a rate
limit) is not a verdict on the destination: it keeps its status until
``HEALTH_TRANSIENT_FAILURE_THRESHOLD`` checks in a row could not reach Meta.

Status changes are written with a compare-and-set (``UPDATE … WHERE id = x AND health = old``)
so two processes checking the same destination never both record one change, and each change
sends ``signals.destination_health_changed`` once, after the transaction commits: both are
:mod:`capi_destinations.health_status`'s, which the delivery engine uses too. This module decides
the verdict; it never imports the delivery engine (a block is read from, and a canary requested
through, :mod:`capi_destinations.delivery_state`).

Many destinations are checked by :func:`check_all_destinations`: a bounded thread pool makes
only the Graph calls (each with the client's connect/read timeouts), while the calling thread
reads and writes the database, recording each result as soon as its call returns, so one slow
pixel never delays the others.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.fernet import InvalidToken
from django.core.exceptions import ValidationError
from django.db.models import F, Min, Window
from django.db.models.functions import RowNumber
from django.views.decorators.debug import sensitive_variables

from capi_destinations import (
    alert_checks,
    clock,
    diagnostics,
    fan_out,
    graph,
    graph_versions,
    problems,
    tokens,
)
from capi_destinations.conf import app_settings
from capi_destinations.delivery_state import (
    refuses_every_request,
    release_outlived_block,
    request_canary,
)
from capi_destinations.health_status import (
    DELIVERIES_ACCEPTED,
    DELIVERIES_REFUSED,
    DELIVERY_FAILURE_RATE,
    ERROR,
    GRAPH_API_VERSION,
    INFO,
    MATCH_QUALITY,
    META_ACCEPTS_TOKEN,
    QUEUE_MOVING,
    SENDING_ENABLED,
    TEST_MODE,
    TOKEN_FORMAT,
    TRAFFIC_FLOWING,
    CheckResult,
    Snapshot,
    Verdict,
    record_verdict,
)
from capi_destinations.models import (
    AlertKind,
    AttemptOutcome,
    DeliveryAttempt,
    Destination,
    Event,
    Health,
    HealthCheck,
    QueuedEvent,
)
from capi_destinations.user_data_keys import IDENTIFIER_LABELS

logger = logging.getLogger("capi_destinations.health")

# Deliveries older than this say nothing about the destination's health today.
RECENT_DELIVERY_WINDOW = timedelta(hours=24)
# A failure rate over fewer requests than this is noise (one retried 500 is not a trend).
MIN_ATTEMPTS_FOR_FAILURE_RATE = 5
# How many recent events are read to find the identifiers that are most often missing.
MATCH_QUALITY_SAMPLE = 100

# Attempt outcomes that count as a failed request. A "bisected" request is an intermediate
# step of isolating a bad event, so it counts neither way.
_FAILED_OUTCOMES = frozenset(
    {
        AttemptOutcome.RETRY,
        AttemptOutcome.RATE_LIMITED,
        AttemptOutcome.BLOCKED,
        AttemptOutcome.INVALID,
    }
)
_CANARY_REFUSALS = (AttemptOutcome.BLOCKED, AttemptOutcome.INVALID)
_UNREACHABLE_CATEGORIES = frozenset({graph.TRANSIENT, graph.RATE_LIMIT, graph.UNKNOWN})


def _failing(
    name: str, problem: problems.Problem, details: str = "", *, severity: str = ERROR
) -> CheckResult:
    """A failing check worded as ``problem`` (its reason, then ``details``; its fix)."""
    message = f"{problem.reason} {details}".strip()
    return CheckResult(name, False, message, problem.fix, severity, problem.key)


@dataclass(frozen=True)
class TokenProbe:
    """What Meta said about the token (check 3), gathered without touching the database."""

    pixel: graph.PixelInfo | None = None
    error: graph.GraphError | None = None
    # Set when the token could not be asked about at all (malformed, unreadable).
    skipped: bool = False
    # time.monotonic() when the probe began, so each check's duration is its own.
    started: float = field(default_factory=time.monotonic)

    @property
    def unreachable(self) -> bool:
        """True when Meta gave no verdict on the token (outage, timeout, rate limit)."""
        return self.error is not None and self.error.category in _UNREACHABLE_CATEGORIES

    @property
    def read_refused(self) -> bool:
        """True when Meta refused to let the token read the pixel, without refusing the token.

        Code 100/33 ("does not exist, cannot be loaded due to missing permissions") or a
        permission code: what a send-only token gets, and also a mistyped Pixel ID. Only the
        destination's deliveries tell the two apart.
        """
        error = self.error
        if error is None or self.unreachable:
            return False
        if error.code == 100 and error.error_subcode == 33:
            return True
        return error.code == 10 or (error.code is not None and 200 <= error.code < 300)


@dataclass
class DeliveryFacts:
    """What the database says about a destination's recent deliveries and queue."""

    # (outcome, category) of the most recent requests, newest first, bisect steps left out.
    recent_attempts: list[tuple[str, str]] = field(default_factory=list)
    # When the longest-overdue pending event became due (None: nothing overdue).
    overdue_since: datetime | None = None
    # When the oldest abandoned lease expired (a worker died and nobody took the events back).
    stalled_since: datetime | None = None
    # Our match-quality estimate averaged over recent events, and how many events that was.
    match_quality: float | None = None
    match_quality_events: int = 0
    # The figures of the alert conditions (traffic, refusals, last week's match quality).
    alert_facts: alert_checks.AlertFacts = field(default_factory=alert_checks.AlertFacts)

    @property
    def sends_accepted(self) -> bool:
        """Whether Meta accepted a request of this destination lately, and refused none since.

        The proof that the token may send, whatever Meta says about reading the pixel.
        """
        for outcome, _category in self.recent_attempts:
            if outcome == AttemptOutcome.DELIVERED:
                return True
            if outcome == AttemptOutcome.BLOCKED:
                return False
        return False


# --- one destination -----------------------------------------------------------------------


def check_destination(destination: Destination, *, now: datetime | None = None) -> HealthCheck:
    """Run every check for ``destination``, store a HealthCheck and update its health.

    Calls Meta once (``graph.get_pixel``, a read) unless the token is malformed, and never
    sends an event. ``destination`` is updated in place with the new health fields. Returns
    the stored HealthCheck.
    """
    started = time.monotonic()
    now = now or clock.now()
    _release_outlived_block(destination)
    facts = collect_delivery_facts([destination.pk], now=now)[destination.pk]
    probe = probe_token(destination)
    return _evaluate_and_record(destination, probe, facts, now=now, started=started)


def _release_outlived_block(destination: Destination) -> None:
    # A token written by QuerySet.update() runs no Python: a block earned by the token before
    # holds no longer (check the new one as a token never refused), and the stored hint and
    # fingerprint (which find other clients' destinations sharing the token) catch up.
    if getattr(destination, "_unreadable_token", False):
        return
    release_outlived_block(destination)
    destination.sync_token_fingerprint()


# Error reports print local variables (also of called frames): never the token.
@sensitive_variables("token")
def probe_token(destination: Destination) -> TokenProbe:
    """Ask Meta about the destination's token and pixel (check 3's network half).

    One read of the pixel's ``id`` and ``name``; no event is ever sent. Needs no database, so
    it can run in a worker thread. A malformed or unreadable token is not sent to Meta at all.
    """
    started = time.monotonic()
    token = _readable_token(destination)
    if token is None or _token_format_problem(token) is not None:
        return TokenProbe(skipped=True, started=started)
    try:
        pixel = graph.get_pixel(destination)
    except graph.GraphError as error:
        return TokenProbe(error=error, started=started)
    return TokenProbe(pixel=pixel, started=started)


# --- many destinations -----------------------------------------------------------------------


def check_all_destinations(
    *,
    destination_ids: Iterable[int] | None = None,
    tenant_slug: str | None = None,
    max_workers: int | None = None,
) -> list[HealthCheck]:
    """Check many destinations at once (all of them by default); returns their HealthChecks.

    The Graph calls run on at most ``max_workers`` threads (``HEALTH_CHECK_CONCURRENCY`` by
    default); each result is recorded by the calling thread as soon as its call returns, so
    the list comes back in the order the checks finished. A destination whose call hangs is
    cut off by the Graph client's read timeout and delays nobody else.
    """
    destinations = _load_destinations(destination_ids, tenant_slug)
    if not destinations:
        return []
    for destination in destinations:
        _release_outlived_block(destination)
    facts = collect_delivery_facts([destination.pk for destination in destinations])
    results: list[HealthCheck] = []

    def record(destination: Destination, probe: TokenProbe) -> None:
        results.append(
            _evaluate_and_record(
                destination, probe, facts[destination.pk], now=clock.now(), started=probe.started
            )
        )

    fan_out.ask_each(
        destinations,
        probe_token,
        record,
        max_workers=max_workers or app_settings.HEALTH_CHECK_CONCURRENCY,
        name="health",
        what="Health check",
        logger=logger,
    )
    return results


def _load_destinations(
    destination_ids: Iterable[int] | None, tenant_slug: str | None
) -> list[Destination]:
    queryset = Destination.objects.select_related("tenant").order_by("pk")
    if destination_ids is not None:
        queryset = queryset.filter(pk__in=list(destination_ids))
    if tenant_slug is not None:
        queryset = queryset.filter(tenant__slug=tenant_slug)
    try:
        return list(queryset)
    except InvalidToken:
        # Some token cannot be decrypted with the current FERNET_KEYS. Load the destinations
        # one by one so the readable ones are checked and the others report the problem.
        return [_load_one(pk) for pk in queryset.values_list("pk", flat=True)]


def _load_one(pk: int) -> Destination:
    try:
        return Destination.objects.select_related("tenant").get(pk=pk)
    except InvalidToken:
        destination = (
            Destination.objects.select_related("tenant")
            .defer("access_token", "app_secret")
            .get(pk=pk)
        )
        destination._unreadable_token = True  # type: ignore[attr-defined]
        return destination


# --- what the database knows -----------------------------------------------------------------


def collect_delivery_facts(
    destination_ids: Sequence[int], *, now: datetime | None = None
) -> dict[int, DeliveryFacts]:
    """Recent attempts, overdue events and match quality for many destinations at once.

    A fixed number of grouped queries whatever the number of destinations, so checking a
    thousand destinations does not cost thousands of queries.
    """
    now = now or clock.now()
    facts = {pk: DeliveryFacts() for pk in destination_ids}
    if not facts:
        return facts
    ids = list(facts)
    recent_since = now - RECENT_DELIVERY_WINDOW
    window_size = int(app_settings.HEALTH_FAILURE_RATE_ATTEMPTS)
    ranked = (
        DeliveryAttempt.objects.filter(destination_id__in=ids, started_at__gte=recent_since)
        .exclude(outcome=AttemptOutcome.BISECTED)
        # A refused canary only confirms a block that check 4 already reports.
        .exclude(canary=True, outcome__in=_CANARY_REFUSALS)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("destination_id")],
                order_by=[F("started_at").desc(), F("pk").desc()],
            )
        )
        .filter(rank__lte=window_size)
        .order_by("destination_id", "rank")
        .values_list("destination_id", "outcome", "category")
    )
    for destination_id, outcome, category in ranked:
        facts[destination_id].recent_attempts.append((outcome, category))

    overdue_before = now - timedelta(seconds=app_settings.HEALTH_MAX_QUEUE_DELAY)
    overdue = (
        QueuedEvent.objects.filter(
            destination_id__in=ids, lease_token__isnull=True, due_at__lte=overdue_before
        )
        .values("destination_id")
        .annotate(oldest=Min("due_at"))
        .values_list("destination_id", "oldest")
    )
    # Events held on purpose (sending off, a block, a pause) count as due from the moment
    # sending resumed: the check that runs right after Enable or a new token sees that release.
    resumed = {
        pk: max(
            (moment for moment in moments if moment is not None and moment <= now), default=None
        )
        for pk, *moments in Destination.objects.filter(pk__in=ids).values_list(
            "pk", "sending_resumed_at", "paused_until"
        )
    }
    for destination_id, oldest in overdue:
        since = max(oldest, resumed.get(destination_id) or oldest)
        if since <= overdue_before:
            facts[destination_id].overdue_since = since
    # A worker's lease that ran out long ago.
    stalled = (
        QueuedEvent.objects.filter(
            destination_id__in=ids, lease_token__isnull=False, lease_expires_at__lte=overdue_before
        )
        .values("destination_id")
        .annotate(oldest=Min("lease_expires_at"))
        .values_list("destination_id", "oldest")
    )
    for destination_id, oldest in stalled:
        facts[destination_id].stalled_since = oldest

    quality = alert_checks.match_quality_averages(ids, since=recent_since)
    for destination_id, (average, count) in quality.items():
        facts[destination_id].match_quality = average
        facts[destination_id].match_quality_events = count
    for destination_id, figures in alert_checks.collect_alert_facts(ids, now=now).items():
        facts[destination_id].alert_facts = figures
    return facts


# --- the checks --------------------------------------------------------------------------------


def _check_sending_enabled(destination: Destination) -> CheckResult:
    if destination.enabled:
        return CheckResult(SENDING_ENABLED, True, "Sending events via Conversions API is on.")
    return _failing(SENDING_ENABLED, problems.SENDING_OFF)


@sensitive_variables("token")
def _check_token_format(destination: Destination) -> CheckResult:
    token = _readable_token(destination)
    if token is None:
        return _failing(
            TOKEN_FORMAT, problems.TOKEN_UNREADABLE, "(FERNET_KEYS changed or lost a key.)"
        )
    problem = _token_format_problem(token)
    if problem is None:
        return CheckResult(TOKEN_FORMAT, True, "A token is stored and looks whole.")
    return _failing(TOKEN_FORMAT, problems.TOKEN_NOT_WHOLE, problem.messages[0])


def _readable_token(destination: Destination) -> str | None:
    if getattr(destination, "_unreadable_token", False):
        return None
    return destination.access_token or ""


@sensitive_variables("token")
def _token_format_problem(token: str) -> ValidationError | None:
    try:
        tokens.clean_access_token(token)
    except ValidationError as error:
        return error
    return None


def _check_meta_accepts_token(
    destination: Destination,
    probe: TokenProbe,
    facts: DeliveryFacts,
    *,
    failures_in_a_row: int,
    threshold: int,
) -> CheckResult:
    if probe.skipped:
        return CheckResult(
            META_ACCEPTS_TOKEN,
            False,
            "Not asked: Meta is asked about the token once the problem above is fixed.",
            severity=INFO,
        )
    if probe.pixel is not None:
        name = probe.pixel.name or destination.pixel_name
        shown = f"“{name}” ({destination.pixel_id})" if name else destination.pixel_id
        return CheckResult(META_ACCEPTS_TOKEN, True, f"Meta accepts the token for pixel {shown}.")
    error = probe.error
    assert error is not None
    if probe.unreachable:
        return _unreachable_result(error, failures_in_a_row=failures_in_a_row, threshold=threshold)
    if probe.read_refused:
        return _read_refused_result(destination, facts)
    return _token_refusal(error)


#: Why a token may send but not read the pixel (Meta's words, for the card).
SEND_ONLY_NOTE = (
    f"{problems.SEND_ONLY_TOKEN.reason} That is normal for a token made in the dataset's "
    "Conversions API settings: Meta limits such a token to sending data."
)


def _read_refused_result(destination: Destination, facts: DeliveryFacts) -> CheckResult:
    """Check 3 when Meta refused the read: the destination's own deliveries decide."""
    if facts.sends_accepted and not destination.blocked_reason:
        return CheckResult(
            META_ACCEPTS_TOKEN,
            True,
            "Meta accepts this token's events: it accepted this destination's events in the "
            f"last 24 hours. {SEND_ONLY_NOTE}",
        )
    return CheckResult(
        META_ACCEPTS_TOKEN,
        False,
        f"{SEND_ONLY_NOTE} It can also mean the Pixel ID {destination.pixel_id} is mistyped or "
        "the token was made for another pixel; no event was sent in the last 24 hours to tell "
        "which. The first events Meta accepts prove the token; if Meta refuses them, this "
        "destination turns Unhealthy with Meta's reason.",
        problems.SEND_ONLY_TOKEN.fix,
        INFO,
        problems.SEND_ONLY_TOKEN.key,
    )


def _unreachable_result(
    error: graph.GraphError, *, failures_in_a_row: int, threshold: int
) -> CheckResult:
    if error.category == graph.RATE_LIMIT:
        why = "Meta asked to slow down (rate limit)"
    elif error.category == graph.UNKNOWN:
        why = f"Meta answered in an unexpected way: {error.explanation}"
    else:
        why = error.explanation
    decided = failures_in_a_row >= threshold
    if decided:
        tail = f"This happened {failures_in_a_row} checks in a row."
    else:
        tail = (
            f"The status stays as it was until {threshold} checks in a row fail "
            f"(this was {failures_in_a_row})."
        )
    return _failing(
        META_ACCEPTS_TOKEN,
        problems.META_UNREACHABLE,
        f"{why.rstrip('.')}. {tail}",
        severity=ERROR if decided else INFO,
    )


def _token_refusal(error: graph.GraphError) -> CheckResult:
    """Check 3 for a definite refusal of the token, in the words of its problem.

    ``graph_errors`` words each of Meta's answers once (a cut paste, a revoked or an expired
    token: ``problems``), so the card says what the token check and the attempts say. A refused
    read of the pixel (100/33, a permission code) is not one: see :func:`_read_refused_result`.
    """
    message = error.explanation
    if error.category not in (graph.AUTH, graph.PERMISSION) or not error.problem:
        message = f"Meta refused the check: {error.explanation}"
    return CheckResult(META_ACCEPTS_TOKEN, False, message, error.fix, ERROR, error.problem)


def _check_deliveries_accepted(destination: Destination, probe: TokenProbe) -> CheckResult:
    if not destination.blocked_reason:
        return CheckResult(
            DELIVERIES_ACCEPTED, True, "Meta has not refused the token while delivering events."
        )
    attempt = (
        DeliveryAttempt.objects.filter(
            destination_id=destination.pk, outcome=AttemptOutcome.BLOCKED
        )
        .order_by("-started_at", "-pk")
        .values("category", "error_code", "error_subcode", "error_message", "http_status")
        .first()
    )
    fix, problem = problems.TOKEN_REVOKED.fix, problems.TOKEN_REVOKED.key
    if attempt is not None:
        info = graph.classify(
            attempt["http_status"],
            attempt["error_code"],
            attempt["error_subcode"],
            None,
            message=attempt["error_message"] or "",
        )
        fix, problem = info.fix, info.problem
    if refuses_every_request(destination):
        fix, problem = problems.EVERY_REQUEST_REFUSED.fix, problems.EVERY_REQUEST_REFUSED.key
    canary = (
        " One of its own waiting events is sent alone to test whether Meta still refuses "
        f"(next at {destination.canary_due_at:%Y-%m-%d %H:%M} UTC); when Meta accepts it, the "
        "others follow."
        if destination.canary_due_at is not None and probe.pixel is None
        else " Meta accepts the token again, so one of its own waiting events is sent alone "
        "now; when Meta accepts it, the others follow."
        if probe.pixel is not None
        else ""
    )
    return CheckResult(
        DELIVERIES_ACCEPTED,
        False,
        f"{DELIVERIES_REFUSED} {destination.blocked_reason}{canary}",
        fix,
        ERROR,
        problem,
    )


def _check_delivery_failure_rate(facts: DeliveryFacts) -> CheckResult:
    attempts = facts.recent_attempts
    failed = [category for outcome, category in attempts if outcome in _FAILED_OUTCOMES]
    threshold = float(app_settings.HEALTH_MAX_FAILURE_RATE)
    if len(attempts) < MIN_ATTEMPTS_FOR_FAILURE_RATE or len(failed) <= threshold * len(attempts):
        if not attempts:
            message = "No requests to Meta in the last 24 hours."
        else:
            message = f"{len(attempts) - len(failed)} of the last {len(attempts)} requests to Meta "
            message += "succeeded."
        return CheckResult(DELIVERY_FAILURE_RATE, True, message)
    most_common = Counter(failed).most_common(1)[0][0]
    problem = _FAILURE_PROBLEMS.get(most_common, problems.META_UNREACHABLE)
    return _failing(
        DELIVERY_FAILURE_RATE,
        problem,
        f"{len(failed)} of the last {len(attempts)} requests to Meta failed.",
    )


# What most failed requests mean, as the problem the card names.
_FAILURE_PROBLEMS = {
    graph.INVALID: problems.EVENTS_DATA_REFUSED,
    graph.RATE_LIMIT: problems.RATE_LIMITED,
    graph.AUTH: problems.TOKEN_REVOKED,
    graph.PERMISSION: problems.TOKEN_REVOKED,
}


def _check_queue_moving(
    destination: Destination, facts: DeliveryFacts, *, now: datetime
) -> CheckResult:
    waiting_since = min(
        (moment for moment in (facts.overdue_since, facts.stalled_since) if moment is not None),
        default=None,
    )
    if waiting_since is None:
        return CheckResult(QUEUE_MOVING, True, "Events are being sent as they become due.")
    waited = _duration(now - waiting_since)
    if not destination.enabled:
        return _failing(
            QUEUE_MOVING,
            problems.SENDING_OFF,
            f"Events have been waiting {waited}.",
            severity=INFO,
        )
    if destination.blocked_reason:
        return CheckResult(
            QUEUE_MOVING,
            False,
            f"Events have been held {waited} until Meta accepts the token (see above).",
            "They are sent as soon as the token problem is fixed.",
            severity=INFO,
        )
    if destination.paused_until is not None and destination.paused_until > now:
        return _failing(
            QUEUE_MOVING,
            problems.RATE_LIMITED,
            f"Sending is paused until {destination.paused_until:%Y-%m-%d %H:%M} UTC; events "
            f"have been waiting {waited}.",
            severity=INFO,
        )
    return _failing(QUEUE_MOVING, problems.QUEUE_STALLED, f"They have been waiting {waited}.")


def _check_traffic_flowing(facts: DeliveryFacts) -> CheckResult:
    dropped = alert_checks.traffic_drop(facts.alert_facts)
    if dropped is None:
        return CheckResult(
            TRAFFIC_FLOWING, True, "Events are being recorded as usual for this time of week."
        )
    return _failing(TRAFFIC_FLOWING, problems.TRAFFIC_DROPPED, dropped)


def _check_graph_api_version(destination: Destination, *, now: datetime) -> CheckResult:
    status = graph_versions.version_status(destination.graph_api_version, now.date())
    details = (
        f"{status.message} The newest is {graph_versions.newest_version()} "
        f"(Meta's dates: {graph_versions.CHANGELOG_URL})."
    )
    if status.is_error:
        return _failing(GRAPH_API_VERSION, problems.API_VERSION_ENDED, details)
    if status.is_warning:
        return _failing(GRAPH_API_VERSION, problems.API_VERSION_ENDING, details, severity=INFO)
    return CheckResult(GRAPH_API_VERSION, True, status.message)


def _check_test_mode(destination: Destination) -> CheckResult:
    if not destination.test_event_code:
        return CheckResult(TEST_MODE, True, "Test mode is off.", "", INFO)
    # Meta: "Events sent with test_event_code are not dropped. They flow into Events Manager
    # and are used for targeting and ads measurement purposes." A test event is live data.
    return _failing(
        TEST_MODE,
        problems.TEST_MODE,
        f"Test code: “{destination.test_event_code}”. Meta uses them for targeting and ads "
        "measurement, like any other event.",
        severity=INFO,
    )


def _check_match_quality(destination: Destination, facts: DeliveryFacts) -> CheckResult:
    average = facts.match_quality
    if average is None:
        return CheckResult(
            MATCH_QUALITY,
            True,
            "No events in the last 24 hours to estimate match quality.",
            "",
            INFO,
        )
    low = float(app_settings.HEALTH_LOW_MATCH_QUALITY)
    score = f"{average:.1f} out of 10"
    if average >= low:
        return CheckResult(
            MATCH_QUALITY,
            True,
            f"Estimated match quality of recent events: {score}.",
            "",
            INFO,
        )
    missing = most_often_missing_identifiers(destination)
    named = ", ".join(IDENTIFIER_LABELS.get(key, key) for key in missing)
    details = (
        f"{score} on average over {facts.match_quality_events} events (our estimate; Meta's own "
        "score is in Events Manager, 7 or more is good)."
    )
    if named:
        details += f" Most often missing: {named}."
    return _failing(MATCH_QUALITY, problems.LOW_MATCH_QUALITY, details, severity=INFO)


def most_often_missing_identifiers(destination: Destination, *, limit: int = 3) -> list[str]:
    """The user_data keys most often absent from the destination's recent events.

    Only keys missing from at least half of the sample count, most valuable first, so the
    advice names what would raise match quality most.
    """
    sample = list(
        Event.objects.filter(destination_id=destination.pk)
        .order_by("-created_at")
        .values_list("payload__user_data", flat=True)[:MATCH_QUALITY_SAMPLE]
    )
    if not sample:
        return []
    missing: Counter[str] = Counter()
    for user_data in sample:
        missing.update(diagnostics.match_quality(user_data or {}).missing)
    often = [key for key in IDENTIFIER_LABELS if missing[key] * 2 >= len(sample)]
    return often[:limit]


def _duration(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} days"


# --- status and recording --------------------------------------------------------------------


def _decide(
    destination: Destination,
    probe: TokenProbe,
    facts: DeliveryFacts,
    *,
    old_health: str,
    old_reasons: list[dict[str, str]],
    old_transient_failures: int,
    now: datetime,
) -> Verdict:
    threshold = max(1, int(app_settings.HEALTH_TRANSIENT_FAILURE_THRESHOLD))
    transient_failures = old_transient_failures + 1 if probe.unreachable else 0
    checks = _run_checks(
        destination,
        probe,
        facts,
        failures_in_a_row=transient_failures,
        threshold=threshold,
        now=now,
    )
    failed = [check for check in checks if check.failed]
    if failed:
        return Verdict(Health.UNHEALTHY, [c.reason() for c in failed], checks, transient_failures)
    token_check = next(check for check in checks if check.name == META_ACCEPTS_TOKEN)
    if probe.read_refused and not token_check.ok:
        # Nothing proves or disproves the token yet (a send-only token, no recent delivery):
        # a destination proven healthy stays so, any other waits for its first delivery.
        if old_health == Health.HEALTHY:
            return Verdict(Health.HEALTHY, [], checks, transient_failures)
        return Verdict(Health.UNKNOWN, [token_check.reason()], checks, transient_failures)
    if probe.unreachable:
        reasons = _reasons_kept_while_unreachable(checks, token_check, old_health, old_reasons)
        return Verdict(old_health, reasons, checks, transient_failures)
    return Verdict(Health.HEALTHY, [], checks, transient_failures)


def _run_checks(
    destination: Destination,
    probe: TokenProbe,
    facts: DeliveryFacts,
    *,
    failures_in_a_row: int,
    threshold: int,
    now: datetime,
) -> list[CheckResult]:
    """Every check, in the order they are shown."""
    return [
        _check_sending_enabled(destination),
        _check_token_format(destination),
        _check_meta_accepts_token(
            destination, probe, facts, failures_in_a_row=failures_in_a_row, threshold=threshold
        ),
        _check_deliveries_accepted(destination, probe),
        _check_delivery_failure_rate(facts),
        _check_queue_moving(destination, facts, now=now),
        _check_traffic_flowing(facts),
        _check_graph_api_version(destination, now=now),
        _check_test_mode(destination),
        _check_match_quality(destination, facts),
    ]


def _reasons_kept_while_unreachable(
    checks: list[CheckResult],
    unreachable: CheckResult,
    old_health: str,
    old_reasons: list[dict[str, str]],
) -> list[dict[str, str]]:
    """No verdict from Meta and nothing else wrong: the status stays, with these reasons.

    A healthy destination keeps none; an unhealthy one keeps the old reasons this run could not
    clear (a refused token stays the likely cause), else the unreachable check's.
    """
    if old_health == Health.HEALTHY:
        return []
    passed_now = {check.name for check in checks if check.ok}
    still_open = [reason for reason in old_reasons if reason.get("name") not in passed_now]
    if old_health == Health.UNKNOWN or not still_open:
        still_open = [unreachable.reason()]
    return still_open


def _evaluate_and_record(
    destination: Destination,
    probe: TokenProbe,
    facts: DeliveryFacts,
    *,
    now: datetime,
    started: float,
) -> HealthCheck:
    if probe.pixel is not None and destination.blocked_reason and destination.enabled:
        # Meta accepts the token again (a fixed permission, a new token saved elsewhere), which
        # is no proof it may send: one of the destination's own waiting events, sent alone by
        # the dispatcher, decides. Never a made-up event.
        request_canary(destination)
    pixel_name = (probe.pixel.name or "") if probe.pixel is not None else None

    def verdict_for(old: Snapshot) -> Verdict:
        return _decide(
            destination,
            probe,
            facts,
            old_health=old.health,
            old_reasons=old.reasons,
            old_transient_failures=old.transient_failures,
            now=now,
        )

    check = record_verdict(
        destination,
        verdict_for,
        now=now,
        duration_ms=int((time.monotonic() - started) * 1000),
        pixel_name=pixel_name,
    )
    alert_checks.record_conditions(
        destination, alert_conditions(check, facts), now=now, states=facts.alert_facts.states
    )
    return check


def alert_conditions(check: HealthCheck, facts: DeliveryFacts) -> list[alert_checks.Condition]:
    """The alert conditions observed by one check run (see :mod:`alert_checks`)."""
    by_name = {item["name"]: item for item in check.checks}

    def from_check(kind: str, name: str) -> alert_checks.Condition:
        item = by_name.get(name)
        if item is None or item["ok"]:
            return alert_checks.Condition(kind, False)
        return alert_checks.Condition(kind, True, item["message"], item["fix"])

    return [
        from_check(AlertKind.TRAFFIC_DROPPED, TRAFFIC_FLOWING),
        from_check(AlertKind.VERSION_ENDING, GRAPH_API_VERSION),
        alert_checks.match_quality_drop(
            facts.alert_facts, facts.match_quality, facts.match_quality_events
        ),
        alert_checks.refusal_rate(facts.alert_facts),
    ]
