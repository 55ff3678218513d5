"""First-party click IDs in a real browser (issue 18).

A visitor lands from an ad (``?fbclid=``) on a page served through ``ClickIdMiddleware``: the
site's own server sets ``_fbc`` in Meta's format; the browser helper's event carries it; a later
server-side event for the same customer (a payment webhook, no browser) gains it from
``click_memory``. With ad storage refused, no cookie is set and nothing is remembered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from capi_destinations import click_ids, track
from capi_destinations.models import ClickIdSighting, Destination, Event
from tests.e2e.test_browser_helper import buy

pytestmark = [pytest.mark.e2e, pytest.mark.urls("tests.e2e.urls")]

FBCLID = "IwAR1LaNdInG_from-an-ad"


@pytest.fixture
def landing(live_server: Any, make_destination: Callable[..., Destination]) -> dict[str, Any]:
    port = live_server.url.rsplit(":", 1)[1]
    origin = f"http://127.0.0.1:{port}"
    destination = make_destination(allowed_origins=origin)
    return {
        "url": f"{origin}/e2e/landing/{destination.ingest_key}/checkout",
        "destination": destination,
    }


def cookie(page: Any, name: str) -> str | None:
    return next((c["value"] for c in page.context.cookies() if c["name"] == name), None)


def webhook_purchase(destination: Destination) -> Event:
    """The order's payment webhook an hour later: no request, no cookies, the same email."""
    return track(
        destination,
        {
            "event_name": "Purchase",
            "event_id": "order-77",
            "action_source": "website",
            "event_source_url": "https://shop.example/thanks",
            "user_data": {"email": "jane.doe@example.com", "client_user_agent": "Mozilla/5.0"},
            "custom_data": {"value": 49.9, "currency": "EUR"},
        },
    ).event


def test_landing_from_an_ad_keeps_the_click_for_the_browser_and_the_webhook(
    page: Any, landing: dict[str, Any]
) -> None:
    page.goto(f"{landing['url']}?fbclid={FBCLID}")

    fbc = cookie(page, "_fbc")
    index = click_ids.subdomain_index("127.0.0.1")
    assert fbc is not None
    assert re.fullmatch(rf"fb\.{index}\.[0-9]{{13}}\.{FBCLID}", fbc)
    assert buy(page).status == 202
    browser_event = Event.objects.get()
    assert browser_event.payload["user_data"]["fbc"] == fbc

    purchase = webhook_purchase(landing["destination"])

    assert purchase.payload["user_data"]["fbc"] == fbc
    assert "click_id_filled" in {item["code"] for item in purchase.diagnostics}


def test_refused_ad_storage_sets_no_cookie_and_remembers_nothing(
    page: Any, landing: dict[str, Any], settings: Any
) -> None:
    settings.CAPI_DESTINATIONS = {
        **getattr(settings, "CAPI_DESTINATIONS", {}),
        "CLICK_ID_CONSENT": "tests.e2e.urls.consent_from_cookie",
    }
    page.context.add_cookies([{"name": "consent", "value": "denied", "url": landing["url"]}])
    response = page.goto(f"{landing['url']}?fbclid={FBCLID}")

    assert cookie(page, "_fbc") is None
    # The page's Pixel stand-in writes its own _fbp; the server set neither cookie.
    set_by_server = [value.split("=", 1)[0] for value in response.header_values("set-cookie")]
    assert not {"_fbc", "_fbp"} & set(set_by_server)
    page.evaluate("capi.setConsent({ad_storage: 'denied'})")
    assert buy(page).status == 202
    # What reaches Meta follows the destination's consent policy (issue 15's fbclid rule); what
    # is kept in the browser and remembered for later follows ad storage:
    assert Event.objects.get().consent["ad_storage"] == "denied"
    assert "fbc" not in webhook_purchase(landing["destination"]).payload["user_data"]
    assert not ClickIdSighting.objects.exists()
