"""The fixed-window counter behind the ingest endpoint's per-key rate limit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from capi_destinations.ratelimit import Rate, hit, parse_rate
from tests.conftest import FROZEN_AT


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("6000/m", Rate(6000, 60)),
        ("100/s", Rate(100, 1)),
        ("50000/h", Rate(50000, 3600)),
        ("10 / 5min", Rate(10, 300)),
        ("1/day", Rate(1, 86400)),
    ],
)
def test_rates_are_read(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "6000", "0/m", "ten/m", "5/fortnight", "-1/s"])
def test_unreadable_rates_name_the_expected_form(text: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="6000/m"):
        parse_rate(text)


def test_requests_over_the_limit_are_refused_until_the_window_ends(clock: Any) -> None:
    rate = Rate(limit=3, period=60)
    start = FROZEN_AT + timedelta(seconds=20)  # 20 s into a minute window

    results = [hit("key-a", rate, now=start) for _ in range(4)]
    next_window = hit("key-a", rate, now=start + timedelta(seconds=40))

    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.count for r in results] == [1, 2, 3, 4]
    assert results[-1].retry_after == 40
    assert next_window.allowed
    assert next_window.count == 1


def test_scopes_are_counted_apart(clock: Any) -> None:
    rate = Rate(limit=1, period=60)

    assert hit("scope-one", rate).allowed
    assert not hit("scope-one", rate).allowed
    assert hit("scope-two", rate).allowed


def test_an_evicted_counter_starts_again(clock: Any) -> None:
    rate = Rate(limit=5, period=60)
    hit("scope-evicted", rate)
    cache.clear()

    assert hit("scope-evicted", rate).count == 1
