"""A host site's own model, for conversion-rule tests: a shop's order."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    email = models.CharField(max_length=200)
    status = models.CharField(max_length=20, default="open")
    total = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    currency = models.CharField(max_length=3, default="EUR")

    class Meta:
        app_label = "shop"
