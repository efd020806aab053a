"""The plugin registry: decorators plus lazily loaded entry points.

Built-in and third-party plugins are found the same way: each name is an entry point in the group
`harness.<kind>s` whose value is the module that registers it. Nothing is imported until a name is
looked up, and a plugin that fails to import breaks only the runs that use it.

    @register_defence("repnoise", config=Config, version="1")
    def defend(model, data, cfg, ctx): ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
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

    @property
    def module(self) -> str:
        return self.fn.__module__


_registry: dict[Kind, dict[str, Plugin]] = {k: {} for k in KINDS}


def register(kind: Kind, name: str, *, config: type[BaseModel], version: str,
             description: str | None = None) -> Callable[[F], F]:
    """Register `fn` as plugin `name` of `kind`; the description defaults to its docstring's first line."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}")

    def decorate(fn: F) -> F:
        existing = _registry[kind].get(name)
        if existing is not None and existing.fn.__qualname__ != fn.__qualname__:
            raise PluginLoadError(f"{kind} '{name}' is registered twice ({existing.module} and {fn.__module__})")
        desc = description or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        _registry[kind][name] = Plugin(kind, name, fn, config, str(version), desc)
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
