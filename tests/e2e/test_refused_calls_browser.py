"""A browser call from an origin the destination does not allow, in a real browser (issue 16).

Chromium posts the event from a page of another origin (``http://127.0.0.1:<port>``, where the
destination allows only its shop); the endpoint refuses it, counts it on the destination, and
the destination page shows the refused origin with the fix, linked to **Edit**.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from capi_destinations.models import Destination, Role, Tenant
from tests.e2e.test_pages_browser import log_in

pytestmark = pytest.mark.e2e


@pytest.fixture
def editor(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    return make_user(tenant, Role.EDITOR, username="mia")


def test_a_call_from_a_disallowed_origin_shows_on_the_page_with_the_fix(
    page: Page, live_server: Any, editor: Any, make_destination: Callable[..., Destination]
) -> None:
    destination = make_destination(allowed_origins="https://shop.example.com")
    endpoint = live_server.url + reverse(
        "capi_destinations:ingest_events", kwargs={"ingest_key": destination.ingest_key}
    )
    stranger = live_server.url.replace("localhost", "127.0.0.1")
    assert stranger != live_server.url
    # Any page of the other origin will do: the call is the browser's own, Origin and all.
    page.goto(f"{stranger}/capi/accounts/nowhere/")
    status = page.evaluate(
        """async (url) => {
            try {
                const answer = await fetch(url, {method: "POST", body: JSON.stringify(
                    {event_name: "Lead", event_id: "lead-1"})});
                return answer.status;
            } catch (refused) {
                return "refused";  // no CORS headers for this origin: the browser hides the answer
            }
        }""",
        endpoint,
    )
    assert status == "refused"

    log_in(page, live_server, editor)
    page.goto(f"{live_server.url}/capi/d/{destination.code}/")
    refused = page.get_by_test_id("refused-call")
    expect(refused).to_have_attribute("data-reason", "origin_not_allowed")
    expect(refused.get_by_test_id("refused-origin")).to_have_text(stranger)
    fix = refused.get_by_test_id("refused-fix")
    expect(fix).to_contain_text(f"Add {stranger} to the allowed origins")
    fix.get_by_test_id("fix-link").click()
    expect(page).to_have_url(f"{live_server.url}/capi/d/{destination.code}/edit/")
