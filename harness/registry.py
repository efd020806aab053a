"""The plugin registry: decorators plus lazily loaded entry points.

Built-in and third-party plugins are found the same way: each name is an entry point in the group
`harness.<kind>s` whose value is the module that registers it. Nothing is imported until a name is
looked up, and a plugin that fails to import breaks only the runs that use it.

    @register_defence("repnoise", config=Config, version="1")
    def defend(model, cfg, ctx): ...

An attack declares which of its config fields measure its strength in the benchmark's budget dimensions
(`budget={"samples": "samples", "lr": "lr"}`, dimensions as in `harness.metrics.AttackBudget`); tables and
reports read a budget through that declaration, never through a field name of their own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal, TypeVar

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

    @property
    def module(self) -> str:
        return self.fn.__module__


_registry: dict[Kind, dict[str, Plugin]] = {k: {} for k in KINDS}


def register(kind: Kind, name: str, *, config: type[BaseModel], version: str, description: str | None = None,
             budget: Mapping[str, str] | None = None, check: Callable[..., None] | None = None) -> Callable[[F], F]:
    """Register `fn` as plugin `name` of `kind`; the description defaults to its docstring's first line."""
    from harness.metrics import AttackBudget

    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}")
    budget = dict(budget or {})
    if budget and kind != "attack":
        raise PluginLoadError(f"{kind} '{name}' declares a budget; only attacks have one")
    bad = [f"{d}->{f}" for d, f in budget.items() if d not in AttackBudget.model_fields or f not in config.model_fields]
    if bad:
        raise PluginLoadError(f"attack '{name}' declares an invalid budget {bad}: dimensions are "
                              f"{', '.join(AttackBudget.model_fields)}, fields must be in its Config")

    def decorate(fn: F) -> F:
        existing = _registry[kind].get(name)
        if existing is not None and existing.fn.__qualname__ != fn.__qualname__:
            raise PluginLoadError(f"{kind} '{name}' is registered twice ({existing.module} and {fn.__module__})")
        desc = description or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        _registry[kind][name] = Plugin(kind, name, fn, config, str(version), desc, budget, check)
        return fn

    return decorate


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


def _entry_points(kind: Kind) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group(kind))}


def names(kind: Kind) -> list[str]:
    """Every name of `kind` known without importing anything: entry points plus already registered."""
    return sorted(set(_entry_points(kind)) | set(_registry[kind]))


def get(kind: Kind, name: str) -> Plugin:
    """Look up a plugin, importing its module on first use. Unknown or broken plugins raise HarnessError."""
    if name in _registry[kind]:
        return _registry[kind][name]
    eps = _entry_points(kind)
    if name not in eps:
        raise UnknownNameError(kind, name, names(kind))
    ep = eps[name]
    try:
        importlib.import_module(ep.value.split(":")[0])
    except HarnessError:
        raise
    except Exception as exc:  # a broken plugin: report it, never hide it
        raise PluginLoadError(
            f"{kind} '{name}' failed to load from '{ep.value}': {type(exc).__name__}: {exc}") from exc
    if name not in _registry[kind]:
        raise PluginLoadError(f"{kind} '{name}': module '{ep.value}' loaded but registers no {kind} '{name}'")
    return _registry[kind][name]


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
            rows.append((name, f"{plugin.description}  [v{plugin.version}]"))
        except HarnessError as exc:
            rows.append((name, f"BROKEN: {exc}"))
    return rows


def attack_budget(spec: Any) -> Any:
    """The `AttackBudget` of a resolved attack spec (`PluginSpec`), read through the attack's declaration."""
    from harness.metrics import AttackBudget

    plugin = get("attack", spec.name)
    return AttackBudget(**{dim: spec.params.get(fld) for dim, fld in plugin.budget.items()})
