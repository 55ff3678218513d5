"""Redeliver, in a real browser, when Meta refused an event for its data (issue 16).

The button asks first: Meta will refuse the event again, with Meta's reason and what to fix;
only **Redeliver anyway** puts it back in the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from capi_destinations.models import Destination, Event, EventStatus, Role, Tenant
from capi_destinations.sandbox import Sandbox
from tests.e2e.test_pages_browser import log_in

pytestmark = pytest.mark.e2e

META_SAID = "event_source_url (http:// or https://) is required for website events."


@pytest.fixture
def editor(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    return make_user(tenant, Role.EDITOR, username="mia")


def test_redeliver_warns_then_redelivers_only_when_confirmed(
    page: Page,
    live_server: Any,
    editor: Any,
    destination: Destination,
    make_event: Any,
    use_sandbox: Sandbox,
) -> None:
    # Redelivery sends at once (django-q2's sync mode in tests): to the sandbox, never to Meta
    # (a call to graph.facebook.com from a machine without internet hung the whole run).
    use_sandbox.register_pixel(destination.pixel_id, "Acme", [destination.access_token])
    lead = make_event(
        destination=destination,
        event_name="Lead",
        status=EventStatus.FAILED,
        next_attempt_at=None,
        diagnostics=[
            {
                "code": "meta_rejected",
                "field": "event_source_url",
                "severity": "error",
                "message": META_SAID,
                "fix": "Check field names.",
                "meta_code": 100,
                "meta_subcode": None,
            }
        ],
    )
    log_in(page, live_server, editor)
    page.goto(f"{live_server.url}/capi/d/{destination.code}/")
    page.on("dialog", lambda dialog: dialog.accept())

    page.get_by_test_id("redeliver-failed").click()

    warning = page.get_by_test_id("redeliver-warning")
    expect(warning).to_contain_text("Meta will refuse this event again.")
    expect(warning.get_by_test_id("refused-again")).to_contain_text(META_SAID)
    assert Event.objects.get(pk=lead.pk).status == EventStatus.FAILED
    warning.get_by_test_id("redeliver-anyway").click()
    expect(page.get_by_test_id("redeliver-result")).to_have_text("1 event put back in the queue.")
    assert Event.objects.get(pk=lead.pk).status != EventStatus.FAILED
