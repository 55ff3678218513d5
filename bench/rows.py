"""The rows of the benchmark table (issue 8): which module measures each, on which databases."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One row of the table: what is measured, how, the goal, and where the code lives.

    ``target`` is ``module:function``; the function takes ``(mode, database)`` and returns a
    ``bench.harness.Result``.
    """

    name: str
    target: str
    databases: tuple[str, ...]
    what: str
    how: str
    goal: str

    @property
    def needs_django(self) -> bool:
        """Every row but the pure normalize one runs the app against a database."""
        return self.databases != ("-",)


ROWS: tuple[Row, ...] = (
    Row(
        "normalize",
        "bench.normalize_bench:run",
        ("-",),
        "normalize + hash user data",
        "100,000 varied user_data records through `normalize.py` and through the official SDK "
        "(`UserData.normalize()`), alternating rounds",
        "identical hashes; ≥ 3× the SDK's records/s",
    ),
    Row(
        "ingest",
        "bench.ingest_bench:run",
        ("postgresql", "sqlite"),
        "`track_many` ingestion",
        "100,000 events (plaintext PII, varied) into the database, batches of 1,000, against a "
        "naive loop of `track()` per event",
        "≥ 15,000 events/s on PostgreSQL; every event stored once",
    ),
    Row(
        "http",
        "bench.http_bench:run",
        ("postgresql",),
        "HTTP ingest",
        "the demo site under gunicorn (2 workers) on loopback; `wrk` keep-alive load of single "
        "events, then of 100-event batches, for a bounded time",
        "single ≥ 2,000 req/s with p99 < 50 ms; batches ≥ 15,000 events/s; zero errors; "
        "every event stored once",
    ),
    Row(
        "dispatch",
        "bench.dispatch_bench:run",
        ("postgresql",),
        "dispatch",
        "200,000 pending events over 50 destinations, one worker, the sandbox on loopback; "
        "against the official SDK's `EventRequest.execute()` once per event",
        "≥ 20,000 events/s per worker; ≥ 20× the naive loop; each event once in the sandbox",
    ),
    Row(
        "dispatch_faults",
        "bench.dispatch_bench:run_with_faults",
        ("postgresql",),
        "dispatch under faults",
        "the same with 5% HTTP 500s and a rate limit every 50 requests",
        "≥ 50% of the fault-free rate; nothing lost",
    ),
    Row(
        "health",
        "bench.health_bench:run",
        ("postgresql",),
        "health fan-out",
        "1,000 destinations, sandbox latency 100 ms, `check_all_destinations()`",
        "all checked in ≤ 10 s",
    ),
    Row(
        "memory",
        "bench.memory_bench:run",
        ("postgresql",),
        "memory",
        "dispatch 1,000,000 pending events in one process; peak RSS against 100,000",
        "peak RSS ≤ 200 MB, constant in the number of events",
    ),
    Row(
        "import",
        "bench.import_bench:run",
        ("postgresql", "sqlite"),
        "CSV import",
        "`imports.import_csv` streaming a 100,000-row file of store sales (plaintext PII; one "
        "row in 500 a bad date, one in 700 a column short) in a fresh process; against 10,000",
        "peak RSS ≤ 200 MB, constant in the number of rows; every row accounted for once",
    ),
    Row(
        "pages",
        "bench.pages_bench:run",
        ("postgresql",),
        "pages",
        "the overview with 500 destinations across 20 tenants, a superuser and an agency user",
        "≤ 15 SQL queries; server time ≤ 150 ms",
    ),
)

ROWS_BY_NAME = {row.name: row for row in ROWS}
