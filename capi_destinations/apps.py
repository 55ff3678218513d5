from __future__ import annotations

from django.apps import AppConfig


class CapiDestinationsConfig(AppConfig):
    name = "capi_destinations"
    verbose_name = "Conversions API destinations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported once the models are: both modules import them. `checks` registers the
        # system checks by being imported; `receivers` connects every signal receiver.
        from capi_destinations import (
            checks,  # noqa: F401
            receivers,
        )

        receivers.connect(self)
