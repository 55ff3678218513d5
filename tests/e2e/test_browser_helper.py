"""capi.js in a real browser: the Pixel call and the server event share one event_id."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from capi_destinations.models import Destination, Event, EventStatus
from tests.e2e.urls import FBP

pytestmark = [pytest.mark.e2e, pytest.mark.urls("tests.e2e.urls")]


@pytest.fixture
def shop(live_server: Any, make_destination: Callable[..., Destination]) -> dict[str, Any]:
    """A destination whose shop page is served from 127.0.0.1, its endpoint from localhost."""
    port = live_server.url.rsplit(":", 1)[1]
    origin = f"http://127.0.0.1:{port}"
    destination = make_destination(allowed_origins=origin)
    url = f"{origin}/e2e/shop/{destination.ingest_key}/checkout"
    return {"url": url, "origin": origin, "destination": destination}


def buy(page: Any) -> Any:
    """Click "Buy" and wait for the endpoint's answer to the event capi.js posts."""
    with page.expect_response(
        lambda response: "/events" in response.url and response.request.method == "POST"
    ) as answer:
        page.click("#buy")
    return answer.value


@pytest.mark.parametrize("beacon", ["1", "0"], ids=["sendBeacon", "fetch-keepalive"])
def test_pixel_and_server_event_share_the_event_id(
    page: Any, shop: dict[str, Any], beacon: str
) -> None:
    page.goto(f"{shop['url']}?beacon={beacon}")
    response = buy(page)

    assert response.status == 202
    event_id = page.evaluate("window.lastEventId")
    assert event_id
    assert page.evaluate("window.fbqCalls") == [
        ["track", "Purchase", {"value": 49.9, "currency": "EUR"}, {"eventID": event_id}]
    ]
    row = Event.objects.get()
    assert row.event_id == event_id
    assert row.event_name == "Purchase"
    assert row.status == EventStatus.PENDING
    user_data = row.payload["user_data"]
    assert user_data["fbp"] == FBP
    assert "Chrome" in user_data["client_user_agent"]
    assert user_data["client_ip_address"] == "127.0.0.1"
    assert row.payload["event_source_url"] == f"{shop['url']}?beacon={beacon}"
    assert "jane.doe@example.com" not in json.dumps(row.payload).lower()


def test_custom_events_go_to_track_custom(page: Any, shop: dict[str, Any]) -> None:
    page.goto(shop["url"])
    with page.expect_response(lambda response: "/events" in response.url):
        event_id = page.evaluate("capi.track('WatchedDemo', {}, {external_id: 'user-42'})")

    assert page.evaluate("window.fbqCalls") == [
        ["trackCustom", "WatchedDemo", {}, {"eventID": event_id}]
    ]
    row = Event.objects.get()
    assert row.event_name == "WatchedDemo"
    assert row.event_id == event_id


def test_a_page_on_an_origin_not_allowed_records_nothing(page: Any, shop: dict[str, Any]) -> None:
    shop["destination"].allowed_origins = "https://somewhere-else.example"
    shop["destination"].save()
    page.goto(shop["url"])
    response = buy(page)

    assert response.status == 403
    # The Pixel still fired; only the server refused the origin it does not know.
    assert len(page.evaluate("window.fbqCalls")) == 1
    assert Event.objects.count() == 0
