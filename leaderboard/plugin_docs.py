"""What the leaderboard says about a defence, read from the plugin's source without importing it.

The build never runs plugin code: a defence's page text is the same whether or not its optional dependencies
import in the build environment, and a plugin cannot execute anything while the site is built. The entry point
(package metadata) names the module; its source gives the module docstring (the paper and its settings) and,
from the registering decorator, the one-line description `harness list` prints: `description=`, else the first
line of the entry function's docstring. The fidelity card (`harness.cards`) is the YAML file beside the module that
registers the defence, read as data: a card that is missing or does not read leaves a note on the page instead.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from harness.cards import Card, card_file, read_card
from harness.errors import ConfigError


@dataclass(frozen=True)
class DefenceInfo:
    name: str
    description: str
    docstring: str
    card: Card | None = None
    card_note: str = ""  # why there is no card to show ('' when there is one, or when the defence is not installed)


def defence_info(name: str) -> DefenceInfo:
    """The defence's description and module docstring; a defence not installed still renders."""
    from harness import registry

    modules = registry.declared_modules("defence", name)
    if not modules:
        return DefenceInfo(name, "not installed", "")
    if len(modules) > 1:
        return DefenceInfo(name, f"declared by {len(modules)} installed packages ({', '.join(modules)})", "")
    source = module_source(modules[0])
    if source is None:
        return DefenceInfo(name, f"installed, but the source of module '{modules[0]}' was not found", "")
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as exc:
        return DefenceInfo(name, f"installed, but {source} does not parse: {type(exc).__name__}", "")
    description = next((d for t in _trees(tree, source) if (d := _description(t, "defence", name)) is not None), "")
    card, note = _card(source, modules[0], name)
    return DefenceInfo(name, description, (ast.get_docstring(tree, clean=False) or "").strip(), card, note)


def _card(source: Path, module: str, name: str) -> tuple[Card | None, str]:
    """The card beside the module that registers `name` (for a package: the module inside it whose source registers
    it), or why there is none to show."""
    file, registrar = source, module
    if source.name == "__init__.py":
        for path in [source, *sorted(p for p in source.parent.rglob("*.py") if p != source)]:
            try:
                found = _registrations(ast.parse(path.read_text(encoding="utf-8")), "defence", name)
            except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
                continue
            if found:
                parts = path.relative_to(source.parent).with_suffix("").parts
                file, registrar = path, ".".join([module, *parts]).removesuffix(".__init__")
                break
    path = card_file(file, registrar, name)
    if path is None:
        return None, "No fidelity card: this defence's settings are not compared with its paper's."
    try:
        card = read_card(path)
    except (ConfigError, OSError) as exc:
        return None, f"Its fidelity card does not read: {exc}"
    if card.defence != name:
        return None, f"Its fidelity card names another defence ('{card.defence}')."
    return card, ""


def judge_measures(name: str) -> str:
    """What a judge's score measures, as its registration declares it (`measures=`, a string literal), read from
    the plugin's source without importing it; '' where it declares nothing or cannot be read."""
    from harness import registry

    modules = registry.declared_modules("judge", name)
    source = module_source(modules[0]) if len(modules) == 1 else None
    if source is None:
        return ""
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return ""
    for module in _trees(tree, source):
        for call in _registrations(module, "judge", name):
            given = next((k.value for k in call.keywords if k.arg == "measures"), None)
            if isinstance(given, ast.Constant) and isinstance(given.value, str):
                return given.value
    return ""


def module_source(module: str) -> Path | None:
    """The file of a module, found without executing it or its parent packages (find_spec on a dotted name
    would import the parents)."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    for location in spec.submodule_search_locations or []:
        base = Path(location, *rest)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _trees(tree: ast.Module, source: Path) -> list[ast.Module]:
    """The module, and for a package every module inside it (a package's __init__ may import the one that
    registers)."""
    if source.name != "__init__.py":
        return [tree]
    others = []
    for path in sorted(source.parent.rglob("*.py")):
        if path != source:
            try:
                others.append(ast.parse(path.read_text(encoding="utf-8")))
            except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
                continue
    return [tree, *others]


def _description(tree: ast.Module, kind: str, name: str) -> str | None:
    """The description the registering decorator gives `name`, as `harness.registry.register` derives it."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and _registers(decorator, kind, name):
                given = next((k.value for k in decorator.keywords if k.arg == "description"), None)
                if isinstance(given, ast.Constant) and isinstance(given.value, str) and given.value:
                    return given.value
                return ((ast.get_docstring(node, clean=False) or "").strip().splitlines() or [""])[0]
    return None


def _registrations(tree: ast.Module, kind: str, name: str) -> list[ast.Call]:
    """Every call in the module that registers `name` as a `kind` (decorators and direct calls alike)."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _registers(n, kind, name)]


def _registers(call: ast.Call, kind: str, name: str) -> bool:
    func = call.func
    called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    if called not in (f"register_{kind}", "register"):
        return False
    literal = [a.value for a in call.args if isinstance(a, ast.Constant)]
    return literal[:1] == [name] if called == f"register_{kind}" else literal[:2] == [kind, name]
