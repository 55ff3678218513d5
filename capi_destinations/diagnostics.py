"""Per-field checks of an incoming event, in words a marketer or a developer can act on.

``diagnose`` reads the raw event as a developer sends it and returns ``Diagnostic`` records:
``error`` blocks sending (Meta would reject the event, and one bad event fails a whole batch),
``warning`` and ``info`` do not. ``match_quality`` estimates how well Meta can match the
normalized user_data. Diagnostics are stored on the event, so they never contain customer
information: messages name fields, not values.

Pure functions over plain dicts: no database, no network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from capi_destinations import clock, normalize, problems
from capi_destinations.findings import (
    ERROR,
    INFO,
    SEVERITIES,
    WARNING,
    Diagnostic,
    by_severity,
    has_errors,
)
from capi_destinations.user_data_keys import (
    CHANNEL_IDENTIFIERS,
    CUSTOMER_INFO_KEY_SET,
    CUSTOMER_INFO_KEYS,
    MESSAGING_CHANNELS,
)

__all__ = [
    "ACTION_SOURCES",
    "CUSTOMER_INFO_KEYS",
    "ERROR",
    "INFO",
    "MATCH_KEYS_FIX",
    "MAX_CLOCK_SKEW",
    "MAX_EVENT_AGE",
    "MAX_STORE_EVENT_AGE",
    "SEVERITIES",
    "STANDARD_EVENTS",
    "USER_AGENT_FIX",
    "WARNING",
    "WEAK_KEY_SETS",
    "Diagnostic",
    "MatchQuality",
    "diagnose",
    "has_errors",
    "match_quality",
    "max_event_age",
    "parse_event_time",
]

#: Meta's standard event names (case-sensitive); PageView is the one the Pixel sends itself.
STANDARD_EVENTS: tuple[str, ...] = (
    "AddPaymentInfo",
    "AddToCart",
    "AddToWishlist",
    "CompleteRegistration",
    "Contact",
    "CustomizeProduct",
    "Donate",
    "FindLocation",
    "InitiateCheckout",
    "Lead",
    "PageView",
    "Purchase",
    "Schedule",
    "Search",
    "StartTrial",
    "SubmitApplication",
    "Subscribe",
    "ViewContent",
)

#: Every ``action_source`` value Meta accepts.
ACTION_SOURCES: tuple[str, ...] = (
    "website",
    "app",
    "email",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
)


_ACTION_SOURCE_SET = frozenset(ACTION_SOURCES)

#: Meta's baseline rule: an event whose customer-information keys all fall inside one of
#: these sets is rejected as having too little to match on.
WEAK_KEY_SETS: tuple[frozenset[str], ...] = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)
# Customer-information keys in no weak set: an event with one of them is never matched on too
# little, whatever else it has.
_BEYOND_WEAK_KEYS = CUSTOMER_INFO_KEY_SET.difference(*WEAK_KEY_SETS)

#: Meta rejects a request holding any event older than this.
MAX_EVENT_AGE = timedelta(days=7)
#: ...except store and offline events (action_source ``physical_store``): "you should upload
#: transactions within 62 days of the conversion" (Meta's offline events page).
MAX_STORE_EVENT_AGE = timedelta(days=62)
STORE_ACTION_SOURCE = "physical_store"
#: How far in the future an event_time may be before we call it wrong. Our own rule, not
#: Meta's (Meta documents no figure): clocks drift by seconds or minutes, and anything later
#: is a wrong clock, a time zone mix-up or milliseconds. The sandbox applies the same figure.
MAX_CLOCK_SKEW = timedelta(minutes=5)
#: Meta asks for events within an hour; later ones still count but are worth a note.
RECOMMENDED_DELAY = timedelta(hours=1)

_STANDARD_BY_SQUASHED = {name.lower(): name for name in STANDARD_EVENTS}
_STANDARD_NAMES = frozenset(STANDARD_EVENTS)
_MAX_CUSTOM_EVENT_NAME = 50
# Unix seconds above this (year 5138) are almost certainly milliseconds sent by mistake.
_MILLISECONDS_THRESHOLD = 100_000_000_000
_META_INVALID_PARAMETER = 100
# Meta reads whole numbers (quantities, counts) as signed 64-bit integers.
_INT64_MAX = 2**63 - 1
_SUBCODE_TOO_OLD = 2804003
_SUBCODE_CUSTOMER_INFO = 2804050

#: The top-level keys of a server event that Meta accepts (anything else is dropped).
SERVER_EVENT_KEYS: frozenset[str] = frozenset(
    {
        "event_name",
        "event_time",
        "event_id",
        "action_source",
        "event_source_url",
        "user_data",
        "custom_data",
        "opt_out",
        "data_processing_options",
        "data_processing_options_country",
        "data_processing_options_state",
        "referrer_url",
        "app_data",
        "original_event_data",
        "customer_segmentation",
        "messaging_channel",
        "attribution_data",
        "advanced_measurement_table",
        "store_data",
    }
)

#: Findings whose field is left out of what is sent, while the rest of the event goes on: a
#: value Meta would refuse, and with it the whole request (``ingest`` removes the field).
DROPPED_FIELD_CODES: frozenset[str] = frozenset(
    {
        "invalid_opt_out",
        "invalid_customer_segmentation",
        "invalid_content_type",
        "invalid_delivery_category",
        "invalid_predicted_ltv",
        "invalid_num_items",
        "invalid_original_event_data",
        "invalid_store_data",
        "dpo_location_without_ldu",
    }
)

#: ``customer_segmentation`` values Meta documents (server event parameters).
CUSTOMER_SEGMENTATIONS: frozenset[str] = frozenset(
    {
        "new_customer_to_business",
        "new_customer_to_business_line",
        "new_customer_to_product_area",
        "new_customer_to_medium",
        "existing_customer_to_business",
        "existing_customer_to_business_line",
        "existing_customer_to_product_area",
        "existing_customer_to_medium",
        "customer_in_loyalty_program",
    }
)
#: ``content_type`` and ``delivery_category`` values Meta documents (custom data parameters).
CONTENT_TYPES: frozenset[str] = frozenset({"product", "product_group"})
DELIVERY_CATEGORIES: frozenset[str] = frozenset({"in_store", "curbside", "home_delivery"})
#: The keys of ``original_event_data`` Meta documents.
ORIGINAL_EVENT_DATA_KEYS: frozenset[str] = frozenset(
    {"event_name", "event_time", "order_id", "event_id"}
)
#: ``app_data.extinfo``: 16 slots, the first naming the platform (Android ``a2``, iOS ``i2``).
EXTINFO_SLOTS = 16
EXTINFO_PLATFORMS: frozenset[str] = frozenset({"a2", "i2"})

# Our own key beside Meta's: the consent state travels with the event and is evaluated per
# destination before anything is sent.
_KNOWN_EVENT_KEYS = SERVER_EVENT_KEYS | {"consent"}


#: What raises match quality, in the words of the health card's match-quality note; Meta's
#: per-key feedback on the destination page uses it too.
MATCH_KEYS_FIX = problems.LOW_MATCH_QUALITY.fix  # one wording for the card and the panel
#: How to send the user agent (``missing_client_user_agent``), for Meta's feedback on it too.
USER_AGENT_FIX = (
    "Send the User-Agent header of the visitor's request as client_user_agent "
    "(the ingest endpoint and track(request=…) add it for you)."
)


def max_event_age(action_source: Any) -> timedelta:
    """How old an event with this ``action_source`` may be when Meta receives it."""
    return MAX_STORE_EVENT_AGE if action_source == STORE_ACTION_SOURCE else MAX_EVENT_AGE


@dataclass(frozen=True)
class MatchQuality:
    """Our estimate of how well Meta can match an event (0-10), and what would raise it."""

    score: float
    present: list[str]
    missing: list[str]


# How much each key adds on its own (chance-like, combined as 1 - Π(1 - w)), ordered from the
# most valuable down, after the identifier value ranking users are given: email, phone,
# external_id, fbp, fbc, IP + user agent, then name and address fields.
_MATCH_WEIGHTS: dict[str, float] = {
    "em": 0.55,
    "ph": 0.40,
    "external_id": 0.25,
    "fbp": 0.20,
    "fbc": 0.15,
    "client_ip_address": 0.25,
    "client_user_agent": 0.13,
    "fn": 0.06,
    "ln": 0.06,
    "zp": 0.05,
    "ct": 0.04,
    "country": 0.04,
    "st": 0.03,
    "db": 0.04,
    "ge": 0.02,
}
# Keys that identify a person in other channels; they count when present but are not asked
# for, since most events cannot have them.
_CHANNEL_WEIGHTS: dict[str, float] = {
    "lead_id": 0.40,
    "fb_login_id": 0.40,
    "ctwa_clid": 0.30,
    "madid": 0.25,
    "anon_id": 0.15,
    "page_scoped_user_id": 0.30,
    "ig_sid": 0.30,
    "ig_account_id": 0.10,
    "subscription_id": 0.05,
    "page_id": 0.0,
}


def match_quality(user_data: Mapping[str, Any]) -> MatchQuality:
    """Estimate match quality (0-10, one decimal) of NORMALIZED user_data.

    This is our own estimate from the identifier ranking Meta's guides give, not Meta's Event
    Match Quality score, which only Events Manager shows. Calibrated so that email, phone,
    external_id, fbp, fbc, IP and user agent together score about 9, IP and user agent alone
    about 3.5. ``missing`` lists the absent keys, most valuable first.
    """
    if not isinstance(user_data, Mapping):
        user_data = {}
    # This runs for every recorded event: look only at the keys the event has (a handful),
    # and work out each combination of them once.
    found = [key for key, value in user_data.items() if key in _ALL_WEIGHTS and _filled(value)]
    score, present, missing = _match_quality_of(frozenset(found))
    return MatchQuality(score=score, present=list(present), missing=list(missing))


def match_quality_score(user_data: Mapping[str, Any]) -> float:
    """The score alone of :func:`match_quality` (ingestion stores only the score).

    Spares building the ``present``/``missing`` lists for every recorded event.
    """
    if type(user_data) is not dict and not isinstance(user_data, Mapping):
        return 0.0
    # _filled's two common cases written out (a list whose first digest is there, a clear
    # text): this runs for every recorded event, for each of its keys.
    found = [
        key
        for key, value in user_data.items()
        if key in _ALL_WEIGHTS
        and (
            (type(value) is list and value and type(value[0]) is str and value[0])
            or (type(value) is str and value)
            or _filled(value)
        )
    ]
    return _match_quality_of(frozenset(found))[0]


_ALL_WEIGHTS: dict[str, float] = {**_MATCH_WEIGHTS, **_CHANNEL_WEIGHTS}


@lru_cache(maxsize=4096)  # at most one entry per combination of keys present
def _match_quality_of(keys: frozenset[str]) -> tuple[float, tuple[str, ...], tuple[str, ...]]:
    present: list[str] = []
    missing: list[str] = []
    unmatched = 1.0
    for key, weight in _ALL_WEIGHTS.items():
        if key in keys:
            present.append(key)
            unmatched *= 1.0 - weight
        elif key in _MATCH_WEIGHTS:
            missing.append(key)
    return round(10 * (1 - unmatched), 1), tuple(present), tuple(missing)


def _filled(value: Any) -> bool:
    # Normalized user data holds a list whose first digest is there, or a clear text: decide
    # those at once.
    if type(value) is list:
        if value and type(value[0]) is str and value[0]:
            return True
    elif type(value) is str:
        return value != ""
    return _has_value(value)


def _has_value(value: Any) -> bool:
    if type(value) is str:
        return value != ""
    if isinstance(value, list | tuple):
        return any(map(_has_value, value))
    return value is not None and value != ""


def parse_event_time(value: Any) -> datetime | None:
    """The event_time as an aware UTC datetime, or None when it cannot be read as seconds.

    Accepted: Unix seconds as an int, a float (fraction dropped) or a numeric string; an
    aware ``datetime`` (a naive one is taken as UTC); an ISO 8601 string. Values that look
    like milliseconds are refused (``diagnose`` says so), as are booleans.
    """
    seconds = _event_time_seconds(value)
    if seconds is None or seconds >= _MILLISECONDS_THRESHOLD:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _event_time_seconds(value: Any) -> int | None:
    if type(value) is int:
        return value  # Unix seconds, the usual case
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return math.floor(value) if math.isfinite(value) else None
    if isinstance(value, datetime):
        return _datetime_seconds(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                return _datetime_seconds(datetime.fromisoformat(text))
            except ValueError:
                return None
        return math.floor(number) if math.isfinite(number) else None
    return None


def _datetime_seconds(moment: datetime) -> int | None:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return math.floor(moment.timestamp())
    except (OverflowError, OSError, ValueError):  # year 1 with a positive offset, and such
        return None


def diagnose(
    event: Mapping[str, Any],
    *,
    now: datetime | None = None,
    default_country: str | None = None,
    user_data_report: normalize.NormalizedUserData | None = None,
) -> list[Diagnostic]:
    """Check a raw incoming event and return every finding, most serious first.

    ``event`` is the dict a developer sends (event_name, event_time, event_id, action_source,
    event_source_url, user_data with raw or hashed values, custom_data, …), after any
    enrichment from the request. ``default_country`` is the destination's country for
    national phone numbers. ``user_data_report`` lets a caller that already normalized the
    user_data pass the result instead of normalizing twice. Never raises: junk of any shape
    yields diagnostics.
    """
    # isinstance() against the Mapping ABC is slow; a plain dict is by far the usual event.
    if type(event) is not dict and not isinstance(event, Mapping):
        return [
            _error(
                "invalid_event",
                "event",
                "The event is not an object, so nothing in it could be read.",
                "Send each event as a JSON object with event_name, event_time, action_source "
                'and user_data, e.g. {"event_name": "Purchase", …}.',
            )
        ]
    moment = now if now is not None else clock.now()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)

    found: list[Diagnostic] = []
    event_name = _check_event_name(event.get("event_name"), found)
    _check_event_time(
        event.get("event_time"), "event_time" in event, moment, found, event.get("action_source")
    )
    _check_event_id(event.get("event_id"), found)
    action_source = _check_action_source(event.get("action_source"), found)
    _check_event_source_url(event, action_source, found)
    user_data = _check_user_data(event, default_country, user_data_report, found)
    if action_source == "website" and user_data is not None:
        _check_website_user_data(user_data, found)
    _check_messaging(event, action_source, user_data, found)
    _check_custom_data(event.get("custom_data"), event_name, found)
    _check_other_keys(event, found)
    _check_request_fields(event, action_source, found)

    # Most events have no finding or one: already in order.
    return by_severity(found) if len(found) > 1 else found


# --- building diagnostics ----------------------------------------------------------------------


def _error(
    code: str,
    field: str,
    message: str,
    fix: str,
    *,
    meta_code: int | None = None,
    meta_subcode: int | None = None,
) -> Diagnostic:
    return Diagnostic(code, field, ERROR, message, fix, meta_code, meta_subcode)


def _warning(code: str, field: str, message: str, fix: str) -> Diagnostic:
    return Diagnostic(code, field, WARNING, message, fix)


def _info(code: str, field: str, message: str, fix: str) -> Diagnostic:
    return Diagnostic(code, field, INFO, message, fix)


def _shown(value: Any, limit: int = 60) -> str:
    """A short printable form of a non-personal value (event names, sources, currencies)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        tuple: "a list",
        str: "text",
        bool: "true/false",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


# --- checks of the event's own fields ---------------------------------------------------------


def _check_event_name(value: Any, found: list[Diagnostic]) -> str | None:
    if value is None or value == "":
        found.append(
            _error(
                "missing_event_name",
                "event_name",
                "The event has no event_name, so Meta cannot tell what happened.",
                "Set event_name to a standard event such as Purchase, Lead or AddToCart, or to "
                "your custom event's name.",
                meta_code=_META_INVALID_PARAMETER,
            )
        )
        return None
    if not isinstance(value, str):
        found.append(
            _error(
                "invalid_event_name",
                "event_name",
                f"event_name is {_kind(value)}, not text.",
                'Send event_name as a string, e.g. "Purchase".',
                meta_code=_META_INVALID_PARAMETER,
            )
        )
        return None
    name = value.strip()
    if not name:
        found.append(
            _error(
                "missing_event_name",
                "event_name",
                "The event_name is blank, so Meta cannot tell what happened.",
                "Set event_name to a standard event such as Purchase, or your custom event.",
                meta_code=_META_INVALID_PARAMETER,
            )
        )
        return None
    if name != value:
        found.append(
            _warning(
                "event_name_whitespace",
                "event_name",
                f'The event_name "{_shown(value)}" has spaces around it; Meta would count it '
                "as a different event.",
                f'Send "{_shown(name)}" without surrounding spaces.',
            )
        )
    if name in _STANDARD_NAMES:
        return name  # spelled exactly right: the usual case, nothing more to check
    standard = _STANDARD_BY_SQUASHED.get("".join(c for c in name if c.isalnum()).lower())
    if standard is not None and standard != name:
        found.append(
            _warning(
                "event_name_casing",
                "event_name",
                f'"{_shown(name)}" is not spelled like Meta\'s standard event "{standard}"; '
                "event names are case-sensitive, so Meta would record a custom event and the "
                f"{standard} conversions would not count.",
                f'Send event_name "{standard}" exactly (in the Pixel code too).',
            )
        )
    elif standard is None and len(name) > _MAX_CUSTOM_EVENT_NAME:
        found.append(
            _warning(
                "event_name_too_long",
                "event_name",
                f"The custom event name is {len(name)} characters; Meta allows at most "
                f"{_MAX_CUSTOM_EVENT_NAME}.",
                "Use a shorter custom event name.",
            )
        )
    return standard if standard is not None else name


def _check_event_time(
    value: Any,
    present: bool,
    now: datetime,
    found: list[Diagnostic],
    action_source: Any = None,
) -> None:
    if type(value) is int and 0 <= value < _MILLISECONDS_THRESHOLD:
        # Unix seconds, as nearly every event sends them: none of the type checks below apply.
        _check_event_age(value, now, found, action_source)
        return
    if not present or value is None or value == "":
        found.append(
            _error(
                "missing_event_time",
                "event_time",
                "The event has no event_time, which Meta requires.",
                "Set event_time to the moment the action happened, in Unix seconds "
                "(e.g. int(time.time()) in Python, Math.floor(Date.now() / 1000) in JavaScript).",
                meta_code=_META_INVALID_PARAMETER,
            )
        )
        return
    if isinstance(value, datetime) and value.tzinfo is None:
        found.append(
            _warning(
                "naive_event_time",
                "event_time",
                "event_time is a date and time without a time zone; it was read as UTC.",
                "Pass a timezone-aware datetime (django.utils.timezone.now()) or Unix seconds.",
            )
        )
    if _number_out_of_range(value):
        found.append(_out_of_range("event_time", "1700000000 (Unix seconds)"))
        return
    seconds = _event_time_seconds(value)
    if seconds is None:
        found.append(
            _error(
                "invalid_event_time",
                "event_time",
                f"event_time is {_kind(value)} that is not a time we can read.",
                "Send event_time as Unix seconds, an integer such as 1700000000.",
                meta_code=_META_INVALID_PARAMETER,
            )
        )
        return
    if seconds >= _MILLISECONDS_THRESHOLD:
        found.append(
            _error(
                "event_time_in_milliseconds",
                "event_time",
                "event_time looks like milliseconds (or finer), but Meta wants seconds; as "
                "seconds it would be thousands of years in the future.",
                "Divide by 1000: Math.floor(Date.now() / 1000) in JavaScript, int(time.time()) "
                "in Python.",
                meta_code=_META_INVALID_PARAMETER,
            )
        )
        return
    _check_event_age(seconds, now, found, action_source)


def _check_event_age(
    seconds: int, now: datetime, found: list[Diagnostic], action_source: Any
) -> None:
    """Too old, in the future, or later than Meta asks: an event_time read as Unix seconds."""
    age = now - datetime.fromtimestamp(max(seconds, 0), tz=UTC)
    window = max_event_age(action_source)
    if age > window:
        kind = "store (physical_store) events" if window == MAX_STORE_EVENT_AGE else "events"
        found.append(
            _error(
                "event_time_too_old",
                "event_time",
                f"The event happened {age.days} days ago; Meta refuses {kind} older than "
                f"{window.days} days (and would refuse the whole batch with it).",
                "Send events as soon as they happen (within an hour is best); older ones "
                "cannot be delivered. If the time is wrong, send the real moment in Unix seconds."
                " Only physical_store events may be up to 62 days old.",
                meta_code=_META_INVALID_PARAMETER,
                meta_subcode=_SUBCODE_TOO_OLD,
            )
        )
    elif -age > MAX_CLOCK_SKEW:
        found.append(
            _error(
                "event_time_in_future",
                "event_time",
                f"event_time is {_duration(-age)} in the future. We refuse events more than "
                f"{int(MAX_CLOCK_SKEW.total_seconds() // 60)} minutes ahead of our clock (our "
                "own rule for clock drift; Meta documents no limit), as the time is surely wrong.",
                "Use the real moment of the action in Unix seconds, UTC; check the sending "
                "server's clock and time zone handling.",
                meta_code=_META_INVALID_PARAMETER,
            )
        )
    elif age > RECOMMENDED_DELAY:
        found.append(
            _info(
                "event_time_delayed",
                "event_time",
                f"The event is {_duration(age)} old; Meta asks for events within an hour, "
                "and late events help optimization less.",
                "Send events as soon as they happen instead of in delayed batches.",
            )
        )


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} minutes"
    hours = minutes // 60
    return f"{hours} hours" if hours < 48 else f"{hours // 24} days"


def _check_event_id(value: Any, found: list[Diagnostic]) -> None:
    if type(value) is str and value and not value[0].isspace():
        return  # text that is not blank: the usual case
    if value is None or (isinstance(value, str) and not value.strip()):
        found.append(
            _warning(
                "missing_event_id",
                "event_id",
                "The event has no event_id, so Meta cannot deduplicate it against the same "
                "event from the Pixel: it may be counted twice.",
                "Make one event_id per action (an order number works), and send the same value "
                "to the Pixel (eventID) and here.",
            )
        )
        return
    if isinstance(value, bool) or not isinstance(value, str | int):
        found.append(
            _error(
                "invalid_event_id",
                "event_id",
                f"event_id is {_kind(value)}; it must be text (or a whole number).",
                'Send event_id as a string, e.g. "order-1234", the same one the Pixel gets.',
                meta_code=_META_INVALID_PARAMETER,
            )
        )


def _check_action_source(value: Any, found: list[Diagnostic]) -> str | None:
    if type(value) is str and value in _ACTION_SOURCE_SET:
        return value  # the usual case, before building any message
    valid = ", ".join(ACTION_SOURCES)
    if value is None or value == "":
        found.append(
            _error(
                "missing_action_source",
                "action_source",
                "The event has no action_source, which Meta requires to know where it happened.",
                f'Set action_source, e.g. "website" for events on your site (one of: {valid}).',
                meta_code=_META_INVALID_PARAMETER,
            )
        )
        return None
    if isinstance(value, str) and value in ACTION_SOURCES:
        return value
    suggestion = value.strip().lower().replace(" ", "_") if isinstance(value, str) else None
    if suggestion in ACTION_SOURCES:
        fix = f'Send action_source "{suggestion}" exactly (lowercase).'
    else:
        fix = f"Use one of: {valid}."
    found.append(
        _error(
            "unknown_action_source",
            "action_source",
            f"action_source {_shown(value)!r} is not one Meta accepts.",
            fix,
            meta_code=_META_INVALID_PARAMETER,
        )
    )
    return suggestion if suggestion in ACTION_SOURCES else None


def _check_event_source_url(
    event: Mapping[str, Any], action_source: str | None, found: list[Diagnostic]
) -> None:
    url = event.get("event_source_url")
    if type(url) is str and url.startswith(("https://", "http://")):
        return  # what the check below accepts, without copying the URL twice
    if url is None or url == "":
        if action_source == "website":
            found.append(
                _error(
                    "missing_event_source_url",
                    "event_source_url",
                    "Website events need event_source_url, the page where the event happened.",
                    "Send the full URL of the page (window.location.href in the browser, "
                    "request.build_absolute_uri() in Django).",
                    meta_code=_META_INVALID_PARAMETER,
                )
            )
        return
    if not isinstance(url, str) or not url.strip().lower().startswith(("http://", "https://")):
        found.append(
            _warning(
                "invalid_event_source_url",
                "event_source_url",
                "event_source_url is not a web address starting with http:// or https://.",
                "Send the full URL of the page, e.g. https://shop.example.com/checkout.",
            )
        )


def _check_user_data(
    event: Mapping[str, Any],
    default_country: str | None,
    report: normalize.NormalizedUserData | None,
    found: list[Diagnostic],
) -> dict[str, Any] | None:
    raw = event.get("user_data")
    if raw is not None and type(raw) is not dict and not isinstance(raw, Mapping):
        found.append(
            _error(
                "invalid_user_data",
                "user_data",
                f"user_data is {_kind(raw)}, not an object, so no customer information could "
                "be read.",
                'Send user_data as an object, e.g. {"em": "name@example.com", "fbp": "fb.1.…"}.',
                meta_code=_META_INVALID_PARAMETER,
            )
        )
        return None
    if report is None:
        report = normalize.normalize_user_data_report(raw or {}, country=default_country)
    found.extend(report.diagnostics)
    user_data = report.user_data
    keys = CUSTOMER_INFO_KEY_SET.intersection(user_data)
    if not keys.isdisjoint(_BEYOND_WEAK_KEYS):
        return user_data  # a key outside every weak set: no weak set can hold the others
    if not keys:
        found.append(
            _error(
                "no_customer_information",
                "user_data",
                "The event carries no usable customer information (none sent, or all of it "
                "empty or invalid); Meta rejects such events.",
                "Send at least one strong key: email (em), phone (ph), external_id, or the "
                "browser's fbp/fbc cookies with the client IP address and user agent.",
                meta_code=_META_INVALID_PARAMETER,
                meta_subcode=_SUBCODE_CUSTOMER_INFO,
            )
        )
    elif any(keys <= weak for weak in WEAK_KEY_SETS):
        found.append(
            _error(
                "insufficient_customer_information",
                "user_data",
                f"The only customer information is {', '.join(sorted(keys))}; Meta rejects "
                "events matched on so little.",
                "Add a strong key: email (em), phone (ph), external_id, fbp/fbc, or the "
                "client IP address; first and last name together also help.",
                meta_code=_META_INVALID_PARAMETER,
                meta_subcode=_SUBCODE_CUSTOMER_INFO,
            )
        )
    elif (besides_agent := keys - {"client_user_agent"}) and any(
        besides_agent <= weak for weak in WEAK_KEY_SETS
    ):
        # Every website event carries the browser's user agent, which identifies nobody; a
        # name and a gender beside it are not in Meta's documented sets, yet Meta may refuse
        # the event all the same, so a warning rather than a rejection.
        found.append(
            Diagnostic(
                "weak_customer_information",
                "user_data",
                WARNING,
                f"Besides the browser's user agent, the only customer information is "
                f"{', '.join(sorted(besides_agent))}; Meta may refuse the event as matched on "
                "too little.",
                "Add a strong key: email (em), phone (ph), external_id, fbp/fbc, or the "
                "client IP address (the browser helper sends fbp, fbc and the IP).",
                meta_code=_META_INVALID_PARAMETER,
                meta_subcode=_SUBCODE_CUSTOMER_INFO,
            )
        )
    return user_data


def _check_website_user_data(user_data: Mapping[str, Any], found: list[Diagnostic]) -> None:
    if "client_user_agent" not in user_data:
        found.append(
            _error(
                "missing_client_user_agent",
                "user_data.client_user_agent",
                "Website events need the visitor's browser user agent, and none was sent.",
                USER_AGENT_FIX,
                meta_code=_META_INVALID_PARAMETER,
            )
        )


def _check_messaging(
    event: Mapping[str, Any],
    action_source: str | None,
    user_data: Mapping[str, Any] | None,
    found: list[Diagnostic],
) -> None:
    """messaging_channel is one Meta documents; a business_messaging event has its identifiers.

    A wrong channel is refused (Meta answers an unknown enum value with "Invalid parameter");
    missing identifiers are a warning, since Meta's pages say what each channel needs but not
    that the event is refused without them.
    """
    channel = event.get("messaging_channel")
    if channel is None and action_source != "business_messaging":
        return  # the usual event: not a chat, no channel
    channels = ", ".join(MESSAGING_CHANNELS)
    if channel is not None and channel not in MESSAGING_CHANNELS:
        suggestion = channel.strip().lower() if isinstance(channel, str) else None
        found.append(
            _error(
                "invalid_messaging_channel",
                "messaging_channel",
                f"messaging_channel {_shown(channel)!r} is not one Meta documents ({channels}).",
                f'Send messaging_channel "{suggestion}" exactly (lowercase).'
                if suggestion in MESSAGING_CHANNELS
                else f"Send one of: {channels}.",
                meta_code=_META_INVALID_PARAMETER,
            )
        )
        return
    if action_source != "business_messaging":
        return
    if channel is None:
        found.append(
            _warning(
                "missing_messaging_channel",
                "messaging_channel",
                "This business_messaging event does not say in which chat it happened, so "
                "Meta cannot attribute it to a click-to-message ad.",
                f"Send messaging_channel ({channels}) with the identifiers that channel needs.",
            )
        )
        return
    given = user_data or {}
    missing = [key for key in CHANNEL_IDENTIFIERS[channel] if not given.get(key)]
    if missing:
        needed = " and ".join(f"user_data.{key}" for key in CHANNEL_IDENTIFIERS[channel])
        found.append(
            _warning(
                "missing_messaging_identifiers",
                f"user_data.{missing[0]}",
                f"This {channel} business_messaging event has no "
                f"{' or '.join(missing)}, which Meta needs to attribute it to the chat.",
                f"Send {needed} (from the {channel} webhook of the conversation).",
            )
        )


def _check_custom_data(value: Any, event_name: str | None, found: list[Diagnostic]) -> None:
    is_purchase = event_name == "Purchase"
    if value is None:
        if is_purchase:  # only the Purchase's own requirements can be missing
            _check_value({}, is_purchase, found)
            _check_currency({}, is_purchase, found)
        return
    if type(value) is not dict and not isinstance(value, Mapping):
        found.append(
            _error(
                "invalid_custom_data",
                "custom_data",
                f"custom_data is {_kind(value)}, not an object.",
                'Send custom_data as an object, e.g. {"value": 19.99, "currency": "USD"}.',
                meta_code=_META_INVALID_PARAMETER,
            )
        )
        value = None
    custom_data: Mapping[str, Any] = value or {}
    _check_value(custom_data, is_purchase, found)
    if _number_out_of_range(custom_data.get("predicted_ltv")):
        found.append(_out_of_range("custom_data.predicted_ltv", "250.0"))
    _check_currency(custom_data, is_purchase, found)
    if "contents" in custom_data:
        _check_contents(custom_data["contents"], found)
    content_ids = custom_data.get("content_ids")
    if content_ids is not None and not (
        isinstance(content_ids, list)
        and all(isinstance(i, str | int) and not isinstance(i, bool) for i in content_ids)
    ):
        found.append(
            _warning(
                "invalid_content_ids",
                "custom_data.content_ids",
                "content_ids is not a list of product IDs.",
                'Send content_ids as a list of strings, e.g. ["SKU-1", "SKU-2"].',
            )
        )
    num_items = custom_data.get("num_items")
    if _whole_number_out_of_range(num_items):
        found.append(_out_of_range("custom_data.num_items", "3"))
    elif num_items is not None and (isinstance(num_items, bool) or not isinstance(num_items, int)):
        found.append(
            _warning(
                "invalid_num_items",
                "custom_data.num_items",
                f"num_items is {_kind(num_items)}, not a whole number, so it was left out.",
                "Send num_items as an integer, e.g. 3.",
            )
        )


def _check_value(
    custom_data: Mapping[str, Any], is_purchase: bool, found: list[Diagnostic]
) -> None:
    amount = custom_data.get("value")
    if amount is None or amount == "":
        if is_purchase:
            found.append(
                _error(
                    "missing_value",
                    "custom_data.value",
                    "This Purchase has no value, which Meta requires to report revenue and "
                    "optimize for it.",
                    "Send the order total as a number in custom_data.value, e.g. 49.90, with "
                    'its currency, e.g. "EUR".',
                    meta_code=_META_INVALID_PARAMETER,
                )
            )
        return
    if _number_out_of_range(amount):
        found.append(_out_of_range("custom_data.value", "1234.50"))
        return
    if isinstance(amount, int | float) and not isinstance(amount, bool):
        number = float(amount)
    elif isinstance(amount, str) and _is_number(amount):
        number = float(amount)
        found.append(
            _warning(
                "value_not_number",
                "custom_data.value",
                "custom_data.value is a number written as text; Meta expects a JSON number.",
                'Send the value as a number (49.9), not a string ("49.90").',
            )
        )
    else:
        found.append(
            _error(
                "invalid_value",
                "custom_data.value",
                f"custom_data.value is {_kind(amount)} that is not a number, so Meta cannot "
                "record the purchase value.",
                "Send the order total as a plain number with a dot for decimals, e.g. 1234.50, "
                "without currency signs or thousands separators.",
                meta_code=_META_INVALID_PARAMETER,
            )
        )
        return
    if not math.isfinite(number):
        found.append(
            _error(
                "invalid_value",
                "custom_data.value",
                "custom_data.value is not a finite number.",
                "Send the order total as a plain number, e.g. 1234.50.",
                meta_code=_META_INVALID_PARAMETER,
            )
        )
    elif number < 0:
        found.append(
            _warning(
                "negative_value",
                "custom_data.value",
                "custom_data.value is negative; refunds are not sent as negative purchases.",
                "Send the positive amount of the sale; leave refunds out of the Conversions API.",
            )
        )


def _is_number(text: str) -> bool:
    try:
        number = float(text.strip())
    except ValueError:
        return False
    return math.isfinite(number)


def _check_currency(
    custom_data: Mapping[str, Any], is_purchase: bool, found: list[Diagnostic]
) -> None:
    currency = custom_data.get("currency")
    if currency is None or currency == "":
        has_value = custom_data.get("value") not in (None, "")
        if is_purchase:
            found.append(
                _error(
                    "missing_currency",
                    "custom_data.currency",
                    "This Purchase has no currency, which Meta requires with the value.",
                    'Send the 3-letter ISO 4217 code in custom_data.currency, e.g. "USD".',
                    meta_code=_META_INVALID_PARAMETER,
                )
            )
        elif has_value:
            found.append(
                _warning(
                    "missing_currency",
                    "custom_data.currency",
                    "The event has a value but no currency, so Meta cannot use the value.",
                    'Send the 3-letter ISO 4217 code in custom_data.currency, e.g. "USD".',
                )
            )
        return
    if normalize.normalize_currency(currency) is None:
        found.append(
            _error(
                "invalid_currency",
                "custom_data.currency",
                f"The currency {_shown(currency, 20)!r} is not an ISO 4217 currency code.",
                'Send the 3-letter code, e.g. "USD", "EUR" or "GBP", not a symbol or a name.',
                meta_code=_META_INVALID_PARAMETER,
            )
        )


def _check_contents(contents: Any, found: list[Diagnostic]) -> None:
    fix = 'Send contents as a list of objects like {"id": "SKU-1", "quantity": 2}.'
    if not isinstance(contents, list):
        found.append(
            _error(
                "invalid_contents",
                "custom_data.contents",
                f"custom_data.contents is {_kind(contents)}, not a list of line items.",
                fix,
                meta_code=_META_INVALID_PARAMETER,
            )
        )
        return
    for index, item in enumerate(contents):
        path = f"custom_data.contents[{index}]"
        if not isinstance(item, Mapping):
            found.append(
                _error(
                    "invalid_contents",
                    path,
                    f"Line item {index} is {_kind(item)}, not an object.",
                    fix,
                    meta_code=_META_INVALID_PARAMETER,
                )
            )
            continue
        item_id = item.get("id")
        if (
            item_id is None
            or item_id == ""
            or isinstance(item_id, bool)
            or not isinstance(item_id, str | int)
        ):
            found.append(
                _error(
                    "invalid_contents",
                    f"{path}.id",
                    f"Line item {index} has no product id.",
                    'Give every line item the product\'s id or SKU as text, e.g. "SKU-1".',
                    meta_code=_META_INVALID_PARAMETER,
                )
            )
        quantity = item.get("quantity")
        if _whole_number_out_of_range(quantity):
            found.append(_out_of_range(f"{path}.quantity", "2"))
        elif quantity is None:
            found.append(
                _warning(
                    "missing_quantity",
                    f"{path}.quantity",
                    f"Line item {index} has no quantity.",
                    "Give every line item its quantity as a whole number, e.g. 1.",
                )
            )
        elif isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            found.append(
                _error(
                    "invalid_contents",
                    f"{path}.quantity",
                    f"Line item {index} has a quantity that is not a whole number above zero.",
                    "Send quantity as a positive integer, e.g. 2.",
                    meta_code=_META_INVALID_PARAMETER,
                )
            )
        price = item.get("item_price")
        if _number_out_of_range(price):
            found.append(_out_of_range(f"{path}.item_price", "19.99"))
        elif price is not None and (
            isinstance(price, bool)
            or not isinstance(price, int | float)
            or not math.isfinite(price)
        ):
            found.append(
                _error(
                    "invalid_contents",
                    f"{path}.item_price",
                    f"Line item {index} has an item_price that is not a number.",
                    "Send item_price as a plain number, e.g. 19.99.",
                    meta_code=_META_INVALID_PARAMETER,
                )
            )


def _number_out_of_range(value: Any) -> bool:
    """Whether ``value`` is a number (or a number written as text) that no 64-bit float holds.

    JSON has no limit on numbers: a 400-digit integer, ``1e400`` (which Python reads as
    infinity) and their strings are all valid input, and none of them is an amount, a price or
    a time Meta can take. NaN is not counted here: it is not a number at all, and the checks
    of each field already say so.
    """
    if value is None:
        return False  # an absent field, the usual case
    if type(value) is float:
        return math.isinf(value)
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            return True
        return False
    if isinstance(value, float):
        return math.isinf(value)
    if isinstance(value, str) and len(value) < 100_000:
        try:
            return math.isinf(float(value.strip()))
        except ValueError:
            return False
    return False


def _whole_number_out_of_range(value: Any) -> bool:
    """Whether ``value`` is an integer Meta cannot read (beyond 64 bits), or out of range at all."""
    if isinstance(value, int) and not isinstance(value, bool):
        return not -_INT64_MAX - 1 <= value <= _INT64_MAX
    return _number_out_of_range(value)


def _out_of_range(field: str, example: str) -> Diagnostic:
    return _error(
        "number_out_of_range",
        field,
        f"{field} is a number too large to send (Meta reads it as a 64-bit number, and this "
        "one has no such form: a huge integer, or something like 1e400).",
        f"Send {field} as a plain number of ordinary size, e.g. {example}; check what fills "
        "it (a unit mix-up, or an ID or timestamp in the wrong field).",
        meta_code=_META_INVALID_PARAMETER,
    )


def _check_other_keys(event: Mapping[str, Any], found: list[Diagnostic]) -> None:
    opt_out = event.get("opt_out")
    if opt_out is not None and not isinstance(opt_out, bool):
        found.append(
            _warning(
                "invalid_opt_out",
                "opt_out",
                f"opt_out is {_kind(opt_out)}, not true or false, so it was left out (Meta "
                "would refuse the whole request over it).",
                "Send opt_out as a JSON boolean, or leave it out.",
            )
        )
    if event.get("action_source") == "app" and event.get("app_data") is None:
        found.append(
            _error(
                "missing_app_data",
                "app_data",
                "App events need app_data with the device information (extinfo).",
                "Send app_data with advertiser_tracking_enabled, "
                "application_tracking_enabled and the 16-slot extinfo array, or use another "
                "action_source if the event did not happen in an app.",
                meta_code=_META_INVALID_PARAMETER,
            )
        )
    for key in event:
        if key not in _KNOWN_EVENT_KEYS:
            shown = _shown(str(key), 40)
            found.append(
                _info(
                    "unknown_event_key",
                    shown,
                    f'"{shown}" is not an event field Meta knows, so it is not sent.',
                    "Check the spelling; product details belong in custom_data and customer "
                    "details in user_data.",
                )
            )


# --- fields that can fail a whole request -------------------------------------------------------


def _check_request_fields(
    event: Mapping[str, Any], action_source: str | None, found: list[Diagnostic]
) -> None:
    """Values Meta would refuse, failing every event of the request with them.

    A field that only adds detail is left out (its code is in ``DROPPED_FIELD_CODES``); one
    the event cannot be sent without is an error.
    """
    _check_segmentation("customer_segmentation", event.get("customer_segmentation"), found)
    custom_data = event.get("custom_data")
    # Most events have no custom_data (or a plain dict): skip its checks, and the Mapping ABC.
    if custom_data is not None and (type(custom_data) is dict or isinstance(custom_data, Mapping)):
        _check_custom_request_fields(custom_data, found)
    _check_original_event_data(event.get("original_event_data"), found)
    _check_store_data(event.get("store_data"), action_source, found)
    if action_source == "app" and event.get("app_data") is not None:
        _check_app_data(event["app_data"], found)


def _check_segmentation(field: str, value: Any, found: list[Diagnostic]) -> None:
    if value is not None and not _one_of(value, CUSTOMER_SEGMENTATIONS):
        found.append(
            _dropped(
                "invalid_customer_segmentation",
                field,
                f"customer_segmentation {_shown(value, 40)!r} is not one Meta documents",
                f"Send one of: {', '.join(sorted(CUSTOMER_SEGMENTATIONS))}.",
            )
        )


def _check_custom_request_fields(custom: Mapping[str, Any], found: list[Diagnostic]) -> None:
    """The request-failing values of a custom_data that is an object with keys."""
    _check_segmentation(
        "custom_data.customer_segmentation", custom.get("customer_segmentation"), found
    )
    content_type = custom.get("content_type")
    if content_type is not None and not _one_of(content_type, CONTENT_TYPES):
        found.append(
            _dropped(
                "invalid_content_type",
                "custom_data.content_type",
                f"content_type {_shown(content_type, 40)!r} is neither product nor product_group",
                'Send "product" (content_ids are products) or "product_group" (product '
                "groups), or leave it out.",
            )
        )
    _check_delivery_categories(custom, found)
    predicted_ltv = custom.get("predicted_ltv")
    if (
        predicted_ltv is not None
        and not _number_out_of_range(predicted_ltv)
        and not (
            isinstance(predicted_ltv, int | float)
            and not isinstance(predicted_ltv, bool)
            and math.isfinite(predicted_ltv)
        )
    ):
        found.append(
            _dropped(
                "invalid_predicted_ltv",
                "custom_data.predicted_ltv",
                f"predicted_ltv is {_kind(predicted_ltv)}, not a number",
                "Send predicted_ltv as a plain number, e.g. 250.0.",
            )
        )


def _one_of(value: Any, allowed: frozenset[str]) -> bool:
    return isinstance(value, str) and value in allowed


def _dropped(code: str, field: str, what: str, fix: str) -> Diagnostic:
    """A warning for a field left out of the event (``what`` says what is wrong with it)."""
    return _warning(
        code,
        field,
        f"{what}, so it was left out (Meta would refuse the whole request over it).",
        fix,
    )


def _check_delivery_categories(custom: Mapping[str, Any], found: list[Diagnostic]) -> None:
    places: list[tuple[str, Any]] = [
        ("custom_data.delivery_category", custom.get("delivery_category"))
    ]
    contents = custom.get("contents")
    if isinstance(contents, list):
        places.extend(
            (f"custom_data.contents[{index}].delivery_category", item.get("delivery_category"))
            for index, item in enumerate(contents)
            if isinstance(item, Mapping)
        )
    for field, value in places:
        if value is not None and not _one_of(value, DELIVERY_CATEGORIES):
            found.append(
                _dropped(
                    "invalid_delivery_category",
                    field,
                    f"delivery_category {_shown(value, 40)!r} is not one Meta documents",
                    "Send in_store, curbside or home_delivery, or leave it out.",
                )
            )


def _check_original_event_data(value: Any, found: list[Diagnostic]) -> None:
    if value is None:
        return
    keys = ", ".join(sorted(ORIGINAL_EVENT_DATA_KEYS))
    if not isinstance(value, Mapping):
        found.append(
            _dropped(
                "invalid_original_event_data",
                "original_event_data",
                f"original_event_data is {_kind(value)}, not an object",
                f"Send original_event_data as an object with {keys}.",
            )
        )
        return
    for key in value:
        if key not in ORIGINAL_EVENT_DATA_KEYS:
            shown = _shown(str(key), 40)
            found.append(
                _dropped(
                    "invalid_original_event_data",
                    f"original_event_data.{shown}",
                    f'"{shown}" is not an original_event_data key Meta documents',
                    f"Use only {keys}.",
                )
            )


def _check_store_data(value: Any, action_source: str | None, found: list[Diagnostic]) -> None:
    if value is None:
        return
    if action_source != STORE_ACTION_SOURCE:
        found.append(
            _dropped(
                "invalid_store_data",
                "store_data",
                "store_data describes the store of a physical_store event, and this event's "
                "action_source is not physical_store",
                'Send store_data only with action_source "physical_store".',
            )
        )
    elif not isinstance(value, Mapping):
        found.append(
            _dropped(
                "invalid_store_data",
                "store_data",
                f"store_data is {_kind(value)}, not an object",
                "Send store_data as an object describing the store, or leave it out.",
            )
        )


def _check_app_data(app_data: Any, found: list[Diagnostic]) -> None:
    fix = (
        'Send app_data as {"advertiser_tracking_enabled": 1, "application_tracking_enabled": 1, '
        '"extinfo": ["a2", "com.example.app", …16 slots]} (empty strings for unknown slots).'
    )
    if not isinstance(app_data, Mapping):
        found.append(
            _error(
                "invalid_app_data",
                "app_data",
                f"app_data is {_kind(app_data)}, not an object.",
                fix,
                meta_code=_META_INVALID_PARAMETER,
            )
        )
        return
    tracking = app_data.get("advertiser_tracking_enabled")
    if tracking is None or not (isinstance(tracking, bool) or tracking in (0, 1)):
        found.append(
            _error(
                "invalid_app_data",
                "app_data.advertiser_tracking_enabled",
                "App events need advertiser_tracking_enabled (1 or 0, true or false: whether "
                "the user allowed tracking, e.g. App Tracking Transparency on iOS), and "
                + ("none was sent." if tracking is None else f"it is {_kind(tracking)}."),
                fix,
                meta_code=_META_INVALID_PARAMETER,
            )
        )
    extinfo = app_data.get("extinfo")
    problem = _extinfo_problem(extinfo)
    if problem is not None:
        found.append(
            _error(
                "invalid_app_data",
                "app_data.extinfo",
                f"App events need extinfo, the device information in 16 slots; {problem}.",
                fix,
                meta_code=_META_INVALID_PARAMETER,
            )
        )


def _extinfo_problem(extinfo: Any) -> str | None:
    if extinfo is None:
        return "none was sent"
    if not isinstance(extinfo, list | tuple):
        return f"it is {_kind(extinfo)}, not a list"
    if len(extinfo) != EXTINFO_SLOTS:
        return f"it has {len(extinfo)} slots, not {EXTINFO_SLOTS}"
    if not _one_of(extinfo[0], EXTINFO_PLATFORMS):
        return 'its first slot must be "a2" (Android) or "i2" (iOS)'
    if any(isinstance(slot, bool) or not isinstance(slot, str | int | float) for slot in extinfo):
        return "every slot must be text or a number (empty text for unknown ones)"
    return None
