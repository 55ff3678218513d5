"""The app clock: holding it at a moment and putting it back as it was."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from capi_destinations import clock as app_clock

PAST = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def test_held_at_stops_the_clock_inside_the_block_and_lets_it_run_after() -> None:
    with app_clock.held_at(PAST) as held:
        assert held == PAST
        assert app_clock.now() == PAST
        app_clock.advance(timedelta(minutes=5))
        assert app_clock.now() == PAST + timedelta(minutes=5)

    assert abs(app_clock.now() - datetime.now(UTC)) < timedelta(seconds=5)


def test_held_at_gives_a_frozen_clock_back_at_its_old_time(clock: Any) -> None:
    frozen_at = app_clock.now()

    with app_clock.held_at(PAST):
        assert app_clock.now() == PAST

    assert app_clock.now() == frozen_at


def test_held_at_puts_the_clock_back_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError), app_clock.held_at(PAST):
        raise RuntimeError("boom")

    assert app_clock.now() != PAST
