"""Run one benchmark row in this process: ``python -m bench.one ROW --mode M --database D``.

``python -m bench`` starts one such process per row and database, so that each measures in a
fresh interpreter (peak RSS means something, Django is set up once with one database) and a
crash in one row cannot take the others down. The result is written as JSON.
"""

from __future__ import annotations

import argparse
import importlib
import time

from bench.harness import MODES, Result, setup_django, write_json
from bench.rows import ROWS_BY_NAME


def run_row(name: str, mode: str, database: str) -> Result:
    """Run the row's function here and return its result (Django set up first if needed)."""
    row = ROWS_BY_NAME[name]
    if row.needs_django:
        setup_django()
    module_name, _, function_name = row.target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    started = time.perf_counter()
    result: Result = function(mode, database)
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit status 0 when the row ran (its checks say if it is right)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("row", choices=sorted(ROWS_BY_NAME))
    parser.add_argument("--mode", choices=MODES, default="quick")
    parser.add_argument("--database", default="-")
    parser.add_argument("--out", default="-", help="JSON file to write (default: stdout)")
    arguments = parser.parse_args(argv)
    result = run_row(arguments.row, arguments.mode, arguments.database)
    write_json(arguments.out, result.to_dict())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
