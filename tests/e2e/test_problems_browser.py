"""The health card of a destination whose token Meta revoked, in a real browser (issue 16).

The card says the reason and the fix in the words of ``problems`` (the README's table), and the
fix links to the control that applies it: **Replace token** opens the replace-token page, where
a new token turns the card green. The overview's cards do the same, and say what waits for what
and their notes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from capi_destinations import clock, health, problems
from capi_destinations.models import Destination, EventStatus, Role, Tenant
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


def test_the_overview_cards_say_what_waits_for_what_and_their_notes(
    page: Page,
    live_server: Any,
    editor: Any,
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Any],
    use_sandbox: Sandbox,
) -> None:
    """A held destination never reads "0 failed · 0 rejected" alone: its card counts what waits
    and says for what; a card notes test mode and low match quality without turning red."""
    revoked_token = make_token("held-for-a-new-token")
    use_sandbox.register_pixel("1111111111111111", "Acme Outlet", [revoked_token])
    use_sandbox.revoke(revoked_token)
    held = make_destination(
        name="Acme outlet store", pixel_id="1111111111111111", access_token=revoked_token
    )
    for _ in range(15):
        make_event(destination=held)
    Destination.objects.filter(pk=held.pk).update(
        blocked_reason="Meta refused the access token.", blocked_at=clock.now()
    )
    off = make_destination(name="Globex wholesale leads", enabled=False)
    make_event(destination=off)
    good = make_token("a-good-one")
    use_sandbox.register_pixel("2222222222222222", "Acme Shoes", [good])
    use_sandbox.register_pixel("3333333333333333", "Acme Shoes Thin", [good])
    testing = make_destination(
        name="Acme test shop",
        pixel_id="2222222222222222",
        access_token=good,
        test_event_code="TEST123",
    )
    thin = make_destination(name="Acme thin shop", pixel_id="3333333333333333", access_token=good)
    make_event(destination=thin, status=EventStatus.DELIVERED, match_quality=1.5)
    health.check_all_destinations(destination_ids=[held.pk, off.pk, testing.pk, thin.pk])
    log_in(page, live_server, editor)

    def card(destination: Destination) -> Any:
        return page.locator(f'[data-testid="destination-card"][data-code="{destination.code}"]')

    expect(card(held).get_by_test_id("waiting")).to_have_text("15 events waiting for a new token")
    expect(card(held).get_by_test_id("failed-24h")).to_have_text("0 failed")
    expect(card(off).get_by_test_id("waiting")).to_have_text("1 event waiting while sending is off")
    expect(card(testing).get_by_test_id("note")).to_contain_text(problems.TEST_MODE.reason)
    expect(card(thin).get_by_test_id("note")).to_contain_text(problems.LOW_MATCH_QUALITY.reason)
    for noted in (testing, thin):
        expect(card(noted)).to_have_attribute("data-health", "healthy")
        expect(card(noted).get_by_test_id("waiting")).to_have_count(0)
