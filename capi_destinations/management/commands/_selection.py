"""The ``--destination ID`` option shared by the commands that act on some destinations."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from capi_destinations.models import Destination


def add_destination_option(parser: CommandParser, verb: str) -> None:
    """``--destination ID``, repeatable, collected in ``destination_ids``."""
    parser.add_argument(
        "--destination",
        type=int,
        action="append",
        dest="destination_ids",
        metavar="ID",
        help=f"{verb} only this destination (its numeric id); repeat for several.",
    )


def require_destinations(destination_ids: list[int] | None) -> None:
    """Refuse ids that name no destination: a typo must not look like "nothing to do"."""
    if not destination_ids:
        return
    found = set(Destination.objects.filter(pk__in=destination_ids).values_list("pk", flat=True))
    missing = sorted(set(destination_ids) - found)
    if missing:
        raise CommandError(f"No destination with id {', '.join(map(str, missing))}.")
