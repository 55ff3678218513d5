"""Importing store sales from a CSV, in a real browser (issue 20).

From the destination page: upload the file, the mapping pre-filled from the column names,
**Preview** with the diagnostics of the first rows, **Import**, then the counters and the
rejected rows; and the progress bar of a running import refreshing itself until it is done.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from capi_destinations.models import Destination, Event, ImportRun, ImportStatus, Role, Tenant
from capi_destinations.sandbox import Sandbox
from tests.e2e.test_pages_browser import log_in
from tests.test_imports import BAD_THEN_GOOD, GOOD, csv_bytes

pytestmark = pytest.mark.e2e


@pytest.fixture
def editor(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    return make_user(tenant, Role.EDITOR, username="mia")


@pytest.fixture
def uploads(settings: Any, tmp_path: Path, use_sandbox: Sandbox) -> Path:
    # The import runs at once (django-q2's sync mode) and its events are sent to the sandbox.
    settings.CAPI_DESTINATIONS = {
        **settings.CAPI_DESTINATIONS,
        "IMPORT_DIRECTORY": str(tmp_path / "uploads"),
    }
    return tmp_path


def test_upload_map_preview_and_import(
    page: Page,
    live_server: Any,
    editor: Any,
    destination: Destination,
    uploads: Path,
    clock: Any,
) -> None:
    sales = uploads / "store-sales.csv"
    sales.write_bytes(csv_bytes(GOOD.encode() + BAD_THEN_GOOD))
    log_in(page, live_server, editor)
    page.goto(f"{live_server.url}/capi/d/{destination.code}/")

    page.get_by_test_id("import-conversions").click()
    page.get_by_test_id("import-file").set_input_files(str(sales))
    page.get_by_test_id("import-upload").click()

    # Mapping, pre-filled from the column names.
    expect(page.get_by_test_id("map-event_time")).to_have_value("Date")
    expect(page.get_by_test_id("map-email")).to_have_value("Email")
    expect(page.get_by_test_id("map-order_id")).to_have_value("Order")
    page.get_by_test_id("map-value").select_option("Total")

    page.get_by_test_id("import-preview").click()
    rows = page.get_by_test_id("import-preview-row")
    expect(rows).to_have_count(5)
    expect(rows.nth(2)).to_contain_text("is not a date")
    expect(rows.nth(0)).to_contain_text("Email, Phone, First name, Country")
    expect(page.get_by_test_id("import-preview-result")).not_to_contain_text("jane@example.com")
    assert not Event.objects.exists()

    page.get_by_test_id("import-start").click()
    progress = page.get_by_test_id("import-progress")
    expect(progress).to_have_attribute("data-status", "done")
    expect(page.get_by_test_id("import-rows-read")).to_have_text("8")
    expect(page.get_by_test_id("import-stored")).to_have_text("3")
    expect(page.get_by_test_id("import-rejected")).to_have_text("5")
    expect(page.get_by_test_id("import-rejected-row")).to_have_count(5)
    expect(page.get_by_test_id("import-rejected-row").first).to_contain_text("not a date")
    with page.expect_download() as download:
        page.get_by_test_id("import-rejected-csv").click()
    assert download.value.suggested_filename.startswith("rejected-rows-")
    assert Event.objects.filter(destination=destination).count() == 4  # one stored too old


def test_the_progress_bar_refreshes_until_the_import_is_done(
    page: Page, live_server: Any, editor: Any, destination: Destination, clock: Any
) -> None:
    run = ImportRun.objects.create(
        destination=destination,
        created_by=editor,
        file_name="crm-leads.csv",
        file_size=1000,
        bytes_read=400,
        rows_read=40,
        stored=40,
        status=ImportStatus.RUNNING,
    )
    log_in(page, live_server, editor)
    page.goto(f"{live_server.url}/capi/d/{destination.code}/import/{run.code}/")

    expect(page.get_by_test_id("import-progress-bar")).to_have_attribute("value", "40")
    expect(page.get_by_test_id("import-stored")).to_have_text("40")

    # The background task moves on, then finishes: the page follows without a reload.
    ImportRun.objects.filter(pk=run.pk).update(bytes_read=800, rows_read=80, stored=80)
    expect(page.get_by_test_id("import-progress-bar")).to_have_attribute("value", "80")
    run.refresh_from_db()
    run.finish(
        {"rows_read": 100, "stored": 99, "duplicates": 0, "rejected": 1, "suppressed": 0},
        [{"line": 42, "reason": "No event time.", "columns": {"order_id": "L-41"}}],
    )

    expect(page.get_by_test_id("import-progress")).to_have_attribute("data-status", "done")
    expect(page.get_by_test_id("import-progress-bar")).to_have_count(0)
    expect(page.get_by_test_id("import-rejected-row")).to_contain_text("No event time.")
    expect(page.get_by_test_id("import-rejected-row")).to_contain_text("L-41")
