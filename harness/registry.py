"""The plugin registry: decorators plus lazily loaded entry points.

Built-in and third-party plugins are found the same way: each name is an entry point in the group
`harness.<kind>s` whose value is the module that registers it. Nothing is imported until a name is
looked up, and a plugin that fails to import breaks only the runs that use it.

A name has one owner: the distribution whose entry point declares it. Two distributions declaring the same
name, or a module registering a name that another distribution declares (e.g. an outside `defend` under the
name 'repnoise'), is a `PluginLoadError` naming both sides: never a silent "last one wins". Ownership is
decided by the module that calls the decorator (and the distribution it belongs to), not by the function's
`__module__`: an outside package may register a built-in function (e.g. `attacks.sft`'s) under a name it
declares itself.

    @register_defence("repnoise", config=Config, version="1")
    def defend(model, cfg, ctx): ...

An attack declares which of its config fields measure its strength in the benchmark's budget dimensions
(`budget={"samples": "samples", "lr": "lr"}`, dimensions as in `harness.results.metrics.AttackBudget`); tables and
reports read a budget through that declaration, never through a field name of their own. A judge says what its
score measures (`measures="revealed fact slots (fraction of the asked fact)"`): the leaderboard's axes read it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, distribution, entry_points, packages_distributions
from importlib.metadata import version as dist_version
from typing import Any, Literal, NamedTuple, TypeVar

from pydantic import BaseModel

from harness.errors import HarnessError, PluginLoadError, UnknownNameError

Kind = Literal["defence", "attack", "task", "judge", "suite"]
KINDS: tuple[Kind, ...] = ("defence", "attack", "task", "judge", "suite")
F = TypeVar("F", bound=Callable[..., Any])


def group(kind: Kind) -> str:
    """The entry-point group of a kind, e.g. 'harness.defences'."""
    return f"harness.{kind}s"


@dataclass(frozen=True)
class Plugin:
    """A registered plugin: its entry function, its Config class and its version."""

    kind: Kind
    name: str
    fn: Callable[..., Any]
    config: type[BaseModel]
    version: str
    description: str
    budget: Mapping[str, str] = field(default_factory=dict)  # budget dimension -> config field (attacks)
    # check(cfg, store) validates what the plugin will need (e.g. a judge's checkpoint and label) without
    # building it, so a bad config fails before any work; raises HarnessError.
    check: Callable[..., None] | None = None
    # Parts of the model the plugin reaches into (harness.models.architecture.FEATURES), checked on the base
    # model's structure before any work, so a model it cannot handle is refused in a second.
    needs: tuple[str, ...] = ()
    registrar: str = ""  # the module that registered it ('': the function's own module)
    measures: str = ""   # judges: what a score measures, as a plot axis or a table reads it (e.g. 'P(harmful)')
    # Attacks: further splits the attack reads beside its own (`harness.data.views.DECLARABLE`, e.g. ('retain',)
    # for an attack that trains on harmless data); part of the attack stage's cache key.
    reads: tuple[str, ...] = ()
    # Defences: whether the defended model depends on the defence seed. False (e.g. `none`, which returns its input):
    # every seed gives the same model, so a sweep builds it at one seed and a summary counts it as one unit.
    seeded: bool = True
    # Attacks: the family the budget table and the leaderboard group its budgets under (e.g. 'harmful fine-tuning',
    # 'prompting'); '' (undeclared) sorts last, as 'other'.
    family: str = ""
    # Defences and attacks: the rows the plugin takes from each split, from its config (e.g. a poisoned task's
    # {'attack': pN, 'retain': N - pN}); None: the shared convention, `samples` rows of its own split. Checked
    # against the suite's splits before any work (harness.preflight.check_split_sizes).
    rows: Callable[[BaseModel], Mapping[str, int]] | None = None

    @property
    def module(self) -> str:
        """The module that registered the plugin: it (and its distribution) owns the name."""
        return self.registrar or self.fn.__module__


@dataclass(frozen=True)
class Declaration:
    """One entry point: the name, the module it names, and the distribution that declares it."""

    name: str
    module: str
    distribution: str   # '' when the entry point has no distribution metadata
    dist_version: str

    def owns(self, module: str) -> bool:
        """A module registers under this declaration if it is the named module or inside that package."""
        return module == self.module or module.startswith(self.module + ".")

    def __str__(self) -> str:
        return f"{self.distribution or '(unknown distribution)'} {self.dist_version} (module {self.module})".strip()


_registry: dict[Kind, dict[str, Plugin]] = {k: {} for k in KINDS}


def register(kind: Kind, name: str, *, config: type[BaseModel], version: str, description: str | None = None,
             budget: Mapping[str, str] | None = None, check: Callable[..., None] | None = None,
             needs: tuple[str, ...] = (), measures: str = "", reads: tuple[str, ...] = (),
             seeded: bool = True, family: str = "",
             rows: Callable[[BaseModel], Mapping[str, int]] | None = None) -> Callable[[F], F]:
    """Register `fn` as plugin `name` of `kind`; the description defaults to its docstring's first line.
    `seeded=False` (defences only): the defended model does not depend on the defence seed. `family` (attacks
    only): what the tables group its budgets under. `rows` (defences and attacks): the rows it takes from each
    split given its config, where that is not `samples` rows of its own split."""
    from harness.keying import stray_marks
    from harness.models.architecture import FEATURES
    from harness.results.metrics import AttackBudget
    from harness.specs import TRAINING_KINDS, TRAINING_PARAMS

    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}")
    unknown = sorted(set(needs) - set(FEATURES))
    if unknown or (needs and kind not in ("defence", "attack")):
        raise PluginLoadError(f"{kind} '{name}' declares needs {list(needs)}: only defences and attacks declare "
                              f"needs, from {', '.join(FEATURES)}")
    if measures and kind != "judge":
        raise PluginLoadError(f"{kind} '{name}' declares what it measures; only judges do")
    if reads:
        from harness.data.splits import DECLARABLE

        if kind != "attack" or not set(reads) <= set(DECLARABLE["attack"]):
            raise PluginLoadError(f"{kind} '{name}' declares it reads {list(reads)}: only attacks declare reads, "
                                  f"from {', '.join(DECLARABLE['attack'])}")
    if kind != "defence" and isinstance(config, type) and issubclass(config, BaseModel):
        from harness.models.plugin_inputs import declared_checkpoints

        if named := declared_checkpoints(config):
            raise PluginLoadError(f"{kind} '{name}' names checkpoints in its Config ({', '.join(named)}): only "
                                  "defences do (an attack starts from the defended model alone)")
    if family and kind != "attack":
        raise PluginLoadError(f"{kind} '{name}' declares a family; only attacks do")
    if rows is not None and kind not in ("defence", "attack"):
        raise PluginLoadError(f"{kind} '{name}' declares the rows it takes; only defences and attacks do")
    if not seeded and kind != "defence":
        raise PluginLoadError(f"{kind} '{name}' declares seeded=False; only defences do (a defended model that "
                              "does not depend on the defence seed)")
    budget = dict(budget or {})
    if budget and kind != "attack":
        raise PluginLoadError(f"{kind} '{name}' declares a budget; only attacks have one")
    bad = [f"{d}->{f}" for d, f in budget.items() if d not in AttackBudget.model_fields or f not in config.model_fields]
    if bad:
        raise PluginLoadError(f"attack '{name}' declares an invalid budget {bad}: dimensions are "
                              f"{', '.join(AttackBudget.model_fields)}, fields must be in its Config")
    stray = stray_marks(config, TRAINING_PARAMS if kind in TRAINING_KINDS else ())
    if stray:
        raise PluginLoadError(f"{kind} '{name}' marks {', '.join(stray)} KEY_OMIT_DEFAULT, but run ids honour that "
                              "marker only on the spec models and on a defence's or an attack's shared training "
                              "options (harness.training.fields), defaults unchanged: records are keyed without "
                              "importing plugins. Drop the marker (a new option of one plugin re-keys its runs)")

    def decorate(fn: F) -> F:
        registrar = _caller_module()
        owners = _declarations(kind).get(name, [])
        if owners and not any(_owned_by(d, registrar) for d in owners):
            raise PluginLoadError(
                f"{kind} '{name}' is registered by {_origin(registrar)}, but the name belongs to "
                f"{' and '.join(map(str, owners))}: a plugin cannot replace another; choose a new name")
        existing = _registry[kind].get(name)
        if existing is not None and (existing.module, existing.fn.__qualname__) != (registrar, fn.__qualname__):
            raise PluginLoadError(f"{kind} '{name}' is registered twice: by {_origin(existing.module)} and by "
                                  f"{_origin(registrar)}; choose a new name for one of them")
        desc = description or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        _registry[kind][name] = Plugin(kind, name, fn, config, str(version), desc, budget, check, tuple(needs),
                                       registrar, measures, tuple(reads), bool(seeded), str(family), rows)
        return fn

    return decorate


def _caller_module() -> str:
    """The module whose code called the decorator: the first frame outside this module (a decorator, or
    `register_attack(...)(fn)` applied to a function imported from elsewhere)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    return frame.f_globals.get("__name__", "") if frame is not None else ""


def _owned_by(decl: Declaration, module: str) -> bool:
    """`module` registers under `decl`: it is the declared module or inside it, or its file is one the
    declaring distribution installed (a helper module of the same package; a top-level package name two
    distributions share gives nothing)."""
    if decl.owns(module):
        return True
    file = getattr(sys.modules.get(module), "__file__", None)
    if not decl.distribution or not file:
        return False
    try:
        dist = distribution(decl.distribution)
    except PackageNotFoundError:
        return False
    target = os.path.realpath(file)
    return any(os.path.realpath(dist.locate_file(f)) == target for f in dist.files or ())


def register_defence(name: str, **kw: Any) -> Callable[[F], F]:
    return register("defence", name, **kw)


def register_attack(name: str, **kw: Any) -> Callable[[F], F]:
    return register("attack", name, **kw)


def register_task(name: str, **kw: Any) -> Callable[[F], F]:
    return register("task", name, **kw)


def register_judge(name: str, **kw: Any) -> Callable[[F], F]:
    return register("judge", name, **kw)


def register_suite(name: str, **kw: Any) -> Callable[[F], F]:
    return register("suite", name, **kw)


def _path_state() -> tuple[tuple[str, float], ...]:
    """sys.path with each folder's mtime: installing or removing a distribution changes it."""
    out = []
    for entry in sys.path:
        try:
            out.append((entry, os.stat(entry or ".").st_mtime))
        except OSError:
            out.append((entry, -1.0))
    return tuple(out)


_declared: dict[Kind, tuple[Any, dict[str, list[Declaration]]]] = {}  # kind -> (path state, declarations)


def _declarations(kind: Kind) -> dict[str, list[Declaration]]:
    """Every entry point of a kind's group, by name: a list, so that two distributions claiming one name are
    seen (a dict keyed by name would keep the last silently). importlib.metadata already lists each
    distribution once, even where an editable install is also visible as an egg-info in the working tree.
    Cached per state of sys.path (parsing every distribution's entry points on each lookup costs ~3 ms)."""
    state = _path_state()
    if kind not in _declared or _declared[kind][0] != state:
        _declared[kind] = (state, _scan(kind))
    return _declared[kind][1]


def _scan(kind: Kind) -> dict[str, list[Declaration]]:
    out: dict[str, list[Declaration]] = {}
    for ep in entry_points(group=group(kind)):
        dist = ep.dist
        decl = Declaration(ep.name, ep.value.split(":")[0].strip(), dist.name if dist else "",
                           dist.version if dist else "")
        out.setdefault(ep.name, []).append(decl)
    return out


def _conflict(kind: Kind, name: str, decls: list[Declaration]) -> PluginLoadError:
    return PluginLoadError(f"{kind} '{name}' is declared by {len(decls)} distributions: "
                           f"{' and '.join(map(str, decls))}; a name must have one owner: uninstall one of them "
                           "or rename its plugin")


def _origin(module: str) -> str:
    """'module M (distribution D V)' for error messages: which package a registering module came from."""
    for kind in KINDS:
        for decls in _declarations(kind).values():
            for d in decls:
                if d.owns(module) and d.distribution:
                    return f"module '{module}' (distribution {d.distribution} {d.dist_version})"
    dists = packages_distributions().get(module.split(".")[0], [])
    where = ", ".join(f"{d} {dist_version(d)}" for d in dists) or "no installed distribution"
    return f"module '{module}' ({where})"


def names(kind: Kind) -> list[str]:
    """Every name of `kind` known without importing anything: entry points plus already registered."""
    return sorted(set(_declarations(kind)) | set(_registry[kind]))


def declared_modules(kind: Kind, name: str | None = None) -> list[str]:
    """The modules that entry points name, read from metadata without importing anything: for one plugin `name`
    (normally one; more than one is the conflict `get` refuses), or for every plugin of `kind` (sorted)."""
    if name is None:
        return sorted({d.module for decls in _declarations(kind).values() for d in decls})
    return [d.module for d in _declarations(kind).get(name, [])]


def get(kind: Kind, name: str) -> Plugin:
    """Look up a plugin, importing its module on first use. Unknown or broken plugins raise HarnessError."""
    decls = _declarations(kind).get(name, [])
    if len(decls) > 1:
        raise _conflict(kind, name, decls)
    if name in _registry[kind]:
        return _registry[kind][name]
    if not decls:
        raise UnknownNameError(kind, name, names(kind))
    module = decls[0].module
    try:
        importlib.import_module(module)
    except HarnessError:
        raise
    except Exception as exc:  # a broken plugin: report it, never hide it
        raise PluginLoadError(
            f"{kind} '{name}' failed to load from '{module}': {type(exc).__name__}: {exc}") from exc
    if name not in _registry[kind]:
        raise PluginLoadError(f"{kind} '{name}': module '{module}' loaded but registers no {kind} '{name}'")
    return _registry[kind][name]


def distribution_of(plugin: Plugin) -> tuple[str, str] | None:
    """(distribution name, version) of the installed package whose entry point provides a plugin, or None
    (a plugin registered without an entry point, e.g. in a test or a notebook)."""
    for d in _declarations(plugin.kind).get(plugin.name, []):
        if d.owns(plugin.module) and d.distribution:
            return d.distribution, d.dist_version
    return None


def distributions(keys: Iterable[str]) -> dict[str, str]:
    """'kind:name' -> 'distribution==version' for each (loaded) plugin key that comes from a distribution:
    the record's answer to "which package, at which version, provided this plugin"."""
    out = {}
    for key in keys:
        kind, _, name = key.partition(":")
        found = distribution_of(get(kind, name))  # type: ignore[arg-type]
        if found is not None:
            out[key] = f"{found[0]}=={found[1]}"
    return out


def source_file(plugin: Plugin) -> str:
    """The file of the module that registered a plugin ('' for one defined interactively)."""
    return getattr(sys.modules.get(plugin.module), "__file__", None) or ""


def default_name(kind: Kind) -> str:
    """The plugin a command uses when none is named: declared by a distribution as an entry point named after
    the kind in the group `harness.defaults` (e.g. `suite = "tiny"`), read from metadata without importing."""
    declared = {ep.value for ep in entry_points(group="harness.defaults") if ep.name == kind}
    if len(declared) != 1:
        found = f"several ({', '.join(sorted(declared))})" if declared else "no declaration"
        raise HarnessError(f"no {kind} named and no single default {kind} declared (found {found}); "
                           f"name one (see `harness list {kind}s`)")
    return declared.pop()


def describe(kind: Kind) -> list[tuple[str, str]]:
    """(name, one-line description) for every plugin of `kind`; broken plugins say why."""
    rows = []
    for name in names(kind):
        try:
            plugin = get(kind, name)
            unseeded = "" if plugin.seeded else "  (seed-independent: one defended model whatever the seed)"
            rows.append((name, f"{plugin.description}  [v{plugin.version}]{unseeded}"))
        except HarnessError as exc:
            rows.append((name, f"BROKEN: {exc}"))
    return rows


class InventoryRow(NamedTuple):
    """One installed plugin as `harness plugins` lists it; a broken one has version 'BROKEN' and says why."""

    kind: str
    name: str
    version: str
    distribution: str
    source: str
    problem: str = ""


def inventory(kinds: Iterable[Kind] = KINDS) -> list[InventoryRow]:
    """Every plugin's row. Imports plugin modules (they must not import torch at module level)."""
    rows: list[InventoryRow] = []
    for kind in kinds:
        for name in names(kind):
            try:
                plugin = get(kind, name)
            except HarnessError as exc:
                rows.append(InventoryRow(kind, name, "BROKEN", "-", "(reason below the table)", str(exc)))
                continue
            dist = distribution_of(plugin)
            rows.append(InventoryRow(kind, name, plugin.version, " ".join(dist) if dist else "(no distribution)",
                                     source_file(plugin)))
    return rows


def attack_budget(spec: Any) -> Any:
    """The `AttackBudget` of a resolved attack spec (`PluginSpec`), read through the attack's declaration."""
    from harness.results.metrics import AttackBudget

    plugin = get("attack", spec.name)
    return AttackBudget(**{dim: spec.params.get(fld) for dim, fld in plugin.budget.items()})
