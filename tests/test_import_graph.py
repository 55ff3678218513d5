"""The module graph: the delivery engine, the health checks, the tasks and the services form no
import cycle, and none of them hides one with an import inside a function
(``scripts/import_cycles.py`` reads the graph; docs/ARCHITECTURE.md describes the layers)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "capi_destinations"
APP = "capi_destinations."


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "import_cycles", ROOT / "scripts/import_cycles.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return load_script().import_graph(PACKAGE)


# The modules the knot of issue 17 tied together, and the small ones that untied it.
ENGINE_AND_SERVICES = (
    "delivery_state",
    "destinations",
    "dispatch",
    "health",
    "health_status",
    "queueing",
    "receivers",
    "retention",
    "tasks",
    "testevents",
)


def test_the_engine_the_checks_the_tasks_and_the_services_form_no_cycle(
    graph: dict[str, set[str]],
) -> None:
    groups = load_script().strongly_connected(graph)
    tangled = {APP + name for name in ENGINE_AND_SERVICES}
    assert [group for group in groups if tangled.intersection(group)] == []


@pytest.mark.parametrize(
    ("module", "never"),
    [
        ("dispatch", {"health", "tasks", "destinations", "receivers"}),
        ("health", {"dispatch", "tasks", "destinations", "receivers"}),
        ("delivery_state", {"dispatch", "health", "health_status", "tasks", "destinations"}),
        ("health_status", {"dispatch", "health", "delivery_state", "tasks", "destinations"}),
        ("queueing", {"dispatch", "health", "tasks", "destinations"}),
        ("retention", {"dispatch", "health", "tasks", "destinations"}),
    ],
)
def test_the_engine_never_imports_upwards(
    graph: dict[str, set[str]], module: str, never: set[str]
) -> None:
    imported = {name.removeprefix(APP) for name in graph[APP + module]}
    assert imported.isdisjoint(never)


@pytest.mark.parametrize("module", ENGINE_AND_SERVICES)
def test_no_app_module_is_imported_inside_a_function(module: str) -> None:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    late = [
        f"line {node.lineno}"
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.ImportFrom | ast.Import)
        and any(
            name.startswith("capi_destinations")
            for name in (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [alias.name for alias in node.names]
            )
        )
    ]
    assert late == []


def test_the_script_names_a_cycle_and_fails(tmp_path: Path) -> None:
    package = tmp_path / "capi_destinations"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("from capi_destinations import second\n")
    # A late import ties the modules together just the same.
    (package / "second.py").write_text("def late():\n    from capi_destinations import first\n")
    (package / "third.py").write_text("from capi_destinations.second import late\n")

    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts/import_cycles.py"), str(package)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert run.returncode == 1
    assert "cycle group: first, second" in run.stdout
    assert "first → second → first" in run.stdout


def test_the_script_passes_a_graph_without_cycles(tmp_path: Path) -> None:
    package = tmp_path / "capi_destinations"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("from capi_destinations import second\n")
    (package / "second.py").write_text("from capi_destinations.third import name\n")
    (package / "third.py").write_text("name = 1\n")

    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts/import_cycles.py"), str(package)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert run.returncode == 0, run.stdout
    assert "0 cycle group(s)" in run.stdout


def test_every_signal_receiver_is_connected_in_receivers() -> None:
    connected_in = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "connect"
        # `receivers.connect(app_config)` itself, called from AppConfig.ready.
        and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "receivers")
    )
    assert set(connected_in) == {"receivers.py"}
