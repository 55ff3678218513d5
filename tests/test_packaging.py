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
    for folder in ("templates/capi_destinations", "static/capi_destinations"):
        on_disk = {
            f"capi_destinations/{path.relative_to(ROOT / 'capi_destinations')}"
            for path in (ROOT / "capi_destinations" / folder).rglob("*")
            if path.is_file()
        }
        assert on_disk <= package_files, folder
    assert not any(name.startswith(("project/", "tests/")) for name in names)
