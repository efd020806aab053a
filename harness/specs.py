"""Run specifications: pydantic models, canonical JSON, stable hashes and `--set` overrides.

A run is fully described by a `RunSpec`. Its canonical JSON (sorted keys, no whitespace) hashes to the
run id, so the same spec always names the same run, on any machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import ConfigError
from harness.keying import KEY_OMIT_DEFAULT, key_models, trim
from harness.training.fields import DefenceTrainingFields, DrawFields, TrainingFields

SCHEMA_VERSION = 1
OVERRIDE_TARGETS = ("suite", "defence", "attack", "eval", "subsets", "model")
MAX_SEED = 2**63 - 1  # torch.manual_seed takes < 2**64, numpy's is taken mod 2**32; JSON readers handle int64


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal objects give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short sha256 of the canonical JSON of `obj` (pydantic models are dumped first)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


class Spec(BaseModel):
    """Base for all specs: strict, immutable, no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PluginSpec(Spec):
    """A registered plugin with its complete, validated config."""

    name: str = Field(description="registry name, e.g. 'repnoise'")
    version: str = Field(description="plugin version; enters every cache key and result row")
    params: dict[str, Any] = Field(description="the resolved config, defaults included")

    def key_dump(self) -> dict[str, Any]:
        """The spec as cache keys and run ids hash it: shared training options added after the first records
        (marked KEY_OMIT_DEFAULT) are left out while at their "as before" default, so earlier artifacts and ids
        hold. For a defence's or an attack's spec, the kinds whose configs share TrainingFields."""
        data = trim(self.model_dump(mode="json"), PluginSpec)
        data["params"] = trim_added_params(data["params"])
        return data


class ModelSpec(Spec):
    """The base model a suite starts from."""

    id: str = Field(description="hub id, local path, or 'suite:<name>' for a model the suite builds")
    revision: str = Field(description="hub revision, or the fingerprint of a suite-built checkpoint")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class EvalSpec(Spec):
    """How harmfulness is measured: which backend generates, how many prompts, how long."""

    backend: Literal["hf", "vllm", "auto"] = Field(
        "hf", description="generation backend; 'auto' (vllm with a GPU, else hf) is resolved before hashing")
    max_new_tokens: int = Field(gt=0, description="greedy decoding length")
    n_prompts: int = Field(gt=0, description="harmful eval prompts (held out from defence and attack)")
    n_harmless: int = Field(0, ge=0, description="held-out harmless QA prompts (exact-match accuracy)")
    batch_size: int = Field(gt=0, description="generation batch size")
    curve_every: int = Field(0, ge=0, description="harmfulness every k attack steps (0: only before and after)")
    # Added after the first records: left out of run ids while at the default (KEY_OMIT_DEFAULT, harness.keying).
    curve_points: Annotated[int, KEY_OMIT_DEFAULT] = Field(
        0, ge=0, description="instead of curve_every: this many evenly spaced points along each attack, whatever its "
        "length (0: use curve_every)")
    curve_prompts: Annotated[int, KEY_OMIT_DEFAULT] = Field(
        0, ge=0, description="harmful prompts per point inside a curve: the first k of the n_prompts (0: all). The "
        "curve's ends, before and after the attack, use all of them")
    prefills: Annotated[tuple[str, ...], KEY_OMIT_DEFAULT] = Field(
        (), description="forced answer openings (protocol 3): the held-out prompts are also answered greedily after "
        "each, and the primary judge scores opening + continuation; the strongest is the forced-recall metric "
        "(empty: not measured)")

    @model_validator(mode="after")
    def _curve_prompts_within_n_prompts(self) -> EvalSpec:
        if self.curve_prompts > self.n_prompts:
            raise ValueError(f"curve_prompts {self.curve_prompts} exceeds n_prompts {self.n_prompts}")
        return self


class HarmSubsets(Spec):
    """Which harm categories the defence trains on and the attack (and its evaluation) uses."""

    defence: str = Field("all", description="'all', a suite group name, or '~group' (all but the group)")
    attack: str = Field("all", description="'all', a suite group name, or '~group'")
    # Added after the first records: left out of run ids while at the default (KEY_OMIT_DEFAULT, harness.keying).
    rule: Annotated[Literal["all", "any"], KEY_OMIT_DEFAULT] = Field(
        "all", description="which subsets a row with several harm flags belongs to: 'all' (every flag in the "
        "subset, as the first records) or 'any' (one flag in it; a '~group' still holds no row with a flag of the "
        "group); harness.data.subsets")


class RunSpec(Spec):
    """Everything that determines a run's result. Its hash is the run id."""

    schema_version: int = SCHEMA_VERSION
    suite: PluginSpec
    model: ModelSpec
    defence: PluginSpec
    attack: PluginSpec
    eval: EvalSpec
    judges: tuple[PluginSpec, ...] = Field(description="the first is the primary judge")
    subsets: HarmSubsets = HarmSubsets()
    seed: int = Field(description="seed of the defence (and of the attack unless `attack_seed` is set)")
    attack_seed: Annotated[int | None, KEY_OMIT_DEFAULT] = Field(
        None, description="seed of the attack (None: `seed`, as the first records)")

    @property
    def attack_seed_used(self) -> int:
        return self.seed if self.attack_seed is None else self.attack_seed

    @property
    def run_id(self) -> str:
        return spec_id(self.model_dump(mode="json"))


# Fields added after the first records are marked KEY_OMIT_DEFAULT where they are declared (here, and in the
# shared training options below); run ids and cache keys leave them out while at the default that means "as
# before". schemas/run-id-fields.json records which fields the committed run ids hash (tests/results/test_run_ids.py).
# The configs of these kinds share the training options; their params are keyed with those options' markers.
# Only the shared options are: a record's spec is keyed without importing any plugin (validate, report and the
# leaderboard read records where plugins may be missing), so a plugin's own config carries no markers (registry).
TRAINING_KINDS = ("defence", "attack")
TRAINING_PARAMS: tuple[type[BaseModel], ...] = (TrainingFields, DefenceTrainingFields, DrawFields)


def trim_added_params(params: Mapping[str, Any],
                      models: tuple[type[BaseModel], ...] = TRAINING_PARAMS) -> dict[str, Any]:
    """A defence's or an attack's params without the shared training options that hold their "as before"
    default (keys of the plugin's own are kept as they are)."""
    out = dict(params)
    for model in models:
        out = trim(out, model)
    return out


def key_view(data: Mapping[str, Any], spec_model: type[BaseModel] = RunSpec,
             params_models: tuple[type[BaseModel], ...] = TRAINING_PARAMS) -> dict[str, Any]:
    """A RunSpec's JSON as its run id hashes it: every marked field at its default left out, in the spec's models
    (given here so that a test can extend them) and in a defence's and an attack's params."""
    data = trim(json.loads(canonical_json(data)), spec_model)  # canonical_json and back: a plain deep copy
    for kind in TRAINING_KINDS:
        if isinstance(data.get(kind), dict) and isinstance(data[kind].get("params"), dict):
            data[kind]["params"] = trim_added_params(data[kind]["params"], params_models)
    return data


def spec_id(data: Mapping[str, Any]) -> str:
    """The run id of a RunSpec's JSON (`RunSpec.model_dump(mode="json")` or a record's `spec`): the hash of its
    canonical JSON with fields added later left out while at their "as before" defaults."""
    return stable_hash(key_view(data))


def run_id_models() -> dict[str, type[BaseModel]]:
    """Every model whose fields enter a run id, by name (schemas/run-id-fields.json lists what they were)."""
    return key_models(RunSpec, *TRAINING_PARAMS)


# JSON's escape sequences. In a `--set` value that is not JSON they are stored as typed (a backslash and a
# letter), which is almost never what was meant: `suite.second_judge_prefix=\n\n` is two newlines to its author.
ESCAPE = re.compile(r'\\(["\\/bfnrt]|u[0-9a-fA-F]{4})')


def parse_value(text: str, key: str = "FIELD") -> Any:
    """`--set` values are JSON where they parse (1e-4, true, [1,2], "\\n\\n") and plain strings otherwise. A
    plain string holding a backslash escape (\\n, \\t, \\\\, \\", \\uXXXX, ...) is an error naming the
    JSON-quoted forms: one for the characters the escapes stand for, one for the backslashes as typed."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    found = ESCAPE.search(text)
    if found is None:
        return text
    forms = []
    try:
        json.loads(f'"{text}"')
        forms.append(f"--set '{key}=\"{text}\"' for the characters it stands for")
    except json.JSONDecodeError:
        pass
    forms.append(f"--set '{key}={json.dumps(text, ensure_ascii=False)}' for the backslashes as typed")
    raise ConfigError(f"Bad --set '{key}={text}': the value is not JSON and holds the escape {found.group(0)}, "
                      f"which a plain string keeps as typed; write it JSON-quoted: {', or '.join(forms)}")


def parse_overrides(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Turn ['defence.beta=0.01', 'attack.lr=2e-5'] into {'defence': {'beta': 0.01}, 'attack': {...}}."""
    out: dict[str, dict[str, Any]] = {t: {} for t in OVERRIDE_TARGETS}
    for item in items:
        key, sep, value = item.partition("=")
        target, dot, path = key.strip().partition(".")
        if not sep or not dot or not path:
            raise ConfigError(f"Bad --set '{item}': expected TARGET.FIELD=VALUE, e.g. defence.beta=0.01")
        if target not in out:
            raise ConfigError(f"Bad --set '{item}': unknown target '{target}'. Available: {', '.join(out)}")
        node = out[target]
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_value(value.strip(), key.strip())
    return out


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `top` into `base`, recursing into nested dicts."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def validate_config(what: str, config_cls: type[BaseModel], data: Mapping[str, Any], prefix: str = "") -> BaseModel:
    """Validate `data` with a plugin's Config; every bad field is named (as `prefix.field`) in one line."""
    try:
        cfg = config_cls.model_validate(dict(data))
    except ValidationError as exc:
        fields = sorted(config_cls.model_fields)
        problems = []
        for err in exc.errors():
            loc = prefix + ".".join(str(p) for p in err["loc"]) or "(config)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown field (valid: {', '.join(fields) or 'this config has no fields'})"
            elif "input" in err and not isinstance(err["input"], dict):
                msg = f"{msg} (got {err['input']!r})"
            problems.append(f"{loc}: {msg}")
        raise ConfigError(f"Invalid {what} config: " + "; ".join(problems)) from None
    bad = non_finite(cfg.model_dump())
    if bad:
        raise ConfigError(f"Invalid {what} config: " + "; ".join(
            f"{prefix}{loc}: must be a finite number (got {value!r})" for loc, value in bad))
    return cfg


def non_finite(value: Any, loc: str = "") -> list[tuple[str, float]]:
    """(location, value) of every NaN or infinity in a nested config: `1e400`, `Infinity` and "inf" all
    parse as floats, and no learning rate, weight or threshold of a run may be one."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(loc or "(value)", value)]
    if isinstance(value, Mapping):
        return [bad for k, v in value.items() for bad in non_finite(v, f"{loc}.{k}" if loc else str(k))]
    if isinstance(value, list | tuple):
        return [bad for i, v in enumerate(value) for bad in non_finite(v, f"{loc}[{i}]")]
    return []
