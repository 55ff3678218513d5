"""Inputs for the benchmarks: varied, realistic, deterministic (seeded) user data and events.

The user data is varied the way real input varies — mixed case, stray whitespace, aliases
(``email``) beside Meta's keys (``em``), lists, accents and other scripts, optional keys —
but stays inside the inputs where Meta's documented rules and the official SDK agree, so the
normalize benchmark can demand identical hashes from both (where they disagree the project
follows Meta's rules on purpose: ``docs/NORMALIZATION.md``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import time
from collections.abc import Iterator
from datetime import date, timedelta
from functools import cache
from typing import Any

import phonenumbers

FIRST_NAMES = (
    "Mary", "James", "Patricia", "John", "Jennifer", "Robert", "Linda", "Michael", "Barbara",
    "William", "Elizabeth", "David", "Susan", "Richard", "Jessica", "Joseph", "Sarah", "Thomas",
    "Karen", "Charles", "Mary Ann", "Jean Luc", "José", "Zoë", "Björn", "François", "Łukasz",
    "Søren", "Ærin", "Núria", "Мария", "Дмитрий", "정", "민준", "Ömer", "Ayşe", "Mohammed",
    "Fatima", "Wei", "Yuki", "Hiroshi", "Anaïs", "Chloé", "Élodie", "Jürgen", "Günther",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Müller",
    "Schröder", "Dupont", "Lefèvre", "Nowak", "Kowalski", "Иванов", "Kim", "Park", "Yılmaz",
    "Van Der Berg", "De La Cruz", "Ng", "Nguyen", "Tanaka", "Suzuki", "Østergaard",
)  # fmt: skip
# Punctuation and digits are removed by both the rules and the SDK only for these characters,
# so cities carry spaces, dots and dashes, never apostrophes or commas.
CITIES = (
    "San Francisco", "New York", "Los Angeles", "St. Louis", "Winston-Salem", "Chicago",
    "Houston", "Phoenix", "Philadelphia", "San Antonio", "San Diego", "Dallas", "Austin",
    "München", "São Paulo", "Saint-Étienne", "Paris", "London", "Berlin", "Kraków", "Zürich",
    "København", "Reykjavík", "Москва", "서울", "Tokyo", "Menlo Park", "Palo Alto",
)  # fmt: skip
US_STATES = ("CA", "NY", "TX", "FL", "WA", "IL", "PA", "OH", "GA", "NC", "MI", "NJ", "VA")
EMAIL_DOMAINS = (
    "gmail.com", "Example.COM", "yahoo.co.uk", "outlook.com", "mail.example.org",
    "hotmail.fr", "web.de", "icloud.com", "proton.me", "sub.example.co.jp",
)  # fmt: skip
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
)
# (country for the event, postal code as typed): US ZIP+4 only with the country set to us.
POSTAL_CODES = (
    ("us", "94025"),
    ("us", "10001-1234"),
    (None, "60614"),
    ("gb", "SW1A 1AA"),
    ("gb", "ec1a 1bb"),
    ("de", "10115"),
    ("fr", "75008"),
    ("jp", "1000001"),
    ("ca", "K1A 0B1"),
)
PHONE_REGIONS = (
    "US", "GB", "DE", "FR", "IT", "ES", "NL", "BE", "SE", "NO", "DK", "FI", "PL", "CZ",
    "AT", "CH", "IE", "PT", "GR", "TR", "RU", "UA", "IN", "JP", "KR", "CN", "AU", "NZ",
    "BR", "MX", "AR", "CL", "CO", "ZA", "NG", "EG", "KE", "SG", "MY", "TH", "ID", "PH",
)  # fmt: skip
GENDERS = ("m", "f", "M", "F", "male", "female", "Male", "Female")

# Which readable alias a record may use instead of Meta's key.
ALIAS_OF = {
    "em": "email",
    "ph": "phone",
    "fn": "first_name",
    "ln": "last_name",
    "ge": "gender",
    "db": "date_of_birth",
    "ct": "city",
    "st": "state",
    "zp": "zip",
    "client_ip_address": "ip",
    "client_user_agent": "user_agent",
}


@cache
def phone_pool(size: int = 4000, seed: int = 7) -> tuple[str, ...]:
    """Phone numbers as people type them in international form, already canonical.

    Each is an example number of a region with its last digits varied, kept only when its
    E.164 digits are exactly the digits typed (so no national trunk prefix is hidden in it):
    the rules and the SDK must then give the same hash.
    """
    rng = random.Random(seed)
    pool: list[str] = []
    formats = (phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164)
    while len(pool) < size:
        region = rng.choice(PHONE_REGIONS)
        example = phonenumbers.example_number_for_type(
            region, phonenumbers.PhoneNumberType.MOBILE
        ) or phonenumbers.example_number(region)
        if example is None:
            continue
        national = str(example.national_number)
        varied = national[:-3] + f"{rng.randrange(1000):03d}"
        try:
            number = phonenumbers.parse(f"+{example.country_code}{varied}", None)
        except phonenumbers.NumberParseException:
            continue
        if not phonenumbers.is_possible_number(number):
            continue
        typed = phonenumbers.format_number(number, rng.choice(formats))
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        if "".join(c for c in typed if c.isdigit()) != e164[1:]:
            continue
        pool.append(typed)
    return tuple(pool)


def _case(rng: random.Random, text: str) -> str:
    # As people and forms type it: as written, all lower, all upper, or title case.
    roll = rng.random()
    if roll < 0.5:
        return text
    if roll < 0.75:
        return text.lower()
    if roll < 0.9:
        return text.upper()
    return text.title()


def _pad(rng: random.Random, text: str) -> str:
    roll = rng.random()
    if roll < 0.8:
        return text
    return rng.choice((" ", "  ", "\t", "\n")) + text + rng.choice(("", " ", "\n "))


def _key(rng: random.Random, key: str) -> str:
    alias = ALIAS_OF.get(key)
    return alias if alias is not None and rng.random() < 0.3 else key


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.85:
        return str(ipaddress.IPv4Address(rng.randrange(0x0B000000, 0xDF000000)))
    return str(ipaddress.IPv6Address((0x2001_0DB8 << 96) | rng.getrandbits(64)))


def user_data_record(rng: random.Random, number: int) -> dict[str, Any]:
    """One customer's user_data as a shop would send it (number makes email/IDs unique)."""
    record: dict[str, Any] = {}
    country: str | None = None
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    if rng.random() < 0.92:
        local = f"{first.split()[0]}.{last.split()[0]}{number}"
        if not local.isascii():
            local = f"customer{number}"
        email = _pad(rng, _case(rng, f"{local}@{rng.choice(EMAIL_DOMAINS)}"))
        if rng.random() < 0.05:
            record[_key(rng, "em")] = [email, _case(rng, f"alt{number}@example.net")]
        else:
            record[_key(rng, "em")] = email
    if rng.random() < 0.6:
        record[_key(rng, "ph")] = _pad(rng, rng.choice(phone_pool()))
    if rng.random() < 0.55:
        record[_key(rng, "fn")] = _pad(rng, _case(rng, first))
        record[_key(rng, "ln")] = _pad(rng, _case(rng, last))
    if rng.random() < 0.3:
        record[_key(rng, "ge")] = rng.choice(GENDERS)
    if rng.random() < 0.3:
        born = date(1930, 1, 1) + timedelta(days=rng.randrange(27_000))
        record[_key(rng, "db")] = _pad(rng, born.strftime("%Y%m%d"))
    if rng.random() < 0.45:
        country, postal_code = rng.choice(POSTAL_CODES)
        record[_key(rng, "zp")] = _pad(rng, _case(rng, postal_code))
        record[_key(rng, "ct")] = _pad(rng, _case(rng, rng.choice(CITIES)))
        if country in ("us", None):
            record[_key(rng, "st")] = _case(rng, rng.choice(US_STATES))
        if country is not None and rng.random() < 0.8:
            record["country"] = _pad(rng, _case(rng, country))
    elif rng.random() < 0.3:
        record["country"] = _case(rng, rng.choice(("us", "gb", "de", "fr", "br", "jp", "in")))
    if rng.random() < 0.4:
        record["external_id"] = f"cust-{number:07d}" if rng.random() < 0.5 else f"U{number * 7919}"
    if rng.random() < 0.7:
        record[_key(rng, "client_ip_address")] = _ip(rng)
        record[_key(rng, "client_user_agent")] = rng.choice(USER_AGENTS)
    created_ms = 1_700_000_000_000 + number * 1000
    if rng.random() < 0.5:
        record["fbp"] = f"fb.1.{created_ms}.{rng.randrange(10**9, 10**10)}"
    if rng.random() < 0.25:
        record["fbc"] = f"fb.1.{created_ms}.IwAR{hashlib.md5(str(number).encode()).hexdigest()}"  # noqa: S324 - a fake click ID
    if not record:
        record["external_id"] = f"cust-{number:07d}"
    return record


def user_data_records(count: int, *, seed: int = 20260101) -> list[dict[str, Any]]:
    """``count`` varied user_data records, the same for the same seed."""
    rng = random.Random(seed)
    return [user_data_record(rng, number) for number in range(count)]


STRONG_KEYS = frozenset({"em", "email", "ph", "phone", "external_id", "fbp", "fbc"})
EVENT_NAMES = ("Purchase", "AddToCart", "ViewContent", "Lead", "InitiateCheckout", "PageView")


def raw_events(
    count: int, *, seed: int = 20260102, prefix: str = "evt", now: float | None = None
) -> Iterator[dict[str, Any]]:
    """``count`` server events as a developer passes them to ``track_many`` (plaintext PII).

    Event IDs are ``<prefix>-<n>``, unique per prefix, so "every event stored once" and
    "delivered once" can be checked by ID.
    """
    rng = random.Random(seed)
    moment = int(now if now is not None else time.time())
    for number in range(count):
        name = EVENT_NAMES[number % len(EVENT_NAMES)]
        event: dict[str, Any] = {
            "event_name": name,
            "event_time": moment - rng.randrange(3600),
            "event_id": f"{prefix}-{number}",
            "action_source": "website",
            "event_source_url": f"https://shop.example.com/p/{number % 500}",
            "user_data": user_data_record(rng, number),
        }
        user_data = event["user_data"]
        user_data.setdefault("client_user_agent", USER_AGENTS[number % len(USER_AGENTS)])
        # Meta refuses events with too little to match on, and so does track_many: give
        # every event one strong identifier, as a real checkout has.
        if not STRONG_KEYS & set(user_data):
            user_data["external_id"] = f"cust-{number:07d}"
        if name == "Purchase":
            event["custom_data"] = {
                "value": round(rng.uniform(5, 500), 2),
                "currency": rng.choice(("USD", "eur", "GBP")),
                "content_ids": [f"sku-{rng.randrange(1000)}"],
                "content_type": "product",
            }
        yield event


def server_event(event_id: str, event_time: int, *, number: int) -> dict[str, Any]:
    """A Meta-ready server event (user data already hashed), as a stored Event's payload."""
    email = f"customer{number}@example.com"
    return {
        "event_name": EVENT_NAMES[number % len(EVENT_NAMES)],
        "event_time": event_time,
        "event_id": event_id,
        "action_source": "website",
        "event_source_url": f"https://shop.example.com/p/{number % 500}",
        "user_data": {
            "em": [hashlib.sha256(email.encode()).hexdigest()],
            "client_ip_address": f"203.0.{number % 250}.{number % 199 + 1}",
            "client_user_agent": USER_AGENTS[number % len(USER_AGENTS)],
            "fbp": f"fb.1.1700000000000.{1_000_000_000 + number}",
        },
        "custom_data": {"value": 49.9, "currency": "EUR"},
    }
