"""``manage.py capi_healthcheck``: run the health checks now and print a table.

Exits with status 1 when any checked destination is unhealthy, so cron jobs and monitoring
can alert on it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from capi_destinations import health
from capi_destinations.models import Destination, Health, HealthCheck, Tenant

COLUMNS = ("Tenant", "Destination", "Pixel", "Status", "Reason")


class Command(BaseCommand):
    help = (
        "Check the health of every destination (or some) now and print the result; "
        "exit status 1 when any is unhealthy."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--destination",
            type=int,
            action="append",
            dest="destination_ids",
            metavar="ID",
            help="Check only this destination (its numeric id); repeat for several.",
        )
        parser.add_argument(
            "--tenant", metavar="SLUG", help="Check only the destinations of this tenant."
        )

    def handle(
        self, *args: Any, destination_ids: list[int] | None, tenant: str | None, **options: Any
    ) -> None:
        if tenant is not None and not Tenant.objects.filter(slug=tenant).exists():
            raise CommandError(f"No tenant with slug {tenant!r}.")
        if destination_ids:
            found = set(
                Destination.objects.filter(pk__in=destination_ids).values_list("pk", flat=True)
            )
            missing = sorted(set(destination_ids) - found)
            if missing:
                raise CommandError(f"No destination with id {', '.join(map(str, missing))}.")

        checks = health.check_all_destinations(destination_ids=destination_ids, tenant_slug=tenant)
        if not checks:
            self.stdout.write("No destinations to check.")
            return
        rows = self._rows(checks)
        self._print_table(rows)

        counts = Counter(check.status for check in checks)
        self.stdout.write(
            f"\n{len(checks)} checked: {counts[Health.HEALTHY]} healthy, "
            f"{counts[Health.UNHEALTHY]} unhealthy, {counts[Health.UNKNOWN]} unknown."
        )
        if counts[Health.UNHEALTHY]:
            raise CommandError(
                f"{counts[Health.UNHEALTHY]} of {len(checks)} checked destinations are unhealthy.",
                returncode=1,
            )

    def _rows(self, checks: list[HealthCheck]) -> list[tuple[str, ...]]:
        destinations = (
            Destination.objects.select_related("tenant")
            .defer("access_token", "app_secret")
            .in_bulk([check.destination_id for check in checks])
        )
        rows = []
        for check in checks:
            destination = destinations[check.destination_id]
            pixel = destination.pixel_id
            if destination.pixel_name:
                pixel += f" ({destination.pixel_name})"
            reasons = destination.health_reasons or []
            reason = reasons[0]["message"] if reasons else ""
            rows.append((destination.tenant.name, destination.name, pixel, check.status, reason))
        return sorted(rows)

    def _print_table(self, rows: list[tuple[str, ...]]) -> None:
        # The reason is the last column and is never cut: it is what the reader needs.
        widths = [max(len(row[index]) for row in (COLUMNS, *rows)) for index in range(4)]

        def line(row: tuple[str, ...], style: Any = None) -> str:
            cells = [row[index].ljust(widths[index]) for index in range(4)]
            if style is not None:
                cells[3] = style(cells[3])
            return "  ".join([*cells, row[4]]).rstrip()

        self.stdout.write(line(COLUMNS))
        for row in rows:
            style = {
                Health.HEALTHY: self.style.SUCCESS,
                Health.UNHEALTHY: self.style.ERROR,
            }.get(row[3], self.style.WARNING)
            self.stdout.write(line(row, style))
