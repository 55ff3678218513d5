from __future__ import annotations

from django.apps import AppConfig


class CapiDestinationsConfig(AppConfig):
    name = "capi_destinations"
    verbose_name = "Conversions API destinations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from capi_destinations import (
            checks,  # noqa: F401  (registers the system checks)
            dispatch,
            signals,
            tasks,
        )

        dispatch.connect_receivers()
        # A new token or a flipped switch is health-checked at once.
        signals.destination_token_replaced.connect(
            tasks.check_health_after_change, dispatch_uid="capi_destinations.health_on_token"
        )
        signals.destination_enabled_changed.connect(
            tasks.check_health_after_change, dispatch_uid="capi_destinations.health_on_enabled"
        )
        signals.events_recorded.connect(
            tasks.dispatch_after_recording, dispatch_uid="capi_destinations.dispatch_on_record"
        )
        post_migrate.connect(
            tasks.ensure_schedules_after_migrate,
            sender=self,
            dispatch_uid="capi_destinations.ensure_schedules",
        )
