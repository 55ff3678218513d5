"""The one source of "now" for the app, so tests can hold and move time.

Production code calls ``clock.now()`` instead of ``timezone.now()``; tests use the ``clock``
fixture (``tests/conftest.py``) to freeze and advance it without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.utils import timezone

_frozen_at: datetime | None = None


def now() -> datetime:
    """The current time (aware, UTC), or the frozen time while a test holds the clock."""
    return _frozen_at if _frozen_at is not None else timezone.now()


def timestamp() -> float:
    """``now()`` as Unix time, for a check made per value where a datetime costs more than the
    check itself (the year of a date of birth)."""
    return _frozen_at.timestamp() if _frozen_at is not None else time.time()


def freeze(at: datetime | None = None) -> datetime:
    """Stop the clock at ``at`` (default: the real now). Returns the frozen time."""
    global _frozen_at
    _frozen_at = at if at is not None else timezone.now()
    return _frozen_at


def advance(delta: timedelta) -> datetime:
    """Move a frozen clock forward by ``delta``."""
    global _frozen_at
    if _frozen_at is None:
        raise RuntimeError("clock.advance() needs a frozen clock; call clock.freeze() first")
    _frozen_at = _frozen_at + delta
    return _frozen_at


def unfreeze() -> None:
    """Let the clock follow real time again."""
    global _frozen_at
    _frozen_at = None


@contextmanager
def held_at(moment: datetime) -> Iterator[datetime]:
    """Hold the clock at ``moment`` inside the block, then put it back as it was.

    A clock that was frozen before stays frozen at its old time afterwards; a running one runs
    again. The demo uses it to record a day of sample history in a few seconds.
    """
    global _frozen_at
    previous = _frozen_at
    _frozen_at = moment
    try:
        yield moment
    finally:
        _frozen_at = previous
