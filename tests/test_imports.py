"""The import structure: no cycles, layers point down, and ``import medclass`` stays light.

The graph is read from the source with ``ast`` (nothing is imported). An edge ``a -> b`` means module
``a`` imports ``b``; ``from medclass.x import y`` points at ``medclass.x.y`` when that is a module,
else at ``medclass.x``. The implicit import of a parent package is not an edge. Imports under
``if TYPE_CHECKING:`` never run and are not edges.

* Module-level imports (those that run when a module is imported) must form no cycle at all.
* Imports inside functions (deferred) may close a cycle only where listed in ``KNOWN_LAZY_CYCLES``.
* Library modules never import the apps (the CLI); loading a checkpoint or predicting never loads
  the trainer, even through deferred imports.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import medclass

PACKAGE = Path(medclass.__file__).parent
APPS = ("medclass.cli", "medclass.serve", "medclass.__main__")
# Cycles closed by a deferred import, each a set of modules. To shrink, not to grow.
KNOWN_LAZY_CYCLES = [{"medclass.transforms.batch", "medclass.transforms.policy"}]


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it runs at module level (not inside a function or lambda)."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit_stmt(sub, top)
                continue
            visit_stmt(child, top)

    def visit_stmt(child: ast.AST, top: bool) -> None:
        if isinstance(child, ast.Import | ast.ImportFrom):
            found.append((child, top))
        deferred = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        visit(child, top and not deferred)

    visit(tree, True)
    return found


def _target(name: str) -> str | None:
    """The medclass module ``name`` refers to (itself, or the closest enclosing module), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, dict[str, bool]]:
    """module -> {imported module: whether some import of it runs at module level}."""
    graph: dict[str, dict[str, bool]] = {}
    for mod, (path, is_pkg) in MODULES.items():
        edges: dict[str, bool] = {}
        for node, top in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                names = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
            for name in names:
                if name.split(".")[0] != "medclass" or (target := _target(name)) in (None, mod):
                    continue
                edges[target] = edges.get(target, False) or top
        graph[mod] = edges
    return graph


GRAPH = _graph()


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _reachable(start: str) -> dict[str, str | None]:
    """Every module ``start`` may import, deferred imports included: module -> the module that imports it."""
    parent: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        v = todo.pop()
        for w in GRAPH[v]:
            if w not in parent:
                parent[w] = v
                todo.append(w)
    return parent


def _chain(parent: dict[str, str | None], end: str) -> str:
    chain = [end]
    while (p := parent[chain[-1]]) is not None:
        chain.append(p)
    return " <- ".join(chain)


def test_the_graph_sees_the_package():
    assert len(MODULES) > 50 and "medclass.models.build" in MODULES and "medclass.io.common" in MODULES
    assert GRAPH["medclass.checkpoint"]["medclass.models.build"] is True  # module level
    assert GRAPH["medclass.io.images"]["medclass.io.reader"] is False  # deferred, inside read_image
    assert "medclass.metrics.classification" in GRAPH["medclass.metrics"]  # a package re-exporting its modules


def test_module_level_imports_have_no_cycle():
    top = {m: {t for t, at_top in edges.items() if at_top} for m, edges in GRAPH.items()}
    assert _cycles(top) == []


def test_deferred_imports_close_no_new_cycle():
    cycles = _cycles({m: set(edges) for m, edges in GRAPH.items()})
    assert [c for c in cycles if c not in KNOWN_LAZY_CYCLES] == []


def test_the_checker_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_library_modules_never_import_the_apps():
    bad = [
        f"{m} -> {t}"
        for m, edges in GRAPH.items()
        if not m.startswith(APPS)
        for t in edges
        if t.startswith("medclass.cli")
    ]
    assert bad == []


@pytest.mark.parametrize("start", ["medclass.checkpoint", "medclass.predict", "medclass.models", "medclass.inference"])
def test_loading_and_predicting_never_import_the_trainer(start):
    parent = _reachable(start)
    assert [_chain(parent, m) for m in parent if m.startswith(("medclass.training", "medclass.cli"))] == []


def test_import_medclass_loads_nothing_heavy():
    heavy = ("torch", "numpy", "timm", "sklearn", "matplotlib", "pydicom", "fastapi", "PIL", "onnx", "onnxruntime")
    code = (
        "import sys, medclass, medclass.io, medclass.errors, medclass.utils.files\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_metrics_and_report_load_neither_sklearn_nor_matplotlib():
    """docs/design.md: the metrics and the report are hand-written so that evaluation loads neither library."""
    code = (
        "import sys, medclass.metrics, medclass.metrics.calibration, medclass.report.html, medclass.report.svg\n"
        "print(sorted(m for m in ('sklearn', 'matplotlib', 'scipy', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
