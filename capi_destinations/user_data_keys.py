"""The ``user_data`` keys Meta knows and their plain names, in one place.

``normalize``, ``diagnostics``, ``health`` and ``reports`` all need them; keeping the lists and
the labels here means none of them spells a key or its name out again.
"""

from __future__ import annotations

__all__ = [
    "ALIASES",
    "BUSINESS_ACCOUNT_KEYS",
    "CHANNEL_IDENTIFIERS",
    "CLEAR_KEYS",
    "CUSTOMER_INFO_KEYS",
    "CUSTOMER_INFO_KEY_SET",
    "FIELD_LABELS",
    "HASHED_KEYS",
    "IDENTIFIER_LABELS",
    "MESSAGING_CHANNELS",
    "TOP_IDENTIFIERS",
]

#: Keys Meta wants SHA-256 hashed after normalization, in the order Meta documents them.
HASHED_KEYS: tuple[str, ...] = (
    "em",
    "ph",
    "fn",
    "ln",
    "ge",
    "db",
    "ct",
    "st",
    "zp",
    "country",
    "external_id",
)

#: Keys Meta wants in clear text: hashing them makes them useless for matching.
CLEAR_KEYS: tuple[str, ...] = (
    "client_ip_address",
    "client_user_agent",
    "fbc",
    "fbp",
    "subscription_id",
    "lead_id",
    "fb_login_id",
    "anon_id",
    "madid",
    "page_id",
    "page_scoped_user_id",
    "ctwa_clid",
    "ig_account_id",
    "ig_sid",
)

#: The business's own accounts in business-messaging events (Meta's business messaging page):
#: sent in clear, but they identify the business, not the customer, so they are not
#: customer information.
BUSINESS_ACCOUNT_KEYS: tuple[str, ...] = (
    "whatsapp_business_account_id",
    "instagram_business_account_id",
)

#: ``messaging_channel`` values Meta documents, and the user_data keys each one needs.
CHANNEL_IDENTIFIERS: dict[str, tuple[str, ...]] = {
    "whatsapp": ("ctwa_clid", "whatsapp_business_account_id"),
    "messenger": ("page_id", "page_scoped_user_id"),
    "instagram": ("ig_account_id", "ig_sid"),
}
MESSAGING_CHANNELS: tuple[str, ...] = tuple(CHANNEL_IDENTIFIERS)

#: Friendlier input names accepted for Meta's short keys (matched case-insensitively).
ALIASES: dict[str, str] = {
    "email": "em",
    "phone": "ph",
    "phone_number": "ph",
    "first_name": "fn",
    "last_name": "ln",
    "date_of_birth": "db",
    "dob": "db",
    "gender": "ge",
    "city": "ct",
    "state": "st",
    "zip": "zp",
    "zip_code": "zp",
    "postal_code": "zp",
    "postcode": "zp",
    "ip": "client_ip_address",
    "ip_address": "client_ip_address",
    "user_agent": "client_user_agent",
}

#: Every user_data key that counts as customer information.
CUSTOMER_INFO_KEYS: tuple[str, ...] = HASHED_KEYS + CLEAR_KEYS
#: The same keys as a set, for membership tests on every event (a 25-item tuple is a scan).
CUSTOMER_INFO_KEY_SET: frozenset[str] = frozenset(CUSTOMER_INFO_KEYS)

#: Plain names of the user_data keys for lists and summaries, most valuable for matching first
#: (the identifier value ranking users are given: email, phone, external_id, fbp, fbc, IP and
#: user agent, then name and address fields).
IDENTIFIER_LABELS: dict[str, str] = {
    "em": "email",
    "ph": "phone",
    "external_id": "external ID",
    "fbp": "fbp (the _fbp browser cookie)",
    "fbc": "fbc (the click ID)",
    "client_ip_address": "client IP address",
    "client_user_agent": "user agent",
    "fn": "first name",
    "ln": "last name",
    "zp": "postal code",
    "ct": "city",
    "country": "country",
    "st": "state",
    "db": "date of birth",
    "ge": "gender",
}
#: The identifiers worth the most for matching, whose absence the diagnostics summary reports.
TOP_IDENTIFIERS: tuple[str, ...] = tuple(IDENTIFIER_LABELS)[:7]

#: The name of a key inside a sentence ("The {label} was left out"), for the findings of
#: ``normalize``; keys not listed are named by their key.
FIELD_LABELS: dict[str, str] = {
    "em": "email address",
    "ph": "phone number",
    "fn": "first name",
    "ln": "last name",
    "ge": "gender",
    "db": "date of birth",
    "ct": "city",
    "st": "state",
    "zp": "postal code",
    "country": "country",
    "external_id": "external ID",
    "client_ip_address": "IP address",
    "client_user_agent": "user agent",
    "fbc": "click ID (fbc)",
    "fbp": "browser ID (fbp)",
}
