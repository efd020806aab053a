"""The core knows no particular defence, attack, task, judge or suite: `harness/` imports nothing from the
plugin packages and names none of their plugins in its code."""

import ast
import tomllib

from tests.conftest import REPO

PLUGIN_PACKAGES = {"defences", "attacks", "tasks"}


def _core_modules():
    files = sorted((REPO / "harness").rglob("*.py"))
    assert len(files) >= 20
    return [(f, ast.parse(f.read_text())) for f in files]


def test_core_imports_no_plugin_package():
    for path, tree in _core_modules():
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad = [n for n in names if n.split(".")[0] in PLUGIN_PACKAGES]
            assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_core_names_no_plugin():
    """No string constant in the core equals a built-in plugin's registered name (docstrings aside)."""
    eps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    plugin_names = {name for group, names in eps.items() if group != "harness.defaults" for name in names}
    assert {"none", "repnoise", "sft-1k", "tiny"} <= plugin_names
    for path, tree in _core_modules():
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
                      and n.body and isinstance(n.body[0], ast.Expr)}
        library = {id(k.value) for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg == "reduction"}
        docstrings |= library  # torch's reduction="none" is not the defence
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        own = {name for names in eps.values() for name, value in names.items() if value == module}  # a generic
        named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                 and id(n) not in docstrings and n.value in plugin_names - own}  # plugin in harness/ names itself
        assert not named, f"{path.relative_to(REPO)} names plugins {sorted(named)}"
