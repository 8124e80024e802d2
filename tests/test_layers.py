"""The module graph stays a layered tree: no import cycles, the core beneath the platform,
modules a stranger can read.

Three rules, checked on the source (a static AST scan, so imports deferred into functions
count too; only ``if TYPE_CHECKING:`` blocks are skipped, since they never run):

* no import cycle between any two project modules;
* no core ``cloud`` module imports ``cloud.service`` (the service platform is built on the core,
  not the other way round); the outer rooms that compose both (API, portal, CLI, composition
  root, demo) may;
* no module is longer than `MAX_LINES`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.test_purity import PROJECT_PACKAGES, ROOT, module_name, package_of

MAX_LINES = 600
OUTER = ("cloud.service", "cloud.api", "cloud.portal", "cloud.demo", "cloud.cli", "cloud.serve")
"""`cloud` rooms that are not core: the platform itself and what composes it."""
SKIPPED = ("cloud.migrations",)
"""Alembic revisions: loaded by file path, never imported."""


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every project module by dotted name."""
    found = {}
    for package in PROJECT_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name = module_name(path, root)
            if not name.startswith(SKIPPED):
                found[name] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for inner in ast.walk(node))
    return skipped


def imported(source: str, package: str) -> Iterator[str]:
    """Dotted names `source` imports; ``from a import b`` yields ``a.b`` (the module ``a.b``,
    or the name ``b`` in module ``a``: `import_graph` tells them apart)."""
    tree = ast.parse(source)
    skipped = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            yield from (f"{target}.{alias.name}" for alias in node.names)


def import_graph(modules: Mapping[str, Path], root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> project modules it imports (a package counts as its ``__init__``; a name
    from a module as that module)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in imported(path.read_text(), package_of(path, root)):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def is_core(module: str) -> bool:
    return module.startswith("cloud") and not module.startswith(OUTER)


def core_to_service(graph: Mapping[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if is_core(module)
        for target in targets
        if target.startswith("cloud.service")
    )


# -- the checks work -----------------------------------------------------------------------------


def _write(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {module_name(root / relative, root): root / relative for relative in files}


def test_a_deferred_import_cycle_is_found(tmp_path: Path) -> None:
    modules = _write(
        tmp_path,
        {
            "cloud/__init__.py": "",
            "cloud/a.py": "from cloud.b import thing\n",
            "cloud/b.py": "def thing():\n    from cloud import a\n",
            "cloud/c.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import cloud.a\n"
            ),
        },
    )
    graph = import_graph(modules, tmp_path)
    assert cycles(graph) == [["cloud.a", "cloud.b"]]
    assert graph["cloud.c"] == set(), "type-checking imports never run"


def test_a_core_module_importing_the_platform_is_found(tmp_path: Path) -> None:
    modules = _write(
        tmp_path,
        {
            "cloud/__init__.py": "",
            "cloud/service/__init__.py": "",
            "cloud/service/notify.py": "",
            "cloud/alarms.py": "from .service.notify import x\n",
            "cloud/api/__init__.py": "",
            "cloud/api/app.py": "from cloud.service import notify\n",
        },
    )
    graph = import_graph(modules, tmp_path)
    assert core_to_service(graph) == ["cloud.alarms imports cloud.service.notify"]


# -- the project --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(project_modules())


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert graph.get("cloud.ingest"), "the scan sees the project"
    assert cycles(graph) == []


def test_the_core_sits_beneath_the_service_platform(graph: dict[str, set[str]]) -> None:
    assert any(t.startswith("cloud.service") for t in graph["cloud.api.routes.jobs"])
    assert core_to_service(graph) == []


def test_no_module_is_longer_than_max_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in project_modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
