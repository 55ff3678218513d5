"""Every page of the app on a 375 px phone screen: nothing wider than the screen.

Issue 16: at 375 px the destination page was 659 px wide and the health card and its badge
were cut off. Each page is visited with content that makes it as wide as it gets in use (an
Unhealthy card with Meta's reason, a refused event with diagnostics and attempts, the created
page with its snippet and ``curl`` example), and the document may not scroll sideways; wide
tables and code scroll inside their own box instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, expect

from capi_destinations import counters, digest, health, invitations, track
from capi_destinations.models import (
    Destination,
    EventStatus,
    ImportRun,
    ImportStatus,
    IngestRefusal,
    NotificationChannel,
    Role,
    Tenant,
)
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token
from tests.e2e.test_pages_browser import PIXEL_ID, log_in
from tests.test_imports import BAD_THEN_GOOD, GOOD, csv_bytes

pytestmark = pytest.mark.e2e

PHONE = {"width": 375, "height": 740}


@pytest.fixture
def admin(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    """An admin of Acme Shoes: sees every page, members included."""
    return make_user(tenant, Role.ADMIN, username="ada")


def assert_no_sideways_scroll(page: Page, what: str) -> None:
    # Measured once the stylesheet is in: a layout read before it would see unstyled code blocks.
    page.wait_for_load_state("load")
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.body.scrollWidth]"
    )
    if max(widths) > PHONE["width"]:
        # Name the innermost elements that stick out, so a failure says where to look.
        culprits = page.evaluate(
            """w => {
                const right = e => e.getBoundingClientRect().right + window.scrollX;
                return [...document.querySelectorAll('body *')]
                    .filter(e => right(e) > w + 1)
                    .filter(e => ![...e.children].some(c => right(c) > w + 1))
                    .slice(0, 5)
                    .map(e => `${e.tagName}.${e.className} ${Math.round(right(e))}`);
            }""",
            PHONE["width"],
        )
        pytest.fail(f"{what} is {max(widths)} px wide at 375 px; too wide: {culprits}")


def test_every_page_fits_a_375_px_screen(
    page: Page,
    live_server: Any,
    admin: Any,
    make_destination: Callable[..., Destination],
    use_sandbox: Sandbox,
) -> None:
    page.set_viewport_size(PHONE)
    token = make_token("narrow")
    use_sandbox.register_pixel(PIXEL_ID, "Acme Shoes Website", [token])
    # A destination whose token Meta no longer accepts: an Unhealthy card with Meta's reason.
    revoked = make_token("narrow-revoked")
    use_sandbox.register_pixel("6543210987654321", "Acme Shoes Outlet", [revoked])
    destination = make_destination(
        name="Acme web shop — spring sale landing pages",
        pixel_id="6543210987654321",
        access_token=revoked,
    )
    use_sandbox.revoke(revoked)
    health.check_destination(destination)
    track(
        destination,
        {
            "event_name": "Purchase",
            "event_id": "order-2026-12-06-0000000000001001",
            "action_source": "website",
            "event_source_url": "https://shop.example.com/checkout/thank-you?order=2026120600001001",
            "user_data": {"email": "jane.doe@example.com", "client_user_agent": "Mozilla/5.0"},
            "custom_data": {"value": 49.9},
        },
    )
    # A channel with a long URL on the alerts page.
    NotificationChannel.objects.create(
        tenant=destination.tenant,
        kind="slack",
        name="Acme operations in Slack",
        target="https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        alert_kinds=["health", "traffic_dropped", "failure_rate"],
    )
    # The login page, before anyone is logged in.
    page.goto(f"{live_server.url}/capi/")
    expect(page.get_by_test_id("login")).to_be_visible()
    assert_no_sideways_scroll(page, "the login page")
    log_in(page, live_server, admin)

    base = f"{live_server.url}/capi"
    event_query = urlencode(
        {"event_name": "Purchase", "event_id": "order-2026-12-06-0000000000001001"}
    )
    pages = {
        "the overview": f"{base}/",
        "the destination page": f"{base}/d/{destination.code}/",
        "the add page": f"{base}/t/acme/new/",
        "the edit page": f"{base}/d/{destination.code}/edit/",
        "the replace-token page": f"{base}/d/{destination.code}/token/",
        "the members page": f"{base}/t/acme/members/",
        "the alerts page": f"{base}/t/acme/alerts/",
        "the event log": f"{base}/d/{destination.code}/events/",
        "the event detail page": f"{base}/d/{destination.code}/events/detail/?{event_query}",
    }
    for what, url in pages.items():
        response = page.goto(url)
        assert response is not None, what
        assert response.ok, what
        assert_no_sideways_scroll(page, what)

    # The event opened inline on the destination page.
    page.goto(f"{base}/d/{destination.code}/")
    page.get_by_test_id("event-row").first.get_by_test_id("event-open").click()
    expect(page.get_by_test_id("event-detail")).to_be_visible()
    assert_no_sideways_scroll(page, "the destination page with an event open")

    # The page shown after Add destination (server key, snippet, curl example).
    page.goto(f"{base}/t/acme/new/")
    page.fill("input[name=name]", "Acme web shop")
    page.fill("input[name=pixel_id]", PIXEL_ID)
    page.fill("input[name=access_token]", token)
    expect(page.get_by_test_id("token-check")).to_have_attribute("data-state", "ok")
    page.get_by_test_id("save-destination").click()
    expect(page.get_by_test_id("open-destination")).to_be_visible()
    assert_no_sideways_scroll(page, "the created page")

    # The logged-out page.
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("logged-out")).to_be_visible()
    assert_no_sideways_scroll(page, "the logged-out page")


def test_the_other_pages_fit_a_375_px_screen_too(
    page: Page,
    browser: Any,
    live_server: Any,
    admin: Any,
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Any],
    use_sandbox: Sandbox,
    tmp_path: Any,
    settings: Any,
) -> None:
    """The pages the first test does not visit: a client's exclusions, the digest, a channel's
    edit page, deleting a destination, an event's own address, the import pages, refused calls,
    Redeliver's warning and an invitation link (valid and expired)."""
    settings.CAPI_DESTINATIONS = {
        **settings.CAPI_DESTINATIONS,
        "IMPORT_DIRECTORY": str(tmp_path / "uploads"),
    }
    page.set_viewport_size(PHONE)
    token = make_token("narrow-others")
    use_sandbox.register_pixel(PIXEL_ID, "Acme Shoes Website", [token])
    destination = make_destination(
        name="Acme web shop — spring sale landing pages",
        pixel_id=PIXEL_ID,
        access_token=token,
        allowed_origins="https://shop.example.com",
    )
    event = make_event(
        destination=destination,
        event_name="Lead",
        event_id="newsletter-2026-12-06-0000000000001001",
        status=EventStatus.FAILED,
        next_attempt_at=None,
        diagnostics=[
            {
                "code": "meta_rejected",
                "field": "event_source_url",
                "severity": "error",
                "message": "event_source_url (http:// or https://) is required for website events.",
                "fix": "Send the page's full address, https:// and all.",
                "meta_code": 100,
                "meta_subcode": None,
            }
        ],
    )
    counters.add_refused_call(
        destination.pk,
        IngestRefusal.ORIGIN_NOT_ALLOWED,
        origin="https://checkout.acme-shoes-spring-sale-landing-pages.example.com",
    )
    channel = NotificationChannel.objects.create(
        tenant=destination.tenant,
        kind="webhook",
        name="Acme operations webhook",
        target="https://hooks.example.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        alert_kinds=["health", "traffic_dropped", "failure_rate"],
    )
    run = ImportRun.objects.create(
        destination=destination,
        created_by=admin,
        file_name="store-sales-2026-12-06-all-stores-including-outlets.csv",
        file_size=1000,
        bytes_read=1000,
        rows_read=100,
        stored=99,
        status=ImportStatus.RUNNING,
    )
    run.finish(
        {"rows_read": 100, "stored": 99, "duplicates": 0, "rejected": 1, "suppressed": 0},
        [
            {
                "line": 42,
                "reason": "The event time 2026-13-45 is not a date in the format chosen.",
                "columns": {"order_id": "STORE-0042-2026-12-06-0000000000000042"},
            }
        ],
    )
    invitation, secret = invitations.invite(
        destination.tenant, "someone.with.a.long.address@agency.example.com", "editor", actor=admin
    )
    log_in(page, live_server, admin)

    base = f"{live_server.url}/capi"
    d = f"{base}/d/{destination.code}"
    pages = {
        "the exclusions page": f"{base}/t/acme/exclusions/",
        "the digest page": f"{base}/digest/",
        "the digest's unsubscribe page": f"{base}/digest/unsubscribe/"
        f"{digest.unsubscribe_token(admin)}/",
        "the channel's edit page": f"{base}/t/acme/alerts/{channel.code}/edit/",
        "the delete page": f"{d}/delete/",
        "the event's own address": f"{d}/events/{event.pk}/",
        "the import page": f"{d}/import/",
        "a finished import": f"{d}/import/{run.code}/",
        "the destination page with a refused call": f"{d}/",
    }
    for what, url in pages.items():
        response = page.goto(url)
        assert response is not None, what
        assert response.ok, (what, response.status)
        assert_no_sideways_scroll(page, what)
    expect(page.get_by_test_id("refused-call")).to_be_visible()

    # Importing a file: the mapping page, then the preview of its first rows.
    sales = tmp_path / "store-sales.csv"
    sales.write_bytes(csv_bytes(GOOD.encode() + BAD_THEN_GOOD))
    page.goto(f"{d}/import/")
    page.get_by_test_id("import-file").set_input_files(str(sales))
    page.get_by_test_id("import-upload").click()
    expect(page.get_by_test_id("map-event_time")).to_have_value("Date")
    assert_no_sideways_scroll(page, "the import's mapping page")
    page.get_by_test_id("import-preview").click()
    expect(page.get_by_test_id("import-preview-row")).to_have_count(5)
    assert_no_sideways_scroll(page, "the import's preview")
    page.goto(f"{d}/")

    # Redeliver's warning (Meta refused the event for its data).
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("redeliver-failed").click()
    expect(page.get_by_test_id("redeliver-warning")).to_be_visible()
    assert_no_sideways_scroll(page, "Redeliver's warning")

    # The invited person's pages, in a browser of their own: the link, then the same link expired.
    link = f"{base}/invitation/{invitation.code}/{secret}/"
    context = browser.new_context(viewport=PHONE)
    try:
        invited = context.new_page()
        invited.goto(link)
        expect(invited.get_by_test_id("create-account-form")).to_be_visible()
        assert_no_sideways_scroll(invited, "the invitation page")
        invitations.revoke(invitation, actor=admin)
        invited.reload()
        expect(invited.get_by_test_id("invitation-unusable")).to_be_visible()
        assert_no_sideways_scroll(invited, "a revoked invitation's page")
    finally:
        context.close()
