"""From names and `--set` overrides to a complete, validated RunSpec, before any model loads.

Precedence for plugin params: the plugin Config's defaults < the suite's defaults < the user's `--set`.
Every config error is collected and reported at once, each naming its field.
"""

from __future__ import annotations

from typing import Any

from harness import registry
from harness.errors import ConfigError
from harness.specs import (
    MAX_SEED,
    EvalSpec,
    HarmSubsets,
    PluginSpec,
    RunSpec,
    deep_merge,
    parse_overrides,
    validate_config,
)
from harness.suite import Suite


def plugin_spec(kind: registry.Kind, name: str, *layers: dict[str, Any]) -> PluginSpec:
    plugin = registry.get(kind, name)
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    cfg = validate_config(f"{kind} '{name}'", plugin.config, merged, prefix=f"{kind}.")
    return PluginSpec(name=name, version=plugin.version, params=cfg.model_dump(mode="json"))


def load_suite(name: str, params: dict[str, Any]) -> tuple[PluginSpec, Suite]:
    """The suite plugin called with its validated config (cheap: nothing is built)."""
    spec = plugin_spec("suite", name, params)
    plugin = registry.get("suite", name)
    return spec, plugin.fn(plugin.config.model_validate(spec.params))


def resolve(suite_name: str, defence: str, attack: str, *, seed: int = 0, sets: list[str] | None = None,
            backend: str | None = None) -> tuple[RunSpec, Suite, dict[str, Any]]:
    """The run spec, the suite, and where non-default values came from (for the record)."""
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed {seed} is out of range: seeds are integers from 0 to {MAX_SEED} (2**63 - 1)")
    overrides = parse_overrides(sets or [])
    suite_spec, suite = load_suite(suite_name, overrides["suite"])
    attack_plugin = registry.get("attack", attack)
    defence_plugin = registry.get("defence", defence)  # unknown names fail before config errors
    # The suite's budget goes to the fields each Config declares, whatever package the plugin comes from.
    from_suite = {"defence": suite.defaults_for("defence", defence, defence_plugin.config.model_fields),
                  "attack": suite.defaults_for("attack", attack, attack_plugin.config.model_fields)}
    problems: list[str] = []
    parts: dict[str, Any] = {}
    for kind, name in (("defence", defence), ("attack", attack)):
        try:
            parts[kind] = plugin_spec(kind, name, from_suite[kind], overrides[kind])  # type: ignore[arg-type]
        except ConfigError as exc:
            problems.append(str(exc))
    eval_data = deep_merge(suite.eval.model_dump(), overrides["eval"])
    if backend is not None:
        eval_data["backend"] = backend
    for key, cls, data in (("eval", EvalSpec, eval_data), ("subsets", HarmSubsets, overrides["subsets"])):
        try:
            parts[key] = validate_config(key, cls, data, prefix=f"{key}.")
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(" | ".join(problems))
    for name in (parts["subsets"].defence, parts["subsets"].attack):
        suite.subset(name)  # unknown subset names fail here, before anything runs
    from harness.generate import resolve_backend

    # `auto` names no backend: the spec (so the run id and record) holds the one that runs.
    requested = parts["eval"].backend
    parts["eval"] = parts["eval"].model_copy(update={"backend": resolve_backend(requested)})
    judges = tuple(plugin_spec("judge", j, dict(params)) for j, params in suite.judges)
    spec = RunSpec(suite=suite_spec, model=suite.model, defence=parts["defence"], attack=parts["attack"],
                   eval=parts["eval"], judges=judges, subsets=parts["subsets"], seed=seed)
    applied: dict[str, Any] = {"suite": from_suite, "user": {k: v for k, v in overrides.items() if v}}
    if requested != parts["eval"].backend:
        applied["resolved"] = {"eval.backend": f"{requested} -> {parts['eval'].backend}"}
    return spec, suite, applied
