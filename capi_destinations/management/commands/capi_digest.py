"""``manage.py capi_digest``: send the daily digest emails now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from capi_destinations import digest


class Command(BaseCommand):
    help = (
        "Send the daily digest now: each tenant's to its admins (unless they chose otherwise) "
        "and the combined digest to people who chose it."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        sent = digest.send_daily_digests()
        self.stdout.write(f"Sent {sent} digest email{'' if sent == 1 else 's'}.")
