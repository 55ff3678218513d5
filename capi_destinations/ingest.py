"""Recording events: ``track()`` and ``track_many()``.

Every event goes the same way, whether it comes from server code, the HTTP endpoint or the
browser helper: enrich it from the request (IP, user agent, ``_fbp``/``_fbc`` cookies, an
``fbclid`` in the page URL), normalize and hash its user_data, diagnose it, apply the
destination's consent policy, and insert it idempotently on (destination, event_name, event_id).

Plaintext customer information never reaches the database: the stored payload is the
Meta-ready server event with user_data already hashed, and a user_data that cannot be read is
not stored at all. Recording never waits on Meta; after commit the ``events_recorded`` signal
tells the delivery side that pending events are waiting.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from typing import Any, overload

from django.db import router, transaction
from django.db.models.base import ModelState
from django.http import HttpRequest
from django.views.decorators.debug import sensitive_variables

from capi_destinations import (
    click_ids,
    click_memory,
    clock,
    consent,
    counters,
    diagnostics,
    eventstore,
    normalize,
    ratelimit,
    routing,
)
from capi_destinations.conf import app_settings
from capi_destinations.eventstore import EventStore
from capi_destinations.eventstore.base import json_writer
from capi_destinations.findings import ERROR, INFO, WARNING, Diagnostic, has_errors, severity_rank
from capi_destinations.models import (
    Destination,
    Event,
    EventStatus,
    HourlyOutcomes,
    problem_status_of,
)
from capi_destinations.signals import events_recorded

__all__ = [
    "DUPLICATE",
    "REJECTED",
    "SERVER_EVENT_KEYS",
    "STORED",
    "SUPPRESSED",
    "TrackResult",
    "track",
    "track_many",
]

STORED = "stored"
REJECTED = "rejected"
SUPPRESSED = "suppressed"
DUPLICATE = "duplicate"

#: The server-event keys Meta knows; anything else is left out of the stored payload
#: (``diagnose`` reports each one as ``unknown_event_key``).
SERVER_EVENT_KEYS = diagnostics.SERVER_EVENT_KEYS

_EVENT_NAME_MAX = Event._meta.get_field("event_name").max_length or 100
_EVENT_ID_MAX = Event._meta.get_field("event_id").max_length or 255
_ACTION_SOURCE_MAX = Event._meta.get_field("action_source").max_length or 32
_RESULT_FOR_STATUS: dict[str, str] = {
    EventStatus.PENDING: STORED,
    EventStatus.REJECTED: REJECTED,
    EventStatus.SUPPRESSED: SUPPRESSED,
}


@dataclass(frozen=True)
class TrackResult:
    """What became of one event handed to ``track``/``track_many``.

    ``status`` is ``stored`` (pending, will be sent), ``rejected`` (stored with the errors that
    stop it from being sent), ``suppressed`` (stored, never sent, because of consent) or
    ``duplicate`` (not stored again: ``event`` is then the ORIGINAL row with that
    event_name and event_id). ``diagnostics`` are the findings about the event as sent;
    ``index`` is its position in the batch.
    """

    status: str
    event: Event
    diagnostics: list[Diagnostic]
    index: int = 0

    @property
    def is_duplicate(self) -> bool:
        """Whether the event was already recorded (``event`` is the original)."""
        return self.status == DUPLICATE

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary, as the ingest endpoint answers it."""
        return {
            "index": self.index,
            "status": self.status,
            "id": self.event.pk,
            "event_id": self.event.event_id,
            "diagnostics": [diagnostic.to_dict() for diagnostic in self.diagnostics],
        }


# Tells "no event given" from an event that is None (recorded as rejected, as any bad value).
_NO_EVENT: Any = object()


@overload
def track(
    destination: Destination, event: Mapping[str, Any], *, request: HttpRequest | None = None
) -> TrackResult: ...


@overload
def track(
    *,
    event: Mapping[str, Any],
    destinations: Iterable[Destination],
    request: HttpRequest | None = None,
) -> list[TrackResult]: ...


# Raw customer data (email, phone, names) is in this frame and every frame it calls.
@sensitive_variables()
def track(
    destination: Destination | None = None,
    event: Any = _NO_EVENT,
    *,
    request: HttpRequest | None = None,
    destinations: Iterable[Destination] | None = None,
) -> TrackResult | list[TrackResult]:
    """Record one event for ``destination``; see ``track_many``.

    ``track(event=..., destinations=[a, b])`` records it for each destination (fan-out: the
    agency's own pixel and the client's, say), independently and with the same event_id, and
    returns one result per destination, in order.
    """
    if event is _NO_EVENT:
        raise TypeError("track() needs the event.")
    if destinations is not None:
        if destination is not None:
            raise TypeError("Give either a destination or destinations=[...], not both.")
        return [track_many(each, [event], request=request)[0] for each in destinations]
    if destination is None:
        raise TypeError("track() needs a destination (or destinations=[...]).")
    return track_many(destination, [event], request=request)[0]


@sensitive_variables()
def track_many(
    destination: Destination,
    events: Iterable[Mapping[str, Any]],
    *,
    request: HttpRequest | None = None,
) -> list[TrackResult]:
    """Record events for ``destination`` in bulk and say what became of each, in order.

    Each event is a dict as a developer writes it (``event_name``, ``event_time``,
    ``event_id``, ``action_source``, ``event_source_url``, ``user_data`` with raw or hashed
    values and Meta's keys or aliases, ``custom_data``, ``consent``). With ``request``, the
    visitor's IP address (REMOTE_ADDR, or the ``TRUSTED_PROXY_HEADER``), user agent and
    ``_fbp``/``_fbc`` cookies fill the user_data keys the event leaves empty. Always: a missing
    ``event_time`` becomes now (the ``event_time_filled`` note says so), a missing ``event_id``
    becomes ``srv_<hex>`` (the ``missing_event_id`` warning stays: the Pixel cannot share it),
    and an ``fbclid`` in ``event_source_url`` becomes ``fbc`` when there is none or the one
    given holds another click (the freshest click wins), first seen at the event's time.

    Events already recorded (same destination, event_name and event_id, also earlier in the
    same batch or from a concurrent request) are not stored again; if their content differs,
    the original gets the ``event_id_reused`` diagnostic. The one exception is a ``rejected``
    original (never sent): a copy that differs from it, or now passes the checks, replaces it in
    place (same row id, the ``replaced_rejected`` note). Storing takes one INSERT per chunk of
    up to 500 events (plus one SELECT and one UPDATE when there are duplicates or rejected
    originals to replace); on PostgreSQL in autocommit that INSERT also remembers the click IDs
    and adds the rows to the hourly counters, and a batch of more than 250 events with distinct
    keys is stored in pieces of 250, PostgreSQL running one piece's statements while the next
    piece is prepared (``_track_in_pieces``: a refused piece raises, the pieces before it stay
    stored). Once that is committed (at once in autocommit, else with the caller's
    transaction), ``events_recorded`` is sent when events are waiting.

    An event without ``fbc`` or ``fbp`` that names a person this client's events carried them
    with before (external_id, email or phone; within ``CLICK_ID_FILL_DAYS``) gets the most
    recent ones (the ``click_id_filled`` note says from when); see :mod:`click_memory`.
    """
    now = clock.now()
    context = _Context(destination, now, _enrichment(request))
    if context.routing.exclude_staff:
        # Only then: reading request.user loads the session (and makes the answer vary on it).
        context.staff_request = _is_staff_request(request)
    raw_events = list(events)
    if not raw_events:
        return []
    database = router.db_for_write(Event)
    store = eventstore.store_for(database)
    # No transaction of our own: every statement is safe alone (the insert is idempotent, the
    # diagnostic append guarded), and BEGIN/COMMIT round trips would cost a single-event request
    # more than the insert. Inside the caller's transaction the events commit with it.
    if len(raw_events) > _PIECE and store.overlaps and _keys_distinct(raw_events):
        count_hour = _count_hour(store)
        if count_hour is not None:
            results, pending = _track_in_pieces(raw_events, context, store, count_hour)
            _announce(destination, pending, database)
            return results
    prepared = [_prepare(event, index, context) for index, event in enumerate(raw_events)]
    _fill_remembered_click_ids(prepared, context)
    _finish(prepared)
    sightings = _click_id_sightings(prepared, context)
    along = _remembered_along(sightings, store, context)
    with store.writing():
        results, pending = _store(prepared, store, along)
    if sightings and along is None:
        click_memory.remember(destination.tenant_id, sightings)
    _announce(destination, pending, database)
    return results


def _announce(destination: Destination, pending: int, database: str) -> None:
    """Send ``events_recorded`` once the events are committed, if any is waiting."""
    if pending:
        destination_id = destination.pk
        transaction.on_commit(
            lambda: events_recorded.send(
                sender=Event, destination_id=destination_id, count=pending
            ),
            using=database,
        )


def _remembered_along(
    sightings: list[click_memory.Sighting], store: EventStore, context: _Context
) -> tuple[str, list[Any]] | None:
    """The click-memory UPSERT to run inside the event INSERT, where the database allows it
    (PostgreSQL): one round trip fewer, and written exactly when the events are. None when the
    caller must remember the sightings apart (or there are none)."""
    if not sightings or not store.combines_statements:
        return None
    return click_memory.remember_statement(store.alias, context.destination.tenant_id, sightings)


# --- a large batch in pieces, the INSERT of one overlapping the preparation of the next ------

#: Events per piece of a batch stored in pieces (``_track_in_pieces``).
_PIECE = 250


def _track_in_pieces(
    raw_events: list[Any], context: _Context, store: EventStore, count_hour: datetime
) -> tuple[list[TrackResult], int]:
    """``track_many``'s work for a large batch in autocommit on PostgreSQL, in pieces, so that
    this process and PostgreSQL work at once: each statement runs in a thread on the same
    connection (the driver waits for the server without the GIL) while this thread goes on.

    1. Each piece is prepared (normalized, diagnosed, encoded) while PostgreSQL runs the click
       memory's recall for the piece before.
    2. Each piece is filled from its recall and made final while PostgreSQL inserts the piece
       before, with the hourly counters and that piece's click IDs to remember.

    Every recall has run before any piece's click IDs are remembered, so no event fills from
    another of the same call, as in one batch. Only called when no two events share a key
    (``_keys_distinct``): then no event of one piece is a duplicate of another's, and the
    results are those of storing the batch at once (a test compares them event by event). Each
    statement is its own transaction, as in autocommit anyway, and takes its rows in key order,
    so concurrent calls cannot deadlock. On an error the pieces already inserted stay stored,
    with their click IDs, as the chunks before a failing INSERT always did; the call raises.
    """
    pieces: list[list[_Prepared]] = []
    recalled: list[dict[int, list[click_memory.Recalled]]] = []
    # The one statement in flight on the connection: a recall, or a piece's INSERT.
    recall: Callable[[], dict[int, list[click_memory.Recalled]]] | None = None
    finish: Callable[[], tuple[list[TrackResult], int]] | None = None
    results: list[TrackResult] = []
    pending = 0
    apart: list[click_memory.Sighting] = []  # where the INSERT cannot remember them itself
    try:
        for start in range(0, len(raw_events), _PIECE):
            piece = raw_events[start : start + _PIECE]
            pieces.append([_prepare(event, start + n, context) for n, event in enumerate(piece)])
            if recall is not None:
                waiting, recall = recall, None
                recalled.append(waiting())
            recall = _recall_started(pieces[-1], context, background=True)
        # More than one piece (a batch of more than _PIECE): every recall but the last is
        # answered by now; the last one is waited for below, before the first INSERT.
        for number, prepared in enumerate(pieces):
            _fill_click_ids(prepared, recalled[number])
            _finish(prepared)
            sightings = _click_id_sightings(prepared, context)
            along = _remembered_along(sightings, store, context)
            if along is None:
                apart.extend(sightings)
            if recall is not None:
                # The last recall ran while the first piece was made final; it is answered
                # before the first click ID is remembered.
                waiting, recall = recall, None
                recalled.append(waiting())
            if finish is not None:
                finishing, finish = finish, None
                done, waiting_events = finishing()
                results.extend(done)
                pending += waiting_events
            finish = _store_started(prepared, store, along, count_hour, background=True)
    except BaseException:
        # The statement in flight ends before the error goes up (the connection is ours
        # again); the first error is the one raised.
        for in_flight in (recall, finish):
            if in_flight is not None:
                with suppress(Exception):
                    in_flight()
        raise
    assert finish is not None
    done, waiting_events = finish()
    results.extend(done)
    pending += waiting_events
    if apart:
        click_memory.remember(context.destination.tenant_id, apart)
    return results, pending


def _keys_distinct(raw_events: list[Any]) -> bool:
    """Whether no two of the events will be stored under the same (event_name, event_id).

    As ``_cleaned_event`` and ``_storable_key`` make the key; an event whose id will be
    generated is unique.
    """
    seen: set[tuple[str, str]] = set()
    for raw in raw_events:
        if not isinstance(raw, Mapping):
            continue
        raw_id = raw.get("event_id")
        if isinstance(raw_id, int) and not isinstance(raw_id, bool):
            event_id = str(raw_id)
        elif isinstance(raw_id, str) and raw_id.strip():
            event_id = _storable_text(raw_id)
            if not event_id.strip():
                return False  # a case for the general path (made of NULs, say)
        else:
            continue
        if len(event_id) > _EVENT_ID_MAX:
            continue
        name = raw.get("event_name")
        key = (_storable_text(name)[:_EVENT_NAME_MAX] if isinstance(name, str) else "", event_id)
        if key in seen:
            return False
        seen.add(key)
    return True


# --- preparing one event ------------------------------------------------------------------


@dataclass(frozen=True)
class _Enrichment:
    """What a request says about the visitor, read once per call."""

    ip: str | None = None
    user_agent: str | None = None
    fbp: str | None = None
    fbc: str | None = None


def _is_staff_request(request: HttpRequest | None) -> bool:
    """Whether the request is a logged-in staff user's (the client may exclude their events)."""
    user = getattr(request, "user", None)
    return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_staff", False))


def _enrichment(request: HttpRequest | None) -> _Enrichment:
    if request is None:
        return _Enrichment()
    return _Enrichment(
        ip=ratelimit.client_address(request),
        user_agent=request.META.get("HTTP_USER_AGENT") or None,
        fbp=request.COOKIES.get(click_ids.FBP_COOKIE) or None,
        fbc=request.COOKIES.get(click_ids.FBC_COOKIE) or None,
    )


class _Context:
    """Per-call values every event of the batch shares."""

    __slots__ = (
        "default_country",
        "destination",
        "enrichment",
        "has_enrichment",
        "now",
        "now_ms",
        "now_seconds",
        "routing",
        "staff_request",
    )

    def __init__(self, destination: Destination, now: datetime, enrichment: _Enrichment) -> None:
        self.destination = destination
        self.now = now
        self.now_seconds = int(now.timestamp())
        self.now_ms = int(now.timestamp() * 1000)
        self.enrichment = enrichment
        self.has_enrichment = enrichment != _Enrichment()
        self.default_country = destination.default_country or app_settings.DEFAULT_COUNTRY or None
        tenant = destination.tenant
        self.routing = routing.Routing.of(
            event_filter=destination.event_filter,
            event_filter_names=destination.event_filter_names,
            minimum_purchase_value=destination.minimum_purchase_value,
            exclude_staff=tenant.exclude_staff,
            excluded_networks=tenant.excluded_networks,
            test_flag=tenant.test_flag,
        )
        self.staff_request = False


@dataclass
class _Prepared:
    """One event made ready to insert, with what the caller will be told about it."""

    index: int
    row: Event
    diagnostics: list[Diagnostic]
    key: tuple[str, str]
    payload_json: str = ""
    inserted: bool = False
    # What the content hash leaves out (filled in by us, not the caller: see _canonical_payload).
    without_time: bool = False
    without_fbc: bool = False
    # The user_data keys filled from click_memory (never remembered again as a sighting).
    filled: tuple[str, ...] = ()
    # Added to the hourly counters by the INSERT itself (see _count_hour).
    counted: bool = False
    # Whether the event's user_data is scored for match quality (it was an object).
    scored: bool = False
    # The person's (key, digest) in the user_data, once read (click_memory.identifiers).
    identifiers: list[tuple[str, str]] | None = None
    original: Event | None = field(default=None, repr=False)


def _prepare(raw: Any, index: int, context: _Context) -> _Prepared:
    try:
        return _prepare_event(raw, index, context)
    except UnicodeEncodeError:
        # A lone UTF-16 surrogate (valid in JSON escapes, not in UTF-8) cannot be hashed or
        # stored; the event is read again with such characters replaced.
        return _prepare_event(_json_safe(raw), index, context)
    except ValueError:
        # An integer too long for Python to write as text (over sys.get_int_max_str_digits(),
        # 4300 digits by default) has no JSON form; only track() can be handed one. It is read
        # again as the infinity it approaches, so each numeric field's check rejects it by the
        # same rule as 1e400, and elsewhere it is stored as null.
        unwritable = _without_unwritable_integers(raw)
        if unwritable is raw:
            raise
        return _prepare(unwritable, index, context)


def _without_unwritable_integers(value: Any, depth: int = 0) -> Any:
    """``value`` with every integer that cannot become text replaced by ±infinity.

    Returns ``value`` itself (the same object) when it holds no such integer.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            str(value)
        except ValueError:
            return math.inf if value > 0 else -math.inf
        return value
    if depth > 64:
        return value
    if isinstance(value, Mapping):
        pairs = [
            (
                _without_unwritable_integers(key, depth + 1),
                _without_unwritable_integers(item, depth + 1),
            )
            for key, item in value.items()
        ]
        changed = any(
            new_key is not key or new_item is not item
            for (new_key, new_item), (key, item) in zip(pairs, value.items(), strict=True)
        )
        return dict(pairs) if changed else value
    if isinstance(value, list | tuple | set | frozenset):
        listed = [_without_unwritable_integers(item, depth + 1) for item in value]
        changed = any(new is not old for new, old in zip(listed, value, strict=True))
        return listed if changed else value
    return value


def _prepare_event(raw: Any, index: int, context: _Context) -> _Prepared:
    event, time_was_filled = _cleaned_event(raw, context)
    report, fbc_was_built = _user_data_report(event, context)
    _plain_numbers(event)
    consent_state, found = _findings(raw, event, context, report)
    if fbc_was_built is _REPLACED:
        found.append(_fbc_from_url())
    if time_was_filled:
        found.append(_event_time_filled())

    event_name, event_id = _storable_key(event, found)
    event_time = diagnostics.parse_event_time(event["event_time"])
    payload = _server_payload(event, event_id, event_time, report)
    _leave_out_refused_fields(payload, found)
    destination = context.destination
    verdict = consent.evaluate_consent(
        consent_state,
        policy=destination.consent_policy,
        missing_consent=destination.missing_consent,
    )
    _apply_processing_options(payload, verdict)
    if len(found) > 1:
        # diagnose() sorted its own findings; consent's and ours were added after them.
        found.sort(key=lambda finding: severity_rank(finding.severity))
    suppression = (
        None
        if context.routing.is_open
        else context.routing.suppression(payload, staff_request=context.staff_request)
    )
    status, reason = _status(found, verdict, suppression)

    action_source = event.get("action_source")
    columns = {
        "id": None,
        "destination_id": destination.pk,
        "event_name": event_name,
        "event_id": event_id,
        "event_time": event_time or context.now,
        "action_source": _storable_text(action_source)[:_ACTION_SOURCE_MAX]
        if isinstance(action_source, str)
        else "",
        # Made canonical, hashed and scored by _finish(), once the click memory has filled it.
        "payload": payload,
        "payload_hash": "",
        "consent": _json_safe(consent_state) if consent_state is not None else None,
        "status": status,
        "status_reason": _storable_text(reason),
        "attempts": 0,
        "diagnostics": [_stored_diagnostic(finding) for finding in found],
        "match_quality": 0.0,
        "delivered_at": None,
        "delivered_by_id": None,
        "created_at": context.now,
        "updated_at": context.now,
    }
    row = _new_event(columns)
    # Every row of the batch points at the same destination: spare a query per row on access.
    row._state.fields_cache["destination"] = destination
    return _Prepared(
        index=index,
        row=row,
        diagnostics=found,
        key=(event_name, event_id),
        without_time=time_was_filled,
        without_fbc=bool(fbc_was_built),
        scored=report is not None,
    )


def _finish(prepared: list[_Prepared]) -> None:
    """Each event's payload made canonical and hashed, and its match quality: done once the
    click memory has filled what it fills (``_fill_remembered_click_ids``), so only once."""
    for item in prepared:
        row = item.row
        if item.scored:
            row.match_quality = diagnostics.match_quality_score(row.payload["user_data"])
        row.payload, item.payload_json, row.payload_hash = _canonical_payload(
            row.payload,
            without_time=item.without_time,
            without_user_data=(*(("fbc",) if item.without_fbc else ()), *item.filled),
        )


def _cleaned_event(raw: Any, context: _Context) -> tuple[dict[str, Any], bool]:
    """A copy of the event with storable key texts and an event_time; (event, time filled)."""
    # Here and below, a plain dict is tried before the Mapping ABC, whose isinstance() costs
    # more than most of the checks it guards (several per event).
    event: dict[str, Any] = dict(raw) if (type(raw) is dict or isinstance(raw, Mapping)) else {}
    for key in ("event_name", "event_id", "action_source"):
        # Cleaned before diagnosis, so that a name or id made only of characters no database
        # stores (NUL, lone surrogates) is judged, and replaced, as the missing value it is.
        value = event.get(key)
        if isinstance(value, str):
            event[key] = _storable_text(value)
    if event.get("event_time") in (None, ""):
        event["event_time"] = context.now_seconds
        return event, True
    return event, False


def _user_data_report(
    event: dict[str, Any], context: _Context
) -> tuple[normalize.NormalizedUserData | None, str]:
    """The enriched user_data normalized (None if it is not an object), and what became of fbc."""
    user_data = event.get("user_data")
    if user_data is None:
        user_data = event["user_data"] = {}
    if not (type(user_data) is dict or isinstance(user_data, Mapping)):
        return None, ""
    user_data = event["user_data"] = dict(user_data)
    fbc_was_built = _enrich_user_data(user_data, event, context)
    report = normalize.normalize_user_data_report(user_data, country=context.default_country)
    return report, fbc_was_built


def _findings(
    raw: Any,
    event: dict[str, Any],
    context: _Context,
    report: normalize.NormalizedUserData | None,
) -> tuple[dict[str, Any] | None, list[Diagnostic]]:
    """The event's diagnosis and its consent findings; (consent state, findings)."""
    if type(raw) is dict or isinstance(raw, Mapping):
        found = diagnostics.diagnose(
            event,
            now=context.now,
            default_country=context.default_country,
            user_data_report=report,
        )
    else:
        found = diagnostics.diagnose(raw, now=context.now)
    consent_state, consent_findings = consent.parse_consent(event.get("consent"))
    found.extend(consent_findings)
    if type(raw) is dict or isinstance(raw, Mapping):
        found.extend(consent.check_data_processing_options(event))
    return consent_state, found


def _server_payload(
    event: dict[str, Any],
    event_id: str,
    event_time: datetime | None,
    report: normalize.NormalizedUserData | None,
) -> dict[str, Any]:
    """The Meta server event to store: Meta's keys only, user_data normalized and hashed."""
    payload = {key: value for key, value in event.items() if key in SERVER_EVENT_KEYS}
    payload["event_id"] = event_id
    payload["user_data"] = report.user_data if report is not None else {}
    if event_time is not None:
        payload["event_time"] = int(event_time.timestamp())
    custom_data = event.get("custom_data")
    if type(custom_data) is dict or isinstance(custom_data, Mapping):
        payload["custom_data"] = _meta_custom_data(custom_data)
    else:
        payload.pop("custom_data", None)
    return payload


def _apply_processing_options(payload: dict[str, Any], verdict: consent.ConsentVerdict) -> None:
    """Write the consent verdict's data-processing fields into the payload, if it has any."""
    if verdict.data_processing_options is None:
        return
    payload["data_processing_options"] = list(verdict.data_processing_options)
    for key in ("data_processing_options_country", "data_processing_options_state"):
        value = getattr(verdict, key)
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value


def _status(
    found: list[Diagnostic], verdict: consent.ConsentVerdict, suppression: str | None
) -> tuple[str, str]:
    """The stored event's (status, status_reason): errors first, then the destination's filter
    and the client's exclusions, then consent."""
    if has_errors(found):
        return EventStatus.REJECTED, _rejection_reason(found)
    if suppression is not None:
        return EventStatus.SUPPRESSED, suppression
    if not verdict.send:
        return EventStatus.SUPPRESSED, verdict.reason
    return EventStatus.PENDING, ""


def _new_event(columns: dict[str, Any]) -> Event:
    """An unsaved ``Event`` holding ``columns`` (keyed by attname), as ``Event(**columns)``.

    ``Model.__init__`` walks all twenty fields through descriptors (~9 µs per event, a tenth of
    ingestion); every field here is a plain attribute, so the values go into the instance's
    dict directly. The model has no ``pre_init``/``post_init`` receivers to skip (checked in
    tests/test_ingest.py).
    """
    row = Event.__new__(Event)
    row._state = ModelState()
    row.__dict__.update(columns)
    # The database computes this column from the status; the instance holds what it stores.
    row.__dict__["problem_status"] = problem_status_of(columns["status"])
    return row


# What _enrich_user_data did with fbc: built it where there was none, or replaced an older one.
_BUILT = "built"
_REPLACED = "replaced"


def _enrich_user_data(
    user_data: dict[str, Any], event: Mapping[str, Any], context: _Context
) -> str:
    """Fill empty keys from the request and the page URL; says what it did with fbc.

    Returns "" (fbc untouched), ``_BUILT`` or ``_REPLACED``. Meta asks for the most recent
    click: an fbclid in the page URL is newer than any fbc cookie or value holding another
    fbclid, so it replaces them; one holding the same fbclid is kept (it says when it was
    first seen).
    """
    fbclid = click_ids.fbclid_of_url(event.get("event_source_url"))
    if not context.has_enrichment and fbclid is None:
        return ""
    given = _fill_from_request(user_data, context.enrichment)
    if fbclid is None or _keeps_given_fbc(user_data, given, fbclid):
        return ""
    for key in [key for key in user_data if normalize.canonical_key(key) == "fbc"]:
        del user_data[key]
    # Meta's documented form: fb.<subdomain index 1>.<first seen, ms>.<fbclid as it is>. First
    # seen is now, or the event's own time for an event sent later: never after the conversion.
    first_seen = context.now_ms
    event_time = diagnostics.parse_event_time(event.get("event_time"))
    if event_time is not None:
        first_seen = min(first_seen, int(event_time.timestamp()) * 1000)
    user_data["fbc"] = click_ids.build_fbc(fbclid, created_ms=first_seen)
    return _REPLACED if "fbc" in given else _BUILT


def _fill_from_request(user_data: dict[str, Any], enrichment: _Enrichment) -> set[str | None]:
    """Fill the keys the caller left empty from the request; returns the keys now given."""
    # The caller's own values always win, whether given under Meta's key or an alias.
    given = {
        normalize.canonical_key(key)
        for key, value in user_data.items()
        if value is not None and value != "" and value != []
    }
    for key, value in (
        ("client_ip_address", enrichment.ip),
        ("client_user_agent", enrichment.user_agent),
        ("fbp", enrichment.fbp),
        ("fbc", enrichment.fbc),
    ):
        if value is not None and key not in given:
            user_data[key] = value
            given.add(key)
    return given


def _keeps_given_fbc(user_data: dict[str, Any], given: set[str | None], fbclid: str) -> bool:
    """Whether the fbc given stays: the same click (seen first back then), or a value diagnose
    reports; False when there is none."""
    if "fbc" not in given:
        return False
    current = next(
        (
            value
            for key, value in user_data.items()
            if normalize.canonical_key(key) == "fbc" and value
        ),
        None,
    )
    return not isinstance(current, str) or click_ids.fbclid_of_fbc(current) == fbclid


# --- click IDs remembered per person (click_memory) ------------------------------------------


def _fill_remembered_click_ids(prepared: list[_Prepared], context: _Context) -> None:
    """Fill the fbc/fbp an event lacks from click_memory (one query for the batch).

    Runs on the prepared events before ``_finish``: their user_data is normalized, so the
    person's identifiers are the digests sent to Meta. Filling never changes a verdict (an
    event naming a person already has a strong key); it adds the ``click_id_filled`` note and
    raises the match quality. The content hash leaves filled values out, as it does an fbc
    built from fbclid.
    """
    _fill_click_ids(prepared, _recall_started(prepared, context, background=False)())


def _recall_started(
    prepared: list[_Prepared], context: _Context, *, background: bool
) -> Callable[[], dict[int, list[click_memory.Recalled]]]:
    """The click memory's recall for the events that lack a click ID and name a person
    (``click_memory.recall_started``); the function returned waits for what to fill."""
    destination = context.destination
    if not app_settings.CLICK_ID_FILL_DAYS:
        return dict
    wanted = {}
    for item in prepared:
        row = item.row
        user_data = row.payload.get("user_data")
        if row.status == EventStatus.REJECTED or not isinstance(user_data, dict):
            continue
        lacking = tuple(key for key in click_memory.CLICK_KEYS if not user_data.get(key))
        if not lacking or not _allows_ad_storage(row.consent, destination):
            continue
        found = item.identifiers = click_memory.identifiers(user_data)
        if found:
            wanted[item.index] = (min(row.event_time, context.now), found, lacking)
    return click_memory.recall_started(destination.tenant_id, wanted, background=background)


def _fill_click_ids(
    prepared: list[_Prepared], recalled: dict[int, list[click_memory.Recalled]]
) -> None:
    """Fill into each event what the click memory recalled for it, with a note saying so."""
    if not recalled:
        return
    for item in prepared:
        filled = recalled.get(item.index)
        if not filled:
            continue
        row = item.row
        user_data = dict(row.payload["user_data"])
        for remembered in filled:
            user_data[remembered.key] = remembered.value
            note = _click_id_filled(remembered)
            item.diagnostics.append(note)
            row.diagnostics.append(_stored_diagnostic(note))
        item.filled = tuple(remembered.key for remembered in filled)
        row.payload = {**row.payload, "user_data": user_data}


def _allows_ad_storage(state: Any, destination: Destination) -> bool:
    """Whether an event's parsed consent state lets its click IDs be remembered or filled."""
    return consent.allows_ad_storage(
        state if isinstance(state, dict) else None, missing_consent=destination.missing_consent
    )


def _click_id_filled(item: click_memory.Recalled) -> Diagnostic:
    return Diagnostic(
        code="click_id_filled",
        field=f"user_data.{item.key}",
        severity=INFO,
        message=f"The event carried no {item.key}, so the one seen with this person "
        f"({item.matched_by}) on {item.seen_at:%Y-%m-%d %H:%M} UTC was filled in: Meta can "
        "match the event to that browser and ad click.",
        fix="Nothing to do. On an erasure request, capi_destinations.forget() removes what "
        "is remembered about a person.",
    )


def _click_id_sightings(
    prepared: list[_Prepared], context: _Context
) -> list[click_memory.Sighting]:
    """The fbc/fbp each event carried with the person it names, to remember."""
    if not app_settings.CLICK_ID_FILL_DAYS:
        return []  # the click memory is off: nothing is kept for a filling that never happens
    destination = context.destination
    sightings: list[click_memory.Sighting] = []
    for item in prepared:
        row = item.row
        user_data = row.payload.get("user_data") if isinstance(row.payload, dict) else None
        if row.status == EventStatus.REJECTED or not isinstance(user_data, dict):
            continue
        values = {
            key: user_data[key]
            for key in click_memory.CLICK_KEYS
            if key not in item.filled and click_ids.is_click_id_value(user_data.get(key))
        }
        if not values:
            continue
        if not _allows_ad_storage(row.consent, destination):
            continue
        given = row.consent.get("ad_storage") if isinstance(row.consent, dict) else None
        ad_storage = "granted" if given is not None else "default"
        seen_at = min(row.event_time, context.now)
        # Filling adds fbc/fbp only: the identifiers read before filling are still these.
        found = item.identifiers
        if found is None:
            found = click_memory.identifiers(user_data)
        for identifier_key, digest in found:
            sightings.extend(
                click_memory.Sighting(digest, identifier_key, key, value, seen_at, ad_storage)
                for key, value in values.items()
            )
    return sightings


def _event_time_filled() -> Diagnostic:
    return Diagnostic(
        code="event_time_filled",
        field="event_time",
        severity=WARNING,
        message="The event had no event_time, so the moment we recorded it was used; if it "
        "happened earlier (an event sent later, from a queue or an import), that time is wrong.",
        fix="Send event_time, the moment the action happened, in Unix seconds "
        "(int(time.time()) in Python, Math.floor(Date.now() / 1000) in JavaScript).",
    )


def _leave_out_refused_fields(payload: dict[str, Any], found: list[Diagnostic]) -> None:
    """Remove the fields Meta would refuse (the whole request with them), as diagnosed."""
    for finding in found:
        if finding.code in diagnostics.DROPPED_FIELD_CODES:
            _remove_path(payload, finding.field)
        elif finding.code == "ldu_location_filled":
            payload["data_processing_options_country"] = 0
            payload["data_processing_options_state"] = 0


_PATH_STEP = re.compile(r"([^.\[\]]+)(?:\[(\d+)\])?")


def _remove_path(payload: dict[str, Any], path: str) -> None:
    """Remove ``custom_data.contents[2].delivery_category`` (and such) from ``payload``.

    Containers on the way are copied, so no caller's dict or list is changed.
    """
    steps = [(match[1], match[2]) for match in _PATH_STEP.finditer(path)]
    container: Any = payload
    for position, (key, index) in enumerate(steps):
        last = position == len(steps) - 1
        if not isinstance(container, dict) or key not in container:
            return
        if last and index is None:
            del container[key]
            return
        value = container[key]
        if index is not None:
            if not isinstance(value, list) or int(index) >= len(value):
                return
            value = container[key] = list(value)
            if last:
                return  # a list item itself is never left out here
            item = value[int(index)]
            if not isinstance(item, Mapping):
                return
            value[int(index)] = dict(item)
            container = value[int(index)]
        else:
            if not isinstance(value, Mapping):
                return
            container[key] = dict(value)
            container = container[key]


def _fbc_from_url() -> Diagnostic:
    return Diagnostic(
        code="fbc_from_url",
        field="user_data.fbc",
        severity=INFO,
        message="The page URL carries a newer Meta ad click (fbclid) than the fbc given (or "
        "the _fbc cookie), so fbc was built from the URL: Meta asks for the most recent click.",
        fix="Nothing to do; refresh the _fbc cookie when a new fbclid arrives to keep them equal.",
    )


def _plain_numbers(event: dict[str, Any]) -> None:
    """Decimals (what Django shops hold money in) become floats before anything reads them."""
    custom_data = event.get("custom_data")
    if not (type(custom_data) is dict or isinstance(custom_data, Mapping)):
        return
    contents = custom_data.get("contents")
    items = contents if isinstance(contents, list) else ()
    needs_copy = isinstance(custom_data.get("value"), Decimal) or any(
        isinstance(item, Mapping) and isinstance(item.get("item_price"), Decimal) for item in items
    )
    if not needs_copy:
        return
    copied = dict(custom_data)
    if isinstance(copied.get("value"), Decimal):
        copied["value"] = _decimal_to_float(copied["value"])
    if isinstance(copied.get("contents"), list):
        copied["contents"] = [
            {**item, "item_price": _decimal_to_float(item["item_price"])}
            if isinstance(item, Mapping) and isinstance(item.get("item_price"), Decimal)
            else item
            for item in copied["contents"]
        ]
    event["custom_data"] = copied


def _decimal_to_float(value: Decimal) -> float | str:
    # A Decimal with no finite float (NaN, Infinity, or 1E+400, which float() makes infinite)
    # stays text, kept as given, so diagnose reports it as not a number or out of range.
    number = float(value) if value.is_finite() else math.nan
    return number if math.isfinite(number) else str(value)


def _meta_custom_data(custom_data: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(custom_data)
    currency = result.get("currency")
    if currency is not None:
        normalized = normalize.normalize_currency(currency)
        if normalized is not None:
            result["currency"] = normalized
    value = result.get("value")
    if isinstance(value, str):
        # diagnose warned about it; Meta wants a JSON number, so send one.
        try:
            number = float(value.strip())
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                result["value"] = number
    return result


def _storable_key(event: dict[str, Any], found: list[Diagnostic]) -> tuple[str, str]:
    """The (event_name, event_id) the row is stored under, generating an id where needed."""
    name = event.get("event_name")
    event_name = _storable_text(name) if isinstance(name, str) else ""
    if len(event_name) > _EVENT_NAME_MAX:
        found.append(_too_long("event_name", _EVENT_NAME_MAX))
        event_name = event_name[:_EVENT_NAME_MAX]

    raw_id = event.get("event_id")
    event_id: str | None = None
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        event_id = str(raw_id)
    elif isinstance(raw_id, str) and raw_id.strip():
        event_id = _storable_text(raw_id)
    if event_id is not None and len(event_id) > _EVENT_ID_MAX:
        found.append(_too_long("event_id", _EVENT_ID_MAX))
        event_id = None
    if event_id is None:
        # Missing (diagnose already warned that the Pixel cannot share it) or unusable: a
        # server-side id still keeps the row unique and retries of this exact call apart.
        event_id = f"srv_{uuid.uuid4().hex}"
    return event_name, event_id


def _storable_text(text: str) -> str:
    """Text any database can store: no NUL characters, no lone UTF-16 surrogates."""
    if text.isascii():
        return text.replace("\x00", "") if "\x00" in text else text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "")


def _too_long(field_name: str, limit: int) -> Diagnostic:
    return Diagnostic(
        code="field_too_long",
        field=field_name,
        severity=ERROR,
        message=f"{field_name} is longer than {limit} characters, more than can be stored.",
        fix=f"Send a {field_name} of at most {limit} characters.",
    )


@lru_cache(maxsize=4096)
def _stored_diagnostic(finding: Diagnostic) -> dict[str, Any]:
    """``finding.to_dict()`` with text any database stores (messages quote event names).

    Cached because most events share their findings, and ``to_dict`` is slow; the dicts are
    never changed in place.
    """
    return {
        key: _storable_text(value) if isinstance(value, str) else value
        for key, value in finding.to_dict().items()
    }


def _rejection_reason(found: list[Diagnostic]) -> str:
    errors = [finding.message for finding in found if finding.severity == ERROR]
    return "Not sent: " + " ".join(errors)


# --- canonical JSON -----------------------------------------------------------------------


#: Canonical JSON: sorted keys, no spaces (what the content hash is taken over).
_dumps = json_writer(canonical=True)


def _canonical_payload(
    payload: dict[str, Any], *, without_time: bool, without_user_data: tuple[str, ...] = ()
) -> tuple[dict[str, Any], str, str]:
    """The payload made JSON-safe for every database, its JSON text, and its content hash.

    The hash is SHA-256 of the canonical JSON (sorted keys). It leaves out what we filled in
    ourselves (a defaulted event_time, an fbc built from fbclid with the current time), so a
    retry of the same call hashes the same and only a real difference (another value, another
    customer) counts as a reused event_id.
    """
    encoded: bytes | None
    try:
        text = _dumps(payload)
        encoded = text.encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        payload = _json_safe(payload)
        text, encoded = _dumps(payload), None
    else:
        # NUL is valid JSON but PostgreSQL's jsonb refuses it.
        if "\\u0000" in text:
            payload = _json_safe(payload)
            text, encoded = _dumps(payload), None
    if without_time or without_user_data:
        fingerprint = dict(payload)
        if without_time:
            fingerprint.pop("event_time", None)
        if without_user_data and isinstance(fingerprint.get("user_data"), dict):
            user_data = dict(fingerprint["user_data"])
            for key in without_user_data:
                user_data.pop(key, None)
            fingerprint["user_data"] = user_data
        encoded = _dumps(fingerprint).encode("utf-8")
    elif encoded is None:
        encoded = text.encode("utf-8")
    return payload, text, hashlib.sha256(encoded).hexdigest()


def _json_safe(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` that ``json.dumps`` and every database accept."""
    if depth > 64:
        return None
    if isinstance(value, str):
        return _storable_text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        try:
            str(value)
        except ValueError:  # more digits than Python writes as text: no JSON form
            return None
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {
            _storable_text(key if isinstance(key, str) else str(key)): _json_safe(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(item, depth + 1) for item in value]
    if isinstance(value, Decimal):
        number = float(value) if value.is_finite() else math.nan
        return number if math.isfinite(number) else str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return _storable_text(str(value))


# --- storing ------------------------------------------------------------------------------


def _event_id_reused() -> Diagnostic:
    return Diagnostic(
        code="event_id_reused",
        field="event_id",
        severity=WARNING,
        message="Another event arrived with this event_name and event_id but different "
        "contents (another value, customer or time); it was not stored and is not sent. Meta "
        "drops a repeat within 48 hours as a duplicate and would count a later one as a new "
        "conversion; we keep one event per event_id for as long as events are kept "
        "(RETENTION_DAYS), whatever its age, so an id is never counted twice.",
        fix="Make a new event_id for every action (an order number works for purchases) and "
        "reuse it only for the same action's Pixel event and for retries.",
    )


def _store(
    prepared: list[_Prepared], store: EventStore, along: tuple[str, list[Any]] | None = None
) -> tuple[list[TrackResult], int]:
    """Store the batch idempotently; (results in batch order, pending events stored).

    ``along`` (see ``EventStore.insert``) goes with the last chunk's INSERT.
    """
    return _store_started(prepared, store, along, _count_hour(store), background=False)()


def _store_started(
    prepared: list[_Prepared],
    store: EventStore,
    along: tuple[str, list[Any]] | None,
    count_hour: datetime | None,
    *,
    background: bool,
) -> Callable[[], tuple[list[TrackResult], int]]:
    """``_store``, returning once the last chunk's INSERT is started (``insert_started``: in
    the ``background`` where the store can) or, without ``background``, done; the function
    returned finishes it. Nothing else may be sent on the connection before."""
    reused = _event_id_reused()
    reused_dict = _stored_diagnostic(reused)
    # Duplicates inside the batch never reach the database: they point at the event kept.
    plan = eventstore.plan_batch(prepared)
    for item, first in plan.later:
        if eventstore.reuses(item, first.row):
            item.diagnostics.append(reused)
            if reused_dict not in first.row.diagnostics:
                first.row.diagnostics.append(reused_dict)
    kept = plan.to_insert()
    *chunks, last = _chunks(kept, store.chunk_size())
    for chunk in chunks:
        _store_chunk(chunk, store, None, count_hour)
    if background:
        inserted = store.insert_started(last, along=along, count_hour=count_hour)
    else:
        # A thread per statement would cost a small call (one event) more than it overlaps.
        rows = store.insert(last, along=along, count_hour=count_hour)
        inserted = lambda: rows  # noqa: E731

    def finish() -> tuple[list[TrackResult], int]:
        _store_chunk(last, store, along, count_hour, inserted=inserted())
        _note_reused_originals(kept, plan.later, reused, reused_dict, store)
        # Indexed by position in ``prepared`` (a piece's indexes start further on).
        first_index = prepared[0].index
        results: list[TrackResult | None] = [None] * len(prepared)
        pending = _kept_results(kept, results, first_index)
        _superseded_results(plan, results, store, first_index)
        for item, first in plan.later:
            original = first.row if first.inserted else first.original
            assert original is not None
            results[item.index - first_index] = TrackResult(
                DUPLICATE, original, item.diagnostics, item.index
            )
        # What the INSERT did not count itself (all of it on SQLite or in a caller's
        # transaction; on PostgreSQL in autocommit, only rejected originals replaced in place).
        uncounted = [item.row for item in kept if item.inserted and not item.counted]
        if uncounted:
            _count_recorded(uncounted, store.alias)
        return [result for result in results if result is not None], pending

    return finish


def _count_hour(store: EventStore) -> datetime | None:
    """The hour the INSERT itself adds its rows to the hourly counters of, or None.

    Only where one statement can (PostgreSQL), only in autocommit, and only while
    ``HOURLY_COUNTS_WAIT_FOR_DISK`` (the default): there the INSERT is its own transaction, so
    the counter row is locked no longer than a separate UPSERT after commit would lock it, and
    no count is lost between the two. A destination's counter row of the hour is every
    request's, locked until the commit is on disk: with the setting off, the counts are added
    after commit by an UPSERT that does not wait for the disk
    (``PostgreSQLEventStore.add_counts``), so concurrent requests of one destination stop
    waiting for each other's flush (8 connections on one row in autocommit, pgbench on the
    2-core bench machine: 220-620 commits a second waiting, 1,400-3,300 not waiting).
    """
    connection = store.connection
    if (
        not app_settings.HOURLY_COUNTS_WAIT_FOR_DISK
        or not store.combines_statements
        or connection.in_atomic_block
        or not connection.get_autocommit()
        or router.db_for_write(HourlyOutcomes) != store.alias
    ):
        return None
    return counters.hour_of(clock.now())


def _store_chunk(
    chunk: list[_Prepared],
    store: EventStore,
    along: tuple[str, list[Any]] | None = None,
    count_hour: datetime | None = None,
    *,
    inserted: list[tuple[int, str, str]] | None = None,
) -> None:
    """Insert the chunk, find the originals of what was already there, replace rejected ones.

    ``inserted``: the rows of the chunk's INSERT, when it was already run (``insert_started``).
    """
    if inserted is None:
        inserted = store.insert(chunk, along=along, count_hour=count_hour)
    _mark_chunk(chunk, inserted, store, count_hour)
    missing = _attach_originals([item for item in chunk if not item.inserted], store)
    if missing:
        # The row that blocked ours was deleted before we could read it: insert again.
        _insert_chunk(missing, store, count_hour=count_hour)
        _attach_originals([item for item in missing if not item.inserted], store)
    _replace_rejected_originals(chunk, store)


def _note_reused_originals(
    kept: list[_Prepared],
    later: list[tuple[_Prepared, _Prepared]],
    reused: Diagnostic,
    reused_dict: dict[str, Any],
    store: EventStore,
) -> None:
    """An original that another event with other contents tried to reuse gets told so."""
    originals_to_update: dict[int, Event] = {}
    for item in kept:
        if item.original is not None and eventstore.reuses(item, item.original):
            _note_reuse(item, item.original, reused, reused_dict, originals_to_update)
    for item, first in later:
        original = first.original
        if original is not None and eventstore.reuses(item, original):
            _note_reuse(item, original, reused, reused_dict, originals_to_update)
    if originals_to_update:
        now = clock.now()
        store.append_finding(list(originals_to_update), reused_dict, now)
        for original in originals_to_update.values():
            original.diagnostics = [*original.diagnostics, reused_dict]
            original.updated_at = now


def _kept_results(
    kept: list[_Prepared], results: list[TrackResult | None], first_index: int = 0
) -> int:
    """Fill in the results of the kept events (``results[0]`` is the event of index
    ``first_index``); how many of those inserted are pending."""
    pending = 0
    for item in kept:
        if item.inserted:
            status = item.row.status
            results[item.index - first_index] = TrackResult(
                _RESULT_FOR_STATUS[status], item.row, item.diagnostics, item.index
            )
            pending += status == EventStatus.PENDING
        else:
            assert item.original is not None
            results[item.index - first_index] = TrackResult(
                DUPLICATE, item.original, item.diagnostics, item.index
            )
    return pending


def _superseded_results(
    plan: eventstore.BatchPlan[_Prepared],
    results: list[TrackResult | None],
    store: EventStore,
    first_index: int = 0,
) -> None:
    """Fill in the results of the rejected events a later copy in the batch replaced (as
    ``_kept_results``)."""
    for item in plan.superseded:
        kept = plan.kept[item.key]
        if kept.inserted:
            # Stored, then replaced by the copy after it: the caller sees what a call of its own
            # would have shown, the rejected row (whose id the correction now holds).
            _mark_inserted(item, kept.row.pk, store.alias)
            results[item.index - first_index] = TrackResult(
                REJECTED, item.row, item.diagnostics, item.index
            )
        else:
            assert kept.original is not None
            item.original = kept.original
            results[item.index - first_index] = TrackResult(
                DUPLICATE, kept.original, item.diagnostics, item.index
            )


def _count_recorded(inserted: list[Event], database: str) -> None:
    """Count the events stored (with their match quality), the rejected and the suppressed
    ones, after commit."""
    rated = [row.match_quality for row in inserted if row.match_quality is not None]
    destination_id, recorded = inserted[0].destination_id, len(inserted)
    rejected = sum(row.status == EventStatus.REJECTED for row in inserted)
    suppressed = sum(row.status == EventStatus.SUPPRESSED for row in inserted)
    # After the caller's commit (at once in autocommit), in a statement of its own: it never
    # holds a counter row's lock inside a caller's transaction, where two callers counting
    # two destinations in opposite orders could deadlock. A crash in between loses a count
    # on the overview, never an event; a rollback counts nothing, as nothing was stored.
    transaction.on_commit(
        lambda: counters.add(
            destination_id,
            recorded=recorded,
            rejected=rejected,
            suppressed=suppressed,
            quality_sum=sum(rated),
            quality_events=len(rated),
            using=database,
        ),
        using=database,
    )


def _note_reuse(
    item: _Prepared,
    original: Event,
    reused: Diagnostic,
    reused_dict: dict[str, Any],
    originals_to_update: dict[int, Event],
) -> None:
    if reused not in item.diagnostics:
        item.diagnostics.append(reused)
    if reused_dict not in original.diagnostics:
        originals_to_update[original.pk] = original


def _chunks(items: list[_Prepared], size: int) -> Iterable[list[_Prepared]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert_chunk(
    chunk: list[_Prepared],
    store: EventStore,
    along: tuple[str, list[Any]] | None = None,
    count_hour: datetime | None = None,
) -> None:
    """INSERT the chunk in one statement, skipping rows whose key exists; mark the ones in."""
    _mark_chunk(chunk, store.insert(chunk, along=along, count_hour=count_hour), store, count_hour)


def _mark_chunk(
    chunk: list[_Prepared],
    inserted: list[tuple[int, str, str]],
    store: EventStore,
    count_hour: datetime | None,
) -> None:
    """Mark the chunk's events its INSERT really inserted (the rows it returned)."""
    by_key = {item.key: item for item in chunk}
    for pk, event_name, event_id in inserted:
        item = by_key[(event_name, event_id)]
        _mark_inserted(item, pk, store.alias)
        item.counted = count_hour is not None


def _mark_inserted(item: _Prepared, pk: int, database: str) -> None:
    item.row.pk = pk
    item.row._state.adding = False
    item.row._state.db = database
    item.inserted = True


def _attach_originals(conflicted: list[_Prepared], store: EventStore) -> list[_Prepared]:
    """One SELECT for the rows that were already there; returns those no longer found."""
    if not conflicted:
        return []
    originals = store.originals(conflicted[0].row.destination_id, (i.key for i in conflicted))
    destination = conflicted[0].row._state.fields_cache.get("destination")
    missing: list[_Prepared] = []
    for item in conflicted:
        original = originals.get(item.key)
        if original is None:
            missing.append(item)
            continue
        if destination is not None:
            original._state.fields_cache["destination"] = destination
        item.original = original
    return missing


# --- replacing a rejected event -------------------------------------------------------------


def _replaced_rejected() -> Diagnostic:
    return Diagnostic(
        code="replaced_rejected",
        field="event_id",
        severity=INFO,
        message="An earlier event with this event_name and event_id was rejected by our checks "
        "and never sent; this one took its place.",
        fix="Nothing to do: the rejected copy never reached Meta.",
    )


def _replace_rejected_originals(chunk: list[_Prepared], store: EventStore) -> None:
    """Store the chunk's events whose original is ``rejected`` in that row, in ONE UPDATE.

    A rejected row never reached Meta, so a later event under its key is the caller's
    correction, not a duplicate. The UPDATE is conditional on the row still being rejected: when
    a concurrent request replaced it first (or it was deleted), ours is read again and becomes
    a duplicate of what is there now, exactly as if it had arrived second.
    """
    replaceable = [
        item
        for item in chunk
        if not item.inserted
        and item.original is not None
        and eventstore.corrects(item, item.original)
    ]
    if not replaceable:
        return
    note = _replaced_rejected()
    note_dict = _stored_diagnostic(note)
    findings_before = {item.index: item.row.diagnostics for item in replaceable}
    for item in replaceable:
        item.row.diagnostics = [*item.row.diagnostics, note_dict]
    replaced = store.replace_rejected([(_original_pk(item), item) for item in replaceable])
    changed: list[_Prepared] = []
    for item in replaceable:
        if _original_pk(item) in replaced:
            _mark_inserted(item, _original_pk(item), store.alias)
            item.original = None
            item.diagnostics.append(note)
        else:
            item.row.diagnostics = findings_before[item.index]
            changed.append(item)
    if changed:
        missing = _attach_originals(changed, store)
        if missing:
            _insert_chunk(missing, store)
            _attach_originals([item for item in missing if not item.inserted], store)


def _original_pk(item: _Prepared) -> int:
    assert item.original is not None
    return int(item.original.pk)
