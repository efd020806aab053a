"""The layout of harness/ shows its architecture and stays that way: no import circles between its modules
(imports inside functions count too: they hide a circle, they do not remove it), the record contract imports no
generation backend, and no module grows past the soft budget of STYLE.md."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "harness"
MAX_LINES = 400


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = HARNESS) -> dict[str, set[str]]:
    """Module -> the harness modules it imports (at any depth of its code)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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


def test_no_import_circle_in_harness():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_planted_circle(tmp_path):
    pkg = tmp_path / "harness"
    (pkg / "store").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "store" / "__init__.py").write_text("")
    (pkg / "store" / "a.py").write_text("def f():\n    from harness.b import g\n")  # inside a function: still a circle
    (pkg / "b.py").write_text("from harness.store.a import f\n")
    (pkg / "c.py").write_text("from harness import b\n")
    assert cycles(import_graph(pkg)) == [["harness.b", "harness.store.a"]]


def test_the_record_contract_imports_no_backend():
    graph = import_graph()
    for contract in ("harness.results.metrics", "harness.results.records", "harness.specs"):
        reached, todo = set(), [contract]
        while todo:
            for nxt in graph[todo.pop()] - reached:
                reached.add(nxt)
                todo.append(nxt)
        assert not {m for m in reached if m.startswith("harness.generation")}, contract


@pytest.mark.parametrize("path", sorted(HARNESS.rglob("*.py")), ids=lambda p: str(p.relative_to(HARNESS)))
def test_no_module_over_the_line_budget(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path}: split it (STYLE.md: a module <= {MAX_LINES})"
