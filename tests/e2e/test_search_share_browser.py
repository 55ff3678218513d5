"""Issue 16 in a real browser: search the overview, open an event inline, share its address.

The search box filters the cards as one types (htmx), the address follows the search; an event
opened inline puts its own address in the address bar, and that address, loaded in a new page,
shows the log with the event open.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from capi_destinations.models import Destination, EventStatus, Role, Tenant

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"  # what tests/conftest.py's make_user sets


def log_in(page: Page, live_server: Any, user: Any) -> None:
    page.goto(f"{live_server.url}/capi/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("current-user")).to_have_text(user.username)


def test_search_then_open_an_event_and_share_its_address(
    page: Page,
    context: BrowserContext,
    live_server: Any,
    make_user: Callable[..., Any],
    make_tenant: Callable[..., Tenant],
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Any],
    tenant: Tenant,
) -> None:
    marketer = make_user(tenant, Role.VIEWER, username="sam")
    shop = make_destination(name="Acme web shop", pixel_id="1234567890123456")
    make_destination(name="Acme app", pixel_id="6543210987654321")
    # (make_event brings a third: "Acme web pixel".)
    make_destination(tenant=make_tenant("Globex"), name="Globex web shop")
    make_event(destination=shop, event_id="order-41", status=EventStatus.DELIVERED)
    make_event(destination=shop, event_id="order-42", status=EventStatus.FAILED)

    log_in(page, live_server, marketer)
    cards = page.get_by_test_id("destination-card")
    expect(cards).to_have_count(3)
    page.get_by_test_id("overview-search").fill("WEB SHOP")
    expect(cards).to_have_count(1)
    expect(cards.first).to_contain_text("Acme web shop")
    expect(page).to_have_url(re.compile(r"\?q=WEB(\+|%20)SHOP"))
    expect(page.get_by_test_id("export-overview")).to_have_attribute(
        "href", re.compile(r"destinations\.csv\?q=WEB\+SHOP")
    )

    cards.first.get_by_test_id("destination-link").click()
    expect(page.get_by_test_id("event-log")).to_be_visible()
    row = page.get_by_test_id("event-row").filter(has_text="order-42")
    row.get_by_test_id("event-open").click()
    detail = page.locator("#event-detail").get_by_test_id("event-detail")
    expect(detail).to_contain_text("order-42")
    expect(page).to_have_url(re.compile(rf"/capi/d/{shop.code}/events/\d+/$"))
    shared = page.url

    other = context.new_page()
    other.goto(shared)
    expect(other.get_by_test_id("event-log")).to_be_visible()
    expect(other.locator("#event-detail").get_by_test_id("event-detail")).to_contain_text(
        "order-42"
    )
    other.close()


def test_the_csv_exports_hold_exactly_the_events_the_filtered_log_shows(
    page: Page,
    live_server: Any,
    make_user: Callable[..., Any],
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Any],
    tenant: Tenant,
) -> None:
    """Filter the log in the browser, then download what its links give: the same rows."""
    marketer = make_user(tenant, Role.VIEWER, username="sam")
    shop = make_destination(name="Acme web shop")
    make_event(destination=shop, event_id="order-40", status=EventStatus.DELIVERED)
    make_event(destination=shop, event_id="order-41", status=EventStatus.FAILED)
    make_event(destination=shop, event_id="order-42", status=EventStatus.FAILED)
    make_event(destination=shop, event_id="lead-1", event_name="Lead", status=EventStatus.FAILED)
    log_in(page, live_server, marketer)
    page.goto(f"{live_server.url}/capi/d/{shop.code}/events/")
    rows = page.get_by_test_id("event-row")
    expect(rows).to_have_count(4)

    filters = page.get_by_test_id("event-filters")
    filters.locator("select[name=status]").select_option("failed")
    expect(rows).to_have_count(3)
    filters.locator("select[name=event_name]").select_option("Purchase")
    expect(rows).to_have_count(2)
    shown = sorted(rows.locator("code").all_text_contents())
    assert shown == ["order-41", "order-42"]

    with page.expect_download() as download:
        page.get_by_test_id("export-events").click()
    exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert sorted(row["event_id"] for row in exported) == shown
    assert {row["status"] for row in exported} == {"failed"}

    filters.locator("select[name=status]").select_option("")
    expect(rows).to_have_count(3)  # every Purchase, whatever its status
    filters.locator("input[name=q]").fill("order-40")
    filters.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    with page.expect_download() as download:
        page.get_by_test_id("export-events").click()
    exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [row["event_id"] for row in exported] == ["order-40"]


def test_what_is_typed_while_a_filter_answer_is_on_its_way_is_kept(
    page: Page,
    live_server: Any,
    make_user: Callable[..., Any],
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Any],
    tenant: Tenant,
) -> None:
    """The filters swap only the results: an answer that arrives while the person is typing
    never puts the form back as it was when the request left."""
    marketer = make_user(tenant, Role.VIEWER, username="sam")
    shop = make_destination(name="Acme web shop")
    make_event(destination=shop, event_id="order-40", status=EventStatus.DELIVERED)
    make_event(destination=shop, event_id="order-41", status=EventStatus.FAILED)
    log_in(page, live_server, marketer)
    page.goto(f"{live_server.url}/capi/d/{shop.code}/events/")
    rows = page.get_by_test_id("event-row")
    expect(rows).to_have_count(2)

    failed_only = re.compile(r".*/events/\?.*status=failed.*")
    held: list[Any] = []
    page.route(failed_only, lambda route: held.append(route))
    filters = page.get_by_test_id("event-filters")
    with page.expect_request(failed_only):
        filters.locator("select[name=status]").select_option("failed")
    # The answer to "failed" is held back while the person types a search.
    filters.locator("input[name=q]").fill("order-41")
    assert len(held) == 1
    held[0].continue_()
    page.unroute(failed_only)

    expect(rows).to_have_count(1)
    expect(filters.locator("input[name=q]")).to_have_value("order-41")
    expect(filters.locator("select[name=status]")).to_have_value("failed")
