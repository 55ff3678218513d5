"""Meta's score beside ours on the destination page, in Chromium (issue 18).

Two destinations delivered to the sandbox: one whose token may read Meta's Dataset Quality API
(both numbers), one whose send-only token may not ("not available", still Healthy). The panel
fits a 375 px screen either way (the page as a whole is another matter: its health and
delivery cards are wider than 375 px with delivered attempts, which issue 16's work covers).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from capi_destinations import dispatch, health, match_quality, track
from capi_destinations.models import Destination, Role, Tenant
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token
from tests.e2e.test_narrow_screen_browser import PHONE
from tests.e2e.test_pages_browser import log_in

pytestmark = pytest.mark.e2e


def assert_fits(panel: Any, what: str) -> None:
    """Nothing of the panel sticks out of a 375 px screen, nor scrolls inside it."""
    right, scroll, client = panel.evaluate(
        "e => [e.getBoundingClientRect().right, e.scrollWidth, e.clientWidth]"
    )
    assert right <= PHONE["width"], f"{what} ends at {right} px"
    assert scroll <= client, f"{what} is {scroll} px wide inside {client} px"


def purchase(event_id: str, **user_data: Any) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_id": event_id,
        "action_source": "website",
        "event_source_url": "https://shop.example.com/checkout",
        "user_data": {
            "email": f"{event_id}@example.com",
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "client_ip_address": "203.0.113.7",
            **user_data,
        },
        "custom_data": {"value": 49.9, "currency": "EUR"},
    }


def test_both_scores_and_a_send_only_tokens_not_available(
    page: Page,
    live_server: Any,
    make_user: Callable[..., Any],
    tenant: Tenant,
    make_destination: Callable[..., Destination],
    use_sandbox: Sandbox,
) -> None:
    reader, sender = make_token("emq-reader"), make_token("emq-sender")
    use_sandbox.register_pixel("7100000000000001", "Shop", [reader])
    use_sandbox.register_pixel("7100000000000002", "Checkout", send_only_tokens=[sender])
    shop = make_destination(name="Shop", pixel_id="7100000000000001", access_token=reader)
    checkout = make_destination(name="Checkout", pixel_id="7100000000000002", access_token=sender)
    for destination in (shop, checkout):
        track(destination, purchase(f"{destination.pk}-1", phone="+44 20 7946 0958"))
        track(destination, purchase(f"{destination.pk}-2"))
    dispatch.dispatch_pending()
    health.check_all_destinations()
    match_quality.fetch_all_match_quality()
    log_in(page, live_server, make_user(tenant, Role.VIEWER, username="vic"))
    page.set_viewport_size(PHONE)

    page.goto(f"{live_server.url}/capi/d/{shop.code}/")
    panel = page.get_by_test_id("match-quality")
    expect(panel).to_have_attribute("data-status", "available")
    row = panel.locator('[data-testid="match-quality-row"][data-event="Purchase"]')
    expect(row.get_by_test_id("meta-score")).to_have_text(re.compile(r"^\d+\.\d$"))
    expect(row.get_by_test_id("our-events")).to_have_text("(2 events)")
    expect(row.locator('[data-key="ph"]')).to_have_text("50% of Purchase events have no phone")
    assert_fits(panel, "the panel with Meta's score")

    page.goto(f"{live_server.url}/capi/d/{checkout.code}/")
    expect(page.get_by_test_id("meta-not-available")).to_contain_text(
        "Meta's score is not available with this token"
    )
    expect(page.get_by_test_id("health-card")).to_have_attribute("data-health", "healthy")
    row = page.locator('[data-testid="match-quality-row"][data-event="Purchase"]')
    expect(row.get_by_test_id("meta-score")).to_have_text("—")
    expect(row.get_by_test_id("our-events")).to_have_text("(2 events)")
    assert_fits(page.get_by_test_id("match-quality"), "the panel without Meta's score")
