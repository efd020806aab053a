"""From names and `--set` overrides to a complete, validated RunSpec, before any model loads.

Precedence for plugin params: the plugin Config's defaults < the suite's defaults < the user's `--set`.
Every config error is collected and reported at once, each naming its field.

The base model is the suite's unless `--model ID_OR_PATH` names another (`--set model.revision=...` pins a
hub revision, or a local folder's fingerprint). A hub id or local folder is located and validated here (it
exists, is a causal LM `AutoModelForCausalLM` supports, has safetensors weights and a tokenizer), so a bad
model is one line and exit 2 before any work; the spec holds the revision actually found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

from pydantic import BaseModel, ConfigDict, Field

from harness import registry
from harness.errors import ConfigError, HarnessError
from harness.judges import judge_keys
from harness.specs import (
    MAX_SEED,
    EvalSpec,
    HarmSubsets,
    ModelSpec,
    PluginSpec,
    RunSpec,
    deep_merge,
    parse_overrides,
    validate_config,
)
from harness.store.artifacts import STORE_SCHEME
from harness.suite import Suite


class ModelOverrides(BaseModel):
    """`--set model.FIELD=VALUE`: which base model a run starts from (`--model` sets `id`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(None, description="hub id or local folder (same as --model)")
    revision: str | None = Field(None, description="hub branch, tag or commit; for a local folder, its fingerprint")


@dataclass(frozen=True)
class Base:
    """What every command of a suite shares: the suite, the base model, the judges and the eval spec."""

    suite_spec: PluginSpec
    suite: Suite
    model: ModelSpec
    judges: tuple[PluginSpec, ...]
    eval: EvalSpec
    resolved: dict[str, str]  # 'auto' choices made here, for the record's overrides


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


def resolve_model(suite: Suite, overrides: dict[str, Any], model: str | None = None, *,
                  locate_hub: bool = True) -> ModelSpec:
    """The run's base model: the suite's, or `--model` / `model.id`; located and validated unless the suite
    builds it into the store. Its revision is the commit hash (hub) or the content fingerprint (folder).
    `locate_hub=False` (a dry run): a hub id is neither fetched nor looked up; its revision is 'unlocated'."""
    from harness.models.checkpoints import check_causal_lm, is_local_name, locate

    given = cast(ModelOverrides, validate_config("model", ModelOverrides, overrides, prefix="model."))
    name = model or given.id or suite.model.id
    if name.startswith(STORE_SCHEME):
        if given.revision is not None:
            raise HarnessError(f"model.revision applies to hub models and local folders; {name} is built by the "
                               "suite")
        return suite.model if name == suite.model.id else ModelSpec(id=name, revision="store", dtype=suite.model.dtype)
    revision = given.revision if given.revision is not None else (
        suite.model.revision if name == suite.model.id else None)
    if not locate_hub and not is_local_name(name):
        return ModelSpec(id=name, revision=f"unlocated:{revision}", dtype=suite.model.dtype)
    ckpt = locate(name, revision=revision, remote_code=suite.trust_remote_code)
    check_causal_lm(ckpt, remote_code=suite.trust_remote_code)
    return ModelSpec(id=ckpt.id, revision=ckpt.revision, dtype=suite.model.dtype)


def resolve_base(suite_name: str, overrides: dict[str, dict[str, Any]], *, model: str | None = None,
                 backend: str | None = None, loaded: tuple[PluginSpec, Suite] | None = None,
                 locate: bool = True) -> Base:
    """The suite (`loaded`, or loaded here), base model, judges and eval spec of a command, all validated."""
    from harness.generation.hf import resolve_backend

    suite_spec, suite = loaded or load_suite(suite_name, overrides["suite"])
    eval_data = deep_merge(suite.eval.model_dump(), overrides["eval"])
    if backend is not None:
        eval_data["backend"] = backend
    eval_spec = cast(EvalSpec, validate_config("eval", EvalSpec, eval_data, prefix="eval."))
    if suite.headline == "access" and not eval_spec.prefills:
        raise ConfigError(f"suite '{suite.name}' ranks by knowledge access (headline 'access'), which needs forced "
                          "answer openings: eval.prefills is empty (e.g. --set 'eval.prefills=[\"Sure,\"]')")
    # `auto` names no backend: the spec (so the run id and record) holds the one that runs.
    resolved = {}
    requested = eval_spec.backend
    eval_spec = eval_spec.model_copy(update={"backend": resolve_backend(requested)})
    if requested != eval_spec.backend:
        resolved["eval.backend"] = f"{requested} -> {eval_spec.backend}"
    judges = tuple(plugin_spec("judge", j, dict(params)) for j, params in suite.judges)
    judge_keys(judges)  # one name per judge of the panel
    protocol = suite.trainability
    if protocol is not None and protocol.then_attack is not None:  # the suite's own attack, checked up front
        attack = registry.get("attack", protocol.then_attack)
        defaults = suite.defaults_for("attack", attack.name, attack.config.model_fields)
        validate_config(f"trainability attack '{attack.name}'", attack.config,
                        {**defaults, **protocol.then_attack_params}, prefix="suite.")
    model_spec = resolve_model(suite, overrides.get("model", {}), model, locate_hub=locate)
    return Base(suite_spec, suite, model_spec, judges, eval_spec, resolved)


def pin_checkpoints(kind: registry.Kind, spec: PluginSpec, base: Base, *, locate: bool = True) -> PluginSpec:
    """The plugin's spec with the checkpoints its config names located, checked and their revisions pinned
    (`harness.models.plugin_inputs`); the same spec where it names none."""
    from harness.models.plugin_inputs import checkpoint_fields, pin

    plugin = registry.get(kind, spec.name)
    cfg = plugin.config.model_validate(spec.params)
    if not checkpoint_fields(cfg):
        return spec
    params = pin(f"{kind} '{spec.name}'", f"{kind}.", cfg, base.model, locate=locate,
                 trust_remote_code=base.suite.trust_remote_code)
    return spec.model_copy(update={"params": params})


class Resolved(NamedTuple):
    """A run, resolved: its spec, its suite, and where each non-default value came from (the record's overrides)."""

    spec: RunSpec
    suite: Suite
    overrides: dict[str, Any]


def resolve(suite_name: str, defence: str, attack: str, *, seed: int = 0, attack_seed: int | None = None,
            sets: list[str] | None = None, backend: str | None = None, model: str | None = None,
            tuned_from: Path | None = None, tuned: dict[str, Any] | None = None,
            extra: dict[str, dict[str, Any]] | None = None, locate: bool = True) -> Resolved:
    """The run spec, the suite, and where non-default values came from (for the record).

    `tuned_from`: a results folder whose committed tuning log for this suite and defence supplies the tuned
    settings (between the suite's defaults and the user's `--set`); `tuned`: those settings given as data instead
    (a validation run of a defence tuned for the test suite config); `extra`: overrides given as data,
    {target: {field: value}}, applied like `--set`; `locate=False`: a hub model is not looked up (a dry run).
    """
    from harness.tuning.logs import tuned_settings

    for what, value in (("seed", seed), ("attack seed", attack_seed)):
        if value is not None and not 0 <= value <= MAX_SEED:
            raise ConfigError(f"{what} {value} is out of range: seeds are integers from 0 to {MAX_SEED} (2**63 - 1)")
    overrides = parse_overrides(sets or [])
    for target, values in (extra or {}).items():
        overrides[target] = deep_merge(overrides[target], values)
    suite_spec, suite = load_suite(suite_name, overrides["suite"])
    if tuned is None:
        tuned = tuned_settings(tuned_from, suite_name, suite.protocol_version, suite_spec.params, defence,
                               suite.world_params) \
            if tuned_from is not None else {}
    attack_plugin = registry.get("attack", attack)
    defence_plugin = registry.get("defence", defence)  # unknown names fail before config errors
    # The suite's budget goes to the fields each Config declares, whatever package the plugin comes from.
    from_suite = {"defence": suite.defaults_for("defence", defence, defence_plugin.config.model_fields),
                  "attack": suite.defaults_for("attack", attack, attack_plugin.config.model_fields)}
    problems: list[str] = []
    parts: dict[str, Any] = {}
    for kind, name in (("defence", defence), ("attack", attack)):
        try:
            layers = (from_suite[kind], tuned if kind == "defence" else {}, overrides[kind])
            parts[kind] = plugin_spec(kind, name, *layers)  # type: ignore[arg-type]
        except ConfigError as exc:
            problems.append(str(exc))
    try:
        parts["subsets"] = validate_config("subsets", HarmSubsets, overrides["subsets"], prefix="subsets.")
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        base = resolve_base(suite_name, overrides, model=model, backend=backend, loaded=(suite_spec, suite),
                            locate=locate)
    except ConfigError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError(" | ".join(problems))
    for name in (parts["subsets"].defence, parts["subsets"].attack):
        suite.subset(name)  # unknown subset names fail here, before anything runs
    for kind in ("defence", "attack"):
        parts[kind] = pin_checkpoints(kind, parts[kind], base, locate=locate)
    spec = RunSpec(suite=suite_spec, model=base.model, defence=parts["defence"], attack=parts["attack"],
                   eval=base.eval, judges=base.judges, subsets=parts["subsets"], seed=seed, attack_seed=attack_seed)
    user = {k: v for k, v in overrides.items() if v}
    if model is not None:
        user["model"] = {**user.get("model", {}), "id": model}
    applied: dict[str, Any] = {"suite": from_suite, "user": user}
    if tuned:
        applied["tuned"] = dict(tuned)
    if base.resolved:
        applied["resolved"] = dict(base.resolved)
    return Resolved(spec, base.suite, applied)
