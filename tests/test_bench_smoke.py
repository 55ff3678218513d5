"""The benchmark harness still runs: ``python -m bench --only normalize --smoke`` (seconds).

Benchmarks are not tests (``make bench`` runs them, docs/BENCHMARKS.md holds the numbers);
this only proves that the runner, the harness and the normalize row work end to end, so the
benchmarks cannot rot unnoticed. No speed is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
