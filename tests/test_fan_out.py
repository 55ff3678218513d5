"""fan_out.ask_each: slow calls on threads, each answer recorded by the calling thread."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import pytest

from capi_destinations import fan_out

logger = logging.getLogger("tests.fan_out")


@dataclass
class Item:
    pk: int
    secret: str = "EAAsecret-not-for-logs"


def test_every_answer_is_recorded_by_the_calling_thread_and_a_failure_stops_nobody(
    caplog: pytest.LogCaptureFixture,
) -> None:
    items = [Item(pk) for pk in range(1, 9)]
    asked_on: set[str] = set()
    recorded: dict[int, tuple[int, str]] = {}

    def ask(item: Item) -> int:
        asked_on.add(threading.current_thread().name)
        return item.pk * 10

    def record(item: Item, answer: int) -> None:
        if item.pk == 3:
            raise ValueError("bad data")
        recorded[item.pk] = (answer, threading.current_thread().name)

    with caplog.at_level(logging.ERROR, logger="tests.fan_out"):
        fan_out.ask_each(items, ask, record, max_workers=4, name="t", what="Lookup", logger=logger)

    assert sorted(recorded) == [1, 2, 4, 5, 6, 7, 8]
    assert all(answer == pk * 10 for pk, (answer, _) in recorded.items())
    assert {thread for _, thread in recorded.values()} == {threading.current_thread().name}
    assert asked_on
    assert all(name.startswith("capi-t") for name in asked_on)
    assert [record.getMessage() for record in caplog.records] == ["Lookup of destination 3 failed"]
    assert "EAAsecret" not in caplog.text


def test_a_call_that_raises_is_logged_and_the_others_are_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def ask(item: Item) -> int:
        if item.pk == 2:
            raise ConnectionError("no route")
        return item.pk

    recorded: list[int] = []
    with caplog.at_level(logging.ERROR, logger="tests.fan_out"):
        fan_out.ask_each(
            [Item(1), Item(2), Item(3)],
            ask,
            lambda item, answer: recorded.append(answer),
            max_workers=2,
            name="t",
            what="Lookup",
            logger=logger,
        )

    assert sorted(recorded) == [1, 3]
    assert [record.getMessage() for record in caplog.records] == ["Lookup of destination 2 failed"]


def test_nothing_to_ask_starts_no_thread() -> None:
    before = threading.active_count()
    fan_out.ask_each(
        [],
        lambda item: item,
        lambda item, answer: None,
        max_workers=4,
        name="t",
        what="x",
        logger=logger,
    )
    assert threading.active_count() == before
