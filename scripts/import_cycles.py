"""Print the import cycles between the app's modules; exit 1 when there is one.

Reads every module of `capi_destinations/` with `ast` (nothing is imported), follows every
`import` / `from … import …` of another app module, at module level and inside functions alike
(an import moved into a function still ties the two modules together), and reports each
strongly connected group of modules with more than one member, plus one example cycle in it.

Usage: `python scripts/import_cycles.py [package_dir]` (default: `capi_destinations`).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "capi_destinations"


def module_name(path: Path, root: Path) -> str:
    """The dotted name of the module at `path` inside the package directory `root`."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, current: str, is_package: bool, known: set[str]) -> set[str]:
    """The app modules that `tree` imports anywhere (module level or inside a function)."""
    found: set[str] = set()
    package = current if is_package else current.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            # `from package import module` names a module; `from module import name` names
            # the module itself.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # The closest known module: `a.b.c` resolves to `a.b` when `a.b.c` is a name in it.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != current and target != PACKAGE:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module name → the app modules it imports, for every `.py` file under `root`."""
    files = {
        module_name(path, root): path
        for path in sorted(root.rglob("*.py"))
        if "migrations" not in path.parts
    }
    known = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = imported_modules(tree, name, path.name == "__init__.py", known)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that reach each other, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph.get(node, ())):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted((g for g in groups if len(g) > 1), key=lambda g: (-len(g), g))


def example_cycle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A shortest cycle through the group's first module, as a list ending where it began."""
    start = group[0]
    members = set(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & members):
            if child == start:
                return [*paths[node], start]
            if child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    return [start]


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else PACKAGE)
    graph = import_graph(root)
    groups = strongly_connected(graph)
    edges = sum(len(targets) for targets in graph.values())
    print(f"{len(graph)} modules, {edges} import edges, {len(groups)} cycle group(s)")
    short = len(PACKAGE) + 1
    for group in groups:
        print("cycle group: " + ", ".join(m[short:] for m in group))
        print("  e.g. " + " → ".join(m[short:] for m in example_cycle(graph, group)))
        for member in group:
            inside = sorted(t[short:] for t in graph[member] if t in group)
            print(f"  {member[short:]} imports {', '.join(inside)}")
    return 1 if groups else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
