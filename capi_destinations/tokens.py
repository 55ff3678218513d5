"""Access-token hygiene: format checks with exact messages, a display hint, a fingerprint, key
rotation.

Meta documents tokens as opaque; the checks here catch broken pastes (whitespace, a cut-off
copy, the wrong kind of token) before anything is saved. The final word is the health check's
Graph call.

A token's fingerprint (:func:`token_fingerprint`) tells whether two stored tokens are the same
token without decrypting either: a block remembers the fingerprint of the token Meta refused,
and destinations of different clients that share a token are found by it. It is an HMAC-SHA256
keyed with ``SECRET_KEY`` (through Django's ``salted_hmac`` with a salt of its own), not a plain
hash: whoever reads the database cannot confirm a guessed token without the server's secret.
It does not depend on ``FERNET_KEYS``, so re-encrypting the tokens with new keys
(``capi_rotate_keys``) leaves every fingerprint as it was; after a change of ``SECRET_KEY`` the
old key, kept in ``SECRET_KEY_FALLBACKS`` as Django documents, still matches
(:func:`fingerprint_matches`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.crypto import constant_time_compare, salted_hmac
from django.views.decorators.debug import sensitive_variables

from capi_destinations.conf import app_settings

TYPICAL_TOKEN_LENGTH = 190

# "Bearer " is the word before a token in an Authorization header: a token copied from a request
# (a curl example, the browser's network tab) comes with it. What follows it is the token.
_BEARER = re.compile(r"\Abearer\s+", re.IGNORECASE)


# Django's error reports print local variables: never these.
@sensitive_variables("value", "token")
def clean_access_token(value: object) -> str:
    """Return the token with surrounding whitespace removed, or raise ``ValidationError``.

    A leading ``Bearer `` (a token copied from an Authorization header) is removed. Every
    message names the exact problem and never repeats the token itself.
    """
    if not isinstance(value, str):
        raise ValidationError("The access token must be text.", code="token_type")
    token = _BEARER.sub("", value.strip())
    if not token:
        raise ValidationError("Paste the Conversions API access token.", code="token_missing")
    if any(character.isspace() for character in token):
        raise ValidationError(
            "The token contains a space or line break: it was probably broken while copying. "
            "Copy it again from Events Manager in one piece.",
            code="token_whitespace",
        )
    if not token.isascii() or not token.isalnum():
        raise ValidationError(
            "The token contains characters other than letters and digits "
            "(quotes, punctuation or an invisible character?). Paste only the token itself.",
            code="token_characters",
        )
    prefixes: tuple[str, ...] = tuple(app_settings.TOKEN_PREFIXES)
    if prefixes and not token.startswith(prefixes):
        expected = " or ".join(f"“{prefix}”" for prefix in prefixes)
        raise ValidationError(
            f"A Conversions API token starts with {expected}; this one starts with "
            f"“{token[:3]}”. Generate a token in Events Manager → your pixel → Settings → "
            "Conversions API, or for a system user in Business Settings.",
            code="token_prefix",
        )
    minimum = app_settings.TOKEN_MIN_LENGTH
    if len(token) < minimum:
        raise ValidationError(
            f"The token looks truncated: {len(token)} characters, a CAPI token is about "
            f"{TYPICAL_TOKEN_LENGTH}. Copy it again, all of it.",
            code="token_truncated",
        )
    return token


def token_hint(token: str) -> str:
    """What pages may show of a token: its first three and last four characters."""
    if not token:
        return ""
    if len(token) < 12:
        return "…"
    return f"{token[:3]}…{token[-4:]}"


# Changing it changes every fingerprint: a salt of this module's own, so the HMAC can never be
# mistaken for (or replayed as) another of Django's signatures made with SECRET_KEY.
_FINGERPRINT_SALT = "capi_destinations.tokens.token_fingerprint"


# All variables: error reports also print the frames called from here (salted_hmac's ``value``).
@sensitive_variables()
def token_fingerprint(token: str, *, secret: str | bytes | None = None) -> str:
    """A keyed hash of ``token`` (64 hex characters) that names it without revealing it.

    Keyed with ``secret`` (``SECRET_KEY`` by default); empty for an empty token.
    """
    if not token:
        return ""
    return salted_hmac(_FINGERPRINT_SALT, token, secret=secret, algorithm="sha256").hexdigest()


@sensitive_variables()
def fingerprint_matches(token: str, fingerprint: str) -> bool:
    """Whether ``fingerprint`` was made from ``token`` with ``SECRET_KEY`` or a fallback key."""
    if not token or not fingerprint:
        return False
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return any(
        constant_time_compare(token_fingerprint(token, secret=key), fingerprint) for key in keys
    )


def validate_token_field(value: object) -> None:
    """Django field validator wrapper around :func:`clean_access_token`."""
    clean_access_token(value)


def rotate_encryption_keys(destinations: Iterable[object]) -> int:
    """Re-encrypt each destination's secrets with the first of ``FERNET_KEYS``.

    Reading decrypts with any configured key; saving encrypts with the first, so after this an
    old key can be removed. Returns the number of destinations re-encrypted.
    """
    count = 0
    for destination in destinations:
        destination.save(update_fields=["access_token", "app_secret"])  # type: ignore[attr-defined]
        count += 1
    return count
