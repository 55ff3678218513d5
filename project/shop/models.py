"""The demo shop's orders: kept at checkout, marked paid by the payment provider's webhook."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        PAID = "paid", "Paid"

    # The checkout's event_id: the browser's Pixel had it, so the Purchase can reuse it.
    number = models.CharField(max_length=100, unique=True)
    # The pixel of the shop that took the order (an agency's site: each client's own).
    destination = models.ForeignKey(
        "capi_destinations.Destination", on_delete=models.SET_NULL, null=True, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    email = models.CharField(max_length=254, blank=True)
    customer_id = models.CharField(max_length=100, blank=True)
    # The checkout's request, kept with the order: the webhook that pays it comes from the
    # payment provider's servers, not from the customer's browser.
    client_ip_address = models.CharField(max_length=45, blank=True)
    client_user_agent = models.TextField(blank=True)
    checkout_url = models.URLField(max_length=500, blank=True)
    total = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    currency = models.CharField(max_length=3, default="USD")
    contents = models.JSONField(default=list, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Order {self.number} ({self.status})"
