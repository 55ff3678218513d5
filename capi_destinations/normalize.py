"""Normalization and SHA-256 hashing of ``user_data``, the way Meta documents it.

Meta matches customer information against its own canonical forms (lowercase email, phone as
E.164 digits, ``YYYYMMDD`` birth dates, …), so every hashed key is normalized before hashing.
Where Meta's official Python SDK departs from Meta's documented rules we follow the rules; on
input already in canonical form the hashes are identical to the SDK's. The rules, the accepted
alias keys and the differences from the SDK are written down in ``docs/NORMALIZATION.md``.

Everything here is a pure function over plain values: no database, no network, no Django.
"""

from __future__ import annotations

import calendar
import hashlib
import importlib
import ipaddress
import re
import socket
import time
import unicodedata
from collections.abc import Callable, Mapping
from datetime import date
from functools import cache, lru_cache
from typing import Any, NamedTuple

import phonenumbers
import pycountry

from capi_destinations import clock
from capi_destinations.findings import INFO, WARNING, Diagnostic
from capi_destinations.user_data_keys import (
    ALIASES,
    BUSINESS_ACCOUNT_KEYS,
    CLEAR_KEYS,
    FIELD_LABELS,
    HASHED_KEYS,
)

__all__ = [
    "ALIASES",
    "CLEAR_KEYS",
    "HASHED_KEYS",
    "NormalizedUserData",
    "hash_value",
    "normalize_currency",
    "normalize_field",
    "normalize_user_data",
    "normalize_user_data_report",
]


_HASHED_KEY_SET = frozenset(HASHED_KEYS)
_KEY_LOOKUP: dict[str, str] = {
    **{key: key for key in HASHED_KEYS + CLEAR_KEYS + BUSINESS_ACCOUNT_KEYS},
    **ALIASES,
}

# Clear keys whose value, if it looks like a SHA-256 digest, was certainly hashed by mistake.
_CLEAR_KEYS_NEVER_HEX = frozenset({"client_ip_address", "client_user_agent", "fbc", "fbp"})


class NormalizedUserData(NamedTuple):
    """Meta-ready ``user_data`` plus one diagnostic per value that was dropped or doubtful.

    ``country`` is the context country (ISO alpha-2, lowercase) that phone numbers, states and
    postal codes were read with: the event's own ``country`` if usable, else the default.

    A named tuple, immutable like the frozen dataclass it was: one is built per event, and a
    frozen dataclass's ``__init__`` cost as much as normalizing two keys.
    """

    user_data: dict[str, Any]
    diagnostics: list[Diagnostic]
    country: str | None = None


# tuple.__new__ builds the named tuple without the Python-level __new__ NamedTuple generates.
_new_report: Callable[
    [type[NormalizedUserData], tuple[dict[str, Any], list[Diagnostic], str | None]],
    NormalizedUserData,
] = tuple.__new__


class _Dropped(Exception):
    """Raised inside a field normalizer when a value cannot be normalized."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


# --- shared text preparation ------------------------------------------------------------------


def _fastest_sha256() -> Callable[[bytes], Any]:
    """CPython's own SHA-256 when it has one, else hashlib's (OpenSSL's).

    The digests are the same; for the short values hashed here OpenSSL's per-call set-up (look
    the algorithm up, allocate and free a context) costs more than the hashing, and CPython's
    own object has none of it (measured in docs/BENCHMARKS.md).
    """
    for name in ("_sha2", "_sha256"):  # Python 3.12+, 3.11
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        return module.sha256
    return hashlib.sha256


_sha256 = _fastest_sha256()
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
# Meta's parameter builder appends a short appendix (".AQIDAQMC") to the values it makes:
# digests, IP addresses, fbc, fbp and URLs; Meta says "You can send these values as is".
_APPENDIX = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SUFFIXED_DIGEST = re.compile(r"[0-9a-fA-F]{64}\.[A-Za-z0-9_-]{1,64}")


def _builder_digest(text: str) -> str | None:
    """``text`` as Meta gets it when it is already a SHA-256 digest, else None.

    A bare digest is lowercased; one with the parameter builder's appendix goes as it is.
    """
    size = len(text)
    if size == 64:
        return text.lower() if _HEX64.fullmatch(text) else None
    if size > 65 and text[64] == "." and _SUFFIXED_DIGEST.fullmatch(text):
        return text
    return None


_NON_DIGITS = re.compile(r"\D")
_ASCII_PUNCTUATION = str.maketrans("", "", "!\"#%&'()*,-./:;?@[\\]_{}")  # Unicode category P
_NON_ASCII_LOWER_LETTERS = re.compile(r"[^a-z]")
# Every character of Unicode category Pd (dash punctuation) plus the minus sign.
_DASHES_AND_SPACES = re.compile(
    "[\\s\\-\u058a\u05be\u1400\u1806\u2010-\u2015\u2e17\u2e1a\u2e3a\u2e3b\u2e40\u2e5d"
    "\u301c\u3030\u30a0\ufe31\ufe32\ufe58\ufe63\uff0d\U00010ead\u2212]"
)


def _clean_text(text: str) -> str:
    """NFC, zero-width characters removed, surrounding whitespace stripped."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text).translate(_ZERO_WIDTH)
    return text.strip()


def _as_text(key: str, value: Any) -> str:
    """The raw value as text; numbers are accepted (IDs, ZIPs), other types are not."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""  # null is an empty value, dropped without a diagnostic
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if key == "db" and isinstance(value, date):
        return f"{value.year:04d}{value.month:02d}{value.day:02d}"
    raise _Dropped("invalid_value_type")


def _letters_and_marks(value: str) -> str:
    """Only letters (any script) and combining marks; digits, spaces, punctuation removed."""
    if value.isascii():
        return _NON_ASCII_LOWER_LETTERS.sub("", value)
    return "".join(c for c in value if c.isalpha() or unicodedata.category(c)[0] == "M")


# --- per-key normalizers (text already cleaned, not empty, not a digest) ---------------------


# One @, a non-empty local part, a domain of non-empty dot-separated labels, no whitespace.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")


def _email(text: str, country: str | None) -> str:
    value = text.lower()
    if _EMAIL.fullmatch(value) is None:
        raise _Dropped("invalid_email")
    return value


class _AsciiDigitTable(dict[int, int]):
    """A ``str.translate`` table mapping any Unicode decimal digit to its ASCII digit."""

    def __missing__(self, codepoint: int) -> int:
        digit = unicodedata.decimal(chr(codepoint), None)
        mapped = ord("0") + digit if digit is not None else codepoint
        self[codepoint] = mapped
        return mapped


_ASCII_DIGITS = _AsciiDigitTable()
_PHONE_EXTENSION = re.compile(r"(?:;\s*ext=|\s*(?:ext\.?|extension|x|#)\s*)\d+\s*$", re.IGNORECASE)
_LEADING_PLUS = re.compile(r"^[\s(]*\+")
_POSSIBLE = phonenumbers.ValidationResult.IS_POSSIBLE
_PHONE_REGIONS = frozenset(region.lower() for region in phonenumbers.SUPPORTED_REGIONS)
_CALLING_CODES = {str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE}


def _calling_code_table() -> dict[str, str]:
    # Calling codes are prefix-free, so the first three digits name at most one of them.
    table: dict[str, str] = {}
    for number in range(1000):
        first = f"{number:03d}"
        for size in (1, 2, 3):
            if first[:size] in _CALLING_CODES:
                table[first] = first[:size]
                break
    return table


#: The calling code that a number's first three digits start with.
_CALLING_CODE_OF_FIRST_DIGITS = _calling_code_table()


@cache  # one entry per calling code, a few hundred at most
def _calling_code_rules(calling_code: str) -> tuple[re.Pattern[str] | None, frozenset[int]]:
    """(national prefix pattern, lengths of fully possible national numbers), per libphonenumber.

    A length that is possible only for local dialling (no area code) is not fully possible.
    """
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[int(calling_code)]
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
        int(calling_code), regions[0]
    )
    if metadata is None:
        return None, frozenset()
    prefix = metadata.national_prefix_for_parsing
    general = metadata.general_desc
    if general is None:
        return (re.compile(prefix) if prefix else None), frozenset()
    lengths = set(general.possible_length or ()) - set(general.possible_length_local_only or ())
    return (re.compile(prefix) if prefix else None), frozenset(lengths)


# Per first three digits of an international number: (length of its calling code, lengths of
# fully possible national numbers, the national prefix when it is plain digits, else its
# pattern). Filled as numbers come, so that only the metadata of the countries seen is loaded.
_PhoneRules = tuple[int, frozenset[int], str | None, re.Pattern[str] | None]
_PHONE_RULES: dict[str, _PhoneRules] = {}


def _phone_rules(first_digits: str) -> _PhoneRules:
    calling_code = _CALLING_CODE_OF_FIRST_DIGITS.get(first_digits)
    if calling_code is None:
        rules: _PhoneRules = (0, frozenset(), None, None)  # no number is possible
    else:
        prefix, lengths = _calling_code_rules(calling_code)
        if prefix is not None and prefix.pattern.isdigit():
            rules = (len(calling_code), lengths, prefix.pattern, None)
        else:
            rules = (len(calling_code), lengths, None, prefix)
    _PHONE_RULES[first_digits] = rules
    return rules


def _possible_international(digits: str) -> bool:
    """Whether ``+digits`` is certainly a fully possible number, without a full parse.

    This is libphonenumber's own rule (calling code, then the possible lengths of the
    national number) for the common case where no national prefix could be stripped; any
    other case returns False and goes through ``phonenumbers.parse``, which decides. Parsing
    is ~20x slower and would otherwise dominate the cost of a record.
    """
    first_digits = digits[:3]
    rules = _PHONE_RULES.get(first_digits) or _phone_rules(first_digits)
    size, lengths, plain_prefix, prefix = rules
    national = digits[size:]
    # No calling code (every number starting with 0, for one) has no possible length.
    if len(national) not in lengths or not national.strip("0"):
        return False
    if plain_prefix is not None:
        return not national.startswith(plain_prefix)  # what the pattern's match would say
    if prefix is None:
        return True
    stripped = prefix.match(national)
    # A match of nothing strips nothing and transforms nothing (libphonenumber keeps the
    # number as it is): Argentina's prefix pattern is all optional, so it always matches.
    return stripped is None or (stripped.end() == 0 and stripped.lastindex is None)


def _phone(text: str, country: str | None) -> tuple[str | None, str | None]:
    """(E.164 digits without +, or None; problem code or None) for a cleaned phone text."""
    if not text.isascii():
        text = text.translate(_ASCII_DIGITS)
    if text[0] == "+":
        # str.replace is several times faster than a regex or translate for this.
        digits = text[1:].replace(" ", "").replace("-", "").replace("(", "").replace(")", "")
        if digits.isdigit() and digits.isascii() and _possible_international(digits):
            return digits, None
    if text[:4].lower() == "tel:":
        text = text[4:].strip()
    text = _PHONE_EXTENSION.sub("", text)
    digits = _NON_DIGITS.sub("", text)
    if not digits:
        return None, "invalid_phone"

    # "00" is the international call prefix only when a country code (never 0) follows it.
    international = _LEADING_PLUS.match(text) is not None or (
        digits.startswith("00") and digits[2:3] not in ("", "0")
    )
    if international or (country is not None and country in _PHONE_REGIONS):
        return _parsed_phone(text, digits, None if international else country)

    digits = digits.lstrip("0")
    if not 7 <= len(digits) <= 15:
        return None, "invalid_phone"
    return digits, "phone_missing_country_code"


def _parsed_phone(text: str, digits: str, country: str | None) -> tuple[str | None, str | None]:
    """A number read by libphonenumber: international when ``country`` is None, else national."""
    if country is None and not _LEADING_PLUS.match(text):
        text = text.replace("00", "+", 1) if "00" in text else "+" + digits[2:]
    region = None if country is None else country.upper()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None, "invalid_phone"
    # A local-only number (no area code) cannot be matched by Meta: drop it.
    if phonenumbers.is_possible_number_with_reason(number) != _POSSIBLE:
        return None, "invalid_phone"
    return f"{number.country_code}{phonenumbers.national_significant_number(number)}", None


def _phone_value(text: str, country: str | None) -> str:
    value, problem = _phone(text, country)
    if value is None:
        raise _Dropped(problem or "invalid_phone")
    return value


def _name(text: str, country: str | None) -> str:
    value = text.lower()
    if value.isascii():
        value = value.translate(_ASCII_PUNCTUATION)
    else:
        value = "".join(c for c in value if unicodedata.category(c)[0] != "P")
    value = " ".join(value.split())
    if not value:
        raise _Dropped("invalid_name")
    return value


_GENDERS = {"m": "m", "male": "m", "man": "m", "f": "f", "female": "f", "woman": "f"}


def _gender(text: str, country: str | None) -> str:
    try:
        return _GENDERS[text.lower()]
    except KeyError:
        raise _Dropped("invalid_gender") from None


_MONTHS: dict[str, int] = {}
for _number, _full in enumerate(
    (
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ),
    start=1,
):
    _MONTHS[_full] = _MONTHS[_full[:3]] = _number
_MONTHS["sept"] = 9

_DATE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})"), "numeric"),
    (re.compile(r"(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})"), "numeric"),
    # Slashes with the year last are US order, as in Meta's own example 2/16/1997.
    (re.compile(r"(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})"), "numeric"),
    (re.compile(r"(?P<d>\d{1,2})[.-](?P<m>\d{1,2})[.-](?P<y>\d{4})"), "numeric"),
    (re.compile(r"(?P<m>[a-z]+)\.? (?P<d>\d{1,2}),? (?P<y>\d{4})"), "month name"),
    (re.compile(r"(?P<d>\d{1,2}) (?P<m>[a-z]+)\.?,? (?P<y>\d{4})"), "month name"),
)


# (the Unix time the cached year starts, the time it ends, that UTC year as 4 digits): the
# year is read per date of birth, from the app's clock (tests hold and move it), and building
# a calendar date from it costs more than the rest of the check.
_cached_year: tuple[float, float, str] = (0.0, 0.0, "0000")


def _this_year() -> str:
    """The clock's current UTC year, as 4 digits."""
    global _cached_year
    start, end, year_text = _cached_year
    moment = clock.timestamp()
    if not start <= moment < end:
        year = time.gmtime(moment).tm_year
        year_text = f"{year:04d}"
        start = calendar.timegm((year, 1, 1, 0, 0, 0))
        _cached_year = (start, calendar.timegm((year + 1, 1, 1, 0, 0, 0)), year_text)
    return year_text


#: Every MMDD of a leap year: a real date is one of these, and 0229 only in a leap year.
_MONTH_DAYS = frozenset(
    f"{month:02d}{day:02d}"
    for month in range(1, 13)
    for day in range(1, calendar.monthrange(2000, month)[1] + 1)
)


def _is_real_yyyymmdd(text: str) -> bool:
    """Whether 8 ASCII digits are a real date ``YYYYMMDD`` between 1900 and this year.

    The year is compared as text: digits of a fixed width order the same way as their numbers.
    """
    year, month_day = text[:4], text[4:]
    if "1900" <= year <= _this_year() and month_day in _MONTH_DAYS:
        return month_day != "0229" or calendar.isleap(int(year))
    return False


def _date_of_birth(text: str, country: str | None) -> str:
    if len(text) == 8 and text.isdigit() and text.isascii():
        # Already YYYYMMDD, the form Meta wants and most senders use: only check the date.
        if _is_real_yyyymmdd(text):
            return text
        raise _Dropped("invalid_date_of_birth")
    value = " ".join(text.lower().split())
    for pattern, kind in _DATE_PATTERNS:
        match = pattern.fullmatch(value)
        if match is None:
            continue
        month_text = match["m"]
        month = _MONTHS.get(month_text, 0) if kind == "month name" else int(month_text)
        try:
            born = date(int(match["y"]), month, int(match["d"]))
        except ValueError:
            break
        # Meta accepts years 1900..this year; the exact day of "today" does not matter here.
        if not 1900 <= born.year <= int(_this_year()):
            break
        return f"{born.year:04d}{born.month:02d}{born.day:02d}"
    raise _Dropped("invalid_date_of_birth")


def _city(text: str, country: str | None) -> str:
    value = _letters_and_marks(text.lower())
    if not value:
        raise _Dropped("invalid_city")
    return value


def _build_us_states() -> dict[str, str]:
    states: dict[str, str] = {}
    for subdivision in pycountry.subdivisions.get(country_code="US") or ():
        code = subdivision.code.split("-", 1)[1].lower()
        states[_letters_and_marks(subdivision.name.lower())] = code
    return states


_US_STATES = _build_us_states()


def _state(text: str, country: str | None) -> str:
    value = _letters_and_marks(text.lower())
    if not value:
        raise _Dropped("invalid_state")
    if country is None or country == "us":
        return _US_STATES.get(value, value)
    return value


_US_ZIP = re.compile(r"\d{5}(?:\d{4})?")


def _postal_code(text: str, country: str | None) -> str:
    # Most postal codes are plain digits with nothing to remove.
    plain = text.isdigit() and text.isascii()
    value = text if plain else _DASHES_AND_SPACES.sub("", text.lower())
    if not value:
        raise _Dropped("invalid_zip")
    if country == "us" or (country is None and _US_ZIP.fullmatch(value)):
        head = value[:5]
        if head.isdigit() and head.isascii():
            return head
    return value


# Common English names and abbreviations that are not in ISO 3166's own names.
_COUNTRY_ALIASES = {
    "uk": "gb",
    "britain": "gb",
    "greatbritain": "gb",
    "england": "gb",
    "scotland": "gb",
    "wales": "gb",
    "northernireland": "gb",
    "america": "us",
    "unitedstatesofamerica": "us",
    "holland": "nl",
    "thenetherlands": "nl",
    "russia": "ru",
    "turkey": "tr",
    "czechrepublic": "cz",
    "ivorycoast": "ci",
    "southkorea": "kr",
    "northkorea": "kp",
}


def _build_country_lookup() -> tuple[frozenset[str], dict[str, str]]:
    alpha_2: set[str] = set()
    lookup: dict[str, str] = {}
    for country in pycountry.countries:
        code = country.alpha_2.lower()
        alpha_2.add(code)
        lookup[country.alpha_3.lower()] = code
        for attribute in ("name", "official_name", "common_name"):
            name = getattr(country, attribute, None)
            if name:
                lookup.setdefault(_letters_and_marks(name.lower()), code)
    for alias, code in _COUNTRY_ALIASES.items():
        lookup.setdefault(alias, code)
    return frozenset(alpha_2), lookup


_COUNTRY_CODES, _COUNTRY_LOOKUP = _build_country_lookup()


@lru_cache(maxsize=4096)
def _country_code(text: str) -> str | None:
    key = _letters_and_marks(text.lower())
    if len(key) == 2 and key in _COUNTRY_CODES:
        return key
    return _COUNTRY_LOOKUP.get(key)


def _country(text: str, country: str | None) -> str:
    code = _country_code(text)
    if code is None:
        raise _Dropped("unknown_country")
    return code


def _external_id(text: str, country: str | None) -> str:
    # IDs may be case-sensitive, so the case is kept; only the cleaning above applies.
    return text


_IPV4_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Canonical dotted IPv4 (no leading zeros) is already what ipaddress would print.
_CANONICAL_IPV4 = re.compile(rf"{_IPV4_OCTET}(?:\.{_IPV4_OCTET}){{3}}")


def _is_canonical_ipv6(text: str) -> bool:
    """Whether ``text`` is an IPv6 address already written the way ``ipaddress`` prints it.

    ``ipaddress`` takes ~10 µs for an IPv6 address, the C library ~0.5 µs. Both print RFC 5952's
    canonical form for addresses without an embedded IPv4 part (which prints differently and
    is left to ``ipaddress``), so a text the C library prints back unchanged is canonical.
    """
    if "." in text or "%" in text:
        return False
    try:
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text)) == text
    except (OSError, ValueError):
        return False


def _ip_address(text: str, country: str | None) -> str:
    if _CANONICAL_IPV4.fullmatch(text):
        return text
    if ":" in text and _is_canonical_ipv6(text):
        return text
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    # The parameter builder's appendix after a valid address: kept as it is (Meta's advice).
    address, _, appendix = text.rpartition(".")
    if address and not appendix.isdigit() and _APPENDIX.fullmatch(appendix):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            pass
        else:
            return text
    raise _Dropped("invalid_ip_address")


def _user_agent(text: str, country: str | None) -> str:
    return text


# fb.<subdomain index>.<creation time in ms>.<fbclid or random>, plus the optional appendix
# segment Meta's parameter builder adds; the case is kept because fbclid is case-sensitive.
_FB_COOKIE = re.compile(r"fb\.\d{1,2}\.\d{1,16}\.[^.\s]+(?:\.[A-Za-z0-9_-]+)?")


def _fbc(text: str, country: str | None) -> str:
    if _FB_COOKIE.fullmatch(text) is None:
        raise _Dropped("invalid_fbc")
    return text


def _fbp(text: str, country: str | None) -> str:
    if _FB_COOKIE.fullmatch(text) is None:
        raise _Dropped("invalid_fbp")
    return text


def _clear_id(text: str, country: str | None) -> str:
    return text


_NORMALIZERS: dict[str, Callable[[str, str | None], str]] = {
    "em": _email,
    "ph": _phone_value,
    "fn": _name,
    "ln": _name,
    "ge": _gender,
    "db": _date_of_birth,
    "ct": _city,
    "st": _state,
    "zp": _postal_code,
    "country": _country,
    "external_id": _external_id,
    "client_ip_address": _ip_address,
    "client_user_agent": _user_agent,
    "fbc": _fbc,
    "fbp": _fbp,
}
for _key in CLEAR_KEYS + BUSINESS_ACCOUNT_KEYS:
    _NORMALIZERS.setdefault(_key, _clear_id)


def _normalize_one(key: str, value: Any, country: str | None) -> str | None:
    """Normalized value of a canonical key; None when empty; raises _Dropped when unusable."""
    if type(value) is str and value.isascii():
        text = value.strip()  # the common case, without the Unicode clean-up
    else:
        text = _clean_text(_as_text(key, value))
    if not text:
        return None
    if len(text) >= 64 and (digest := _builder_digest(text)) is not None:
        if key in _HASHED_KEY_SET:
            return digest
        if key in _CLEAR_KEYS_NEVER_HEX and len(text) == 64:
            raise _Dropped("hashed_clear_value")
    return _NORMALIZERS[key](text, country)


def _digest(key: str, value: Any, country: str | None) -> tuple[str | None, str | None]:
    """(SHA-256 hex or None, problem code or None) for one value of a hashed key.

    (digest, None) is clean, (digest, code) kept with a warning, (None, code) dropped,
    (None, None) empty.
    """
    try:
        if type(value) is str and value.isascii():
            text = value.strip()
        else:
            text = _clean_text(_as_text(key, value))
        if not text:
            return None, None
        if len(text) >= 64 and (digest := _builder_digest(text)) is not None:
            return digest, None
        if key == "ph":
            normalized, note = _phone(text, country)
            if normalized is None:
                return None, note
        else:
            normalized, note = _NORMALIZERS[key](text, country), None
    except _Dropped as dropped:
        return None, dropped.code
    return _sha256(normalized.encode("utf-8")).hexdigest(), note


# Values that repeat across many events (names, places, genders) are worth remembering;
# emails, phones and IDs are nearly unique and are not kept in memory, and neither are birth
# dates: tens of thousands of values, so a cache of them mostly misses and its memory slows
# the caches that do hit (measured in docs/BENCHMARKS.md).
_REPEATING_KEYS = frozenset({"fn", "ln", "ge", "ct", "st", "zp", "country"})
_cached_digest = lru_cache(maxsize=16384)(_digest)
# Read with the context country, so handled once the event's own country is known.
_COUNTRY_DEPENDENT_KEYS = frozenset({"ph", "st", "zp"})

# How the loop treats each accepted input key: (Meta's key, kind), looked up once per key.
_REPEATING, _UNIQUE, _COUNTRY_DEPENDENT, _CLEAR = "repeating", "unique", "country", "clear"
_COUNTRY = "the country"


def _kind_of(key: str) -> str:
    if key == "country":
        return _COUNTRY
    if key in _COUNTRY_DEPENDENT_KEYS:
        return _COUNTRY_DEPENDENT
    if key in _REPEATING_KEYS:
        return _REPEATING
    return _UNIQUE if key in _HASHED_KEY_SET else _CLEAR


# Fast paths. Each takes a raw text value and returns exactly what the general path gives
# when that value is clean (no diagnostic): the digest of a hashed key, the text of a clear
# key; or None to send the value down the general path, which decides and reports. They
# skip the general path's generic steps, which cost as much as the hashing itself
# (tests/test_normalize.py checks that both paths agree). Emails and phone numbers are
# never cached: they are contact data and nearly unique anyway.
def _fast_email(value: str) -> str | None:
    if value.isascii():
        text = value.strip().lower()
        # _EMAIL's rule with str methods (a regex costs more than the rest of the path) for
        # printable addresses: one @, labels of the domain not empty, no space.
        local, _, domain = text.partition("@")
        if (
            local
            and "." in domain
            and "@" not in domain
            and domain[0] != "."
            and domain[-1] != "."
            and ".." not in domain
            and " " not in text
            and text.isprintable()
            and len(text) != 64
        ):
            return _sha256(text.encode()).hexdigest()
    return None


def _fast_phone(value: str) -> str | None:
    # Only a number written with + is read the same whatever the context country is.
    if value.isascii():
        text = value.strip()
        if text[:1] == "+":
            digits = text[1:]
            if not digits.isdigit():  # E.164 as it is skips the four replaces
                digits = digits.replace(" ", "").replace("-", "").replace("(", "").replace(")", "")
                if not digits.isdigit():
                    return None
            if _possible_international(digits):
                return _sha256(digits.encode()).hexdigest()
    return None


def _fast_date_of_birth(value: str) -> str | None:
    if value.isascii():
        text = value.strip()
        if len(text) == 8 and text.isdigit() and _is_real_yyyymmdd(text):
            return _sha256(text.encode()).hexdigest()
    return None


def _fast_external_id(value: str) -> str | None:
    if value.isascii():
        text = value.strip()
        # 64 characters, or a "." after 64: maybe a digest, which the general path passes on.
        if text and len(text) != 64 and text[64:65] != ".":
            return _sha256(text.encode()).hexdigest()
    return None


def _clean_digest(key: str) -> Callable[[str], str | None]:
    def clean_digest(value: str) -> str | None:
        digest, problem = _digest(key, value, None)
        return digest if problem is None else None

    return clean_digest


def _cached_fast_digest(key: str) -> Callable[[str], str | None]:
    # One bounded cache per key, so one key's many values cannot push another key's few
    # values, seen again and again, out of the cache.
    return lru_cache(maxsize=4096)(_clean_digest(key))


_canonical_ipv4 = _CANONICAL_IPV4.fullmatch
_fb_cookie = _FB_COOKIE.fullmatch


def _fast_ip_address(value: str) -> str | None:
    if value.isascii():
        text = value.strip()
        if _canonical_ipv4(text) is not None:
            return text
        if ":" in text and _is_canonical_ipv6(text):
            return text
    return None


def _fast_fb_cookie(value: str) -> str | None:
    if value.isascii():
        text = value.strip()
        if len(text) != 64 and _fb_cookie(text) is not None:
            return text
    return None


def _fast_user_agent(value: str) -> str | None:
    if value.isascii():
        text = value.strip()
        if text and len(text) != 64:
            return text
    return None


def _fast_clear(key: str) -> Callable[[str], str | None]:
    if key == "client_ip_address":
        return _fast_ip_address
    if key in ("fbc", "fbp"):
        return _fast_fb_cookie
    if key == "client_user_agent":
        return _fast_user_agent
    normalizer = _NORMALIZERS[key]

    def clear_value(value: str) -> str | None:
        if value.isascii():
            text = value.strip()
            if text and len(text) != 64:
                try:
                    return normalizer(text, None)
                except _Dropped:
                    return None
        return None

    return clear_value


def _fast_path(key: str) -> Callable[[str], str | None] | None:
    if key == "em":
        return _fast_email
    if key == "ph":
        return _fast_phone
    if key == "external_id":
        return _fast_external_id
    if key == "db":
        return _fast_date_of_birth
    if key in _COUNTRY_DEPENDENT_KEYS or key == "country":
        return None  # read with the context country / it sets the context country
    if key in _REPEATING_KEYS:
        return _cached_fast_digest(key)
    if key in _HASHED_KEY_SET:
        return _clean_digest(key)
    return _fast_clear(key)


@lru_cache(maxsize=4096)  # countries repeat from event to event, and are not contact data
def _clean_country(value: str) -> tuple[str | None, str] | None:
    """(the context country it names, digest) of a clean country text; None if not clean."""
    digest, problem = _digest("country", value, None)
    if digest is None or problem is not None:
        return None
    return _country_of_text(value), digest


def _clean_digest_in_country(key: str) -> Callable[[str, str | None], str | None]:
    # One bounded cache per key, as for the other repeating keys, and per context country.
    @lru_cache(maxsize=4096)
    def clean_digest(value: str, country: str | None) -> str | None:
        digest, problem = _digest(key, value, country)
        return digest if problem is None else None

    return clean_digest


#: The cached fast path of the repeating keys read with the context country (state, postal
#: code): the digest of a clean text value in a context country, else None.
_FAST_PATHS_IN_COUNTRY = {key: _clean_digest_in_country(key) for key in ("st", "zp")}
_FAST_PATHS = {key: _fast_path(key) for key in (*HASHED_KEYS, *CLEAR_KEYS, *BUSINESS_ACCOUNT_KEYS)}
_KEY_PLANS: dict[str, tuple[str, str, Callable[[str], str | None] | None]] = {
    name: (key, _kind_of(key), _FAST_PATHS[key]) for name, key in _KEY_LOOKUP.items()
}


# --- public API -------------------------------------------------------------------------------


def canonical_key(key: Any) -> str | None:
    """Meta's key for an input key or alias (``"email"`` → ``"em"``); None if unknown."""
    if not isinstance(key, str):
        return None
    return _KEY_LOOKUP.get(key) or _KEY_LOOKUP.get(key.strip().lower())


def normalize_country(value: Any) -> str | None:
    """ISO 3166-1 alpha-2 lowercase for a code, alpha-3 code or English name; None if unknown."""
    if not isinstance(value, str):
        return None
    text = _clean_text(value)
    return _country_code(text) if text else None


def normalize_field(field: str, value: Any, *, country: str | None = None) -> str | None:
    """The normalized (not hashed) value of one user_data key, or None when it is dropped.

    ``field`` is Meta's key or an alias. ``country`` is the context country (any form
    ``normalize_country`` understands) used for phone numbers, states and postal codes.
    An existing SHA-256 digest in a hashed key comes back lowercased, unchanged otherwise.
    """
    key = canonical_key(field)
    if key is None:
        return None
    try:
        return _normalize_one(key, value, normalize_country(country))
    except _Dropped:
        return None


def hash_value(normalized: str) -> str:
    """SHA-256 of a normalized value as lowercase hex; an existing digest is returned as is."""
    if len(normalized) >= 64 and (digest := _builder_digest(normalized)) is not None:
        return digest
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()


_CURRENCIES = frozenset(currency.alpha_3 for currency in pycountry.currencies)


def normalize_currency(value: Any) -> str | None:
    """Uppercase ISO 4217 code (``" usd "`` → ``"USD"``), or None when it is not a real one."""
    if not isinstance(value, str):
        return None
    code = value.strip().upper()
    return code if code in _CURRENCIES else None


def normalize_user_data(
    user_data: Mapping[str, Any], *, country: str | None = None
) -> dict[str, Any]:
    """Meta-ready user_data: aliases resolved, hashed keys normalized and SHA-256 hashed.

    Hashed keys come out as lists of lowercase hex digests (deduplicated, first-seen order);
    keys Meta wants in clear come out as single stripped strings. Empty, unusable and unknown
    values are left out; ``normalize_user_data_report`` says which and why.
    """
    return normalize_user_data_report(user_data, country=country)[0]


_SEQUENCES = (list, tuple)


def normalize_user_data_report(
    user_data: Mapping[str, Any], *, country: str | None = None
) -> NormalizedUserData:
    """``normalize_user_data`` plus a diagnostic for every dropped or doubtful value.

    The context country is the event's own ``country`` key when it can be read, else
    ``country=`` (for example the destination's default country).
    """
    # This runs for every event (track_many calls it directly, so no wrapper frame), and the
    # common shape (one string per key) takes a short path, written out here; everything else
    # goes through the helpers below.
    default_country = country
    found: list[Diagnostic] = []
    result: dict[str, Any] = {}
    # isinstance() against the Mapping ABC is slow; a plain dict is by far the usual input.
    if type(user_data) is not dict and not isinstance(user_data, Mapping):
        found.append(_problem("user_data", "invalid_user_data", type_name=_type_name(user_data)))
        return _new_report(NormalizedUserData, (result, found, None))

    event_country: str | None = None
    country_dependent: list[tuple[str, Any]] = []
    phone_deferred = False
    for raw_key, raw_value in user_data.items():
        try:
            key, kind, fast = _KEY_PLANS[raw_key]
        except KeyError:
            plan = _alias_plan(raw_key, found)
            if plan is None:
                continue
            key, kind, fast = plan
        # A deferred phone must stay ahead of a later one, so the fast path waits behind it.
        if fast is not None and key not in result and not (phone_deferred and key == "ph"):
            if type(raw_value) is str:
                value = fast(raw_value)
                if value is not None:
                    result[key] = value if kind is _CLEAR else [value]
                    continue
            elif _took_fast_digests(key, kind, fast, raw_value, result):
                continue
        if kind is _COUNTRY_DEPENDENT:
            phone_deferred |= key == "ph"
            country_dependent.append((key, raw_value))
        elif kind is _CLEAR:
            _add_clear(key, raw_value, result, found)
        elif kind is _COUNTRY:
            if type(raw_value) is str and key not in result:
                clean = _clean_country(raw_value)
                if clean is not None:
                    result[key] = [clean[1]]
                    if event_country is None:
                        event_country = clean[0]
                    continue
            if event_country is None:
                event_country = _event_country(raw_value)
            _add_hashed(key, _cached_digest, raw_value, None, result, found)
        else:
            digest_of = _cached_digest if kind is _REPEATING else _digest
            _add_hashed(key, digest_of, raw_value, None, result, found)

    if event_country is None and default_country is not None:
        event_country = _context_country(event_country, default_country)
    for key, raw_value in country_dependent:
        if key == "ph":
            _add_hashed(key, _digest, raw_value, event_country, result, found)
            continue
        if type(raw_value) is str and key not in result:
            digest = _FAST_PATHS_IN_COUNTRY[key](raw_value, event_country)
            if digest is not None:
                result[key] = [digest]
                continue
        _add_hashed(key, _cached_digest, raw_value, event_country, result, found)
    return _new_report(NormalizedUserData, (result, found, event_country))


_KeyPlan = tuple[str, str, Callable[[str], str | None] | None]


def _context_country(event_country: str | None, default_country: str | None) -> str | None:
    """The country phones, states and postal codes are read with: the event's, else the
    default."""
    if event_country is None and default_country is not None:
        # The destination's default country comes with every event that names none: cached.
        if type(default_country) is str:
            return _country_of_text(default_country)
        return normalize_country(default_country)
    return event_country


def _alias_plan(raw_key: Any, found: list[Diagnostic]) -> _KeyPlan | None:
    """The plan of a key written another way (an alias, another case); None if unknown."""
    key = canonical_key(raw_key)
    if key is None:
        found.append(_unknown_key(raw_key))
        return None
    return _KEY_PLANS[key]


def _took_fast_digests(
    key: str,
    kind: str,
    fast: Callable[[str], str | None],
    raw_value: Any,
    result: dict[str, Any],
) -> bool:
    """Whether a list of clean text values of a hashed key was hashed on the fast path."""
    if type(raw_value) is not list or kind is _CLEAR:
        return False
    digests = _fast_digests(raw_value, fast)
    if digests is None:
        return False
    if digests:
        result[key] = digests
    return True


def _add_clear(key: str, raw_value: Any, result: dict[str, Any], found: list[Diagnostic]) -> None:
    """A key Meta wants in clear text: the first usable value, unless one is already there."""
    if key in result:
        return
    if type(raw_value) is str and raw_value.isascii():
        text = raw_value.strip()
        if text and len(text) != 64:
            try:
                result[key] = _NORMALIZERS[key](text, None)
                return
            except _Dropped:
                pass  # the full path below reports it
    _add_clear_value(key, raw_value, result, found)


def _add_hashed(
    key: str,
    digest_of: Callable[[str, Any, str | None], tuple[str | None, str | None]],
    raw_value: Any,
    country: str | None,
    result: dict[str, Any],
    found: list[Diagnostic],
) -> None:
    """One hashed key: a clean text value by ``digest_of``, anything else by the general path.

    ``country`` is the context country for phone, state and postal code, else None.
    """
    if type(raw_value) is str and key not in result:
        digest, problem = digest_of(key, raw_value, country)
        if problem is None:
            if digest is not None:
                result[key] = [digest]
            return
    _add_digests(key, raw_value, country, result, found)


@lru_cache(maxsize=4096)  # countries repeat from event to event, and are not contact data
def _country_of_text(value: str) -> str | None:
    return normalize_country(value)


def _fast_digests(values: list[Any], fast: Callable[[str], str | None]) -> list[str] | None:
    """The deduplicated digests of a list of clean text values; None if any is not."""
    digests: list[str] = []
    for value in values:
        digest = fast(value) if type(value) is str else None
        if digest is None:
            return None
        if digest not in digests:
            digests.append(digest)
    return digests


def _event_country(raw_value: Any) -> str | None:
    if type(raw_value) is str:
        return _country_of_text(raw_value)
    values = raw_value if isinstance(raw_value, _SEQUENCES) else (raw_value,)
    for value in values:
        code = normalize_country(value)
        if code is not None:
            return code
    return None


def _add_digests(
    key: str,
    raw_value: Any,
    country: str | None,
    result: dict[str, Any],
    found: list[Diagnostic],
) -> None:
    digest_of = _cached_digest if key in _REPEATING_KEYS else _digest
    digests: list[str] | None = result.get(key)
    for value in raw_value if isinstance(raw_value, _SEQUENCES) else (raw_value,):
        if type(value) is str:
            digest, problem = digest_of(key, value, country)
        else:  # maybe unhashable, so never through the cache
            digest, problem = _digest(key, value, country)
        if problem is not None:
            found.append(_problem(key, problem, type_name=_type_name(value)))
        if digest is None:
            continue
        if digests is None:
            digests = result[key] = [digest]
        elif digest not in digests:
            digests.append(digest)


def _add_clear_value(
    key: str, raw_value: Any, result: dict[str, Any], found: list[Diagnostic]
) -> None:
    # Meta takes one value for these keys; the first usable one wins.
    for value in raw_value if isinstance(raw_value, _SEQUENCES) else (raw_value,):
        try:
            normalized = _normalize_one(key, value, None)
        except _Dropped as dropped:
            found.append(_problem(key, dropped.code, type_name=_type_name(value)))
            continue
        if normalized is not None:
            result[key] = normalized
            return


def _type_name(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        tuple: "a list",
        float: "a decimal number",
        bool: "true/false",
        type(None): "null",
    }.get(type(value), type(value).__name__)


# code → (severity, message, fix); {label} is the field's plain name. Never include the value: it is
# personal data and diagnostics are stored.
_PROBLEMS: dict[str, tuple[str, str, str]] = {
    "invalid_value_type": (
        WARNING,
        "The {label} was {type_name}, not text, so it was left out of the event.",
        "Send the {label} as a string (or a list of strings).",
    ),
    "invalid_user_data": (
        WARNING,
        "user_data was {type_name}, not an object, so no customer information could be read.",
        'Send user_data as an object, e.g. {{"em": "name@example.com"}}.',
    ),
    "invalid_email": (
        WARNING,
        "An email address is not valid (it needs exactly one @, a domain with a dot and no "
        "spaces), so it was left out of the event.",
        "Send the customer's full email address, such as name@example.com.",
    ),
    "invalid_phone": (
        WARNING,
        "A phone number could not be read as a complete number with an area code, so it was "
        "left out of the event.",
        "Send the full number with its country code, such as +1 650 555 1212, or set the "
        "event's country (or the destination's default country) for national numbers.",
    ),
    "phone_missing_country_code": (
        WARNING,
        "A phone number has no country code and no country is known, so it was sent as "
        "digits only; Meta matches phone numbers only with their country code, so unless the "
        "digits already start with it, this one cannot match.",
        "Send phone numbers with the country code (+44 …), or send the customer's country, or "
        "set a default country on the destination.",
    ),
    "invalid_name": (
        WARNING,
        "The {label} has no letters left after removing punctuation, so it was left out.",
        "Send the customer's {label} as written, e.g. Mary.",
    ),
    "invalid_gender": (
        WARNING,
        "The gender is not one Meta understands, so it was left out of the event.",
        'Send "m" or "f" (male/female are accepted too), or leave the field out.',
    ),
    "invalid_date_of_birth": (
        WARNING,
        "The date of birth is not a real date between 1900 and this year in a format we "
        "read, so it was left out of the event.",
        "Send the date as YYYYMMDD or YYYY-MM-DD, e.g. 19970216.",
    ),
    "invalid_city": (
        WARNING,
        "The city has no letters in it, so it was left out of the event.",
        "Send the city's name, e.g. Paris.",
    ),
    "invalid_state": (
        WARNING,
        "The state has no letters in it, so it was left out of the event.",
        "Send the state's name or its 2-letter code, e.g. CA.",
    ),
    "invalid_zip": (
        WARNING,
        "The postal code is empty once spaces and dashes are removed, so it was left out.",
        "Send the customer's postal code, e.g. 94025.",
    ),
    "unknown_country": (
        WARNING,
        "The country is not a country code or name we recognise, so it was left out.",
        "Send the 2-letter ISO 3166 code, e.g. US or GB.",
    ),
    "invalid_ip_address": (
        WARNING,
        "The IP address is not a valid IPv4 or IPv6 address, so it was left out.",
        "Send the visitor's IP address exactly as the web server saw it, e.g. 203.0.113.7.",
    ),
    "hashed_clear_value": (
        WARNING,
        "The {label} looks SHA-256 hashed, but Meta needs it in clear text, so it was left out.",
        "Send the {label} unhashed; only email, phone, names, dates, address fields, country "
        "and external ID are hashed.",
    ),
    "invalid_fbc": (
        WARNING,
        "The fbc value does not look like fb.<n>.<time in ms>.<fbclid>, so it was left out.",
        "Send the _fbc cookie as it is, or build it as fb.1.<first seen ms>.<fbclid> from "
        "the landing page's fbclid parameter.",
    ),
    "invalid_fbp": (
        WARNING,
        "The fbp value does not look like fb.<n>.<time in ms>.<random>, so it was left out.",
        "Send the _fbp cookie exactly as the Meta Pixel set it.",
    ),
}


def _problem(key: str, code: str, *, type_name: str = "") -> Diagnostic:
    severity, message, fix = _PROBLEMS[code]
    label = FIELD_LABELS.get(key, key)
    field_path = key if key == "user_data" else f"user_data.{key}"
    return Diagnostic(
        code=code,
        field=field_path,
        severity=severity,
        message=message.format(label=label, type_name=type_name),
        fix=fix.format(label=label, type_name=type_name),
    )


def _unknown_key(raw_key: Any) -> Diagnostic:
    shown = str(raw_key)[:40]
    return Diagnostic(
        code="unknown_user_data_key",
        field=f"user_data.{shown}",
        severity=INFO,
        message=f'"{shown}" is not a user_data key Meta knows, so it was not sent.',
        fix="Use Meta's keys (em, ph, fn, ln, ge, db, ct, st, zp, country, external_id, "
        "client_ip_address, client_user_agent, fbc, fbp, …) or one of the documented aliases "
        "(email, phone, first_name, …).",
    )
