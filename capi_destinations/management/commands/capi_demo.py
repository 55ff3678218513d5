from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

DEMO_ADMIN = ("admin", "capi-demo-admin")


class Command(BaseCommand):
    help = "Create the demo site's logins (idempotent). Never run this on a production site."

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        username, password = DEMO_ADMIN
        user, created = user_model.objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(password)
            user.save()
        self.stdout.write(f"Demo superuser: {username} / {password}")
