"""Small comforts of the pages in a real browser (issue 16): times in the viewer's time zone,
copy buttons, Escape closes a menu, a skip link first, the test code asked for."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect

from capi_destinations import destinations, invitations
from capi_destinations.models import Destination, Event, Role, Tenant
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token
from tests.e2e.test_pages_browser import PIXEL_ID, PIXEL_NAME, log_in

pytestmark = pytest.mark.e2e

RECEIVED_AT = datetime(2026, 11, 24, 12, 5, 9, tzinfo=UTC)


@pytest.fixture
def editor(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    return make_user(tenant, Role.EDITOR, username="mia")


@pytest.fixture
def new_york_page(browser: Browser) -> Iterator[Page]:
    """A browser page in New York's time zone that may use the clipboard."""
    context = browser.new_context(
        timezone_id="America/New_York", permissions=["clipboard-read", "clipboard-write"]
    )
    yield context.new_page()
    context.close()


def test_times_are_shown_in_the_viewers_zone_with_utc_on_hover(
    new_york_page: Page,
    live_server: Any,
    editor: Any,
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Event],
) -> None:
    page = new_york_page
    destination = make_destination(name="Acme web shop")
    event = make_event(destination=destination, event_id="order-1")
    Event.objects.filter(pk=event.pk).update(created_at=RECEIVED_AT)
    log_in(page, live_server, editor)
    page.goto(
        live_server.url + reverse("capi_destinations:event_log", kwargs={"code": destination.code})
    )

    received = page.get_by_test_id("event-row").filter(has_text="order-1").locator("time")
    expect(received).to_have_text("Nov 24, 07:05:09 EST")
    expect(received).to_have_attribute("title", "2026-11-24 12:05:09 UTC")
    expect(received).to_have_attribute("datetime", "2026-11-24T12:05:09Z")


# Each column of times in a table, as the viewer reads it: its header and its first time.
TIME_COLUMNS = """
() => [...document.querySelectorAll("table")].flatMap(table => {
  const headers = [...table.querySelectorAll("thead th")].map(th => th.textContent.trim());
  const columns = new Map();
  for (const time of table.querySelectorAll("tbody time[data-capi-time]")) {
    const cell = time.closest("td");
    if (!columns.has(cell.cellIndex)) {
      columns.set(cell.cellIndex, [headers[cell.cellIndex], time.textContent.trim()]);
    }
  }
  return [...columns.values()];
})
"""


def test_a_column_of_times_in_the_viewers_zone_does_not_say_utc(
    new_york_page: Page,
    live_server: Any,
    make_user: Callable[..., Any],
    tenant: Tenant,
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Event],
    use_sandbox: Sandbox,
) -> None:
    """The times of the tables are rewritten in the viewer's zone, each naming it ("EST"): a
    header saying "(UTC)" above them read "Received (UTC)" over "Nov 24, 07:05:09 EST"."""
    page = new_york_page
    admin = make_user(tenant, Role.ADMIN, username="ada")
    token = make_token("utc-headers")
    use_sandbox.register_pixel(PIXEL_ID, PIXEL_NAME, [token])
    destination = make_destination(name="Acme web shop", pixel_id=PIXEL_ID, access_token=token)
    event = make_event(destination=destination, event_id="order-1")
    Event.objects.filter(pk=event.pk).update(created_at=RECEIVED_AT)
    destinations.send_test_event(destination, actor=admin, test_event_code="TEST12345")
    admin.last_login = RECEIVED_AT
    admin.save(update_fields=["last_login"])
    invitations.invite(tenant, "mia@example.com", "editor", actor=admin)
    log_in(page, live_server, admin)

    seen = []
    for url in (
        reverse("capi_destinations:destination", kwargs={"code": destination.code}),
        reverse("capi_destinations:event", kwargs={"code": destination.code, "event_pk": event.pk}),
        reverse("capi_destinations:members", kwargs={"tenant_slug": tenant.slug}),
    ):
        page.goto(live_server.url + url)
        expect(page.locator("time[data-capi-local]").first).to_be_attached()
        seen += page.evaluate(TIME_COLUMNS)

    assert ["Received", "Nov 24, 07:05:09 EST"] in seen
    assert len(seen) >= 5  # attempts, event log, audit log, an event's attempts, members
    assert [header for header, time in seen if "EST" in time and "UTC" in header] == []


def test_copy_buttons_copy_the_exact_text_and_say_copied(
    new_york_page: Page,
    live_server: Any,
    editor: Any,
    make_destination: Callable[..., Destination],
) -> None:
    page = new_york_page
    destination = make_destination(name="Acme web shop")
    log_in(page, live_server, editor)
    page.goto(
        live_server.url
        + reverse("capi_destinations:destination", kwargs={"code": destination.code})
    )

    for button_id, source_id in [("copy-curl", "curl-example"), ("copy-snippet", "snippet")]:
        button = page.get_by_test_id(button_id)
        expect(button).to_be_visible()
        button.click()
        expect(button).to_have_text("Copied")
        expect(button).to_have_attribute("data-copied", "true")
        expect(button.locator("xpath=..").get_by_role("status")).to_have_text("Copied")
        copied = page.evaluate("() => navigator.clipboard.readText()")
        assert copied == page.get_by_test_id(source_id).text_content()
    assert copied.startswith("<!--")  # the snippet, as pasted into a site


def test_the_server_key_copy_button_on_the_created_page(
    new_york_page: Page, live_server: Any, editor: Any, tenant: Tenant
) -> None:
    page = new_york_page
    log_in(page, live_server, editor)
    page.goto(
        live_server.url
        + reverse("capi_destinations:destination_add", kwargs={"tenant_slug": tenant.slug})
    )
    page.fill("input[name=name]", "Acme web shop")
    page.fill("input[name=pixel_id]", "1234567890123456")
    page.fill("input[name=access_token]", "EAA" + "x" * 187)
    page.get_by_test_id("save-destination").click()
    button = page.get_by_test_id("copy-server-key")
    button.click()
    expect(button).to_have_text("Copied")
    secret = page.evaluate("() => navigator.clipboard.readText()")
    assert secret.startswith("sk_")
    assert Destination.objects.get().check_ingest_secret(secret)


def test_escape_closes_the_open_menu(
    page: Page, live_server: Any, editor: Any, make_destination: Callable[..., Destination]
) -> None:
    make_destination(name="Acme web shop")
    log_in(page, live_server, editor)
    menu = page.get_by_test_id("add-destination-menu")
    menu.locator("summary").click()
    expect(menu).to_have_attribute("open", "")
    page.keyboard.press("Escape")
    expect(menu).not_to_have_attribute("open", "")
    expect(menu.locator("summary")).to_be_focused()


def test_the_skip_link_is_the_first_stop_and_moves_focus_to_the_content(
    page: Page, live_server: Any, editor: Any
) -> None:
    log_in(page, live_server, editor)
    page.goto(f"{live_server.url}/capi/")
    page.keyboard.press("Tab")
    skip = page.get_by_test_id("skip-link")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page.locator("main#content")).to_be_focused()


def test_send_test_event_asks_for_the_code_from_events_manager(
    page: Page,
    live_server: Any,
    editor: Any,
    make_destination: Callable[..., Destination],
    use_sandbox: Sandbox,
) -> None:
    token = make_token("test-event-code")
    use_sandbox.register_pixel(PIXEL_ID, PIXEL_NAME, [token])
    destination = make_destination(name="Acme web shop", pixel_id=PIXEL_ID, access_token=token)
    log_in(page, live_server, editor)
    page.goto(
        live_server.url
        + reverse("capi_destinations:destination", kwargs={"code": destination.code})
    )

    page.get_by_test_id("send-test-event").click()
    expect(page.get_by_test_id("test-event-code-needed")).to_contain_text("Copy the code from")
    assert use_sandbox.events() == []

    page.get_by_test_id("test-event-code-input").fill("TEST55555")
    page.get_by_test_id("send-test-event").click()
    result = page.get_by_test_id("test-event-result")
    expect(result).to_have_attribute("data-ok", "true")
    expect(result).to_contain_text(f"your dataset (pixel {PIXEL_ID}) → Test events tab")
    expect(result).to_contain_text("are not dropped")
    assert [event["test_event_code"] for event in use_sandbox.events()] == ["TEST55555"]


def test_escape_closes_the_advanced_section_from_its_summary_only(
    page: Page, live_server: Any, editor: Any, tenant: Tenant
) -> None:
    log_in(page, live_server, editor)
    page.goto(
        live_server.url
        + reverse("capi_destinations:destination_add", kwargs={"tenant_slug": tenant.slug})
    )
    advanced = page.get_by_test_id("advanced-section")
    advanced.locator("summary").click()
    expect(advanced).to_have_attribute("open", "")
    page.fill("input[name=default_country]", "de")
    page.keyboard.press("Escape")
    expect(advanced).to_have_attribute("open", "")
    advanced.locator("summary").focus()
    page.keyboard.press("Escape")
    expect(advanced).not_to_have_attribute("open", "")
