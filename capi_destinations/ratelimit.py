"""A fixed-window request counter in Django's cache, for the ingest endpoint's per-key limit.

The counter lives in the cache rather than in the process so that every web process sharing one
cache (Redis, Memcached, the database cache) counts against the same limit. A fixed window is
coarse (a burst at a window's edge can pass twice the rate) but costs one or two cache calls per
request, which is what an endpoint built for thousands of requests a second can afford.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

from capi_destinations import clock
from capi_destinations.conf import app_settings

__all__ = ["Rate", "RateLimitResult", "cache_key_part", "client_address", "hit", "parse_rate"]

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PLAIN_KEY_PART = re.compile(r"[A-Za-z0-9_.:\[\]-]{1,120}")
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*")


@dataclass(frozen=True)
class Rate:
    """``limit`` requests per ``period`` seconds."""

    limit: int
    period: int


@dataclass(frozen=True)
class RateLimitResult:
    """Whether a request may pass, and how many seconds until the window resets if not."""

    allowed: bool
    count: int
    retry_after: int


@lru_cache(maxsize=32)
def parse_rate(text: str) -> Rate:
    """Read a rate such as ``"6000/m"``, ``"100/s"``, ``"50000/h"`` or ``"10/5m"``.

    Raises ``ImproperlyConfigured`` naming the expected form, since a rate only ever comes
    from settings.
    """
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None or int(match[1]) < 1:
        raise ImproperlyConfigured(
            f"A rate must look like '6000/m' (requests per s, m, h or d), not {text!r}."
        )
    multiplier = int(match[2]) if match[2] else 1
    return Rate(limit=int(match[1]), period=multiplier * _PERIODS[match[3][0]])


def hit(scope: str, rate: Rate, *, now: datetime | None = None) -> RateLimitResult:
    """Count one request against ``scope`` (for example an ingest key) in the current window."""
    moment = int((now or clock.now()).timestamp())
    window_start = moment - moment % rate.period
    key = f"capi:rate:{cache_key_part(scope)}:{rate.period}:{window_start}"
    # add() creates the counter only if absent, so concurrent first requests never reset it;
    # the timeout outlives the window a little so a late incr() still finds it.
    cache.add(key, 0, timeout=rate.period + 5)
    try:
        count = cache.incr(key)
    except ValueError:
        # Evicted between add() and incr(): start the window again from this request.
        cache.set(key, 1, timeout=rate.period + 5)
        count = 1
    retry_after = window_start + rate.period - moment
    return RateLimitResult(allowed=count <= rate.limit, count=count, retry_after=retry_after)


def cache_key_part(text: str) -> str:
    """``text`` as part of a cache key every backend accepts (Memcached refuses spaces, control
    characters and keys over 250 bytes): unchanged when it is short and plain, else a digest.

    Scopes hold what clients send (an address from a proxy header, a username).
    """
    if _PLAIN_KEY_PART.fullmatch(text):
        return text
    return "sha256-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def client_address(request: HttpRequest) -> str | None:
    """The client's IP address: from ``TRUSTED_PROXY_HEADER`` when set and present, else
    ``REMOTE_ADDR``.

    Only a header named in settings is trusted: anyone can send ``X-Forwarded-For``, so reading
    it without a proxy of our own in front would let a client choose its address (and with it a
    fresh rate-limit budget per request).
    """
    header = app_settings.TRUSTED_PROXY_HEADER
    if header:
        forwarded = str(request.META.get(header, "")).split(",", 1)[0].strip()
        if forwarded:
            return forwarded
    return request.META.get("REMOTE_ADDR") or None
