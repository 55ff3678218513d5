"""The test suite over every supported (Django, Python) pair, each on SQLite and PostgreSQL.

``make test`` runs the oldest and the newest pair (``nox``, the default sessions);
``make test-matrix`` runs them all (``nox --tags matrix``). One pair alone:
``.venv/bin/nox -s tests-django6.0-py3.12``; arguments after ``--`` go to pytest.

Interpreters are looked up by full path in pyenv's folder first: pyenv's shims answer
``python3.12`` with an error unless that version is selected, so the first ``python3.12`` on
``PATH`` may not be a Python at all. Nox never downloads one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import nox

# Django series → the Python versions it supports that we test (Django 6.x needs Python 3.12+).
# pyproject.toml's classifiers and Django range are checked against this by tests/test_packaging.py.
MATRIX: dict[str, tuple[str, ...]] = {
    "5.2": ("3.11", "3.12", "3.13"),
    "6.0": ("3.12", "3.13"),
    "6.1": ("3.12", "3.13"),
}
PAIRS = [(django, python) for django, pythons in MATRIX.items() for python in pythons]
OLDEST, NEWEST = PAIRS[0], PAIRS[-1]

nox.options.error_on_missing_interpreters = True
nox.options.download_python = "never"
nox.options.default_venv_backend = "venv"


def session_name(django: str, python: str) -> str:
    return f"tests-django{django}-py{python}"


def _version_key(path: Path) -> tuple[int, ...]:
    """``…/versions/3.12.10/bin/python3.12`` sorts after ``…/versions/3.12.9/…``."""
    return tuple(int(part) for part in re.findall(r"\d+", path.parents[1].name))


def _answers_as(candidate: str, python: str) -> bool:
    """Whether ``candidate`` runs and is Python ``python`` (a pyenv shim may be neither)."""
    try:
        finished = subprocess.run(  # noqa: S603  (a path we found, no shell)
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return finished.returncode == 0 and finished.stdout.strip() == python


def interpreter(python: str) -> str:
    """The newest pyenv install of ``python`` by full path, else the first working one on PATH.

    Falls back to the bare version, which nox then reports as missing (an error, not a skip).
    """
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    installed = [
        path
        for path in pyenv_root.glob(f"versions/{python}.*/bin/python{python}")
        if re.fullmatch(rf"{re.escape(python)}\.\d+", path.parents[1].name)
        and os.access(path, os.X_OK)
    ]
    for path in sorted(installed, key=_version_key, reverse=True):
        if _answers_as(str(path), python):
            return str(path)
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = shutil.which(f"python{python}", path=folder) if folder else None
        if candidate and _answers_as(candidate, python):
            return candidate
    return python


def _register(django: str, python: str) -> None:
    edge = (django, python) in (OLDEST, NEWEST)

    def tests(session: nox.Session) -> None:
        session.install("-e", ".[dev]", f"Django~={django}.0")
        session.run("python", "-m", "django", "--version")
        # The same script as a plain `make test` used to run: SQLite, then PostgreSQL when one
        # answers (required when CAPI_REQUIRE_POSTGRES=1).
        session.run("bash", "scripts/suite.sh", *session.posargs, external=True)

    tests.__doc__ = f"The suite on Django {django} and Python {python}, SQLite and PostgreSQL."
    nox.session(
        name=session_name(django, python),
        python=interpreter(python),
        tags=["matrix", "edges"] if edge else ["matrix"],
        default=edge,
    )(tests)


for _django, _python in PAIRS:
    _register(_django, _python)
