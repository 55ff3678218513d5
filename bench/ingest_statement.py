"""What PostgreSQL spends on the statements ``track_many`` really sends, part by part.

    python -m bench.ingest_statement                 # 40,000 events to fill the tables, 30 runs
    python -m bench.ingest_statement --events 4000 --runs 5

``python -m bench``'s ingest row reports the CPU of our process and of its PostgreSQL backend per
event; this splits the backend's share. The tables are filled the way the ingest row fills them
(``track_many`` over ``bench/data.py``'s events, pieces of 250), and the statements of one more
piece are captured as the app sends them (SQL and parameters, nothing rebuilt by hand). The
piece's rows are then deleted, and each statement is run again, inside a transaction rolled back
to a savepoint each time, under ``EXPLAIN (ANALYZE, TIMING OFF)``: PostgreSQL's own execution time,
with the foreign keys checked inside the statement (``SET CONSTRAINTS ALL IMMEDIATE``: the app's
are deferred to the commit, which is part of the cost). The INSERT is also run without each of the
parts it carries as data-modifying CTEs, so that each part's cost is the difference:

- parse: ``jsonb_to_recordset`` of the piece's records, nothing inserted;
- events: the event rows alone (``INSERT … ON CONFLICT DO NOTHING RETURNING``);
- + queue: and their entries in the delivery queue;
- + click IDs: and the click memory's UPSERT of the piece's sightings;
- the app's statement: and the hourly counters.

The recall (the click memory's SELECT before the INSERT) is measured the same way. Times are
µs per event of the piece: median, lowest and highest over ``--runs`` runs, variants alternating.

The database (``BENCH_POSTGRES_URL``, default ``postgres://postgres@127.0.0.1:5432/bench``) is
dropped, created and migrated at the start, as ``python -m bench`` does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from bench.harness import bench_environment, database_url, fresh_postgres_database

PIECE = 250
_SIGHTINGS = "capi_destinations_clickidsighting"
_SNAPSHOT = "bench_sightings_before_the_piece"


def _prepare_database() -> str:
    url = os.environ.get("BENCH_POSTGRES_URL") or database_url("postgresql")
    fresh_postgres_database(url, setting="BENCH_POSTGRES_URL")
    os.environ.update(bench_environment("postgresql", DATABASE_URL=url))
    return url


def _captured_piece(events: int) -> tuple[list[tuple[str, list[Any]]], list[int]]:
    """Fill the tables as the ingest row does; the statements of one more piece, and its rows."""
    import django

    django.setup()
    from bench.data import raw_events
    from bench.fixtures import create_destinations
    from capi_destinations import bound_sql
    from capi_destinations.ingest import track_many

    (destination,) = create_destinations(1, prefix="statement")
    now = time.time()
    filling = list(raw_events(events, seed=1, prefix="fill", now=now))
    for start in range(0, len(filling), 1000):
        track_many(destination, filling[start : start + 1000])

    captured: list[tuple[str, list[Any]]] = []
    fetch_all, fetch_all_started = bound_sql.fetch_all, bound_sql.fetch_all_started

    def capturing(connection: Any, sql: str, params: Any, **options: Any) -> Any:
        captured.append((sql, list(params)))
        return fetch_all(connection, sql, params, **options)

    def capturing_started(connection: Any, sql: str, params: Any, **options: Any) -> Any:
        captured.append((sql, list(params)))
        return fetch_all_started(connection, sql, params, **options)

    # The click memory as it was before the piece, to put back (``_forget_rows``): run again
    # on sightings the piece already wrote, its UPSERT would find nothing to change.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {_SNAPSHOT} AS TABLE {_SIGHTINGS}")

    # Observation only: the app's own functions run, their SQL and parameters are kept.
    bound_sql.fetch_all, bound_sql.fetch_all_started = capturing, capturing_started
    try:
        piece = list(raw_events(PIECE, seed=2, prefix="piece", now=now))
        results = track_many(destination, piece)
    finally:
        bound_sql.fetch_all, bound_sql.fetch_all_started = fetch_all, fetch_all_started
    return captured, [result.event.pk for result in results]


def _forget_rows(url: str, ids: list[int]) -> None:
    """Delete the piece's rows (queue entries first) and put the click memory back as it was
    before the piece, so that running its statements again does what they did."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "DELETE FROM capi_destinations_queuedevent WHERE event_id = ANY(%s)", [ids]
        )
        connection.execute("DELETE FROM capi_destinations_event WHERE id = ANY(%s)", [ids])
        # Constant table names only.
        connection.execute(f"DELETE FROM {_SIGHTINGS}")  # noqa: S608
        connection.execute(f"INSERT INTO {_SIGHTINGS} SELECT * FROM {_SNAPSHOT}")  # noqa: S608
        connection.execute(f"DROP TABLE {_SNAPSHOT}")
        connection.execute("VACUUM ANALYZE")


def _variants(captured: list[tuple[str, list[Any]]]) -> dict[str, tuple[str, list[Any]]]:
    insert_sql, insert_params = next(item for item in captured if "WITH inserted AS" in item[0])
    recall_sql, recall_params = next(item for item in captured if "LATERAL" in item[0])
    head, _, rest = insert_sql.partition("), queued AS (")
    queued, _, rest = rest.partition("), along AS (")
    along, _, rest = rest.partition("), counted AS (")
    counted, _, _ = rest.rpartition(") SELECT id, event_name, event_id FROM inserted")
    if not (queued and along and counted):
        sys.exit("the captured INSERT has not the expected parts (queued, along, counted)")
    final = " SELECT id, event_name, event_id FROM inserted"
    records, pending = insert_params[0], insert_params[1]
    along_params = insert_params[2:-4]
    types = head.partition(" AS chunk(")[2].partition(") ON CONFLICT")[0]
    return {
        "parse": (
            # Only the app's own column types are formatted in.
            f"SELECT count(*) FROM jsonb_to_recordset(%s::jsonb) AS chunk({types})",  # noqa: S608
            [records],
        ),
        "events": (f"{head}){final}", [records]),
        "+ queue": (f"{head}), queued AS ({queued}){final}", [records, pending]),
        "+ click IDs": (
            f"{head}), queued AS ({queued}), along AS ({along}){final}",
            [records, pending, *along_params],
        ),
        "the app's INSERT": (insert_sql, insert_params),
        "recall": (recall_sql, recall_params),
    }


def _measure(
    url: str, variants: dict[str, tuple[str, list[Any]]], runs: int
) -> dict[str, list[float]]:
    import psycopg

    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    with psycopg.connect(url) as connection:
        connection.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for run in range(runs):
            order = names if run % 2 == 0 else list(reversed(names))
            for name in order:
                sql, params = variants[name]
                connection.execute("SAVEPOINT measured")
                (document,) = connection.execute(
                    f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {sql}", params
                ).fetchone()
                connection.execute("ROLLBACK TO SAVEPOINT measured")
                times[name].append(document[0]["Execution Time"] * 1000 / PIECE)
        connection.rollback()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40_000, help="events filling the tables")
    parser.add_argument("--runs", type=int, default=30)
    arguments = parser.parse_args()
    url = _prepare_database()
    captured, ids = _captured_piece(arguments.events)
    _forget_rows(url, ids)
    times = _measure(url, _variants(captured), arguments.runs)
    sightings = _variants(captured)["+ click IDs"][1][3].count('","') + 1

    def cell(name: str) -> str:
        values = times[name]
        return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"

    print(
        f"One piece of {PIECE} events ({sightings} click-ID sightings) after "
        f"{arguments.events:,} events; {arguments.runs} runs; µs per event of PostgreSQL's "
        "execution time (EXPLAIN ANALYZE, foreign keys checked in the statement)"
    )
    print()
    print("| statement | µs per event, median (min–max) | the part alone (median) |")
    print("|---|---|---|")
    # Each part: the statement with it, less the statement without it.
    parts = {
        "events": "parse",
        "+ queue": "events",
        "+ click IDs": "+ queue",
        "the app's INSERT": "+ click IDs",
    }
    for name in ("parse", "events", "+ queue", "+ click IDs", "the app's INSERT", "recall"):
        without = parts.get(name)
        part = ""
        if without is not None:
            part = f"{statistics.median(times[name]) - statistics.median(times[without]):+.1f}"
        print(f"| {name} | {cell(name)} | {part} |")


if __name__ == "__main__":
    main()
