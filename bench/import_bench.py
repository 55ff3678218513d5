"""CSV import: 100,000 store sales streamed through ``imports.import_csv`` in bounded memory.

The file (plaintext PII, varied; one row in 500 with a date that is none, one in 700 a column
short) is written beforehand, off the clock. Two imports, each in a fresh process (peak RSS is
per process): a small file (10% of the rows) and the full one. The importing process's peak
must stay under 200 MB and must not grow with the file. Every row must be accounted for once
(stored + duplicates + rejected + suppressed = rows read = rows written), the database must
hold each good row's event once, and importing the small file again must store nothing.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.harness import (
    Result,
    analyze,
    current_rss_mb,
    empty_tables,
    peak_rss_mb,
    rate_text,
    run_in_fresh_process,
    sized,
)

GOAL_PEAK_MB = 200.0
CONSTANT_TOLERANCE_MB = 15.0
BAD_DATE_EVERY = 500
SHORT_ROW_EVERY = 700
MAPPING = {
    "event_time": "Date",
    "order_id": "Receipt",
    "value": "Total",
    "currency": "Currency",
    "email": "Email",
    "phone": "Phone",
    "first_name": "First name",
    "last_name": "Last name",
    "city": "City",
    "zip": "Zip",
    "country": "Country",
}
_FIRST = ("Jane", "Émile", "Søren", "Ana María", "Zoë", "Li", "Olu", "Ines")
_LAST = ("Doe", "Lefèvre", "Kierkegaard", "García", "Ng", "Okafor", "Müller", "Rossi")
_CITY = ("Paris", "Lyon", "Berlin", "Madrid", "London", "Milan", "Lagos", "Oslo")
_COUNTRY = ("FR", "FR", "DE", "ES", "GB", "IT", "NG", "NO")


def write_file(path: Path, rows: int, *, now: datetime, prefix: str) -> dict[str, int]:
    """Write ``rows`` sales to ``path``, one line at a time; returns how many of each kind."""
    bad_dates = short_rows = 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("Date,Receipt,Total,Currency,Email,Phone,First name,Last name,City,Zip,Country\n")
        for number in range(rows):
            pick = number % len(_FIRST)
            when = (now - timedelta(days=1 + number % 50, minutes=number % 1440)).isoformat()
            if number % BAD_DATE_EVERY == 7:
                when, bad_dates = "someday", bad_dates + 1
            cells = [
                when,
                f"{prefix}-{number}",
                f"{10 + number % 190}.{number % 100:02d}",
                "EUR",
                f" Customer.{number}@Example.COM ",
                f"+33 6 {number % 100:02d} {number // 100 % 100:02d} 00 {number % 89:02d}",
                _FIRST[pick],
                _LAST[pick],
                _CITY[pick],
                f"{75000 + number % 999}",
                _COUNTRY[pick],
            ]
            if number % SHORT_ROW_EVERY == 3:
                cells, short_rows = cells[:-1], short_rows + 1
            out.write(",".join(f'"{cell}"' if "," in cell else cell for cell in cells) + "\n")
    return {"rows": rows, "bad_dates": bad_dates, "short_rows": short_rows}


def import_in_this_process(path: str, destination_id: int) -> dict[str, Any]:
    """Set up Django, import the file, report counts, CPU time and memory (the child)."""
    from bench.harness import setup_django

    setup_django()
    from capi_destinations import imports
    from capi_destinations.models import Destination

    destination = Destination.objects.select_related("tenant").get(pk=destination_id)
    ready_mb = current_rss_mb()
    before = resource.getrusage(resource.RUSAGE_SELF)
    summary = imports.import_csv(destination, path, MAPPING)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "ready_mb": ready_mb,
        "peak_mb": peak_rss_mb(),
        "cpu_seconds": cpu,
        "counts": summary.counts(),
        "rejected_kept": len(summary.rejected_rows),
    }


def _import_child(database: str, path: Path, destination_id: int) -> dict[str, Any]:
    return run_in_fresh_process("bench.import_bench", database, str(path), str(destination_id))


def run(mode: str, database: str) -> Result:
    """Import a small and a large file in fresh processes; compare peaks; account for rows."""
    from bench.fixtures import create_destinations
    from capi_destinations import clock
    from capi_destinations.models import Event

    large = sized(mode, full=100_000, quick=20_000, smoke=1_000)
    small = large // 10
    result = Result(row="import", title="CSV import", database=database, mode=mode)
    runs: dict[int, dict[str, Any]] = {}
    empty_tables()
    with tempfile.TemporaryDirectory() as folder:
        for count in (small, large):
            (destination,) = create_destinations(1, prefix=f"import{count}")
            path = Path(folder) / f"sales-{count}.csv"
            written = write_file(path, count, now=clock.now(), prefix=f"R{count}")
            runs[count] = child = _import_child(database, path, destination.pk)
            counts = child["counts"]
            bad = written["bad_dates"] + written["short_rows"]
            accounted = sum(
                counts[key] for key in ("stored", "duplicates", "rejected", "suppressed")
            )
            stored_rows = Event.objects.filter(destination=destination).count()
            result.check(
                f"{count:,} rows: every row accounted for once",
                counts["rows_read"] == count == accounted,
                f"{count:,} written, {counts['rows_read']:,} read, {accounted:,} accounted",
            )
            result.check(
                f"{count:,} rows: each good row stored once, each bad one rejected",
                counts["stored"] == count - bad == stored_rows and counts["rejected"] == bad,
                f"{counts['stored']:,} stored ({stored_rows:,} rows), {counts['rejected']:,} "
                f"rejected of {bad:,} bad",
            )
            if count == small:
                analyze()
                again = _import_child(database, path, destination.pk)["counts"]
                result.check(
                    "importing the same file again stores nothing",
                    again["stored"] == 0 and again["duplicates"] == count - bad,
                    f"{again['stored']} stored, {again['duplicates']:,} duplicates",
                )
    small_peak, large_peak = runs[small]["peak_mb"], runs[large]["peak_mb"]
    growth = large_peak - small_peak
    rate = large / runs[large]["cpu_seconds"] if runs[large]["cpu_seconds"] else 0.0
    result.summary = (
        f"peak RSS **{large_peak:.0f} MB** importing {large:,} rows ({small_peak:.0f} MB for "
        f"{small:,}; {runs[large]['ready_mb']:.0f} MB after start-up); "
        f"{rate_text(rate, 'rows')} per CPU second"
    )
    result.details = {"runs": {str(count): values for count, values in runs.items()}}
    result.goal(
        f"peak RSS, {large:,} rows",
        f"≤ {GOAL_PEAK_MB:.0f} MB",
        f"{large_peak:.0f} MB",
        large_peak <= GOAL_PEAK_MB,
    )
    result.goal(
        "constant in the number of rows",
        f"{small:,} → {large:,} rows: < {CONSTANT_TOLERANCE_MB:.0f} MB more",
        f"{growth:+.0f} MB",
        growth < CONSTANT_TOLERANCE_MB,
    )
    return result


if __name__ == "__main__":
    sys.stdout.write(json.dumps(import_in_this_process(sys.argv[1], int(sys.argv[2]))) + "\n")
