"""The health card of a destination whose token Meta revoked, in a real browser (issue 16).

The card says the reason and the fix in the words of ``problems`` (the README's table), and the
fix links to the control that applies it: **Replace token** opens the replace-token page, where
a new token turns the card green.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from capi_destinations import health, problems
from capi_destinations.models import Destination, Role, Tenant
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token
from tests.e2e.test_pages_browser import log_in

pytestmark = pytest.mark.e2e


@pytest.fixture
def editor(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    return make_user(tenant, Role.EDITOR, username="mia")


def test_the_card_says_reason_and_fix_and_its_link_opens_replace_token(
    page: Page, live_server: Any, editor: Any, destination: Destination, use_sandbox: Sandbox
) -> None:
    new_token = make_token("the-new-one")
    use_sandbox.register_pixel(
        destination.pixel_id, "Acme Shoes", [destination.access_token, new_token]
    )
    use_sandbox.revoke(destination.access_token)
    health.check_destination(destination)
    log_in(page, live_server, editor)
    page.goto(f"{live_server.url}/capi/d/{destination.code}/")

    first = page.get_by_test_id("first-problem")
    expect(first.get_by_test_id("first-reason")).to_have_text(problems.TOKEN_REVOKED.reason)
    expect(first.get_by_test_id("first-fix")).to_contain_text(problems.TOKEN_REVOKED.fix)
    first.get_by_test_id("fix-link").click()

    expect(page).to_have_url(f"{live_server.url}/capi/d/{destination.code}/token/")
    expect(page.get_by_test_id("replace-token-form")).to_be_visible()
    page.fill("input[name=access_token]", new_token)
    expect(page.get_by_test_id("token-check")).to_have_attribute("data-state", "ok")
    page.get_by_test_id("replace-token-form").locator("button[type=submit]").click()
    expect(page.get_by_test_id("health-card")).to_have_attribute("data-health", "healthy")


def test_the_overview_card_says_reason_and_fix_and_its_link_opens_replace_token(
    page: Page, live_server: Any, editor: Any, destination: Destination, use_sandbox: Sandbox
) -> None:
    use_sandbox.register_pixel(destination.pixel_id, "Acme Shoes", [destination.access_token])
    use_sandbox.revoke(destination.access_token)
    health.check_destination(destination)
    log_in(page, live_server, editor)  # lands on the overview

    card = page.locator(f'[data-testid="destination-card"][data-code="{destination.code}"]')
    expect(card.get_by_test_id("first-reason")).to_have_text(problems.TOKEN_REVOKED.reason)
    expect(card.get_by_test_id("first-fix")).to_contain_text(problems.TOKEN_REVOKED.fix)
    card.get_by_test_id("fix-link").click()

    expect(page).to_have_url(f"{live_server.url}/capi/d/{destination.code}/token/")
    expect(page.get_by_test_id("replace-token-form")).to_be_visible()
