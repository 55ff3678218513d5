from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from capi_destinations.models import Destination
from capi_destinations.tokens import rotate_encryption_keys


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored token with the first key of FERNET_KEYS, so older keys can then "
        "be removed from the list."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            count = rotate_encryption_keys(Destination.objects.select_for_update().order_by("pk"))
        message = f"Re-encrypted the secrets of {count} destination(s)."
        self.stdout.write(self.style.SUCCESS(message))
