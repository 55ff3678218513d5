"""The benchmark harness still runs: ``python -m bench --only normalize --smoke`` (seconds).

Benchmarks are not tests (``make bench`` runs them, docs/BENCHMARKS.md holds the numbers);
this only proves that the runner, the harness and the normalize row work end to end, so the
benchmarks cannot rot unnoticed. No speed is asserted. The PostgreSQL floor
(``python -m bench.floor``) is proved the same way when the suite runs on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from django.db import connection

REPO = Path(__file__).resolve().parents[1]


def test_the_normalize_benchmark_runs_and_checks_its_hashes(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"

    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--only",
            "normalize",
            "--smoke",
            "--no-write-docs",
            "--json",
            str(output),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    report = json.loads(output.read_text())
    assert report["mode"] == "smoke"
    assert report["machine"]["cores"]
    (row,) = report["results"]
    assert row["row"] == "normalize"
    assert {check["name"]: check["ok"] for check in row["checks"]} == {
        "identical hashes": True,
        "every timed output checked": True,
    }
    rates = row["details"]["timings"]
    assert rates["normalize.py"]["median_rate"] > 0
    assert rates["official SDK"]["median_rate"] > 0
    assert [goal["name"] for goal in row["goals"]] == ["records/s vs the SDK"]
    assert "| normalize + hash user data |" in completed.stdout


def test_the_import_benchmark_runs_and_accounts_for_every_row(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"

    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--only",
            "import",
            "--smoke",
            "--databases",
            "sqlite",
            "--no-write-docs",
            "--json",
            str(output),
        ],
        cwd=REPO,
        # Its own SQLite file: the benchmark deletes and migrates it.
        env={**os.environ, "BENCH_SQLITE_PATH": str(tmp_path / "bench.sqlite3")},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    (row,) = json.loads(output.read_text())["results"]
    assert row["row"] == "import"
    checks = {check["name"]: check["ok"] for check in row["checks"]}
    assert checks == {
        "100 rows: every row accounted for once": True,
        "100 rows: each good row stored once, each bad one rejected": True,
        "importing the same file again stores nothing": True,
        "1,000 rows: every row accounted for once": True,
        "1,000 rows: each good row stored once, each bad one rejected": True,
    }
    assert [goal["name"] for goal in row["goals"]] == [
        "peak RSS, 1,000 rows",
        "constant in the number of rows",
    ]
    assert row["details"]["runs"]["1000"]["peak_mb"] > 0


if connection.vendor == "postgresql":

    def test_the_postgresql_floor_runs_every_variant_on_the_app_schema() -> None:
        # The suite's server, the floor's own database (dropped and re-created by the floor),
        # named after the test database so checkouts sharing one server do not drop each other's.
        database = connection.settings_dict
        password = f":{quote(database['PASSWORD'], safe='')}" if database["PASSWORD"] else ""
        user = quote(database["USER"] or "postgres", safe="")
        url = (
            f"postgres://{user}{password}@{database['HOST'] or '127.0.0.1'}:"
            f"{database['PORT'] or 5432}/{database['NAME']}_bench_floor"
        )

        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.floor",
                "--rows",
                "2000",
                "--rounds",
                "1",
                "--ingest-rows",
                "1000",
                "--dispatch-rows",
                "2000",
            ],
            cwd=REPO,
            env={**os.environ, "BENCH_FLOOR_POSTGRES_URL": url},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

        assert completed.returncode == 0, completed.stderr
        for key in ("A-a", "A-d", "A-app", "A-c", "B-a", "B-c"):
            assert f"\n| {key} | " in completed.stdout, key
