"""A Graph API that answers garbage never crashes a worker and never loses an event.

The sandbox's scripted answers stand in for everything a real network path has been seen to
return instead of Meta's JSON: HTML error pages from proxies and load balancers, JSON cut off
mid-way, a 200 whose body is an error, bodies of the wrong shape, lying headers, redirects, a
dropped connection, and a socket that hangs past the read timeout. For each one the worker's own
task function (``tasks.dispatch_due``, what a ``qcluster`` runs) must return normally, every
event must still exist in a state that says why it is there (``sending`` is never left behind),
and once Meta answers properly again every event is delivered and the sandbox has each
``event_id`` exactly once. The health check and the "validate as you type" token check face the
same garbage and must give a plain answer instead of an exception.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from capi_destinations import destinations, health, tasks
from capi_destinations.models import (
    DeliveryAttempt,
    Destination,
    Event,
    EventStatus,
    HealthCheck,
)

EVENTS_PER_CASE = 6
# Statuses an event may hold after a bad answer: each says what happens next, and why.
WAITING_OR_DONE = {EventStatus.PENDING, EventStatus.DELIVERED, EventStatus.FAILED}

HTML_502 = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    "</h1></center><hr><center>nginx</center></body></html>"
)
HTML_LOGIN = "<!doctype html><html><head><title>Sign in</title></head><body><form></form></html>"

# name → sandbox.answer_next(...) keyword arguments.
GARBAGE: dict[str, dict[str, Any]] = {
    "an HTML 502 page": {"status": 502, "text": HTML_502},
    "an HTML 503 page of 3 MB": {"status": 503, "text": "<html>" + "busy " * 600_000},
    "an HTML page with status 200": {"status": 200, "text": HTML_LOGIN},
    "an HTML 403 page from a firewall": {"status": 403, "text": "<html>Forbidden</html>"},
    "an HTML 429 page with Retry-After": {
        "status": 429,
        "text": "<html>Too many requests</html>",
        "headers": {"Retry-After": "30"},
    },
    "JSON cut off in a 200": {"status": 200, "text": '{"events_received": 6, "messages": [], "fb'},
    "JSON cut off in a 400": {"status": 400, "text": '{"error": {"message": "Invalid param'},
    "JSON cut off in a 500": {"status": 500, "text": '{"error": {"code": 2, "is_trans'},
    "a 200 with a transient error body": {
        "status": 200,
        "body": {
            "error": {
                "message": "An unexpected error has occurred. Please retry your request later.",
                "type": "OAuthException",
                "code": 2,
                "is_transient": True,
            }
        },
    },
    "a 200 with an unknown error body": {
        "status": 200,
        "body": {"error": {"message": "Something odd", "type": "Exception", "code": 987654}},
    },
    "a 200 with an empty object": {"status": 200, "body": {}},
    "a 200 with a list": {"status": 200, "body": [1, 2, 3]},
    "a 200 with null": {"status": 200, "text": "null"},
    "a 200 with an empty body": {"status": 200, "text": ""},
    "a 200 whose events_received is text": {"status": 200, "body": {"events_received": "6"}},
    'a 200 saying "success": false': {"status": 200, "body": {"success": False}},
    "a 204 with no content": {"status": 204, "text": ""},
    "a 500 whose error is a string": {"status": 500, "body": {"error": "internal"}},
    "an error of the wrong types": {
        "status": 400,
        "body": {"error": {"code": "abc", "error_subcode": [], "message": None, "is_transient": 1}},
    },
    "gzip that is not gzip": {
        "status": 200,
        "text": "this is not gzip",
        "headers": {"Content-Encoding": "gzip"},
    },
    "JSON nested deeper than any parser": {"status": 200, "text": "[" * 200_000 + "]" * 200_000},
    "a redirect to a login page": {
        "status": 302,
        "text": "",
        "headers": {"Location": "https://login.example.com/"},
    },
    "a usage header nested deeper than any parser": {
        "status": 503,
        "text": "<html>busy</html>",
        "headers": {"x-app-usage": "[" * 60_000},
    },
    "a dropped connection": {"drop": True},
}


@pytest.fixture
def pixel(
    clock: Any, use_sandbox: Any, make_destination: Callable[..., Destination]
) -> Destination:
    return make_destination(name="Garbage-facing pixel")


def make_pending_events(
    make_event: Callable[..., Event], destination: Destination, prefix: str
) -> list[int]:
    return [
        make_event(destination=destination, event_id=f"{prefix}-{number}").pk
        for number in range(EVENTS_PER_CASE)
    ]


def assert_nothing_lost(pks: list[int]) -> None:
    """Every event is still there, none is left ``sending``, and each says why it waits."""
    rows = list(Event.objects.filter(pk__in=pks))
    assert len(rows) == len(pks)
    for row in rows:
        assert row.status in WAITING_OR_DONE, (row.event_id, row.status)
        if row.status == EventStatus.PENDING:
            assert row.queued.lease_token is None
            assert row.next_attempt_at is not None
            assert row.status_reason, row.event_id


def deliver_after_recovery(clock: Any, pks: list[int], destination: Destination) -> None:
    """Meta answers properly again: after the retry delays every event goes out once."""
    for _ in range(3):
        clock.advance(timedelta(hours=2))
        tasks.dispatch_due()
        if not Event.objects.filter(pk__in=pks).exclude(status=EventStatus.DELIVERED).exists():
            break
    statuses = Counter(Event.objects.filter(pk__in=pks).values_list("status", flat=True))
    assert statuses == {EventStatus.DELIVERED: len(pks)}, statuses


def assert_received_exactly_once(sandbox: Any, destination: Destination, prefix: str) -> None:
    received = Counter(
        item["event_id"]
        for item in sandbox.events(pixel_id=destination.pixel_id)
        if item["event_id"].startswith(prefix)
    )
    assert received == {f"{prefix}-{number}": 1 for number in range(EVENTS_PER_CASE)}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_a_worker_survives_garbage_and_loses_no_event(
    case: str,
    clock: Any,
    use_sandbox: Any,
    pixel: Destination,
    make_event: Callable[..., Event],
) -> None:
    prefix = f"garbage-{list(GARBAGE).index(case)}"
    pks = make_pending_events(make_event, pixel, prefix)
    # Twice: the first request, and the first half if the answer made the worker bisect.
    use_sandbox.answer_next(**GARBAGE[case], times=2, method="POST")

    report = tasks.dispatch_due()

    assert report["requests"] >= 1
    assert_nothing_lost(pks)
    attempt = DeliveryAttempt.objects.filter(destination=pixel).order_by("started_at").first()
    assert attempt is not None
    assert attempt.outcome != "delivered" or case == "a 200 with an empty object"
    assert attempt.category or attempt.outcome == "delivered"
    pixel.refresh_from_db()
    assert not pixel.blocked_reason, f"{case} blocked the destination: {pixel.blocked_reason}"

    deliver_after_recovery(clock, pks, pixel)
    assert_received_exactly_once(use_sandbox, pixel, prefix)


def test_a_hanging_socket_times_out_and_the_events_are_retried(
    clock: Any,
    use_sandbox: Any,
    pixel: Destination,
    make_event: Callable[..., Event],
    settings: Any,
) -> None:
    settings.CAPI_DESTINATIONS = {
        **settings.CAPI_DESTINATIONS,
        "GRAPH_READ_TIMEOUT": 0.3,
        "GRAPH_CONNECT_TIMEOUT": 0.3,
    }
    pks = make_pending_events(make_event, pixel, "hang")
    # Far longer than the read timeout: the request hangs until the client gives up.
    use_sandbox.set_faults(latency_ms=30_000)

    report = tasks.dispatch_due()

    assert report["retrying"] == EVENTS_PER_CASE
    assert_nothing_lost(pks)
    attempt = DeliveryAttempt.objects.get(destination=pixel)
    assert attempt.category == "transient"
    assert "answer within" in attempt.error_message
    # The hung request is abandoned (reset wakes it and drops it), as a dead server would be.
    use_sandbox.reset()
    deliver_after_recovery(clock, pks, pixel)
    assert_received_exactly_once(use_sandbox, pixel, "hang")


def test_one_hanging_pixel_does_not_stop_the_others(
    clock: Any,
    use_sandbox: Any,
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Event],
    settings: Any,
) -> None:
    settings.CAPI_DESTINATIONS = {**settings.CAPI_DESTINATIONS, "GRAPH_READ_TIMEOUT": 0.3}
    stuck = make_destination(name="Stuck pixel")
    healthy = make_destination(name="Healthy pixel")
    stuck_pks = make_pending_events(make_event, stuck, "stuck")
    healthy_pks = make_pending_events(make_event, healthy, "flowing")
    use_sandbox.set_faults(pixel_latency_ms={stuck.pixel_id: 30_000})

    tasks.dispatch_due()

    assert_nothing_lost(stuck_pks)
    delivered = Event.objects.filter(pk__in=healthy_pks, status=EventStatus.DELIVERED).count()
    assert delivered == EVENTS_PER_CASE
    assert_received_exactly_once(use_sandbox, healthy, "flowing")


@pytest.mark.parametrize("case", list(GARBAGE))
def test_a_health_check_facing_garbage_gives_a_plain_answer(
    case: str, use_sandbox: Any, pixel: Destination
) -> None:
    use_sandbox.answer_next(**GARBAGE[case], times=3, method="GET")

    check = health.check_destination(pixel)

    assert isinstance(check, HealthCheck)
    assert check.pk is not None
    token_check = next(item for item in check.checks if item["name"] == health.META_ACCEPTS_TOKEN)
    assert token_check["message"]
    if not token_check["ok"]:
        assert token_check["fix"]


@pytest.mark.parametrize("case", list(GARBAGE))
def test_the_token_check_facing_garbage_explains_itself(
    case: str, use_sandbox: Any, pixel: Destination
) -> None:
    use_sandbox.answer_next(**GARBAGE[case], times=1, method="GET")

    result = destinations.check_token(pixel.pixel_id, pixel.access_token)

    assert result.message
    assert not result.ok or "Connected" in result.message
