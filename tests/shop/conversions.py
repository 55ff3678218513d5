"""The shop's conversion rule, as a host site declares it: an order becoming paid is a Purchase.

One definition for the tests in this process and for the processes they start
(``tests/shop/pay_orders.py``), so both fire the very same rule.
"""

from __future__ import annotations

from typing import Any

from capi_destinations import rules
from capi_destinations.models import Destination
from tests.shop.models import Order

RULE_NAME = "order-paid"


def purchase_of(order: Order) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_id": f"order-{order.pk}",
        "action_source": "system_generated",
        "user_data": {"email": order.email},
        "custom_data": {"value": float(order.total), "currency": order.currency},
    }


def order_paid(destination_id: int) -> rules.ConversionRule:
    """The rule, recording to the destination with ``destination_id`` (read when it fires)."""
    return rules.ConversionRule(
        name=RULE_NAME,
        model="shop.Order",
        when=lambda order: order.status == "paid",
        event=purchase_of,
        destinations=lambda order: Destination.objects.filter(pk=destination_id),
    )
