"""Kept by hand (``make migrations`` regenerates 0001 only): the event table's fillfactor.

On PostgreSQL the event table's pages are filled to FILLFACTOR percent at insert, so the
delivery's UPDATE of an event (status, delivered_at, …) finds room on the row's own page and,
no index holding any column it writes, is a HOT update: no new index entries, a fraction of the
cost (docs/BENCHMARKS.md, issue 21). Other databases have no such parameter: nothing to do.
"""

from typing import Any

from django.db import migrations

#: Percent of each page filled at insert; the rest is room for HOT updates (measured 50-90).
FILLFACTOR = 70


def _alter(fillfactor: int | None) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        table = schema_editor.quote_name(
            apps.get_model("capi_destinations", "Event")._meta.db_table
        )
        if fillfactor is None:
            schema_editor.execute(f"ALTER TABLE {table} RESET (fillfactor)")
        else:
            schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {int(fillfactor)})")

    return run


class Migration(migrations.Migration):
    dependencies = [("capi_destinations", "0001_initial")]

    operations = [
        migrations.RunPython(_alter(FILLFACTOR), _alter(None), elidable=False),
    ]
