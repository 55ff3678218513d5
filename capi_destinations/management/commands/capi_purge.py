"""``manage.py capi_purge``: delete delivered/expired events and attempts past retention."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from capi_destinations import retention
from capi_destinations.conf import app_settings


class Command(BaseCommand):
    help = (
        "Delete delivered and expired events, delivery attempts and health checks older than "
        "CAPI_DESTINATIONS['RETENTION_DAYS'] (failed events are kept)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        purged = retention.purge_old_records()
        counts = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in purged.items())
        self.stdout.write(
            f"Purged records older than {app_settings.RETENTION_DAYS} days: {counts}."
        )
