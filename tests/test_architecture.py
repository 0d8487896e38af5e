"""The package's shape: no import cycle, and each layer imports only what it may (see DESIGN's Architecture)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "attnbench"


def _module(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the package's modules it imports anywhere in its text (module level, in functions, TYPE_CHECKING)."""
    modules = {_module(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base]) if base else ".".join(anchor)
                wanted = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in wanted:
                while target and target not in modules:  # `from pkg import name`: the deepest module named
                    target = target.rpartition(".")[0]
                # a module importing its own parent package only re-reads names the parent re-exports
                if target and target != name and not name.startswith(target + "."):
                    targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import one another, directly or round a loop (strongly connected, size > 1)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in order:
            visit(node)
    return found


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle_when_there_is_one(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from pkg import a  # a function-level import counts\n")
    assert cycles(import_graph(package)) == [["pkg.a", "pkg.sub.b"]]


@pytest.mark.parametrize(
    ("layer", "may_import"),
    [
        ("attnbench.core", ("attnbench.core",)),
        ("attnbench.measure", ("attnbench.core", "attnbench.measure")),
        ("attnbench.execution", ("attnbench.core", "attnbench.execution", "attnbench.measure", "attnbench.training")),
        ("attnbench.reporting", ("attnbench", "attnbench.core", "attnbench.reporting", "attnbench.runs")),
    ],
)
def test_each_layer_imports_only_what_is_below_it(layer: str, may_import: tuple[str, ...]) -> None:
    graph = import_graph()
    allowed = set(may_import)
    for module, targets in graph.items():
        if module == layer or module.startswith(layer + "."):
            outside = {t for t in targets if t not in allowed and not any(t.startswith(a + ".") for a in allowed)}
            assert not outside, f"{module} imports {sorted(outside)}"


def test_rich_is_used_only_by_the_command_line() -> None:
    users = [
        _module(p)
        for p in PACKAGE.rglob("*.py")
        if "rich" in {n.split(".")[0] for n in _imported_names(p)} and not _module(p).startswith("attnbench.cli")
    ]
    assert users == []


def _imported_names(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names
