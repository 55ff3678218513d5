"""Tests of capi_destinations.normalize: Meta's rules, the SDK on canonical input, the API."""

from __future__ import annotations

import hashlib
import json
import sys
import unicodedata
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import phonenumbers
import pycountry
import pytest
from facebook_business.adobjects.serverside.normalize import Normalize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capi_destinations.diagnostics import INFO, WARNING
from capi_destinations.normalize import (
    ALIASES,
    CLEAR_KEYS,
    HASHED_KEYS,
    NormalizedUserData,
    canonical_key,
    hash_value,
    normalize_country,
    normalize_currency,
    normalize_field,
    normalize_user_data,
    normalize_user_data_report,
)

# Meta's Python SDK outputs for each input, kept in the repository (see tests/data/README.md).
VECTORS_PATH = Path(__file__).resolve().parent / "data" / "normalization_vectors.json"


def _load_vectors() -> list[dict[str, Any]]:
    # A missing file must fail the run, never skip it.
    if not VECTORS_PATH.is_file():
        raise FileNotFoundError(f"normalization vectors not found at {VECTORS_PATH}")
    return json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


VECTORS = _load_vectors()


def _vector_id(index: int, case: dict[str, Any]) -> str:
    shown = repr(case["input"]).encode("ascii", "backslashreplace").decode()[:40]
    country = f"@{case['country']}" if case.get("country") else ""
    return f"{index:03d}-{case['field']}{country}-{shown}"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_the_vector_file_holds_all_163_cases() -> None:
    assert len(VECTORS) == 163


@pytest.mark.parametrize(
    "case", VECTORS, ids=[_vector_id(i, case) for i, case in enumerate(VECTORS)]
)
def test_vector_normalizes_and_hashes_as_meta_documents(case: dict[str, Any]) -> None:
    normalized = normalize_field(case["field"], case["input"], country=case["country"])

    assert normalized == case["expected"]
    digest = hash_value(normalized) if normalized is not None else None
    assert digest == case["expected_sha256"]


# --- agreement with Meta's SDK on input already in canonical form ------------------------------


def _not_hex_digest_like(text: str) -> bool:
    # The SDK passes any 32- or 64-hex value through unhashed; canonical data avoids that shape.
    lowered = text.lower()
    return not (len(lowered) in (32, 64) and all(c in "0123456789abcdef" for c in lowered))


def _example_phone_digits() -> list[str]:
    digits: set[str] = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in (
            phonenumbers.PhoneNumberType.FIXED_LINE,
            phonenumbers.PhoneNumberType.MOBILE,
            phonenumbers.PhoneNumberType.TOLL_FREE,
        ):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                digits.add(e164[1:])
    return sorted(d for d in digits if 7 <= len(d) <= 15)


EXAMPLE_PHONES = _example_phone_digits()


@st.composite
def canonical_values(draw: st.DrawFn) -> tuple[str, str]:
    field = draw(st.sampled_from(["em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country"]))
    if field == "em":
        local = draw(st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,15}", fullmatch=True))
        labels = draw(st.lists(st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True), max_size=2))
        tld = draw(st.from_regex(r"[a-z]{2,6}", fullmatch=True))
        value = f"{local}@{'.'.join([*labels, 'example'])}.{tld}"
    elif field == "ph":
        value = draw(st.sampled_from(EXAMPLE_PHONES))
    elif field in ("fn", "ln"):
        value = draw(st.from_regex(r"[a-z]{1,12}( [a-z]{1,12})?", fullmatch=True))
    elif field == "ge":
        value = draw(st.sampled_from(["m", "f"]))
    elif field == "db":
        born = draw(st.dates(min_value=date(1900, 1, 1), max_value=datetime.now(UTC).date()))
        value = born.strftime("%Y%m%d")
    elif field == "ct":
        value = draw(st.from_regex(r"[a-z]{1,20}", fullmatch=True))
    elif field == "st":
        value = draw(st.from_regex(r"[a-z]{2}", fullmatch=True))
    elif field == "zp":
        value = draw(st.from_regex(r"[0-9]{5}", fullmatch=True))
    else:
        value = draw(st.sampled_from(sorted(c.alpha_2.lower() for c in pycountry.countries)))
    return field, value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(canonical_values())
def test_canonical_input_hashes_exactly_like_the_official_sdk(pair: tuple[str, str]) -> None:
    field, value = pair
    if not _not_hex_digest_like(value):
        return  # the SDK's 32-hex passthrough, a documented departure (FACTS §0 #12)

    normalized = normalize_field(field, value)

    assert normalized is not None
    assert hash_value(normalized) == Normalize.normalize_field(field, value)


@settings(max_examples=100, deadline=None)
@given(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,30}", fullmatch=True).filter(_not_hex_digest_like))
def test_lowercase_external_ids_hash_like_the_sdk(value: str) -> None:
    assert hash_value(normalize_field("external_id", value) or "") == Normalize.normalize_field(
        "external_id", value
    )


# --- phone numbers --------------------------------------------------------------------------


def _libphonenumber_e164(text: str, region: str | None = None) -> str | None:
    """The reference: libphonenumber's parse, kept only when the number is fully possible."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None
    return f"{number.country_code}{phonenumbers.national_significant_number(number)}"


@pytest.mark.parametrize("digits", EXAMPLE_PHONES[::3])
def test_international_example_numbers_match_libphonenumber(digits: str) -> None:
    number = phonenumbers.parse("+" + digits)
    spaced = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)

    assert normalize_field("ph", "+" + digits) == _libphonenumber_e164("+" + digits)
    assert normalize_field("ph", spaced) == _libphonenumber_e164(spaced)


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"[1-9][0-9]{5,15}", fullmatch=True))
def test_any_plus_number_is_judged_like_libphonenumber(digits: str) -> None:
    assert normalize_field("ph", "+" + digits) == _libphonenumber_e164("+" + digits)


@pytest.mark.parametrize("region", sorted(phonenumbers.SUPPORTED_REGIONS))
def test_numbers_of_every_region_with_and_without_a_national_prefix_match_libphonenumber(
    region: str,
) -> None:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    example = phonenumbers.example_number(region)
    assert metadata is not None
    if example is None:
        return  # a region without numbers of its own (a shared calling code)
    code, national = example.country_code, phonenumbers.national_significant_number(example)
    prefix = metadata.national_prefix or ""
    for text in (f"+{code}{national}", f"+{code}{prefix}{national}", f"+{code}0{national}"):
        assert normalize_field("ph", text) == _libphonenumber_e164(text), text


def _national_prefixes_matching_nothing() -> list[str]:
    from capi_destinations import normalize

    codes = []
    for code in sorted(normalize._CALLING_CODES, key=int):
        prefix, _ = normalize._calling_code_rules(code)
        if prefix is not None and prefix.match("") is not None:
            codes.append(code)
    return codes


def test_argentine_mobile_numbers_take_the_fast_path() -> None:
    from capi_destinations import normalize

    # Argentina's national prefix pattern is all optional: it matches every number, by
    # matching nothing, and libphonenumber then keeps the number as it is.
    assert _national_prefixes_matching_nothing() == ["54"]
    assert normalize._possible_international("5491123456990")
    assert normalize._fast_phone("+54 9 11 2345-6990") == sha("5491123456990")


@settings(max_examples=300, deadline=None)
@given(
    code=st.sampled_from(_national_prefixes_matching_nothing()),
    national=st.from_regex(r"[0-9]{6,13}", fullmatch=True),
)
def test_a_number_whose_prefix_pattern_matches_nothing_is_judged_like_libphonenumber(
    code: str, national: str
) -> None:
    from capi_destinations import normalize

    digits = code + national
    if normalize._possible_international(digits):
        assert _libphonenumber_e164("+" + digits) == digits
    assert normalize_field("ph", "+" + digits) == _libphonenumber_e164("+" + digits)


@pytest.mark.parametrize(
    ("text", "country", "expected"),
    [
        ("+44 (0) 20 7946 0958", None, "442079460958"),
        ("0044 20 7946 0958", "us", "442079460958"),
        ("(650) 555-1212", "US", "16505551212"),
        ("(650) 555-1212", "United States", "16505551212"),
        ("06 12 34 56 78", "fr", "33612345678"),
        ("555-1212", "us", None),
        ("tel:+1-650-555-1212;ext=42", None, "16505551212"),
        ("+1 650 555 1212 x 9", None, "16505551212"),
        ("+0 650 555 1212", None, None),
    ],
)
def test_phone_rules(text: str, country: str | None, expected: str | None) -> None:
    assert normalize_field("ph", text, country=country) == expected


def test_phone_without_country_keeps_digits_and_warns() -> None:
    report = normalize_user_data_report({"ph": "(650) 555-1212"})

    assert report.user_data == {"ph": [sha("6505551212")]}
    assert [(d.code, d.field, d.severity) for d in report.diagnostics] == [
        ("phone_missing_country_code", "user_data.ph", WARNING)
    ]


def test_phone_with_a_country_gets_no_warning() -> None:
    report = normalize_user_data_report({"ph": "(650) 555-1212"}, country="us")

    assert report.user_data == {"ph": [sha("16505551212")]}
    assert report.diagnostics == []


# --- other per-key rules -----------------------------------------------------------------------


def test_every_unicode_dash_is_removed_from_postal_codes() -> None:
    dashes = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Pd"] + [
        "\u2212"
    ]

    for dash in dashes:
        assert normalize_field("zp", f"00{dash}950", country="pl") == "00950", hex(ord(dash))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1997-02-16", "19970216"),
        ("1997/2/6", "19970206"),
        ("02/16/1997", "19970216"),
        ("16-02-1997", "19970216"),
        ("16 Feb 1997", "19970216"),
        ("February 16, 1997", "19970216"),
        (date(1997, 2, 16), "19970216"),
        (datetime(1997, 2, 16, 10, 30, tzinfo=UTC), "19970216"),
        (19970216, "19970216"),
        ("18991231", None),
        (f"{datetime.now(UTC).year + 1}0101", None),
        ("1997-13-01", None),
        ("Smarch 16, 1997", None),
    ],
)
def test_dates_of_birth(value: Any, expected: str | None) -> None:
    assert normalize_field("db", value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("United Kingdom", "gb"),
        ("GBR", "gb"),
        ("Great Britain", "gb"),
        ("Viet Nam", "vn"),
        ("South Korea", "kr"),
        ("Germany", "de"),
        ("Atlantis", None),
        ("", None),
    ],
)
def test_country_names_and_codes(value: str, expected: str | None) -> None:
    assert normalize_field("country", value) == expected
    assert normalize_country(value) == expected


def test_state_names_map_to_codes_only_for_the_us() -> None:
    assert normalize_field("st", "District of Columbia") == "dc"
    assert normalize_field("st", "california", country="us") == "ca"
    assert normalize_field("st", "Georgia", country="ge") == "georgia"


def test_names_lose_punctuation_but_keep_symbols_and_scripts() -> None:
    assert normalize_field("fn", "  Jean-Luc  ") == "jeanluc"
    assert normalize_field("ln", "Nguyễn  Văn") == "nguyễn văn"
    assert normalize_field("fn", "…!?") is None


def test_decomposed_unicode_is_composed_before_hashing() -> None:
    decomposed = unicodedata.normalize("NFD", "Zoë")

    assert normalize_field("fn", decomposed) == "zoë"
    assert normalize_field("ct", decomposed) == "zoë"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("client_ip_address", " 2001:DB8::0:1 ", "2001:db8::1"),
        ("client_ip_address", "203.0.113.7", "203.0.113.7"),
        ("client_ip_address", "203.0.113.300", None),
        ("client_ip_address", "010.0.0.1", None),
        ("fbc", "fb.1.1554763741205.AbCdEfGhIjKl", "fb.1.1554763741205.AbCdEfGhIjKl"),
        ("fbp", "fb.1.1596403881668.1116446470", "fb.1.1596403881668.1116446470"),
        ("fbp", "fb.1.1596403881668.1116446470.AQICAQMC", "fb.1.1596403881668.1116446470.AQICAQMC"),
        ("fbp", "1116446470", None),
        ("fbc", "fb.1.2.3.4.5", None),
        ("client_user_agent", "  Mozilla/5.0  ", "Mozilla/5.0"),
        ("lead_id", 1234567890, "1234567890"),
        ("madid", " 38400000-8cf0-11bd-b23e-10b96e40000d ", "38400000-8cf0-11bd-b23e-10b96e40000d"),
    ],
)
def test_clear_keys_are_checked_but_never_hashed(field: str, value: Any, expected: Any) -> None:
    assert normalize_field(field, value) == expected


def test_hash_value_is_sha256_and_keeps_existing_digests() -> None:
    digest = sha("a@b.co")

    assert hash_value("a@b.co") == digest
    assert hash_value(digest.upper()) == digest


@pytest.mark.parametrize(
    ("value", "expected"),
    [("usd", "USD"), (" eur ", "EUR"), ("JPY", "JPY"), ("XYZ", None), ("US$", None), (5, None)],
)
def test_currency_is_a_real_iso_4217_code(value: Any, expected: str | None) -> None:
    assert normalize_currency(value) == expected


def test_unknown_field_names_give_none() -> None:
    assert normalize_field("favourite_colour", "blue") is None
    assert canonical_key("Email") == "em"
    assert canonical_key(42) is None


# --- normalize_user_data -----------------------------------------------------------------------


def test_aliases_resolve_to_meta_keys() -> None:
    user_data = normalize_user_data(
        {
            "email": "Jane@Example.com",
            "phone": "+1 650 555 1212",
            "first_name": "Jane",
            "last_name": "Doe",
            "date_of_birth": "1990-01-31",
            "gender": "female",
            "city": "Menlo Park",
            "state": "California",
            "postal_code": "94025-1234",
            "country": "United States",
            "external_id": "Cust-7",
            "ip_address": "203.0.113.7",
            "user_agent": "Mozilla/5.0",
        }
    )

    assert user_data == {
        "em": [sha("jane@example.com")],
        "fn": [sha("jane")],
        "ln": [sha("doe")],
        "db": [sha("19900131")],
        "ge": [sha("f")],
        "ct": [sha("menlopark")],
        "country": [sha("us")],
        "external_id": [sha("Cust-7")],
        "client_ip_address": "203.0.113.7",
        "client_user_agent": "Mozilla/5.0",
        "ph": [sha("16505551212")],
        "st": [sha("ca")],
        "zp": [sha("94025")],
    }


@pytest.mark.parametrize(("alias", "key"), sorted(ALIASES.items()))
def test_every_alias_is_accepted_in_any_case(alias: str, key: str) -> None:
    assert canonical_key(alias.upper()) == key


def test_lists_are_deduplicated_in_order_of_first_appearance() -> None:
    user_data = normalize_user_data(
        {"em": ["B@x.com", "a@x.com", " b@X.com ", "a@x.com"], "email": "c@x.com"}
    )

    assert user_data == {"em": [sha("b@x.com"), sha("a@x.com"), sha("c@x.com")]}


def test_tuples_and_single_values_are_both_accepted() -> None:
    assert normalize_user_data({"fn": ("Ann", "Bob")}) == {"fn": [sha("ann"), sha("bob")]}
    assert normalize_user_data({"fn": "Ann"}) == {"fn": [sha("ann")]}


def test_existing_digests_are_kept_lowercased_not_hashed_again() -> None:
    digest = sha("jane@example.com")

    user_data = normalize_user_data({"em": digest.upper(), "ph": digest, "external_id": digest})

    assert user_data == {"em": [digest], "ph": [digest], "external_id": [digest]}


def test_clear_keys_pass_through_unhashed() -> None:
    raw = {
        "fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
        "fbp": "fb.1.1596403881668.1116446470",
        "client_ip_address": "203.0.113.7",
        "client_user_agent": "Mozilla/5.0 (Macintosh)",
        "subscription_id": "sub-1",
        "lead_id": "1234",
        "fb_login_id": "5678",
        "anon_id": "anon-1",
        "madid": "38400000-8cf0-11bd-b23e-10b96e40000d",
        "page_id": "99",
        "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4",
    }

    report = normalize_user_data_report(raw)

    assert report.user_data == raw
    assert report.diagnostics == []


def test_first_usable_value_wins_for_clear_keys() -> None:
    user_data = normalize_user_data({"ip": ["not an ip", "203.0.113.7", "198.51.100.1"]})

    assert user_data == {"client_ip_address": "203.0.113.7"}


def test_hashed_values_in_clear_keys_are_dropped_with_a_warning() -> None:
    report = normalize_user_data_report(
        {"fbp": sha("fb.1.1.1"), "client_ip_address": sha("1.2.3.4"), "em": "a@b.co"}
    )

    assert report.user_data == {"em": [sha("a@b.co")]}
    assert {(d.code, d.field) for d in report.diagnostics} == {
        ("hashed_clear_value", "user_data.fbp"),
        ("hashed_clear_value", "user_data.client_ip_address"),
    }


def test_empty_values_are_dropped_silently() -> None:
    report = normalize_user_data_report(
        {"em": "", "ph": "   ", "fn": None, "ln": [], "ct": [None, "", "\u200b"], "fbp": ""}
    )

    assert report.user_data == {}
    assert report.diagnostics == []


def test_invalid_values_are_dropped_with_one_warning_each() -> None:
    report = normalize_user_data_report(
        {
            "em": ["not-an-email", "ok@example.com", "also@bad"],
            "ge": "x",
            "db": "31/31/1990",
            "country": "Atlantis",
            "client_ip_address": "999.1.1.1",
            "fbc": "AbCd",
        }
    )

    assert report.user_data == {"em": [sha("ok@example.com")]}
    assert [(d.code, d.field, d.severity) for d in report.diagnostics] == [
        ("invalid_email", "user_data.em", WARNING),
        ("invalid_email", "user_data.em", WARNING),
        ("invalid_gender", "user_data.ge", WARNING),
        ("invalid_date_of_birth", "user_data.db", WARNING),
        ("unknown_country", "user_data.country", WARNING),
        ("invalid_ip_address", "user_data.client_ip_address", WARNING),
        ("invalid_fbc", "user_data.fbc", WARNING),
    ]
    for diagnostic in report.diagnostics:
        assert diagnostic.message
        assert diagnostic.fix


def test_diagnostics_never_repeat_the_customer_values() -> None:
    secrets = ["jane.doe@@example.com", "+1 555", "Zorblax", "31/31/1990", "fbXYZ"]
    report = normalize_user_data_report(
        {
            "em": secrets[0],
            "ph": secrets[1],
            "country": secrets[2],
            "db": secrets[3],
            "fbp": secrets[4],
        }
    )

    assert len(report.diagnostics) == 5
    for diagnostic in report.diagnostics:
        text = json.dumps(diagnostic.to_dict())
        assert not any(secret in text for secret in secrets)


def test_wrong_types_are_dropped_with_a_type_warning() -> None:
    report = normalize_user_data_report(
        {"em": {"address": "a@b.co"}, "fn": 3.5, "ln": [["nested"]], "ct": True}
    )

    assert report.user_data == {}
    assert [(d.code, d.field) for d in report.diagnostics] == [
        ("invalid_value_type", "user_data.em"),
        ("invalid_value_type", "user_data.fn"),
        ("invalid_value_type", "user_data.ln"),
        ("invalid_value_type", "user_data.ct"),
    ]


def test_unknown_keys_are_dropped_with_an_info_diagnostic() -> None:
    report = normalize_user_data_report({"em": "a@b.co", "favourite_colour": "blue", 7: "x"})

    assert report.user_data == {"em": [sha("a@b.co")]}
    assert [(d.code, d.field, d.severity) for d in report.diagnostics] == [
        ("unknown_user_data_key", "user_data.favourite_colour", INFO),
        ("unknown_user_data_key", "user_data.7", INFO),
    ]


def test_user_data_that_is_not_an_object_gives_nothing_and_a_warning() -> None:
    report = normalize_user_data_report(["a@b.co"])  # type: ignore[arg-type]

    assert report.user_data == {}
    assert [d.code for d in report.diagnostics] == ["invalid_user_data"]


def test_the_events_own_country_wins_over_the_default() -> None:
    report = normalize_user_data_report(
        {"ph": "020 7946 0958", "zp": "SW1A 1AA", "country": "GB"}, country="us"
    )

    assert report.country == "gb"
    assert report.user_data["ph"] == [sha("442079460958")]
    assert report.user_data["zp"] == [sha("sw1a1aa")]


def test_the_default_country_is_used_when_the_event_has_none() -> None:
    report = normalize_user_data_report({"ph": "020 7946 0958"}, country="United Kingdom")

    assert report.country == "gb"
    assert report.user_data == {"ph": [sha("442079460958")]}


def test_a_hashed_event_country_falls_back_to_the_default() -> None:
    report = normalize_user_data_report(
        {"ph": "06 12 34 56 78", "country": sha("fr")}, country="fr"
    )

    assert report.country == "fr"
    assert report.user_data == {"country": [sha("fr")], "ph": [sha("33612345678")]}


def test_normalize_user_data_is_the_report_without_diagnostics() -> None:
    raw = {"email": "a@b.co", "phone": "555-1212", "colour": "red"}

    report = normalize_user_data_report(raw)

    assert isinstance(report, NormalizedUserData)
    assert normalize_user_data(raw) == report.user_data


def test_hashed_and_clear_keys_are_disjoint_and_complete() -> None:
    assert set(HASHED_KEYS).isdisjoint(CLEAR_KEYS)
    assert set(ALIASES.values()) <= set(HASHED_KEYS) | set(CLEAR_KEYS)


# --- the fast paths give exactly what the general path gives ----------------------------------

# Values near the edges of each fast path: clean ones it takes, and doubtful ones it must leave
# to the general path (which reports them).
_EDGE_TEXT = st.one_of(
    st.text(alphabet="aAzZ09@.+-_ ()\t\n#:%xé", max_size=30),
    st.sampled_from(
        [
            "Jane.Doe@Example.COM",
            " user+tag@sub.example.co.uk ",
            "a@b",
            "a@@b.co",
            "a@b..co",
            "a@.b.co",
            "a@b.co.",
            "@b.co",
            "a b@c.de",
            "a\x01b@c.de",
            "a\x1fb@c.de",
            ".a@b.co",
            "+1 650 555 1212",
            "+44 (0) 20 7946 0958",
            "+54 9 11 2345-6789",
            "+0044 20 7946 0958",
            "cust-0001",
            "  ",
            "",
            "a" * 64,
            "A" * 64,
            "fb.1.1700000000000.AbC",
            "fb.1.17.x.y.z",
            "203.0.113.7",
            "010.0.0.1",
            "2001:db8::1",
            "2001:DB8::1",
            "::ffff:1.2.3.4",
            "::ffff:102:304",
            "fe80::1%eth0",
            "Mozilla/5.0",
            "19970216",
            " 19970216\n",
            "19000101",
            "18991231",
            "20240229",
            "20230229",
            "19970231",
            "19971301",
            "19970100",
            "99990101",
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from([*HASHED_KEYS, *CLEAR_KEYS]), value=_EDGE_TEXT)
def test_a_fast_path_answers_only_what_the_general_path_would(key: str, value: str) -> None:
    from capi_destinations import normalize

    fast = normalize._FAST_PATHS[key]
    answer = fast(value) if fast is not None else None
    if answer is None:
        return  # left to the general path, which decides and reports
    if key in HASHED_KEYS:
        assert (answer, None) == normalize._digest(key, value, None)
    else:
        assert answer == normalize._normalize_one(key, value, None)


@settings(max_examples=300, deadline=None)
@given(
    number=st.integers(min_value=0, max_value=2**128 - 1),
    zeros=st.sampled_from([0, 0xFFFF << 16, (1 << 128) - (1 << 64)]),
    style=st.sampled_from(["compressed", "exploded", "upper"]),
)
def test_canonical_ipv6_is_recognised_exactly_as_ipaddress_prints_it(
    number: int, zeros: int, style: str
) -> None:
    import ipaddress

    from capi_destinations import normalize

    address = ipaddress.IPv6Address(number & ~zeros)
    text = {
        "compressed": address.compressed,
        "exploded": address.exploded,
        "upper": address.compressed.upper(),
    }[style]

    # Recognising too little only costs time (ipaddress decides); too much would be wrong.
    if normalize._is_canonical_ipv6(text):
        assert text == str(address)
    assert normalize_field("client_ip_address", text) == str(address)


def test_common_canonical_ipv6_addresses_take_the_fast_path() -> None:
    from capi_destinations import normalize

    assert normalize._is_canonical_ipv6("2001:db8::8a2e:370:7334")
    assert normalize._is_canonical_ipv6("fe80::1")
    assert not normalize._is_canonical_ipv6("2001:DB8::1")
    assert not normalize._is_canonical_ipv6("2001:db8:0:0:0:0:0:1")


@settings(max_examples=200, deadline=None)
@given(values=st.lists(_EDGE_TEXT, max_size=4), key=st.sampled_from(["em", "ph", "external_id"]))
def test_a_list_takes_the_fast_path_with_the_general_paths_answer(
    values: list[str], key: str
) -> None:
    # A tuple always goes down the general path, a list may go down the fast one.
    assert normalize_user_data_report({key: values}) == normalize_user_data_report(
        {key: tuple(values)}
    )


def test_a_phone_left_to_the_general_path_keeps_its_place_before_a_later_one() -> None:
    first, second = "06 12 34 56 78", "+33 6 12 34 56 79"

    user_data = normalize_user_data({"phone": first, "ph": second, "country": "fr"})

    assert user_data["ph"] == [sha("33612345678"), sha("33612345679")]


@pytest.mark.parametrize(
    ("text", "real"),
    [
        ("20000229", True),  # divisible by 400: a leap year
        ("19000229", False),  # divisible by 100 only: not one
        ("20240229", True),
        ("20230229", False),
        ("19990431", False),
        ("19991231", True),
        ("19000101", True),
        ("18991231", False),
        ("19990001", False),
        ("19991300", False),
    ],
)
def test_yyyymmdd_edges_of_the_calendar(text: str, real: bool) -> None:
    assert normalize_field("db", text) == (text if real else None)
    assert (normalize_user_data({"db": text}).get("db") == [sha(text)]) is real


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        st.dates(min_value=date(1850, 1, 1), max_value=date(2100, 12, 31)).map(
            lambda day: day.strftime("%Y%m%d")
        ),
        st.from_regex(r"[0-9]{8}", fullmatch=True),
    )
)
def test_a_yyyymmdd_birth_date_is_kept_only_when_it_is_a_real_date_in_range(text: str) -> None:
    try:
        born = datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        born = None
    valid = born is not None and 1900 <= born.year <= datetime.now(UTC).year

    assert normalize_field("db", text) == (text if valid else None)
    if valid:
        assert born is not None
        assert normalize_field("db", born.strftime("%Y-%m-%d")) == text


def test_the_sha256_used_gives_hashlibs_digests() -> None:
    # normalize hashes with CPython's own SHA-256 when it has one (no OpenSSL set-up per call).
    from capi_destinations import normalize

    for text in ("", "jane@example.com", "é" * 100, "x" * 1000):
        data = text.encode()
        assert normalize._sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()


def test_without_cpythons_own_sha256_hashlibs_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from capi_destinations import normalize

    # A None entry in sys.modules makes the import fail, as on an interpreter built without
    # its own hashes.
    monkeypatch.setitem(sys.modules, "_sha2", None)
    monkeypatch.setitem(sys.modules, "_sha256", None)
    assert normalize._fastest_sha256() is hashlib.sha256


@pytest.mark.parametrize("written", ["20290615", "15 June 2029"])
def test_a_birth_year_is_judged_by_the_apps_clock(written: str, clock: Any) -> None:
    """Meta takes birth years up to this year: "this year" is the app clock's, which tests and
    the demo hold and move, in both directions."""
    clock.freeze(datetime(2030, 1, 1, tzinfo=UTC))
    assert normalize_user_data({"db": written}).get("db") == [sha("20290615")]

    clock.freeze(datetime(2028, 12, 31, 23, 59, tzinfo=UTC))
    report = normalize_user_data_report({"db": written})
    assert "db" not in report.user_data
    assert [finding.code for finding in report.diagnostics] == ["invalid_date_of_birth"]

    clock.freeze(datetime(2029, 1, 1, tzinfo=UTC))  # the first second of the year
    assert normalize_user_data({"db": written}).get("db") == [sha("20290615")]
