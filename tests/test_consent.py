"""Tests of capi_destinations.consent: each policy, each consent state, and garbage input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capi_destinations.consent import (
    DENIED,
    GRANTED,
    ConsentPolicy,
    ConsentVerdict,
    evaluate_consent,
    parse_consent,
)
from capi_destinations.diagnostics import INFO, WARNING

ALL_GRANTED = {"ad_storage": GRANTED, "ad_user_data": GRANTED, "ad_personalization": GRANTED}


def test_policy_values_are_the_stored_strings() -> None:
    assert [policy.value for policy in ConsentPolicy] == [
        "send_always",
        "require_consent",
        "limited_data_use",
    ]
    assert ConsentPolicy("require_consent") == "require_consent"


# --- send_always -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "consent",
    [None, ALL_GRANTED, {"ad_storage": DENIED, "ad_user_data": DENIED}],
)
@pytest.mark.parametrize("missing_consent", [GRANTED, DENIED])
def test_send_always_sends_every_event_without_ldu(
    consent: dict[str, str] | None, missing_consent: str
) -> None:
    verdict = evaluate_consent(consent, policy="send_always", missing_consent=missing_consent)

    assert verdict == ConsentVerdict(send=True, reason="sent: the destination sends every event")


# --- require_consent ---------------------------------------------------------------------------


def test_require_consent_sends_when_both_required_signals_are_granted() -> None:
    verdict = evaluate_consent(
        {**ALL_GRANTED, "source": "cookiebot", "region": "DE"}, policy="require_consent"
    )

    assert verdict.send is True
    assert (
        verdict.reason == "sent: ad_storage and ad_user_data granted (source cookiebot; region DE)"
    )
    assert verdict.data_processing_options is None


@pytest.mark.parametrize(
    ("state", "denied"),
    [
        ({"ad_storage": DENIED, "ad_user_data": GRANTED}, "ad_storage"),
        ({"ad_storage": GRANTED, "ad_user_data": DENIED}, "ad_user_data"),
        ({"ad_storage": DENIED, "ad_user_data": DENIED}, "ad_storage and ad_user_data"),
    ],
)
def test_require_consent_suppresses_a_denied_required_signal(
    state: dict[str, str], denied: str
) -> None:
    verdict = evaluate_consent({**state, "source": "onetrust"}, policy="require_consent")

    assert verdict.send is False
    assert verdict.reason == f"suppressed: {denied} denied (source onetrust)"


def test_require_consent_ignores_ad_personalization() -> None:
    verdict = evaluate_consent(
        {"ad_storage": GRANTED, "ad_user_data": GRANTED, "ad_personalization": DENIED},
        policy="require_consent",
    )

    assert verdict.send is True


@pytest.mark.parametrize(
    ("missing_consent", "send", "reason"),
    [
        (GRANTED, True, "sent: no consent state, and the destination treats that as granted"),
        (DENIED, False, "suppressed: no consent state, and the destination treats that as denied"),
    ],
)
def test_require_consent_without_a_state_follows_the_destination_default(
    missing_consent: str, send: bool, reason: str
) -> None:
    verdict = evaluate_consent(None, policy="require_consent", missing_consent=missing_consent)

    assert verdict == ConsentVerdict(send=send, reason=reason)


def test_a_missing_signal_counts_as_the_destination_default() -> None:
    granted = evaluate_consent({"ad_storage": GRANTED}, policy="require_consent")
    denied = evaluate_consent(
        {"ad_storage": GRANTED}, policy="require_consent", missing_consent=DENIED
    )

    assert granted.send is True
    assert "ad_user_data not given, counted as granted" in granted.reason
    assert denied.send is False
    assert denied.reason == (
        "suppressed: ad_user_data denied (ad_user_data not given, counted as denied)"
    )


def test_an_unparsed_state_is_still_understood() -> None:
    verdict = evaluate_consent(
        {"ad_storage": "GRANTED", "ad_user_data": False}, policy="require_consent"
    )

    assert verdict.send is False
    assert verdict.reason == "suppressed: ad_user_data denied"


# --- limited_data_use --------------------------------------------------------------------------


@pytest.mark.parametrize("consent", [None, ALL_GRANTED, {"ad_user_data": DENIED}])
def test_limited_data_use_sends_with_ldu_and_geolocation(consent: dict[str, str] | None) -> None:
    verdict = evaluate_consent(consent, policy="limited_data_use", missing_consent=DENIED)

    assert verdict.send is True
    assert verdict.data_processing_options == ["LDU"]
    assert verdict.data_processing_options_country == 0
    assert verdict.data_processing_options_state == 0


def test_ldu_options_are_a_fresh_list_each_time() -> None:
    first = evaluate_consent(None, policy="limited_data_use")
    assert first.data_processing_options is not None
    first.data_processing_options.append("tampered")

    assert evaluate_consent(None, policy="limited_data_use").data_processing_options == ["LDU"]


# --- configuration errors ----------------------------------------------------------------------


def test_an_unknown_policy_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="not_a_policy"):
        evaluate_consent(None, policy="not_a_policy")


def test_an_unknown_default_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="missing_consent"):
        evaluate_consent(None, policy="require_consent", missing_consent="maybe")


# --- parse_consent -----------------------------------------------------------------------------


def test_parse_keeps_a_well_formed_state() -> None:
    raw = {**ALL_GRANTED, "region": "US-CA", "source": "cmp", "version": "2", "time": 1700000000}

    state, found = parse_consent(raw)

    assert state == raw
    assert found == []


def test_parse_accepts_any_case_and_booleans() -> None:
    state, found = parse_consent({"ad_storage": " Granted ", "ad_user_data": False})

    assert state == {"ad_storage": GRANTED, "ad_user_data": DENIED}
    assert found == []


def test_parse_of_nothing_is_no_state_and_no_finding() -> None:
    assert parse_consent(None) == (None, [])


def test_a_bad_signal_is_dropped_with_a_warning_and_counts_as_missing() -> None:
    state, found = parse_consent({"ad_storage": "yes please", "ad_user_data": GRANTED})

    assert state == {"ad_user_data": GRANTED}
    assert [(d.code, d.field, d.severity) for d in found] == [
        ("invalid_consent_signal", "consent.ad_storage", WARNING)
    ]
    verdict = evaluate_consent(state, policy="require_consent", missing_consent=DENIED)
    assert verdict.send is False


def test_a_state_without_any_usable_signal_is_treated_as_missing() -> None:
    state, found = parse_consent({"ad_storage": 1, "region": "EU"})

    assert state is None
    assert [d.code for d in found] == ["invalid_consent_signal", "empty_consent"]


def test_non_object_consent_is_treated_as_missing() -> None:
    state, found = parse_consent("granted")

    assert state is None
    assert [(d.code, d.field, d.severity) for d in found] == [
        ("invalid_consent", "consent", WARNING)
    ]


def test_bad_context_values_and_unknown_keys_are_reported() -> None:
    state, found = parse_consent({**ALL_GRANTED, "region": "x" * 500, "time": [1], "gcs": "G111"})

    assert state == ALL_GRANTED
    assert [(d.code, d.field, d.severity) for d in found] == [
        ("invalid_consent_context", "consent.region", WARNING),
        ("invalid_consent_context", "consent.time", WARNING),
        ("unknown_consent_key", "consent.gcs", INFO),
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(["ad_storage", "ad_user_data", "ad_personalization", "region", "time"]),
            json_values,
        ),
    ),
    st.sampled_from(list(ConsentPolicy)),
    st.sampled_from([GRANTED, DENIED]),
)
def test_garbage_never_raises_and_gives_a_verdict(
    raw: Any, policy: ConsentPolicy, missing_consent: str
) -> None:
    state, found = parse_consent(raw)
    verdict = evaluate_consent(state, policy=policy, missing_consent=missing_consent)

    assert state is None or set(state) <= {
        "ad_storage",
        "ad_user_data",
        "ad_personalization",
        "region",
        "source",
        "version",
        "time",
    }
    assert all(d.severity in (WARNING, INFO) for d in found)
    assert isinstance(verdict.send, bool)
    assert verdict.reason.startswith(("sent", "suppressed"))


def test_a_policy_is_read_from_its_value_or_its_member_and_nothing_else() -> None:
    from capi_destinations.consent import ConsentPolicy

    by_value = evaluate_consent(None, policy="require_consent", missing_consent="denied")
    by_member = evaluate_consent(
        None, policy=ConsentPolicy.REQUIRE_CONSENT, missing_consent="denied"
    )
    assert by_value == by_member
    assert not by_value.send
    for wrong in ("REQUIRE_CONSENT", "", ["require_consent"]):
        with pytest.raises(ValueError, match="is not a valid ConsentPolicy"):
            evaluate_consent(None, policy=wrong)  # type: ignore[arg-type]
