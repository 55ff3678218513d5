"""``manage.py capi_import_csv DESTINATION FILE --map field=column ...``: store and CRM sales.

The same import as the destination page's, at once: :func:`capi_destinations.imports.import_csv`
does the work, and the run is kept so the page lists it and remembers its mapping.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from capi_destinations import imports
from capi_destinations.models import Destination


class Command(BaseCommand):
    help = (
        "Import store or CRM conversions from a CSV file into a destination (its UUID code or "
        "id). Map each field to a column with --map field=column (event_time is required; "
        f"fields: {', '.join(imports.FIELDS)}). Re-importing a file stores nothing twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("destination", help="The destination's code (UUID) or id.")
        parser.add_argument("file", help="The CSV file (UTF-8, first line the column names).")
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="FIELD=COLUMN",
            help="Which column holds a field, e.g. --map event_time=Date --map email=E-mail.",
        )
        parser.add_argument("--event-name", default=imports.DEFAULT_EVENT_NAME)
        parser.add_argument("--action-source", default=imports.DEFAULT_ACTION_SOURCE)
        parser.add_argument(
            "--date-format", default="", help="strptime format of the times, e.g. %%d/%%m/%%Y."
        )
        parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        destination = _destination(options["destination"])
        mapping = _mapping(options["map"])
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        try:
            _, summary = imports.record_run(
                destination,
                path,
                mapping,
                file_name=path.name,
                event_name=options["event_name"],
                action_source=options["action_source"],
                date_format=options["date_format"],
            )
        except imports.ImportRefused as refused:
            raise CommandError(str(refused)) from None
        if options["json"]:
            rows = [row.to_dict() for row in summary.rejected_rows]
            self.stdout.write(json.dumps({**summary.counts(), "rejected_rows": rows}))
            return
        self.stdout.write(
            "Rows read: {rows_read}; stored: {stored}; duplicates: {duplicates}; "
            "rejected: {rejected}; suppressed: {suppressed}.".format(**summary.counts())
        )
        for row in summary.rejected_rows:
            self.stdout.write(f"  line {row.line}: {row.reason}")


def _destination(given: str) -> Destination:
    try:
        found = Destination.objects.select_related("tenant")
        if given.isdigit():
            return found.get(pk=int(given))
        return found.get(code=uuid.UUID(given))
    except (ValueError, Destination.DoesNotExist):
        raise CommandError(f"No destination {given!r} (give its code or id).") from None


def _mapping(pairs: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        field, separator, column = pair.partition("=")
        if not separator or not field.strip() or not column.strip():
            raise CommandError(f"--map {pair!r}: write it as field=column, e.g. email=E-mail.")
        mapping[field.strip()] = column.strip()
    return mapping
