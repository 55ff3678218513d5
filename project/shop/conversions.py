"""The demo shop's conversion rule: an order becoming paid records a Purchase, once.

This is what a host site writes (README → "Conversion rules"); ``apps.py`` registers it. The
demo's payment webhooks mark orders paid (``management/commands/capi_demo.py``), and the app
records the Purchase after each commit, once per order however often it is saved.
"""

from __future__ import annotations

from typing import Any

from capi_destinations import rules
from capi_destinations.models import Destination
from project.shop.models import Order


def purchase_of(order: Order) -> dict[str, Any]:
    """The order as Meta's Purchase event (raw email: the app normalizes and hashes it)."""
    user_data = {
        "email": order.email,
        "external_id": order.customer_id,
        "client_ip_address": order.client_ip_address,
        "client_user_agent": order.client_user_agent,
    }
    return {
        "event_name": "Purchase",
        "event_time": int(order.paid_at.timestamp()) if order.paid_at else None,
        # The same id as the Pixel's eventID for this order: Meta keeps one of the two.
        "event_id": f"order-paid-{order.number}",
        "action_source": "website",
        "event_source_url": order.checkout_url,
        "user_data": {key: value for key, value in user_data.items() if value},
        "custom_data": {
            "value": float(order.total),
            "currency": order.currency,
            "contents": order.contents,
            "content_type": "product",
        },
    }


def pixels_of(order: Order) -> list[Destination]:
    """Where the order's Purchase goes: the pixel of the shop that took it."""
    return [order.destination] if order.destination else []


ORDER_PAID = rules.ConversionRule(
    name="demo-order-paid",
    model="demo_shop.Order",
    when=lambda order: order.status == Order.Status.PAID,
    event=purchase_of,
    destinations=pixels_of,
)
