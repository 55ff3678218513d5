"""The sandbox's checks of a ``POST /{pixel_id}/events`` body, as Meta documents them.

One invalid event fails the whole request (FACTS §8), so :func:`validate_events` stops at the
first problem; like Meta, its answer does not say which event of ``data`` it was. Each rule is
one Meta documents unless its comment says *unconfirmed* (the sandbox's own choice); docs/META.md
("Sandbox answers") lists them with their sources. The checks run once per event on the hot
path of the dispatch benchmark, so they stay plain dict and set look-ups.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any

import pycountry

from capi_destinations.sandbox import errors
from capi_destinations.sandbox.errors import GraphAnswerError

MAX_EVENTS_PER_REQUEST = 1000
MAX_EVENT_AGE_SECONDS = 7 * 24 * 3600
# "For offline and physical store events with physical_store as action_source, you should
# upload transactions within 62 days of the conversion" (Meta's offline events page).
MAX_STORE_EVENT_AGE_SECONDS = 62 * 24 * 3600
# Unconfirmed: Meta documents no figure for event times in the future. This is the project's
# own rule, the same as the product's (diagnostics.MAX_CLOCK_SKEW, held equal by tests/meta):
# five minutes of clock drift, later times refused (milliseconds sent as seconds called out).
FUTURE_TOLERANCE_SECONDS = 300
# The Pixel's rule for custom event names (FACTS §3, [D:pixel-events-ref]).
MAX_CUSTOM_EVENT_NAME_LENGTH = 50
# Meta: partner_agent "should be in a format that is less than 23 characters and includes at
# least two alphabetical characters" (end-to-end implementation guide). What Meta answers to
# one that does not is unconfirmed; the sandbox refuses it as an invalid parameter.
MAX_PARTNER_AGENT_LENGTH = 22

ACTION_SOURCES = frozenset(
    {
        "email",
        "website",
        "app",
        "phone_call",
        "chat",
        "physical_store",
        "system_generated",
        "business_messaging",
        "other",
    }
)

# Keys Meta requires to be SHA-256 hashed (FACTS §4). external_id is only recommended.
HASHED_USER_DATA_KEYS = frozenset({"em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country"})

CUSTOMER_INFORMATION_KEYS = HASHED_USER_DATA_KEYS | frozenset(
    {
        "external_id",
        "client_ip_address",
        "client_user_agent",
        "fbc",
        "fbp",
        "subscription_id",
        "fb_login_id",
        "lead_id",
        "anon_id",
        "madid",
        "page_id",
        "page_scoped_user_id",
        "ctwa_clid",
        "ig_account_id",
        "ig_sid",
    }
)

# Since Graph v13.0 an event is invalid when its customer-information keys are only a subset of
# one of these combinations (FACTS §4, "baseline matching rule").
TOO_WEAK_KEY_COMBINATIONS = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)

CURRENCY_CODES = frozenset(currency.alpha_3 for currency in pycountry.currencies)

# A digest, or one with the appendix Meta's parameter builder adds (".AQIDAQMC"), which Meta
# says to send as is.
_is_sha256 = re.compile(r"[0-9a-fA-F]{64}(?:\.[A-Za-z0-9_-]{1,64})?").fullmatch
# fb.<subdomain index>.<creation time, ms>.<fbclid>, plus the parameter builder's appendix
# (customer information parameters; parameter builder library).
_is_fbc = re.compile(r"fb\.\d{1,2}\.\d{1,16}\.[^.\s]+(?:\.[A-Za-z0-9_-]{1,64})?").fullmatch
_is_plain_ipv4 = re.compile(
    r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}"
).fullmatch
_is_appendix = re.compile(r"[A-Za-z0-9_-]{1,64}").fullmatch
_LARGEST_WEAK_COMBINATION = max(len(combination) for combination in TOO_WEAK_KEY_COMBINATIONS)
_MILLISECONDS_THRESHOLD = 10**12


def validate_events(data: object, *, now: float) -> GraphAnswerError | None:
    """Check the ``data`` parameter of an events request; None when Meta would accept it."""
    if not isinstance(data, list):
        if data is None:
            return errors.invalid_body("The parameter data is required")
        return errors.invalid_body("The parameter data must be an array of events")
    if not data:
        return errors.invalid_body("The parameter data must contain at least one event")
    if len(data) > MAX_EVENTS_PER_REQUEST:
        return errors.invalid_body(
            f"Too many events: data holds {len(data)}, the maximum is {MAX_EVENTS_PER_REQUEST}"
        )
    oldest_allowed = (now - MAX_EVENT_AGE_SECONDS, now - MAX_STORE_EVENT_AGE_SECONDS)
    newest_allowed = now + FUTURE_TOLERANCE_SECONDS
    for event in data:
        problem = _validate_event(event, oldest_allowed, newest_allowed)
        if problem is not None:
            return problem
    return None


def validate_partner_agent(value: object) -> GraphAnswerError | None:
    """Check ``partner_agent`` against Meta's documented format; None when it is fine or absent."""
    if value is None or value == "":
        return None
    if (
        not isinstance(value, str)
        or len(value) > MAX_PARTNER_AGENT_LENGTH
        or sum(1 for char in value if char.isascii() and char.isalpha()) < 2
    ):
        return errors.invalid_body(
            "partner_agent must be less than 23 characters and include at least two letters"
        )
    return None


def event_time_of(value: object) -> int | None:
    """``event_time`` as an int when it is whole Unix seconds (int or digit string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _validate_event(
    event: object, oldest_allowed: tuple[float, float], newest_allowed: float
) -> GraphAnswerError | None:
    if not isinstance(event, dict):
        return errors.invalid_event("each event must be a JSON object")
    event_name = event.get("event_name")
    problem = _validate_event_name(event_name)
    if problem is None:
        problem = _validate_event_time(event, oldest_allowed, newest_allowed)
    if problem is None:
        problem = _validate_action_source(event.get("action_source"))
    if problem is not None:
        return problem

    user_data = event.get("user_data")
    if not isinstance(user_data, dict):
        return errors.invalid_event("user_data is required and must be an object")
    problem = _validate_user_data(user_data)
    if problem is None and event.get("action_source") == "website":
        problem = _validate_website_event(event, user_data)
    if problem is None:
        problem = _validate_documented_formats(event, user_data)
    if problem is not None:
        return problem

    custom_data = event.get("custom_data")
    if custom_data is not None or event_name == "Purchase":
        return _validate_custom_data(str(event_name), custom_data)
    return None


def _validate_event_name(event_name: object) -> GraphAnswerError | None:
    if not isinstance(event_name, str) or not event_name.strip():
        return errors.invalid_event("event_name is required")
    if len(event_name) > MAX_CUSTOM_EVENT_NAME_LENGTH:
        return errors.invalid_event(
            f"event_name is longer than {MAX_CUSTOM_EVENT_NAME_LENGTH} characters"
        )
    return None


def _validate_event_time(
    event: dict[str, Any], oldest_allowed: tuple[float, float], newest_allowed: float
) -> GraphAnswerError | None:
    raw_time = event.get("event_time")
    if raw_time is None:
        return errors.invalid_event("event_time is required")
    event_time = event_time_of(raw_time)
    if event_time is None:
        return errors.invalid_event("event_time must be whole Unix seconds")
    if event_time < oldest_allowed[0] and (
        event.get("action_source") != "physical_store" or event_time < oldest_allowed[1]
    ):
        return errors.event_time_too_old()
    if event_time > newest_allowed:
        if event_time > _MILLISECONDS_THRESHOLD:
            # Unconfirmed: the sandbox's own hint; Meta's subcode for this is not published.
            return errors.invalid_event(
                f"event_time {event_time} looks like milliseconds; send Unix seconds",
                subcode=2804003,
            )
        return errors.event_time_in_future()
    return None


def _validate_action_source(action_source: object) -> GraphAnswerError | None:
    if action_source is None:
        return errors.invalid_event("action_source is required")
    if action_source not in ACTION_SOURCES:
        return errors.invalid_event(
            f"action_source {action_source!r} is not one of {', '.join(sorted(ACTION_SOURCES))}",
        )
    return None


def _validate_website_event(
    event: dict[str, Any], user_data: dict[str, Any]
) -> GraphAnswerError | None:
    source_url = event.get("event_source_url")
    if not isinstance(source_url, str) or not source_url.startswith(("http://", "https://")):
        return errors.invalid_event(
            "event_source_url (http:// or https://) is required for website events"
        )
    user_agent = user_data.get("client_user_agent")
    if not isinstance(user_agent, str) or not user_agent.strip():
        return errors.invalid_event("user_data.client_user_agent is required for website events")
    return None


# Limited Data Use (FACTS §3, [D:server-event]): the only option is "LDU" ([] means "not LDU");
# country 1 (USA) or 0 (geolocate), state 1000 (California) or 0 (geolocate), and a country
# needs a state. The formats are documented; that Meta refuses the request for them (and with
# which subcode) is unconfirmed.
LDU_OPTION = "LDU"
LDU_COUNTRIES = frozenset({0, 1})
LDU_STATES = frozenset({0, 1000})


def _validate_documented_formats(
    event: dict[str, Any], user_data: dict[str, Any]
) -> GraphAnswerError | None:
    """LDU values and pairing, the IP address and the ``fbc`` format (each documented)."""
    problem = _validate_processing_options(event)
    if problem is not None:
        return problem
    ip = user_data.get("client_ip_address")
    if ip and not _is_ip_address(ip):
        return errors.invalid_event("user_data.client_ip_address must be an IPv4 or IPv6 address")
    fbc = user_data.get("fbc")
    if fbc and (not isinstance(fbc, str) or _is_fbc(fbc) is None):
        return errors.invalid_event(
            "user_data.fbc must look like fb.<subdomain index>.<creation time>.<fbclid>"
        )
    return None


def _validate_processing_options(event: dict[str, Any]) -> GraphAnswerError | None:
    options = event.get("data_processing_options")
    if options is None:
        return None
    if not isinstance(options, list) or any(option != LDU_OPTION for option in options):
        return errors.invalid_event('data_processing_options accepts only ["LDU"] or []')
    if not options:
        return None
    country = event.get("data_processing_options_country")
    state = event.get("data_processing_options_state")
    if country is None:
        return errors.invalid_event(
            "data_processing_options_country is required with LDU (1 for the USA, 0 to geolocate)"
        )
    if country.__class__ is not int or country not in LDU_COUNTRIES:
        return errors.invalid_event("data_processing_options_country must be 1 or 0")
    if state is None:
        return errors.invalid_event(
            "data_processing_options_state is required with a country (1000 or 0)"
        )
    if state.__class__ is not int or state not in LDU_STATES:
        return errors.invalid_event("data_processing_options_state must be 1000 or 0")
    return None


def _is_ip_address(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if _is_plain_ipv4(value) is not None:
        return True  # the usual case, without building an address object
    try:
        ipaddress.ip_address(value)
    except ValueError:
        head, _, tail = value.rpartition(".")
        if not head or tail.isdigit() or _is_appendix(tail) is None:
            return False
        try:
            ipaddress.ip_address(head)
        except ValueError:
            return False
    return True


def _validate_user_data(user_data: dict[str, Any]) -> GraphAnswerError | None:
    # Written for speed: it runs for every event of every request.
    present = []
    for key, value in user_data.items():
        if not value or key not in CUSTOMER_INFORMATION_KEYS:
            continue
        if key in HASHED_USER_DATA_KEYS:
            if value.__class__ is list:
                for item in value:
                    if item.__class__ is not str or _is_sha256(item) is None:
                        return errors.unhashed_user_data(key)
            elif value.__class__ is not str or _is_sha256(value) is None:
                return errors.unhashed_user_data(key)
        present.append(key)
    if not present:
        return errors.insufficient_customer_information()
    if len(present) <= _LARGEST_WEAK_COMBINATION:
        keys = frozenset(present)
        if any(keys <= weak for weak in TOO_WEAK_KEY_COMBINATIONS):
            return errors.insufficient_customer_information()
    return None


def _validate_custom_data(event_name: str, custom_data: object) -> GraphAnswerError | None:
    if custom_data is None:
        custom_data = {}
    if not isinstance(custom_data, dict):
        return errors.invalid_event("custom_data must be an object")
    value = custom_data.get("value")
    currency = custom_data.get("currency")
    if event_name == "Purchase":
        # Meta documents value and currency as required for Purchase (FACTS §6).
        if value is None:
            return errors.invalid_event("custom_data.value is required for Purchase")
        if currency is None:
            return errors.invalid_event("custom_data.currency is required for Purchase")
    if value is not None and not _is_amount(value):
        return errors.invalid_event("custom_data.value must be a number")
    if currency is not None and (
        not isinstance(currency, str) or currency.upper() not in CURRENCY_CODES
    ):
        return errors.invalid_event(
            "custom_data.currency must be an ISO 4217 currency code such as USD"
        )
    return None


def _is_amount(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            return math.isfinite(float(value))
        except ValueError:
            return False
    return False
