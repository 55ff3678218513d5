"""A fix never shows a false red card, in a real browser (issue 16).

After **Enable** (sending was off for a day) or **Replace token** (the old token was revoked a
day ago), the check that runs at once used to store *Unhealthy: events that are due have been
waiting 23 h 48 min … no worker seems to be sending them* while the same page showed those events
delivered, and the card stayed red until the next scheduled check; and until that check ran, the
card went on showing the verdict from before the change.

Here tasks go to django-q2's database broker instead of running inside the request, and the test
is the worker: it runs the queued health check *before* the queued dispatch, the order that
made the false red card. The page records every state its health card takes (a MutationObserver
installed before any page script runs); the card must say "Checking…", then Healthy, and never
Unhealthy on the way; the deliveries beside it must follow with the verdict, not 30 s later.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils.module_loading import import_string
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signing import SignedPackage
from playwright.sync_api import Page, expect

from capi_destinations import clock, health, tasks
from capi_destinations.models import Destination, Event, EventStatus, Health, Role, Tenant
from capi_destinations.sandbox import Sandbox
from tests.conftest import make_token
from tests.e2e.test_pages_browser import PIXEL_ID, PIXEL_NAME, log_in

pytestmark = pytest.mark.e2e

# Every value the health card's data-health takes in this document, in order, from its first
# render on: the card is replaced (outerHTML) on each refresh, so the whole tree is watched.
RECORD_HEALTH_STATES = """
(() => {
  window.capiHealthSeen = [];
  const note = () => {
    const card = document.getElementById("health-card");
    const state = card && card.dataset.health;
    const seen = window.capiHealthSeen;
    if (state && seen[seen.length - 1] !== state) seen.push(state);
  };
  new MutationObserver(note).observe(document, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["data-health"],
  });
  document.addEventListener("DOMContentLoaded", note);
})();
"""

HELD_FOR = timedelta(hours=23, minutes=48)


@pytest.fixture
def editor(make_user: Callable[..., Any], tenant: Tenant) -> Any:
    return make_user(tenant, Role.EDITOR, username="mia")


def hold_events(destination: Destination, make_event: Callable[..., Event], count: int) -> None:
    """Events due since HELD_FOR ago, recorded while their destination could not send."""
    since = clock.now() - HELD_FOR
    for _ in range(count):
        make_event(destination=destination, event_time=since, next_attempt_at=since)


def states_seen(page: Page) -> list[str]:
    return list(page.evaluate("window.capiHealthSeen"))


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks wait in django-q2's database broker, as on a site with workers."""
    monkeypatch.setattr(Conf, "SYNC", False)


def run_queued_tasks_health_check_first() -> list[str]:
    """Be the worker, in the worst order: the health check before the dispatch."""
    queued = [(item, SignedPackage.loads(item.payload)) for item in OrmQ.objects.all()]
    queued.sort(key=lambda pair: pair[1]["func"] != tasks.HEALTH_CHECK_TASK)
    for item, task in queued:
        item.delete()
        import_string(task["func"])(*task["args"], **task["kwargs"])
    return [task["func"] for _, task in queued]


def see_the_card_refresh(page: Page) -> None:
    """Move the browser's clock past the card's quick poll (2 s while a check is pending)."""
    with page.expect_response(lambda response: "/health/" in response.url):
        page.clock.fast_forward("00:03")


def test_enable_after_a_day_off_turns_the_card_green_and_never_red(
    page: Page,
    live_server: Any,
    editor: Any,
    use_sandbox: Sandbox,
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Event],
    queued: None,
) -> None:
    token = make_token("never-red-enable")
    use_sandbox.register_pixel(PIXEL_ID, PIXEL_NAME, [token])
    destination = make_destination(name="Acme web shop", pixel_id=PIXEL_ID, access_token=token)
    health.check_destination(destination)
    Destination.objects.filter(pk=destination.pk).update(enabled=False)
    hold_events(destination, make_event, 3)
    health.check_destination(Destination.objects.get(pk=destination.pk))
    assert Destination.objects.get(pk=destination.pk).health == Health.UNHEALTHY  # sending off
    page.add_init_script(RECORD_HEALTH_STATES)
    page.clock.install()
    log_in(page, live_server, editor)
    page.goto(f"{live_server.url}/capi/d/{destination.code}/")
    expect(page.get_by_test_id("toggle-enabled")).to_have_text("Enable")
    expect(page.get_by_test_id("health-card")).to_have_attribute("data-health", Health.UNHEALTHY)

    page.get_by_test_id("toggle-enabled").click()

    health_card = page.get_by_test_id("health-card")
    expect(page.get_by_test_id("toggle-enabled")).to_have_text("Disable")
    expect(health_card).to_have_attribute("data-health", "checking")
    expect(health_card.get_by_test_id("health-badge")).to_have_text("Checking…")
    assert run_queued_tasks_health_check_first() == [
        tasks.HEALTH_CHECK_TASK,
        tasks.DISPATCH_TASK,
    ]
    delivery_card = page.get_by_test_id("delivery-card")
    expect(delivery_card.get_by_test_id("waiting")).to_have_text("3 events waiting")
    see_the_card_refresh(page)
    expect(health_card).to_have_attribute("data-health", Health.HEALTHY)
    # The deliveries beside it follow at once, not at their next 30-second refresh: never a
    # green card beside "3 events waiting" for events delivered that second.
    expect(delivery_card.get_by_test_id("waiting")).to_have_count(0)
    expect(delivery_card.get_by_test_id("attempt-row")).to_have_count(1)
    # Red while sending was off; from the click on, never again.
    assert states_seen(page) == [Health.UNHEALTHY, "checking", Health.HEALTHY]
    assert Destination.objects.get(pk=destination.pk).health == Health.HEALTHY
    assert set(destination.events.values_list("status", flat=True)) == {EventStatus.DELIVERED}


def test_replace_token_after_a_revoked_one_turns_the_card_green_and_never_red(
    page: Page,
    live_server: Any,
    editor: Any,
    use_sandbox: Sandbox,
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Event],
    queued: None,
) -> None:
    old_token, new_token = make_token("never-red-old"), make_token("never-red-new")
    use_sandbox.register_pixel(PIXEL_ID, PIXEL_NAME, [old_token, new_token])
    destination = make_destination(name="Acme web shop", pixel_id=PIXEL_ID, access_token=old_token)
    use_sandbox.revoke(old_token)
    health.check_destination(destination)
    hold_events(destination, make_event, 3)
    Destination.objects.filter(pk=destination.pk).update(
        blocked_reason="Meta refused the access token.", blocked_at=clock.now() - HELD_FOR
    )
    assert Destination.objects.get(pk=destination.pk).health == Health.UNHEALTHY
    page.add_init_script(RECORD_HEALTH_STATES)
    page.clock.install()
    log_in(page, live_server, editor)
    page.goto(f"{live_server.url}/capi/d/{destination.code}/token/")

    page.fill("input[name=access_token]", new_token)
    page.get_by_test_id("save-token").click()

    # The destination page the save leads to: from its first render on, never red.
    health_card = page.get_by_test_id("health-card")
    expect(health_card).to_have_attribute("data-health", "checking")
    assert tasks.HEALTH_CHECK_TASK in run_queued_tasks_health_check_first()
    delivery_card = page.get_by_test_id("delivery-card")
    expect(delivery_card.get_by_test_id("waiting")).to_have_text("3 events waiting")
    see_the_card_refresh(page)
    expect(health_card).to_have_attribute("data-health", Health.HEALTHY)
    expect(delivery_card.get_by_test_id("waiting")).to_have_count(0)
    assert page.url.rstrip("/").endswith(f"/d/{destination.code}")
    assert states_seen(page) == ["checking", Health.HEALTHY]
    assert set(destination.events.values_list("status", flat=True)) == {EventStatus.DELIVERED}
