"""``manage.py capi_match_quality``: fetch Meta's own Event Match Quality now.

The hourly task does the same (``tasks.fetch_match_quality``). A token Meta does not let read
the scores is stored as "not available with this token"; it never changes a destination's
health.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from capi_destinations import match_quality
from capi_destinations.management.commands._selection import (
    add_destination_option,
    require_destinations,
)


class Command(BaseCommand):
    help = (
        "Fetch Meta's Event Match Quality (Dataset Quality API) of every enabled destination "
        "(or some) and store it for the destination pages."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_destination_option(parser, "Fetch")

    def handle(self, *args: Any, destination_ids: list[int] | None, **options: Any) -> None:
        require_destinations(destination_ids)
        counts = match_quality.fetch_all_match_quality(destination_ids=destination_ids)
        self.stdout.write(
            f"Meta's match quality: {counts['available']} fetched, "
            f"{counts['not_available']} not available with their token, "
            f"{counts['kept']} could not be fetched (last report kept)."
        )
