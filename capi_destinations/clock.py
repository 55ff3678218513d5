"""The one source of "now" for the app, so tests can hold and move time.

Production code calls ``clock.now()`` instead of ``timezone.now()``; tests use the ``clock``
fixture (``tests/conftest.py``) to freeze and advance it without sleeping.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

_frozen_at: datetime | None = None


def now() -> datetime:
    """The current time (aware, UTC), or the frozen time while a test holds the clock."""
    return _frozen_at if _frozen_at is not None else timezone.now()


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
