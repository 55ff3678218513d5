from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_migrations_templates_and_static(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("django_capi_destinations-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "capi_destinations/migrations/0001_initial.py" in names
    assert "capi_destinations/py.typed" in names
    package_files = {name for name in names if name.startswith("capi_destinations/")}
    for folder in ("templates/capi_destinations", "templates/registration", "static"):
        on_disk = {
            f"capi_destinations/{path.relative_to(ROOT / 'capi_destinations')}"
            for path in (ROOT / "capi_destinations" / folder).rglob("*")
            if path.is_file()
        }
        assert on_disk <= package_files, folder
    assert not any(name.startswith(("project/", "tests/")) for name in names)


def test_nothing_in_the_repository_reads_outside_it() -> None:
    """A user's clone has only the repository: no tracked file may read the fact sheet beside it."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    # Built from parts so that this file does not match itself.
    needles = ("../" + "shared", '/ "' + 'shared"')
    offenders = []
    for name in tracked:
        if name.endswith(".md") or name.startswith("tests/data/"):
            continue
        path = ROOT / name
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        if any(needle in text for needle in needles):
            offenders.append(name)
    assert offenders == []
