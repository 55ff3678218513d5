"""``manage.py capi_demo`` on the demo site: the app's demo, with the shop's payment webhooks.

Django runs this command instead of the app's (``project.shop`` comes first in
``INSTALLED_APPS``). It changes one thing: a payment webhook marks the shop's ``Order`` paid, as
the site would, and the conversion rule (``project/shop/conversions.py``) records the Purchase.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from capi_destinations.management.commands import capi_demo
from capi_destinations.models import Destination
from project.shop.models import Order


class Command(capi_demo.Command):
    def confirm_payment(
        self, destination: Destination, checkout: dict[str, Any], *, paid_at: datetime
    ) -> None:
        # The shop kept the order at checkout; the provider's webhook marks it paid.
        order, _ = Order.objects.get_or_create(
            number=checkout["event_id"], defaults=order_fields(destination, checkout)
        )
        order.status = Order.Status.PAID
        order.paid_at = paid_at
        order.save()


def order_fields(destination: Destination, checkout: dict[str, Any]) -> dict[str, Any]:
    """What the shop stored with an order at checkout."""
    user_data = checkout["user_data"]
    cart = checkout.get("custom_data") or {}
    return {
        "destination": destination,
        "email": user_data.get("email", ""),
        "customer_id": user_data.get("external_id", ""),
        "client_ip_address": user_data.get("client_ip_address", ""),
        "client_user_agent": user_data.get("client_user_agent", ""),
        "checkout_url": checkout["event_source_url"].split("?")[0],
        "total": Decimal(str(cart.get("value", 0))),
        "currency": cart.get("currency", "USD"),
        "contents": cart.get("contents", []),
    }
