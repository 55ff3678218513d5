"""An invitation by email in a real browser: the admin invites, the invited person joins.

The admin invites an address on the members page; the link is read from the email (Django's
in-memory outbox under test) and opened in a fresh browser context, as the invited person on
their own computer would: they create their account and land on the overview, seeing the client
with the role they were given.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from capi_destinations.models import Membership, Role, Tenant
from tests.e2e.test_pages_browser import log_in

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "a long and unusual passphrase 42"


@pytest.fixture
def agency_admin(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    return make_user(tenant, Role.ADMIN, username="olivia")


def test_an_invited_person_creates_their_account_and_sees_the_client_with_their_role(
    page: Page,
    browser: Browser,
    live_server: Any,
    agency_admin: Any,
    tenant: Tenant,
    mailoutbox: list[Any],
) -> None:
    log_in(page, live_server, agency_admin)
    page.goto(f"{live_server.url}/capi/t/{tenant.slug}/members/")
    invite_form = page.get_by_test_id("invite-form")
    invite_form.get_by_label("Email address").fill("Mia@Example.com")
    invite_form.get_by_label("Role").select_option("editor")
    page.get_by_test_id("invite").click()
    expect(page.get_by_test_id("messages")).to_contain_text(
        "Invitation sent to mia@example.com as editor."
    )
    row = page.locator('[data-testid="invitation-row"][data-email="mia@example.com"]')
    expect(row).to_contain_text("olivia")
    expect(row).to_contain_text("Editor")

    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["mia@example.com"]
    link = re.search(r"https?://\S+/capi/invitation/\S+/", mailoutbox[0].body)
    assert link is not None, mailoutbox[0].body

    # The invited person, in a browser of their own (no session of the admin's).
    context = browser.new_context()
    try:
        invited = context.new_page()
        invited.goto(link.group(0))
        # The secret is not left in the address bar.
        assert link.group(0).rstrip("/").rsplit("/", 1)[1] not in invited.url
        form = invited.get_by_test_id("create-account-form")
        expect(form).to_be_visible()
        expect(form.get_by_test_id("invited-email")).to_have_text("mia@example.com")
        expect(form.get_by_label("Username")).to_have_value("mia@example.com")
        form.get_by_label("Username").fill("mia")
        form.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
        form.get_by_label("Password again").fill(NEW_PASSWORD)
        invited.get_by_test_id("create-account").click()

        expect(invited.get_by_test_id("current-user")).to_have_text("mia")
        assert invited.url == f"{live_server.url}/capi/"
        expect(invited.get_by_test_id("messages")).to_contain_text(
            "Welcome: you are now editor of Acme Shoes."
        )
        client_row = invited.get_by_test_id("tenant-list").locator("tr", has_text="Acme Shoes")
        expect(client_row).to_contain_text("Editor")

        # The link worked once.
        invited.goto(link.group(0))
        expect(invited.get_by_test_id("invitation-unusable")).to_contain_text(
            "This invitation was used already"
        )
    finally:
        context.close()

    assert Membership.objects.get(user__username="mia", tenant=tenant).role == Role.EDITOR
    # The admin sees the new member, with their address, and no pending invitation.
    page.reload()
    member = page.locator('[data-testid="member-row"][data-username="mia"]')
    expect(member.get_by_test_id("member-email")).to_have_text("mia@example.com")
    expect(page.get_by_test_id("invitation-row")).to_have_count(0)


def test_an_expired_link_says_so_and_who_to_ask(
    page: Page,
    browser: Browser,
    live_server: Any,
    agency_admin: Any,
    tenant: Tenant,
    mailoutbox: list[Any],
    clock: Any,
) -> None:
    agency_admin.email = "olivia@agency.test"
    agency_admin.save()
    log_in(page, live_server, agency_admin)
    page.goto(f"{live_server.url}/capi/t/{tenant.slug}/members/")
    page.get_by_test_id("invite-form").get_by_label("Email address").fill("late@example.com")
    page.get_by_test_id("invite").click()
    expect(page.get_by_test_id("invitation-row")).to_have_count(1)
    link = re.search(r"https?://\S+/capi/invitation/\S+/", mailoutbox[0].body)
    assert link is not None

    clock.advance(timedelta(days=7))
    context = browser.new_context()
    try:
        invited = context.new_page()
        invited.goto(link.group(0))
        unusable = invited.get_by_test_id("invitation-unusable")
        expect(unusable).to_contain_text("This invitation has expired")
        expect(invited.get_by_test_id("who-to-ask")).to_contain_text(
            "Ask olivia (olivia@agency.test), who invited you"
        )
    finally:
        context.close()
    page.reload()
    expect(page.get_by_test_id("invitation-expired")).to_be_visible()
    assert not Membership.objects.filter(tenant=tenant, user__email="late@example.com").exists()
