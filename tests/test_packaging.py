from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

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
    # Kept by hand beside the regenerated 0001 (the event table's fillfactor on PostgreSQL).
    assert "capi_destinations/migrations/0002_event_fillfactor.py" in names
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


# --- the supported Django and Python versions: pyproject.toml says what noxfile.py tests ---------


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def nox_matrix() -> dict[str, tuple[str, ...]]:
    """noxfile.py's ``MATRIX`` (Django series → Python versions), read without running nox."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    (value,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id == "MATRIX"
    ]
    return ast.literal_eval(value)


def classifier_versions(prefix: str) -> set[str]:
    """The ``X.Y`` versions named by the classifiers that start with ``prefix``."""
    versions = {
        classifier.removeprefix(prefix)
        for classifier in pyproject()["project"]["classifiers"]
        if classifier.startswith(prefix)
    }
    return {version for version in versions if re.fullmatch(r"\d+\.\d+", version)}


def runtime_requirements() -> dict[str, Requirement]:
    requirements = [Requirement(line) for line in pyproject()["project"]["dependencies"]]
    return {canonicalize_name(requirement.name): requirement for requirement in requirements}


def test_classifiers_name_the_versions_the_matrix_tests() -> None:
    matrix = nox_matrix()
    assert classifier_versions("Framework :: Django :: ") == set(matrix)
    tested_pythons = {python for pythons in matrix.values() for python in pythons}
    assert classifier_versions("Programming Language :: Python :: ") == tested_pythons


def test_the_django_range_admits_the_tested_series_and_nothing_else() -> None:
    allowed = runtime_requirements()["django"].specifier
    series = sorted(nox_matrix(), key=Version)
    for name in series:
        assert f"{name}.0" in allowed, name
        assert f"{name}.99" in allowed, name
    oldest, newest = Version(series[0]), Version(series[-1])
    assert f"{oldest.major}.{oldest.minor - 1}.99" not in allowed
    assert f"{newest.major}.{newest.minor + 1}.0" not in allowed
    assert f"{newest.major + 1}.0" not in allowed


def test_requires_python_admits_the_tested_pythons_only() -> None:
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    pythons = sorted(
        {python for pythons in nox_matrix().values() for python in pythons}, key=Version
    )
    assert all(f"{python}.0" in requires for python in pythons)
    oldest = Version(pythons[0])
    assert f"{oldest.major}.{oldest.minor - 1}.99" not in requires


def test_make_test_runs_the_oldest_and_the_newest_pair() -> None:
    """``make test`` runs nox's sessions tagged ``edges``: the first and the last pair."""
    text = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    assert "OLDEST, NEWEST = PAIRS[0], PAIRS[-1]" in text
    matrix = nox_matrix()
    pairs = [(django, python) for django, pythons in matrix.items() for python in pythons]
    assert pairs[0] == (min(matrix, key=Version), min(matrix[min(matrix, key=Version)]))
    newest = max(matrix, key=Version)
    assert pairs[-1] == (newest, max(matrix[newest], key=Version))
    assert "--tags edges" in (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")


# --- runtime dependencies: what the app imports, and nothing only the demo site uses ----------


def third_party_imports(folder: Path) -> dict[str, set[str]]:
    """Top-level modules imported by the package's Python files (stdlib and itself left out)."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("capi_destinations",):
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_module_the_app_imports_is_a_runtime_dependency() -> None:
    declared = set(runtime_requirements())
    distributions = importlib.metadata.packages_distributions()
    undeclared = {
        module: sorted(files)
        for module, files in third_party_imports(ROOT / "capi_destinations").items()
        if module != "__future__"
        and not {canonicalize_name(name) for name in distributions.get(module, [module])} & declared
    }
    assert undeclared == {}


def test_the_demo_sites_packages_are_an_extra_of_their_own() -> None:
    project = pyproject()["project"]
    demo_only = {"django-environ", "gunicorn"}
    assert not demo_only & set(runtime_requirements())
    extras = project["optional-dependencies"]
    demo = {canonicalize_name(Requirement(line).name) for line in extras["demo"]}
    assert demo_only <= demo
    # The demo site is tested too: the dev extra pulls the demo extra in.
    assert "django-capi-destinations[demo]" in extras["dev"]
    imported = third_party_imports(ROOT / "capi_destinations")
    assert "environ" not in imported
    assert "gunicorn" not in imported
