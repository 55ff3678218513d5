"""The daily digest's pages in a browser: a member chooses the combined digest, and the signed
link from an email unsubscribes without a login."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from capi_destinations import digest
from capi_destinations.models import DigestChoice, Role, Tenant

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"


def test_a_member_chooses_the_combined_digest_then_unsubscribes_from_the_email_link(
    page: Page, live_server: Any, make_user: Callable[..., Any], tenant: Tenant
) -> None:
    viewer = make_user(tenant, Role.VIEWER, username="vera")
    page.goto(f"{live_server.url}/capi/")
    page.fill("input[name=username]", viewer.username)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_test_id("login-submit").click()

    page.get_by_test_id("digest-settings-link").click()
    page.get_by_label("One digest across all my clients").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_label("One digest across all my clients")).to_be_checked()
    assert digest.choice_of(viewer) == DigestChoice.COMBINED

    # The link in an email, opened in a browser that is not signed in.
    page.context.clear_cookies()
    page.goto(f"{live_server.url}{digest.unsubscribe_url(viewer)}")
    expect(page.get_by_test_id("unsubscribed")).to_be_visible()
    assert digest.choice_of(viewer) == DigestChoice.NONE
