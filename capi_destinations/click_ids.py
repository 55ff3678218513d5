"""Meta's click and browser IDs: the ``fbc`` and ``fbp`` values and the cookies that keep them.

Meta documents both as ``fb.<subdomain index>.<creation time, ms>.<value>``: for ``fbc`` the
value is the ``fbclid`` from the landing URL, exactly as it came (never change its case); for
``fbp`` a random number. The subdomain index counts the labels of the domain the cookie is set
on, minus one (``com`` 0, ``example.com`` 1, ``www.example.com`` 2); a value built on the server
without a cookie uses 1. Meta's parameter builder may add a fifth segment (its appendix); values
with fewer than four or more than five segments are not Meta's.

Pure functions: no database, no clock, no randomness of their own (the caller passes them).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

FBC_COOKIE = "_fbc"
FBP_COOKIE = "_fbp"
#: Meta's lifetime for both cookies, refreshed on each visit as the Pixel does.
COOKIE_MAX_AGE = 90 * 24 * 60 * 60
#: The subdomain index of a value built on the server, not stored in a cookie.
SERVER_SUBDOMAIN_INDEX = 1

# Real fbclids are URL-safe base64; anything else is not turned into an fbc.
_FBCLID = re.compile(r"[A-Za-z0-9_-]{1,500}")
_COOKIE_VALUE = re.compile(r"fb\.[0-9]+\.[0-9]+\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)?")


def subdomain_index(domain: str) -> int:
    """Meta's subdomain index of the domain a cookie is set on (``.example.com`` → 1)."""
    labels = [label for label in domain.strip(".").split(".") if label]
    return max(len(labels) - 1, 0)


def build_fbc(fbclid: str, *, created_ms: int, index: int = SERVER_SUBDOMAIN_INDEX) -> str:
    """``fb.<index>.<created_ms>.<fbclid>``, the fbclid exactly as it came."""
    return f"fb.{index}.{created_ms}.{fbclid}"


def build_fbp(random_number: int, *, created_ms: int, index: int = SERVER_SUBDOMAIN_INDEX) -> str:
    """``fb.<index>.<created_ms>.<random number>``."""
    return f"fb.{index}.{created_ms}.{random_number}"


def is_click_id_value(value: Any) -> bool:
    """Whether ``value`` has the form of an fbc or fbp value (four segments, or five)."""
    return isinstance(value, str) and _COOKIE_VALUE.fullmatch(value) is not None


def fbclid_of_fbc(fbc: str) -> str | None:
    """The fbclid inside an fbc value (``fb.<n>.<ms>.<fbclid>[.<appendix>]``)."""
    parts = fbc.strip().split(".")
    return parts[3] if len(parts) in (4, 5) else None


def fbclid_of_url(url: Any) -> str | None:
    """The ``fbclid`` query parameter of a URL, or None when it has none that looks real."""
    if not isinstance(url, str) or "fbclid=" not in url:
        return None
    try:
        values = parse_qs(urlsplit(url).query).get("fbclid", ())
    except ValueError:
        return None
    return first_fbclid(values)


def first_fbclid(values: Any) -> str | None:
    """The first of ``values`` (a query string's fbclid parameters) that is a real fbclid."""
    for value in values:
        if not isinstance(value, str):
            continue
        if _FBCLID.fullmatch(value):
            return value
        # The parameter builder's appendix at the end of the URL is not part of the fbclid.
        clid, _, appendix = value.rpartition(".")
        if clid and _FBCLID.fullmatch(clid) and _FBCLID.fullmatch(appendix):
            return clid
    return None
