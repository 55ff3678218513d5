"""Consent policies and the verdict they give for one event's consent state.

An event may carry the consent state read from the site's consent platform::

    {"ad_storage": "granted", "ad_user_data": "denied", "ad_personalization": "denied",
     "region": "DE", "source": "cookiebot", "version": "3", "time": 1700000000}

Each destination has a policy (``ConsentPolicy``) and a default for events that carry no
consent state (``granted`` or ``denied``). ``evaluate_consent`` turns both into a verdict: send
or suppress, and whether to ask Meta for Limited Data Use. The event is recorded either way;
only the forwarding to Meta follows the verdict.

Pure functions over plain dicts: no database, no network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import TextChoices

from capi_destinations.findings import ERROR, INFO, WARNING, Diagnostic

__all__ = [
    "CONSENT_SIGNALS",
    "DENIED",
    "GRANTED",
    "ConsentPolicy",
    "ConsentVerdict",
    "MissingConsent",
    "allows_ad_storage",
    "check_data_processing_options",
    "evaluate_consent",
    "parse_consent",
]


class MissingConsent(TextChoices):
    """What a destination assumes for an event (or a signal) that carries no consent state."""

    GRANTED = "granted", "Treat as granted"
    DENIED = "denied", "Treat as denied"


# A consent signal's two states, as plain strings.
GRANTED: str = MissingConsent.GRANTED.value
DENIED: str = MissingConsent.DENIED.value

#: The consent signals we read, named as in Google Consent Mode and most consent platforms.
CONSENT_SIGNALS: tuple[str, ...] = ("ad_storage", "ad_user_data", "ad_personalization")

# Signals whose denial means the event must not reach Meta under ``require_consent``: storing
# the ad cookies (fbp/fbc) and sending user data for advertising.
_REQUIRED_SIGNALS: tuple[str, ...] = ("ad_storage", "ad_user_data")
_CONTEXT_KEYS: tuple[str, ...] = ("region", "source", "version", "time")
_MAX_CONTEXT_TEXT = 100

# Meta's Limited Data Use flag, with country and state 0: "Meta, geolocate the event".
_LDU_OPTIONS = ("LDU",)
_GEOLOCATE = 0
# The values Meta documents for data_processing_options_country (1 = the United States) and
# _state (1000 = California), besides 0 = geolocate (server event parameters).
_DPO_COUNTRIES = (0, 1)
_DPO_STATES = (0, 1000)
_DPO_LOCATION_KEYS = ("data_processing_options_country", "data_processing_options_state")
_META_INVALID_PARAMETER = 100


class ConsentPolicy(TextChoices):
    """What a destination does with consent; the value is what ``Destination`` stores."""

    #: Forward every event whatever its consent state (consent handled elsewhere).
    SEND_ALWAYS = "send_always", "Send regardless of consent"
    #: Forward only events whose ad_storage and ad_user_data are not denied.
    REQUIRE_CONSENT = "require_consent", "Require advertising consent (suppress when denied)"
    #: Forward every event, flagged for Meta's Limited Data Use processing.
    LIMITED_DATA_USE = "limited_data_use", "Send with Limited Data Use"


@dataclass(frozen=True)
class ConsentVerdict:
    """Whether to send an event to Meta, why, and the data-processing fields to send with it.

    ``data_processing_options`` None means "leave the field out of the payload".
    """

    send: bool
    reason: str
    data_processing_options: list[str] | None = None
    data_processing_options_country: int | None = None
    data_processing_options_state: int | None = None


def evaluate_consent(
    consent: Mapping[str, Any] | None,
    *,
    policy: str,
    missing_consent: str = GRANTED,
) -> ConsentVerdict:
    """The verdict for one event's consent state under a destination's policy.

    ``consent`` is the state from ``parse_consent`` (None when the event carried none).
    ``missing_consent`` (``granted``/``denied``) stands in for a missing state and for each
    signal missing from a state. Raises ValueError for an unknown policy or default, which
    are configuration errors, never event data.
    """
    # This runs for every event: the policy by a dict look-up rather than the enum's call,
    # the Mapping ABC only for what is not a plain dict, constant verdicts shared (frozen).
    chosen = (type(policy) is str and _POLICY_OF_VALUE.get(policy)) or ConsentPolicy(policy)
    if missing_consent not in (GRANTED, DENIED):
        raise ValueError(f"missing_consent must be 'granted' or 'denied', not {missing_consent!r}")
    state = (
        consent
        if consent is not None and (type(consent) is dict or isinstance(consent, Mapping))
        else None
    )

    if chosen is ConsentPolicy.SEND_ALWAYS:
        return _SENT_ALWAYS

    if chosen is ConsentPolicy.LIMITED_DATA_USE:
        return ConsentVerdict(
            send=True,
            reason="sent with Limited Data Use (Meta geolocates the event)",
            data_processing_options=list(_LDU_OPTIONS),
            data_processing_options_country=_GEOLOCATE,
            data_processing_options_state=_GEOLOCATE,
        )

    if state is None:
        return _NO_STATE_DENIED if missing_consent == DENIED else _NO_STATE_GRANTED

    # Read through _parse_signal so an unparsed state ("DENIED", false) is understood too.
    signals = {signal: _parse_signal(state.get(signal)) for signal in _REQUIRED_SIGNALS}
    denied = [signal for signal, given in signals.items() if given == DENIED]
    missing = [signal for signal, given in signals.items() if given is None]
    note = _context_note(state, missing, missing_consent)
    if denied or (missing and missing_consent == DENIED):
        refused = denied + (missing if missing_consent == DENIED else [])
        return ConsentVerdict(
            send=False, reason=f"suppressed: {' and '.join(refused)} denied{note}"
        )
    return ConsentVerdict(send=True, reason=f"sent: ad_storage and ad_user_data granted{note}")


_POLICY_OF_VALUE: dict[str, ConsentPolicy] = {policy.value: policy for policy in ConsentPolicy}
_SENT_ALWAYS = ConsentVerdict(send=True, reason="sent: the destination sends every event")
_NO_STATE_DENIED = ConsentVerdict(
    send=False, reason="suppressed: no consent state, and the destination treats that as denied"
)
_NO_STATE_GRANTED = ConsentVerdict(
    send=True, reason="sent: no consent state, and the destination treats that as granted"
)


def allows_ad_storage(consent: Mapping[str, Any] | None, *, missing_consent: str) -> bool:
    """Whether a consent state lets the site store the ad cookies (``_fbc``, ``_fbp``).

    ``consent`` is shaped as an event's (``{"ad_storage": "granted", …}``, booleans too);
    ``missing_consent`` stands in when it is None or says nothing of ``ad_storage``.
    """
    if missing_consent not in (GRANTED, DENIED):
        raise ValueError(f"missing_consent must be 'granted' or 'denied', not {missing_consent!r}")
    given = _parse_signal(consent.get("ad_storage")) if isinstance(consent, Mapping) else None
    return (given or missing_consent) == GRANTED


def refuses_ad_storage(consent: Mapping[str, Any] | None) -> bool:
    """Whether a consent state itself says no to ad storage (not only lacks a yes)."""
    given = _parse_signal(consent.get("ad_storage")) if isinstance(consent, Mapping) else None
    return given == DENIED


def _context_note(state: Mapping[str, Any], missing: list[str], missing_consent: str) -> str:
    parts = [
        f"{key} {state[key]}" for key in ("source", "region") if isinstance(state.get(key), str)
    ]
    if missing:
        parts.append(f"{' and '.join(missing)} not given, counted as {missing_consent}")
    return f" ({'; '.join(parts)})" if parts else ""


def parse_consent(value: Any) -> tuple[dict[str, Any] | None, list[Diagnostic]]:
    """Validate an incoming consent state; return the clean state (or None) and findings.

    Signals accept ``granted``/``denied`` in any case and JSON booleans (true = granted).
    A signal with any other value is dropped with a warning and then counts as missing; a
    state with no usable signal at all is None (no consent state). ``region``, ``source`` and
    ``version`` are kept as short text, ``time`` as Unix seconds or text; unknown keys are
    dropped with an info diagnostic. Never raises.
    """
    if value is None:
        return None, []
    if not isinstance(value, Mapping):
        return None, [
            _warning(
                "invalid_consent",
                "consent",
                "The consent state is not an object, so the event is treated as having none.",
                'Send consent as an object, e.g. {"ad_storage": "granted", '
                '"ad_user_data": "granted", "ad_personalization": "denied"}.',
            )
        ]

    found: list[Diagnostic] = []
    state: dict[str, Any] = {}
    for signal in CONSENT_SIGNALS:
        if signal not in value or value[signal] is None:
            continue
        parsed = _parse_signal(value[signal])
        if parsed is None:
            found.append(
                _warning(
                    "invalid_consent_signal",
                    f"consent.{signal}",
                    f"consent.{signal} is not granted or denied, so it was ignored.",
                    f'Send consent.{signal} as "granted" or "denied".',
                )
            )
        else:
            state[signal] = parsed

    for key in _CONTEXT_KEYS:
        if key in value and value[key] is not None:
            parsed_context = _parse_context(key, value[key])
            if parsed_context is None:
                found.append(
                    _warning(
                        "invalid_consent_context",
                        f"consent.{key}",
                        f"consent.{key} is not a short text value, so it was ignored.",
                        f"Send consent.{key} as text"
                        + (" or Unix seconds." if key == "time" else "."),
                    )
                )
            else:
                state[key] = parsed_context

    for key in value:
        if key not in CONSENT_SIGNALS and key not in _CONTEXT_KEYS:
            shown = str(key)[:40]
            found.append(
                Diagnostic(
                    code="unknown_consent_key",
                    field=f"consent.{shown}",
                    severity=INFO,
                    message=f'"{shown}" is not a consent field we read, so it was ignored.',
                    fix="Use ad_storage, ad_user_data, ad_personalization, region, source, "
                    "version and time.",
                )
            )

    if not any(signal in state for signal in CONSENT_SIGNALS):
        if value:
            found.append(
                _warning(
                    "empty_consent",
                    "consent",
                    "The consent state has no usable signal, so the event is treated as "
                    "having none.",
                    "Send at least ad_storage and ad_user_data as granted or denied.",
                )
            )
        return None, found
    return state, found


def _parse_signal(value: Any) -> str | None:
    if isinstance(value, bool):
        return GRANTED if value else DENIED
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in (GRANTED, DENIED):
            return lowered
    return None


def _parse_context(key: str, value: Any) -> str | int | None:
    if key == "time" and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and 0 < len(value.strip()) <= _MAX_CONTEXT_TEXT:
        return value.strip()
    return None


def _warning(code: str, field: str, message: str, fix: str) -> Diagnostic:
    return Diagnostic(code=code, field=field, severity=WARNING, message=message, fix=fix)


def check_data_processing_options(event: Mapping[str, Any]) -> list[Diagnostic]:
    """Check caller-supplied data_processing_options and their country and state.

    Meta documents "LDU" as the only option (an empty list means "not LDU"), the country as
    1 (USA) or 0 (geolocate), the state as 1000 (California) or 0, and a state with every
    country. A wrong option or value is an error: Limited Data Use is a legal choice, so it is
    not guessed. With LDU and neither country nor state, ``ldu_location_filled`` says they were
    set to 0 (Meta geolocates, as the ``limited_data_use`` policy sends); a country or state
    without LDU means nothing and is left out (``dpo_location_without_ldu``).
    """
    options = event.get("data_processing_options")
    if (
        options is None
        and event.get("data_processing_options_country") is None
        and event.get("data_processing_options_state") is None
    ):
        return []  # the usual event: none of the three fields, nothing to say
    if options is not None and not (
        isinstance(options, list | tuple) and all(option == "LDU" for option in options)
    ):
        return [
            _dpo_error(
                "data_processing_options",
                'data_processing_options may only be ["LDU"] (Limited Data Use) or [] (not).',
                'Send ["LDU"] exactly (capital letters) to ask for Limited Data Use, [] not to.',
            )
        ]
    given = {key: event.get(key) for key in _DPO_LOCATION_KEYS if event.get(key) is not None}
    return _location_value_errors(given) or _location_findings(bool(options), given)


def _location_value_errors(given: Mapping[str, Any]) -> list[Diagnostic]:
    """An error for each country or state that is not a value Meta documents."""
    found: list[Diagnostic] = []
    for key, allowed, meaning in (
        ("data_processing_options_country", _DPO_COUNTRIES, "1 (United States) or 0"),
        ("data_processing_options_state", _DPO_STATES, "1000 (California) or 0"),
    ):
        value = given.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value not in allowed
        ):
            found.append(
                _dpo_error(
                    key,
                    f"{key} must be {meaning} (0: Meta geolocates the event).",
                    f"Send {key} as the number {meaning}.",
                )
            )
    return found


def _location_findings(ldu: bool, given: Mapping[str, Any]) -> list[Diagnostic]:
    """What a valid country and state say with (``ldu``) or without Limited Data Use."""
    if not ldu:
        return [
            _warning(
                "dpo_location_without_ldu",
                key,
                f'{key} only means something with data_processing_options ["LDU"], so it '
                "was left out.",
                'Send it together with data_processing_options ["LDU"], or leave it out.',
            )
            for key in given
        ]
    if len(given) == 1:
        missing = next(key for key in _DPO_LOCATION_KEYS if key not in given)
        return [
            _dpo_error(
                missing,
                f"With Limited Data Use, {', '.join(given)} needs {missing} too.",
                "Send both: 1 and 1000 for California, or 0 and 0 to let Meta geolocate.",
            )
        ]
    if (
        given.get("data_processing_options_state") == 1000
        and given.get("data_processing_options_country") != 1
    ):
        return [
            _dpo_error(
                "data_processing_options_country",
                "State 1000 (California) goes with country 1 (United States).",
                "Send country 1 with state 1000, or 0 and 0 to let Meta geolocate.",
            )
        ]
    if not given:
        return [
            _warning(
                "ldu_location_filled",
                "data_processing_options",
                "Limited Data Use was asked for without country and state, so both were set "
                "to 0: Meta geolocates the event.",
                "Send data_processing_options_country and _state yourself (1 and 1000 for "
                "California) if you know them.",
            )
        ]
    return []


def _dpo_error(field: str, message: str, fix: str) -> Diagnostic:
    return Diagnostic(
        code="invalid_data_processing_options",
        field=field,
        severity=ERROR,
        message=message,
        fix=fix,
        meta_code=_META_INVALID_PARAMETER,
    )
