"""The demo site's shop: orders, and the conversion rule that turns a paid one into a Purchase."""

from __future__ import annotations

from django.apps import AppConfig


class DemoShopConfig(AppConfig):
    name = "project.shop"
    label = "demo_shop"
    verbose_name = "Demo shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Where a host site declares its conversion rules: once, when the apps are ready.
        from capi_destinations import rules
        from project.shop.conversions import ORDER_PAID

        rules.register(ORDER_PAID)
