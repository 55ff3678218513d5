"""The ``user_data`` keys Meta knows, in one place for ``normalize`` and ``diagnostics``.

Both modules need them, and they import each other; keeping the lists here means neither has
to spell them out again.
"""

from __future__ import annotations

__all__ = [
    "ALIASES",
    "BUSINESS_ACCOUNT_KEYS",
    "CHANNEL_IDENTIFIERS",
    "CLEAR_KEYS",
    "CUSTOMER_INFO_KEYS",
    "HASHED_KEYS",
    "MESSAGING_CHANNELS",
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
