"""Every page of the app on a 375 px phone screen: nothing wider than the screen.

Issue 16: at 375 px the destination page was 659 px wide and the health card and its badge
were cut off. Each page is visited with content that makes it as wide as it gets in use (an
Unhealthy card with Meta's reason, a refused event with diagnostics and attempts, the created
page with its snippet and ``curl`` example), and the document may not scroll sideways; wide
tables and code scroll inside their own box instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, expect

from capi_destinations import health, track
from capi_destinations.models import Destination, NotificationChannel, Role, Tenant
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token
from tests.e2e.test_pages_browser import PIXEL_ID, log_in

pytestmark = pytest.mark.e2e

PHONE = {"width": 375, "height": 740}


@pytest.fixture
def admin(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    """An admin of Acme Shoes: sees every page, members included."""
    return make_user(tenant, Role.ADMIN, username="ada")


def assert_no_sideways_scroll(page: Page, what: str) -> None:
    # Measured once the stylesheet is in: a layout read before it would see unstyled code blocks.
    page.wait_for_load_state("load")
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.body.scrollWidth]"
    )
    if max(widths) > PHONE["width"]:
        # Name the innermost elements that stick out, so a failure says where to look.
        culprits = page.evaluate(
            """w => {
                const right = e => e.getBoundingClientRect().right + window.scrollX;
                return [...document.querySelectorAll('body *')]
                    .filter(e => right(e) > w + 1)
                    .filter(e => ![...e.children].some(c => right(c) > w + 1))
                    .slice(0, 5)
                    .map(e => `${e.tagName}.${e.className} ${Math.round(right(e))}`);
            }""",
            PHONE["width"],
        )
        pytest.fail(f"{what} is {max(widths)} px wide at 375 px; too wide: {culprits}")


def test_every_page_fits_a_375_px_screen(
    page: Page,
    live_server: Any,
    admin: Any,
    make_destination: Callable[..., Destination],
    use_sandbox: Sandbox,
) -> None:
    page.set_viewport_size(PHONE)
    token = make_token("narrow")
    use_sandbox.register_pixel(PIXEL_ID, "Acme Shoes Website", [token])
    # A destination whose token Meta no longer accepts: an Unhealthy card with Meta's reason.
    revoked = make_token("narrow-revoked")
    use_sandbox.register_pixel("6543210987654321", "Acme Shoes Outlet", [revoked])
    destination = make_destination(
        name="Acme web shop — spring sale landing pages",
        pixel_id="6543210987654321",
        access_token=revoked,
    )
    use_sandbox.revoke(revoked)
    health.check_destination(destination)
    track(
        destination,
        {
            "event_name": "Purchase",
            "event_id": "order-2026-12-06-0000000000001001",
            "action_source": "website",
            "event_source_url": "https://shop.example.com/checkout/thank-you?order=2026120600001001",
            "user_data": {"email": "jane.doe@example.com", "client_user_agent": "Mozilla/5.0"},
            "custom_data": {"value": 49.9},
        },
    )
    # A channel with a long URL on the alerts page.
    NotificationChannel.objects.create(
        tenant=destination.tenant,
        kind="slack",
        name="Acme operations in Slack",
        target="https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        alert_kinds=["health", "traffic_dropped", "failure_rate"],
    )
    # The login page, before anyone is logged in.
    page.goto(f"{live_server.url}/capi/")
    expect(page.get_by_test_id("login")).to_be_visible()
    assert_no_sideways_scroll(page, "the login page")
    log_in(page, live_server, admin)

    base = f"{live_server.url}/capi"
    event_query = urlencode(
        {"event_name": "Purchase", "event_id": "order-2026-12-06-0000000000001001"}
    )
    pages = {
        "the overview": f"{base}/",
        "the destination page": f"{base}/d/{destination.code}/",
        "the add page": f"{base}/t/acme/new/",
        "the edit page": f"{base}/d/{destination.code}/edit/",
        "the replace-token page": f"{base}/d/{destination.code}/token/",
        "the members page": f"{base}/t/acme/members/",
        "the alerts page": f"{base}/t/acme/alerts/",
        "the event log": f"{base}/d/{destination.code}/events/",
        "the event detail page": f"{base}/d/{destination.code}/events/detail/?{event_query}",
    }
    for what, url in pages.items():
        response = page.goto(url)
        assert response is not None, what
        assert response.ok, what
        assert_no_sideways_scroll(page, what)

    # The event opened inline on the destination page.
    page.goto(f"{base}/d/{destination.code}/")
    page.get_by_test_id("event-row").first.get_by_test_id("event-open").click()
    expect(page.get_by_test_id("event-detail")).to_be_visible()
    assert_no_sideways_scroll(page, "the destination page with an event open")

    # The page shown after Add destination (server key, snippet, curl example).
    page.goto(f"{base}/t/acme/new/")
    page.fill("input[name=name]", "Acme web shop")
    page.fill("input[name=pixel_id]", PIXEL_ID)
    page.fill("input[name=access_token]", token)
    expect(page.get_by_test_id("token-check")).to_have_attribute("data-state", "ok")
    page.get_by_test_id("save-destination").click()
    expect(page.get_by_test_id("open-destination")).to_be_visible()
    assert_no_sideways_scroll(page, "the created page")

    # The logged-out page.
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("logged-out")).to_be_visible()
    assert_no_sideways_scroll(page, "the logged-out page")
