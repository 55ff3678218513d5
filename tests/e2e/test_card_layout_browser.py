"""The overview's cards in a real browser: labels never broken inside a word, values inside.

Issue 16's README screenshot showed "Last deliver|y" and "Last 24|h" on a card whose value was
long ("48 events waiting while sending is off", kept on one line): the page lets long text break
anywhere (an address, a token hint), and the card's labels gave way to the value. A label kept
whole must not push the value out of the card instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from capi_destinations.models import Destination, Role, Tenant
from tests.e2e.test_pages_browser import log_in

pytestmark = pytest.mark.e2e

# Each label (<dt>) of the cards whose text takes more than one line, with its lines.
BROKEN_LABELS = """
() => [...document.querySelectorAll('[data-testid="destination-card"] dt')].flatMap(dt => {
  const range = document.createRange();
  range.selectNodeContents(dt);
  const lines = new Set([...range.getClientRects()].map(rect => Math.round(rect.top)));
  return lines.size > 1 ? [dt.textContent] : [];
})
"""


# Each element of a card that reaches past the card's right edge, with the card's code.
STICKING_OUT = """
() => [...document.querySelectorAll('[data-testid="destination-card"]')].flatMap(card => {
  const edge = card.getBoundingClientRect().right;
  return [...card.querySelectorAll("*")]
    .filter(element => element.getBoundingClientRect().right > edge + 1)
    .map(element => `${card.dataset.code}: ${element.textContent.trim().slice(0, 40)}`);
})
"""


@pytest.mark.parametrize("width", [1280, 375])
def test_the_cards_labels_stay_on_one_line_and_their_values_inside_the_card(
    page: Page,
    live_server: Any,
    make_user: Callable[..., Any],
    tenant: Tenant,
    make_destination: Callable[..., Destination],
    make_event: Callable[..., Any],
    width: int,
) -> None:
    viewer = make_user(tenant, Role.VIEWER, username="vera")
    held = make_destination(name="Globex wholesale leads", enabled=False)
    for _ in range(48):
        make_event(destination=held)
    make_destination(name="Acme web shop")
    make_destination(name="Acme mobile checkout")
    page.set_viewport_size({"width": width, "height": 900})
    log_in(page, live_server, viewer)

    card = page.locator(f'[data-testid="destination-card"][data-code="{held.code}"]')
    expect(card.get_by_test_id("waiting")).to_have_text("48 events waiting while sending is off")
    assert page.evaluate(BROKEN_LABELS) == []
    assert page.evaluate(STICKING_OUT) == []
