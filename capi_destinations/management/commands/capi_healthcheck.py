"""``manage.py capi_healthcheck``: run the health checks now and print a table.

Below the table it prints the Graph API versions in use (the ``GRAPH_API_VERSION`` setting
and any destination's own) with the date Meta stops serving each, warning 90 days ahead.
Exits with status 1 when any checked destination is unhealthy, so cron jobs and monitoring
can alert on it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from capi_destinations import clock, graph_versions, health
from capi_destinations.conf import app_settings
from capi_destinations.management.commands._selection import (
    add_destination_option,
    require_destinations,
)
from capi_destinations.models import Destination, Health, HealthCheck, Tenant

COLUMNS = ("Tenant", "Destination", "Pixel", "Status", "Reason")


class Command(BaseCommand):
    help = (
        "Check the health of every destination (or some) now and print the result; "
        "exit status 1 when any is unhealthy."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_destination_option(parser, "Check")
        parser.add_argument(
            "--tenant", metavar="SLUG", help="Check only the destinations of this tenant."
        )

    def handle(
        self, *args: Any, destination_ids: list[int] | None, tenant: str | None, **options: Any
    ) -> None:
        if tenant is not None and not Tenant.objects.filter(slug=tenant).exists():
            raise CommandError(f"No tenant with slug {tenant!r}.")
        require_destinations(destination_ids)

        checks = health.check_all_destinations(destination_ids=destination_ids, tenant_slug=tenant)
        if not checks:
            self.stdout.write("No destinations to check.")
            return
        rows = self._rows(checks)
        self._print_table(rows)
        self._print_versions(checks)

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

    def _print_versions(self, checks: list[HealthCheck]) -> None:
        default = str(app_settings.GRAPH_API_VERSION)
        users: dict[str, list[str]] = defaultdict(list)
        for destination in Destination.objects.filter(
            pk__in=[check.destination_id for check in checks]
        ).only("name", "api_version"):
            users[destination.api_version or default].append(destination.name)
        users.setdefault(default, [])
        today = clock.now().date()
        self.stdout.write("\nGraph API versions in use:")
        for version in sorted(users, key=lambda name: (name != default, name)):
            status = graph_versions.version_status(version, today)
            names = sorted(users[version])
            who = f"{len(names)} destination{'s' if len(names) != 1 else ''}"
            if version == default:
                who = f"GRAPH_API_VERSION setting, {who}"
            elif len(names) <= 3:
                who += ": " + ", ".join(names)
            line = f"  {version} ({who}): {status.message}"
            if status.is_error:
                self.stdout.write(self.style.ERROR(f"{line} {status.fix}"))
            elif status.is_warning:
                self.stdout.write(self.style.WARNING(f"{line} {status.fix}"))
            else:
                self.stdout.write(line)

    def _print_table(self, rows: list[tuple[str, ...]]) -> None:
        # The reason is the last column and is never cut: it is what the reader needs.
        widths = [max(len(row[index]) for row in (COLUMNS, *rows)) for index in range(4)]

        def line(row: tuple[str, ...], style: Any = None) -> str:
            cells = [row[index].ljust(widths[index]) for index in range(4)]
            if style is not None:
                cells[3] = style(cells[3])
            return "  ".join([*cells, row[4]]).rstrip()

        self.stdout.write(line(COLUMNS))
        styles: dict[str, Any] = {
            Health.HEALTHY: self.style.SUCCESS,
            Health.UNHEALTHY: self.style.ERROR,
        }
        for row in rows:
            style = styles.get(row[3], self.style.WARNING)
            self.stdout.write(line(row, style))
