"""Saving a Pixel ID and token Meta has just refused, in a real browser: asked first.

Issue 16: such a destination was saved silently, then promised "the card turns Healthy within
minutes". Meta's refusal now comes with what saving anyway means and a "Save anyway" checkbox;
unticked, nothing is saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from capi_destinations.models import Destination, Role, Tenant
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token
from tests.e2e.test_pages_browser import PIXEL_ID, log_in

pytestmark = pytest.mark.e2e


@pytest.fixture
def editor(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    return make_user(tenant, Role.EDITOR, username="mia")


def test_a_refused_pair_is_saved_only_with_save_anyway(
    page: Page, live_server: Any, editor: Any, use_sandbox: Sandbox
) -> None:
    use_sandbox.register_pixel(PIXEL_ID, "Acme Shoes Website", [make_token("the-right-one")])
    log_in(page, live_server, editor)
    page.get_by_test_id("add-destination-menu").click()
    page.get_by_test_id("add-destination-acme").click()
    page.fill("input[name=name]", "Acme web shop")
    page.fill("input[name=pixel_id]", PIXEL_ID)
    page.fill("input[name=access_token]", make_token("not-this-pixels-token"))
    token_check = page.get_by_test_id("token-check")
    expect(token_check).to_have_attribute("data-state", "error")
    expect(token_check.get_by_test_id("save-refused-consequence")).to_contain_text(
        "nothing reaches Meta"
    )

    # Unticked: not saved, and the page says why.
    page.get_by_test_id("save-destination").click()
    expect(page.get_by_test_id("form-error")).to_contain_text("Not saved yet")
    assert not Destination.objects.exists()

    # The browser kept the token (the server never sends it back): tick Save anyway.
    expect(page.get_by_test_id("token-input")).to_have_value(make_token("not-this-pixels-token"))
    expect(token_check.get_by_test_id("save-refused")).to_be_visible()
    token_check.get_by_test_id("save-refused").check()
    page.get_by_test_id("save-destination").click()
    expect(page.get_by_test_id("created-status")).to_contain_text("Meta refused it:")
    expect(page.get_by_test_id("created-status")).not_to_contain_text("within minutes")
    assert Destination.objects.count() == 1
