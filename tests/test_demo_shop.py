"""The demo site's shop pages: issue 18 end to end in the demo (``project/shop/views.py``).

A visitor lands from an ad on ``/shop/?fbclid=…`` behind ``ClickIdMiddleware`` (as the demo
site installs it), checks out, the payment webhook pays the order, and the Purchase the
conversion rule records without a browser carries the click seen at checkout; after
**Forget this customer**, a later order's Purchase gains nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from capi_destinations.management.commands.capi_demo import ACME_WEB_SHOP
from capi_destinations.models import ClickIdSighting, Destination, Event, Tenant
from project.shop.models import Order
from tests.conftest import FROZEN_AT

# The conversion rule records the Purchase after the webhook's commit.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("project.urls")]

MIDDLEWARE = "capi_destinations.middleware.ClickIdMiddleware"
FBCLID = "IwAR-demo-ad-click"
BROWSER = {"HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64)"}


@pytest.fixture
def shop(
    settings: Any, clock: Any, make_tenant: Callable[..., Tenant], make_destination: Any
) -> Destination:
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, MIDDLEWARE]
    acme = make_tenant("Acme Shoes", ACME_WEB_SHOP.tenant_slug)
    return make_destination(tenant=acme, name="Acme web shop", pixel_id=ACME_WEB_SHOP.pixel_id)


def buy(visitor: Client, email: str) -> Order:
    response = visitor.post("/shop/checkout/", {"email": email})
    assert response.status_code == 302
    return Order.objects.get(number=response["Location"].rstrip("/").rsplit("/", 1)[1])


def test_the_demo_site_installs_the_middleware() -> None:
    settings_text = (Path(__file__).resolve().parents[1] / "project" / "settings.py").read_text()
    assert f'"{MIDDLEWARE}"' in settings_text


def test_an_ad_click_reaches_the_webhooks_purchase_and_forget_ends_it(shop: Destination) -> None:
    visitor = Client(**BROWSER)

    landing = visitor.get(f"/shop/?fbclid={FBCLID}")
    fbc = landing.cookies["_fbc"].value
    assert re.fullmatch(rf"fb\.0\.{int(FROZEN_AT.timestamp() * 1000)}\.{FBCLID}", fbc)
    assert f'data-testid="fbc">{fbc}<' in landing.content.decode()

    order = buy(visitor, "jane.doe@example.com")
    checkout = Event.objects.get(destination=shop, event_id=order.number)
    assert checkout.payload["user_data"]["fbc"] == fbc

    assert visitor.post(f"/shop/orders/{order.number}/payment-webhook/").status_code == 302
    purchase = Event.objects.get(destination=shop, event_id=f"order-paid-{order.number}")
    assert purchase.payload["user_data"]["fbc"] == fbc
    page = visitor.get(f"/shop/orders/{order.number}/").content.decode()
    assert f'data-testid="purchase-fbc">{fbc}<' in page
    assert 'data-testid="click-id-filled"' in page

    forgotten = visitor.post(f"/shop/orders/{order.number}/forget/", follow=True)
    assert "2 remembered click IDs of jane.doe@example.com erased" in forgotten.content.decode()
    assert not ClickIdSighting.objects.exists()

    # The same customer orders again by phone: the shop's staff enter it, no browser of hers.
    later = buy(Client(**BROWSER), "jane.doe@example.com")
    Client().post(f"/shop/orders/{later.number}/payment-webhook/")
    again = Event.objects.get(destination=shop, event_id=f"order-paid-{later.number}")
    assert "fbc" not in again.payload["user_data"]


def test_before_the_demo_ran_the_shop_says_so(db: None) -> None:
    response = Client().get("/shop/")
    assert response.status_code == 404
