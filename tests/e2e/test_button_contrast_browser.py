"""Link-buttons in a real browser: their text never takes the colour of their background.

Issue 16: ``.capi a`` (blue links) outranked ``.capi-button--primary`` (white on blue), so
**Open the destination** on the page shown after **Add destination**, and **Log in again** on
the logged-out page, were blue text on a blue background.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from capi_destinations.models import Role, Tenant
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token
from tests.e2e.test_pages_browser import PIXEL_ID, log_in

pytestmark = pytest.mark.e2e


@pytest.fixture
def editor(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    return make_user(tenant, Role.EDITOR, username="mia")


def colours(element: Locator) -> tuple[str, str]:
    """The computed text and background colour of ``element``."""
    return element.evaluate(
        "el => { const s = getComputedStyle(el); return [s.color, s.backgroundColor]; }"
    )


def assert_readable_primary(element: Locator) -> None:
    text, background = colours(element)
    assert text != background, f"text {text} on background {background}"
    assert text == "rgb(255, 255, 255)", text


def test_primary_link_buttons_are_white_on_blue_after_add_and_after_logout(
    page: Page, live_server: Any, editor: Any, use_sandbox: Sandbox
) -> None:
    token = make_token("contrast")
    use_sandbox.register_pixel(PIXEL_ID, "Acme Shoes Website", [token])
    log_in(page, live_server, editor)
    page.get_by_test_id("add-destination-menu").click()
    page.get_by_test_id("add-destination-acme").click()
    page.fill("input[name=name]", "Acme web shop")
    page.fill("input[name=pixel_id]", PIXEL_ID)
    page.fill("input[name=access_token]", token)
    page.get_by_test_id("save-destination").click()

    open_destination = page.get_by_test_id("open-destination")
    expect(open_destination).to_be_visible()
    assert_readable_primary(open_destination)

    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("logged-out")).to_be_visible()
    assert_readable_primary(page.get_by_test_id("logged-out").locator(".capi-button--primary"))
