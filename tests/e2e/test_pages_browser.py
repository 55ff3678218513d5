"""The pages in a real browser, against the Graph API sandbox: what a marketer does first.

Log in, add a destination by pasting a token (the pixel's name appears before anything is
saved), turn a card Healthy with "Check now", watch it turn Unhealthy on its next refresh once
Meta revokes the token, open an event's diagnostics, and send a test event.

Nothing waits on wall-clock time: Playwright's ``expect`` waits for what the page shows, and
the overview's 30-second refresh is reached by moving the browser's clock forward.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from capi_destinations import health, tasks, track
from capi_destinations.models import Destination, Health, Role, Tenant
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"  # what tests/conftest.py's make_user sets
PIXEL_ID = "1234567890123456"
PIXEL_NAME = "Acme Shoes Website"


@pytest.fixture
def editor(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    """A marketer of Acme Shoes who may add and change destinations."""
    return make_user(tenant, Role.EDITOR, username="mia")


@pytest.fixture
def pixel_token(use_sandbox: Sandbox) -> str:
    """A token the sandbox accepts for PIXEL_ID, which it calls PIXEL_NAME."""
    token = make_token("browser")
    use_sandbox.register_pixel(PIXEL_ID, PIXEL_NAME, [token])
    return token


@pytest.fixture
def shop_destination(make_destination: Callable[..., Destination], pixel_token: str) -> Destination:
    """A destination holding the sandbox's token, not checked yet."""
    return make_destination(name="Acme web shop", pixel_id=PIXEL_ID, access_token=pixel_token)


def log_in(page: Page, live_server: Any, user: Any) -> None:
    """Open the app, get sent to the login page, and log in there."""
    page.goto(f"{live_server.url}/capi/")
    expect(page.get_by_test_id("login")).to_be_visible()
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("current-user")).to_have_text(user.username)


def card_of(page: Page, destination: Destination) -> Any:
    return page.locator(f"#card-{destination.code}")


def test_logging_in_leads_to_the_overview_of_ones_destinations(
    page: Page, live_server: Any, editor: Any, shop_destination: Destination
) -> None:
    log_in(page, live_server, editor)

    assert page.url == f"{live_server.url}/capi/"
    card = card_of(page, shop_destination)
    expect(card.get_by_test_id("destination-link")).to_have_text("Acme web shop")
    expect(card.get_by_test_id("health-badge")).to_have_text("Not checked yet")


def test_pasting_a_token_shows_the_pixel_name_before_anything_is_saved(
    page: Page, live_server: Any, editor: Any, pixel_token: str
) -> None:
    log_in(page, live_server, editor)
    page.get_by_test_id("add-destination-menu").click()
    page.get_by_test_id("add-destination-acme").click()
    page.fill("input[name=name]", "Acme web shop")
    page.fill("input[name=pixel_id]", PIXEL_ID)
    token_check = page.get_by_test_id("token-check")

    # A token Meta does not know is refused with Meta's reason…
    page.fill("input[name=access_token]", make_token("not-this-pixels-token"))
    expect(token_check).to_have_attribute("data-state", "error")
    expect(token_check).to_contain_text("Not connected")
    # …the right one names the pixel, and still nothing is saved.
    page.fill("input[name=access_token]", pixel_token)
    expect(token_check).to_have_attribute("data-state", "ok")
    expect(token_check).to_have_text(f"Connected Connected to pixel '{PIXEL_NAME}'")
    assert not Destination.objects.exists()

    page.get_by_test_id("save-destination").click()
    expect(page.get_by_test_id("created-status").get_by_test_id("pixel-name")).to_have_text(
        PIXEL_NAME
    )
    destination = Destination.objects.get()
    assert destination.access_token == pixel_token
    assert pixel_token[:20] not in page.content()


def test_check_now_turns_the_card_healthy(
    page: Page, live_server: Any, editor: Any, shop_destination: Destination
) -> None:
    log_in(page, live_server, editor)
    card_of(page, shop_destination).get_by_test_id("destination-link").click()
    health_card = page.get_by_test_id("health-card")
    expect(health_card.get_by_test_id("health-badge")).to_have_text("Not checked yet")

    health_card.get_by_test_id("check-now").click()

    expect(health_card.get_by_test_id("health-badge")).to_have_text("Healthy")
    expect(health_card.get_by_test_id("pixel-name")).to_have_text(PIXEL_NAME)
    expect(health_card.get_by_test_id("check-meta_accepts_token")).to_have_attribute(
        "data-ok", "true"
    )
    page.get_by_role("link", name="Destinations", exact=True).click()
    expect(card_of(page, shop_destination).get_by_test_id("health-badge")).to_have_text("Healthy")


def test_a_revoked_token_turns_the_card_unhealthy_on_the_next_refresh(
    page: Page,
    live_server: Any,
    editor: Any,
    shop_destination: Destination,
    pixel_token: str,
    use_sandbox: Sandbox,
) -> None:
    health.check_destination(shop_destination)
    # The browser's clock: the overview polls every 30 s, and the test moves time forward.
    page.clock.install()
    log_in(page, live_server, editor)
    card = card_of(page, shop_destination)
    expect(card.get_by_test_id("health-badge")).to_have_text("Healthy")

    use_sandbox.revoke(pixel_token)
    tasks.run_health_checks()  # the scheduled check, as django-q2 runs it
    assert Destination.objects.get().health == Health.UNHEALTHY
    # The page shows what it loaded until its next refresh.
    expect(card.get_by_test_id("health-badge")).to_have_text("Healthy")

    with page.expect_response(re.compile(r"/capi/(\?.*)?$")):
        page.clock.fast_forward("00:31")

    expect(card.get_by_test_id("health-badge")).to_have_text("Unhealthy")
    expect(card.get_by_test_id("first-reason")).to_contain_text("revoked")


def test_an_events_diagnostics_open_with_their_fixes(
    page: Page, live_server: Any, editor: Any, shop_destination: Destination
) -> None:
    track(
        shop_destination,
        {
            "event_name": "Purchase",
            "event_id": "order-1001",
            "action_source": "website",
            "event_source_url": "https://shop.example.com/thanks",
            "user_data": {"email": "Jane.Doe@Example.com", "client_user_agent": "Mozilla/5.0"},
            "custom_data": {"value": 49.9},
        },
    )
    log_in(page, live_server, editor)
    card_of(page, shop_destination).get_by_test_id("destination-link").click()

    row = page.get_by_test_id("event-row").filter(has_text="order-1001")
    expect(row).to_have_attribute("data-status", "rejected")
    row.get_by_test_id("event-open").click()

    detail = page.get_by_test_id("event-detail")
    missing_currency = detail.locator("[data-testid=diagnostic][data-code=missing_currency]")
    expect(missing_currency).to_contain_text("Fix:")
    expect(detail.get_by_test_id("event-payload")).to_contain_text('"em"')
    # Only the hash of the email is kept and shown.
    expect(detail).not_to_contain_text("jane.doe@example.com")


def test_send_test_event_shows_metas_answer(
    page: Page,
    live_server: Any,
    editor: Any,
    make_destination: Callable[..., Destination],
    pixel_token: str,
    use_sandbox: Sandbox,
) -> None:
    destination = make_destination(
        name="Acme web shop",
        pixel_id=PIXEL_ID,
        access_token=pixel_token,
        test_event_code="TEST4242",
    )
    log_in(page, live_server, editor)
    card_of(page, destination).get_by_test_id("destination-link").click()

    page.get_by_test_id("send-test-event").click()

    result = page.get_by_test_id("test-event-result")
    expect(result).to_have_attribute("data-ok", "true")
    expect(result).to_contain_text("Meta received 1 event")
    expect(result.get_by_test_id("test-event-code")).to_have_text("TEST4242")
    received = use_sandbox.events(test_event_code="TEST4242")
    assert [item["event_name"] for item in received] == ["PageView"]
