"""Kept by hand (``make migrations`` regenerates 0001 only): the event and queue tables'
fillfactor.

On PostgreSQL the event table's pages are filled to ``FILLFACTOR`` percent at insert, so the
delivery's UPDATE of an event (status, delivered_at, …) finds room on the row's own page and,
no index holding any column it writes, is a HOT update: no new index entries, about half the
cost (docs/BENCHMARKS.md, issue 21). The same for the delivery queue and the claim's UPDATE of
its entries (lease_token, lease_expires_at: unindexed). Other databases have no such
parameter: nothing to do.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

#: Percent of each page filled at insert; the rest is room for the delivery's HOT update.
#: A delivery UPDATEs each row once, before the old version can be pruned, so a page needs room
#: for a new copy of each row on it: 50 (measured 50/70/90: docs/BENCHMARKS.md, issue 21).
FILLFACTOR = 50

TABLE = "capi_destinations_event"

#: The same for the queue and the claim's UPDATE of its entries. A claim of one destination's
#: events leases every entry of a page in one transaction, and the leased version is larger
#: (48 bytes a row, 72 with lease_token and lease_expires_at): at 50, 70% of the claims of a
#: single busy destination were HOT; 40 leaves room for a leased copy of every row.
QUEUE_FILLFACTOR = 40

QUEUE_TABLE = "capi_destinations_queuedevent"


class RunSQLOnPostgreSQL(migrations.RunSQL):
    """``RunSQL`` on PostgreSQL; nothing on other databases."""

    def database_forwards(self, app_label: str, schema_editor: Any, *args: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, *args)

    def database_backwards(self, app_label: str, schema_editor: Any, *args: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, *args)


class Migration(migrations.Migration):
    dependencies = [("capi_destinations", "0001_initial")]

    operations = [
        RunSQLOnPostgreSQL(
            f"ALTER TABLE {TABLE} SET (fillfactor = {FILLFACTOR})",
            reverse_sql=f"ALTER TABLE {TABLE} RESET (fillfactor)",
            elidable=False,
        ),
        RunSQLOnPostgreSQL(
            f"ALTER TABLE {QUEUE_TABLE} SET (fillfactor = {QUEUE_FILLFACTOR})",
            reverse_sql=f"ALTER TABLE {QUEUE_TABLE} RESET (fillfactor)",
            elidable=False,
        ),
    ]
