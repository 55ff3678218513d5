"""Run the benchmarks and print (and optionally record) the table.

    python -m bench                 # every row, full sizes; writes docs/BENCHMARKS.md
    python -m bench --quick         # every row, small sizes, under two minutes
    python -m bench --only normalize --smoke

Each row runs in a process of its own (``bench/one.py``) against the benchmark's own
databases: PostgreSQL at ``BENCH_POSTGRES_URL`` (default
``postgres://postgres@127.0.0.1:5432/bench``, dropped and re-created at the start so its
schema is the current one) and a SQLite file in the temp directory. Exit status: 1 when a row
failed to run or its output was wrong; goals that are missed are reported in the table (and
fail the run only with ``--strict``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import report
from bench.harness import (
    REPO,
    Result,
    bench_environment,
    machine_info,
    migrate,
    postgres_url,
    postgres_version,
    recreate_postgres_database,
    sqlite_path,
)
from bench.rows import ROWS, Row

# A row that runs longer than this is stuck; the table says so instead of waiting forever.
TIMEOUT_SECONDS = {"smoke": 300, "quick": 300, "full": 3600}
DOCS_PAGE = REPO / "docs" / "BENCHMARKS.md"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes, under two minutes")
    size.add_argument("--smoke", action="store_true", help="tiny sizes: only proves it runs")
    parser.add_argument("--only", default="", help="comma-separated rows (default: all)")
    parser.add_argument(
        "--databases",
        default="postgresql,sqlite",
        help="databases to run the rows on, among those each row supports",
    )
    parser.add_argument(
        "--write-docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replace the table in docs/BENCHMARKS.md (default: only for a full run of all rows)",
    )
    parser.add_argument("--json", default="", help="also write every result to this JSON file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    return parser.parse_args(argv)


def _selected_rows(only: str) -> list[Row]:
    if not only:
        return list(ROWS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(names) - {row.name for row in ROWS})
    if unknown:
        known = ", ".join(row.name for row in ROWS)
        raise SystemExit(f"unknown rows: {', '.join(unknown)}; known: {known}")
    return [row for row in ROWS if row.name in names]


def _prepare_database(database: str) -> str | None:
    """Make the benchmark's database empty and migrated; returns why it cannot be, or None."""
    if database == "postgresql":
        url = postgres_url()
        if postgres_version(url) is None:
            return f"PostgreSQL is not reachable at {url} (set BENCH_POSTGRES_URL)"
        recreate_postgres_database(url)
    elif database == "sqlite":
        path = sqlite_path()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return migrate(database)


def _run_child(row: Row, database: str, mode: str) -> Result:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, "-m", "bench.one", row.name, "--mode", mode]
    command += ["--database", database, "--out", str(out)]
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            command,
            cwd=REPO,
            env=bench_environment(database if database != "-" else "sqlite"),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS[mode],
            check=False,
        )
        failure = None if completed.returncode == 0 else completed.stderr.strip()[-3000:]
    except subprocess.TimeoutExpired:
        failure = f"did not finish within {TIMEOUT_SECONDS[mode]} s"
    try:
        if failure is None:
            return Result.from_dict(json.loads(out.read_text()))
    finally:
        out.unlink(missing_ok=True)
    return _failed(row, database, mode, failure or "", time.perf_counter() - started)


def _failed(row: Row, database: str, mode: str, why: str, seconds: float = 0.0) -> Result:
    result = Result(row=row.name, title=row.what, database=database, mode=mode)
    result.summary = "did not run"
    result.check("ran to the end", False, why.splitlines()[-1] if why else "")
    result.details["error"] = why
    result.seconds = round(seconds, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the selected rows; print the table; write the docs page and JSON when asked."""
    arguments = _arguments(argv)
    mode = "quick" if arguments.quick else "smoke" if arguments.smoke else "full"
    rows = _selected_rows(arguments.only)
    allowed = {name.strip() for name in arguments.databases.split(",")} | {"-"}
    plan = [(row, database) for row in rows for database in row.databases if database in allowed]
    needed = sorted({database for _, database in plan} - {"-"})

    machine = machine_info(postgres_url() if "postgresql" in needed else None)
    print(f"bench: mode {mode}; machine: {report.machine_line(machine)}", file=sys.stderr)
    problems = {database: _prepare_database(database) for database in needed}

    results: list[Result] = []
    for row, database in plan:
        if problems.get(database):
            result = _failed(row, database, mode, problems[database] or "")
        else:
            print(f"bench: {row.name} on {database} …", file=sys.stderr, flush=True)
            result = _run_child(row, database, mode)
        results.append(result)
        verdict = "ok" if result.goals_met else "GOAL MISSED"
        if not result.correct:
            verdict = "WRONG OUTPUT"
        print(
            f"bench: {row.name} on {database}: {verdict} in {result.seconds} s — {result.summary}",
            file=sys.stderr,
            flush=True,
        )

    print(report.results_table(results))
    row_notes = report.notes(results)
    if row_notes:
        print("\n" + row_notes)

    command = "make bench" + ("-quick" if mode == "quick" else "")
    if arguments.only:
        command = f"python -m bench --only {arguments.only}"
        command += f" --{mode}" if mode != "full" else ""
    write_docs = arguments.write_docs
    if write_docs is None:
        write_docs = mode == "full" and not arguments.only
    if write_docs:
        report.update_page(
            DOCS_PAGE, report.generated_section(results, machine, mode=mode, command=command)
        )
        print(f"bench: wrote the table to {DOCS_PAGE.relative_to(REPO)}", file=sys.stderr)
    if arguments.json:
        Path(arguments.json).write_text(
            json.dumps(
                {"mode": mode, "machine": machine, "results": [r.to_dict() for r in results]},
                indent=2,
                default=str,
            )
            + "\n"
        )

    if any(not result.correct for result in results):
        return 1
    if arguments.strict and any(not result.goals_met for result in results):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
