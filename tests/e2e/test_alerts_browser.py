"""The Alerts page in a real browser: a Slack channel added, tested, and kept from viewers.

The Slack "workspace" is a loopback HTTP receiver (tests/fixtures/receivers.py), allowed by the
settings that let a channel point at plain http on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from capi_destinations.models import NotificationChannel, Role, Tenant
from tests.e2e.test_pages_browser import log_in
from tests.fixtures.receivers import Receiver

pytestmark = pytest.mark.e2e


@pytest.fixture
def loopback_allowed(settings: Any) -> None:
    settings.CAPI_DESTINATIONS = {"ALERT_ALLOW_HTTP": True, "ALERT_ALLOW_PRIVATE_ADDRESSES": True}


@pytest.mark.usefixtures("loopback_allowed")
def test_an_admin_adds_a_slack_channel_sends_a_test_alert_and_sees_the_answer(
    page: Page,
    live_server: Any,
    tenant: Tenant,
    make_user: Callable[..., Any],
    receiver: Receiver,
) -> None:
    receiver.answer = b"ok from slack"
    admin = make_user(tenant, Role.ADMIN, username="ada")
    log_in(page, live_server, admin)
    page.get_by_test_id("alerts-link").click()
    expect(page.get_by_test_id("no-channels")).to_be_visible()

    page.fill("input[name=name]", "Ops in Slack")
    page.select_option("select[name=kind]", "slack")
    page.fill("input[name=target]", receiver.url)
    page.get_by_test_id("save-channel").click()

    row = page.get_by_test_id("channel-row").filter(has_text="Ops in Slack")
    expect(row.get_by_test_id("channel-state")).to_contain_text("Working")
    row.get_by_test_id("send-test-alert").click()
    result = row.get_by_test_id("test-alert-result")
    expect(result).to_have_attribute("data-ok", "true")
    expect(result.get_by_test_id("test-alert-status")).to_have_text("200")
    expect(result.get_by_test_id("test-alert-answer")).to_have_text("ok from slack")
    assert len(receiver.requests) == 1
    assert receiver.requests[0].json["text"].startswith("Test alert for Acme Shoes")

    # Refreshed, the page lists the attempt.
    page.reload()
    expect(row.get_by_test_id("channel-attempts")).to_contain_text("HTTP 200")


@pytest.mark.usefixtures("loopback_allowed")
def test_a_viewer_cannot_see_the_channels_urls_or_secrets(
    page: Page,
    live_server: Any,
    tenant: Tenant,
    make_user: Callable[..., Any],
    receiver: Receiver,
) -> None:
    NotificationChannel.objects.create(
        tenant=tenant,
        kind="slack",
        name="Ops in Slack",
        target=receiver.url,
        alert_kinds=["health"],
    )
    webhook = NotificationChannel.objects.create(
        tenant=tenant,
        kind="webhook",
        name="Ops webhook",
        target=f"{receiver.url}/webhook",
        alert_kinds=["health"],
        signing_secret="whsec_viewer-must-never-see-this",
    )
    secrets = (receiver.url, "T0SECRETPATH", "whsec_viewer-must-never-see-this")
    viewer = make_user(tenant, Role.VIEWER, username="vic")
    log_in(page, live_server, viewer)
    expect(page.get_by_test_id("tenant-list")).to_be_visible()
    expect(page.get_by_test_id("alerts-link")).to_have_count(0)
    assert not any(secret in page.content() for secret in secrets)
    page.goto(f"{live_server.url}/capi/t/{tenant.slug}/members/")
    expect(page.get_by_test_id("members")).to_be_visible()
    expect(page.get_by_test_id("alerts-link")).to_have_count(0)
    assert not any(secret in page.content() for secret in secrets)
    for path in ("alerts/", f"alerts/{webhook.code}/edit/"):
        answer = page.goto(f"{live_server.url}/capi/t/{tenant.slug}/{path}")
        assert answer is not None
        assert answer.status == 403
        assert not any(secret in page.content() for secret in secrets)
