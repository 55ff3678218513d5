"""The app's pages under their Content-Security-Policy, in a real browser: nothing refused.

The CSP (``capi_destinations/security.py``) allows scripts and styles from the site only. A page
that relied on an inline script or style would still load, with the browser reporting the
refusal on its console; this test reads the console of every page a member opens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import ConsoleMessage, Page, expect

from capi_destinations import digest, track
from capi_destinations.models import Destination, NotificationChannel, Role, Tenant
from capi_destinations.sandbox import Sandbox

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"


def test_every_page_runs_with_no_csp_violation(
    page: Page,
    live_server: Any,
    make_user: Callable[..., Any],
    make_destination: Callable[..., Destination],
    tenant: Tenant,
    use_sandbox: Sandbox,
) -> None:
    admin = make_user(tenant, Role.ADMIN, username="ada")
    destination = make_destination(name="Acme web shop", allowed_origins="https://shop.example.com")
    track(
        destination,
        {
            "event_name": "Purchase",
            "event_id": "order-1",
            "action_source": "website",
            "event_source_url": "https://shop.example.com/thanks",
            "user_data": {"email": "jane@example.com", "client_user_agent": "Mozilla/5.0"},
        },
    )
    refused: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused" in message.text:
            refused.append(f"{page.url}: {message.text}")

    page.on("console", on_console)
    page.goto(f"{live_server.url}/capi/")
    expect(page.get_by_test_id("login")).to_be_visible()
    page.fill("input[name=username]", admin.username)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("current-user")).to_have_text(admin.username)

    code = destination.code
    channel = NotificationChannel.objects.create(
        tenant=tenant,
        kind="slack",
        name="Ops",
        target="https://hooks.example.com/x",
        alert_kinds=[],
    )
    urls = [
        reverse("capi_destinations:overview"),
        reverse("capi_destinations:destination", kwargs={"code": code}),
        reverse("capi_destinations:event_log", kwargs={"code": code}),
        reverse("capi_destinations:event_detail", kwargs={"code": code})
        + "?event_name=Purchase&event_id=order-1",
        reverse("capi_destinations:members", kwargs={"tenant_slug": tenant.slug}),
        reverse("capi_destinations:destination_add", kwargs={"tenant_slug": tenant.slug}),
        reverse("capi_destinations:destination_edit", kwargs={"code": code}),
        reverse("capi_destinations:replace_token", kwargs={"code": code}),
        reverse("capi_destinations:destination_delete", kwargs={"code": code}),
        reverse("capi_destinations:alert_channels", kwargs={"tenant_slug": tenant.slug}),
        reverse(
            "capi_destinations:alert_channel_edit",
            kwargs={"tenant_slug": tenant.slug, "channel": channel.code},
        ),
        reverse("capi_destinations:digest_settings"),
        reverse(
            "capi_destinations:digest_unsubscribe",
            kwargs={"signature": digest.unsubscribe_token(admin)},
        ),
    ]
    for url in urls:
        response = page.goto(f"{live_server.url}{url}")
        assert response is not None, url
        assert response.status == 200, url
        assert "script-src 'self'" in response.headers["content-security-policy"]
        # htmx loaded, so the script from the site itself was allowed.
        page.wait_for_function("() => window.htmx !== undefined")

    assert refused == []
