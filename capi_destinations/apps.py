from __future__ import annotations

from django.apps import AppConfig


class CapiDestinationsConfig(AppConfig):
    name = "capi_destinations"
    verbose_name = "Conversions API destinations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from capi_destinations import checks  # noqa: F401  (registers the system checks)
