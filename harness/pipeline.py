"""One run, stage by stage: prepare suite -> defend -> evaluate -> attack -> evaluate -> record.

Every stage is a pure function of its inputs and is cached in the artifact store under the hash of those
inputs, so an unchanged re-run costs seconds, an interrupted run resumes at the last finished stage, and
all attacks of a grid share one defended model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import __version__, registry
from harness.errors import ConfigError, HarnessError
from harness.plugins import StageContext
from harness.progress import bar
from harness.records import Provenance, RunRecord, StageInfo, read_record, record_path, write_record
from harness.specs import (
    EvalSpec,
    PluginSpec,
    RunSpec,
    deep_merge,
    parse_overrides,
    stable_hash,
    validate_config,
)
from harness.store import Store, resolve_ref
from harness.suite import Suite, SuiteData

MODELS, GENERATIONS, SCORES = "models", "generations", "scores"


# ----------------------------------------------------------------------------- resolving a spec
def _plugin_spec(kind: registry.Kind, name: str, *layers: dict[str, Any]) -> PluginSpec:
    plugin = registry.get(kind, name)
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    cfg = validate_config(f"{kind} '{name}'", plugin.config, merged, prefix=f"{kind}.")
    return PluginSpec(name=name, version=plugin.version, params=cfg.model_dump(mode="json"))


def resolve(suite_name: str, defence: str, attack: str, *, seed: int = 0, sets: list[str] | None = None,
            backend: str | None = None) -> tuple[RunSpec, Suite, dict[str, Any]]:
    """Validate everything before any model loads; every config error is reported at once."""
    overrides = parse_overrides(sets or [])
    suite_plugin = registry.get("suite", suite_name)
    suite_spec = _plugin_spec("suite", suite_name, overrides["suite"])
    suite: Suite = suite_plugin.fn(suite_plugin.config.model_validate(suite_spec.params))
    attack_plugin = registry.get("attack", attack)
    registry.get("defence", defence)  # unknown names fail before config errors
    shared = {k: v for k, v in suite.attack_defaults.items() if k in attack_plugin.config.model_fields}
    from_suite = {"defence": dict(suite.plugin_defaults.get(f"defence:{defence}", {})),
                  "attack": {**shared, **suite.plugin_defaults.get(f"attack:{attack}", {})}}
    problems, parts = [], {}
    for kind, name in (("defence", defence), ("attack", attack)):
        try:
            parts[kind] = _plugin_spec(kind, name, from_suite[kind], overrides[kind])  # type: ignore[arg-type]
        except ConfigError as exc:
            problems.append(str(exc))
    eval_data = deep_merge(suite.eval.model_dump(), overrides["eval"])
    if backend is not None:
        eval_data["backend"] = backend
    try:
        eval_spec = validate_config("eval", EvalSpec, eval_data, prefix="eval.")
    except ConfigError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError(" | ".join(problems))
    from harness.generate import resolve_backend

    # `auto` names no backend: the spec (so the run id and record) holds the one that runs.
    requested = eval_spec.backend
    eval_spec = eval_spec.model_copy(update={"backend": resolve_backend(requested)})
    judges = tuple(_plugin_spec("judge", j, dict(params)) for j, params in suite.judges)
    spec = RunSpec(suite=suite_spec, model=suite.model, defence=parts["defence"], attack=parts["attack"],
                   eval=eval_spec, judges=judges, seed=seed)  # type: ignore[arg-type]
    applied: dict[str, Any] = {"suite": from_suite, "user": {k: v for k, v in overrides.items() if v}}
    if requested != eval_spec.backend:
        applied["resolved"] = {"eval.backend": f"{requested} -> {eval_spec.backend}"}
    return spec, suite, applied


# ----------------------------------------------------------------------------- helpers
def fingerprint(dataset: Any) -> str:
    """Content hash of a dataset's rows (order included)."""
    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    return stable_hash(rows)


def split_evidence(data: SuiteData) -> dict[str, Any]:
    """Sizes of the defence/attack/eval splits and their pairwise prompt overlaps (all must be 0)."""
    prompts = {name: set(getattr(data, name)["prompt"]) for name in ("defence", "attack", "eval")}
    overlaps = {f"{a}&{b}": len(prompts[a] & prompts[b])
                for a, b in (("defence", "attack"), ("defence", "eval"), ("attack", "eval"))}
    bad = {k: v for k, v in overlaps.items() if v}
    if bad:
        raise HarnessError(f"suite splits overlap in prompts: {bad}; defence, attack and eval must be disjoint")
    return {"sizes": {n: len(p) for n, p in prompts.items()}, "prompt_overlap": overlaps}


def model_ref(store: Store, key: str) -> str:
    """The ref of a stored model, following the alias a defence that changed nothing leaves behind."""
    return store.meta(MODELS, key).get("alias") or f"store:{MODELS}/{key}"


def model_dir(store: Store, key: str) -> Path:
    return Path(resolve_ref(model_ref(store, key), store))


@dataclasses.dataclass
class Stages:
    """Times and cache hits of each stage, for the record."""

    info: dict[str, StageInfo] = dataclasses.field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, key: str = "", cached: bool = False) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.info[name] = StageInfo(seconds=round(time.perf_counter() - start, 3), cached=cached, key=key)


# ----------------------------------------------------------------------------- stages
def train_stage(store: Store, key: str, meta: dict[str, Any], source_ref: str, fn: Callable[..., Any],
                cfg: Any, ctx: StageContext, label: str, force: bool) -> None:
    """Load `source_ref`, apply a defence or attack `fn`, and store the result under `key`.

    A plugin that returns None changed nothing: the artifact is an alias of its source, no copy is saved.
    """
    from harness.models import load_causal_lm, save_checkpoint

    model, tok = load_causal_lm(Path(resolve_ref(source_ref, store)))
    with bar(label, total=None) as advance:
        result = fn(model, cfg, dataclasses.replace(ctx, tokenizer=tok, progress=advance))
    with store.writing(MODELS, key, meta, force=force) as tmp:
        if result is None:
            meta["alias"] = source_ref
        else:
            save_checkpoint(result, tok, tmp)


def generate_stage(store: Store, key: str, model_path: Path, prompt_sets: dict[str, list[str]], spec: EvalSpec,
                   force: bool) -> dict[str, list[str]]:
    """Greedy generations for every prompt set of a stage, from one backend call; cached as parquet."""
    import pandas as pd

    from harness.generate import get_backend

    if not store.has(GENERATIONS, key) or force:
        backend = get_backend(spec.backend)
        with bar(f"generate ({spec.backend})", total=sum(map(len, prompt_sets.values()))) as advance:
            texts = backend(model_path, prompt_sets, max_new_tokens=spec.max_new_tokens,
                            batch_size=spec.batch_size, progress=advance)
        rows = [(name, p, g) for name in prompt_sets for p, g in zip(prompt_sets[name], texts[name], strict=True)]
        with store.writing(GENERATIONS, key, {"backend": spec.backend, "sets": list(prompt_sets)}, force=force) as tmp:
            pd.DataFrame(rows, columns=["set", "prompt", "generation"]).to_parquet(tmp / "generations.parquet")
    frame = pd.read_parquet(store.path(GENERATIONS, key) / "generations.parquet")
    out = {name: frame.loc[frame["set"] == name, "generation"].tolist() for name in prompt_sets}
    cached = {name: frame.loc[frame["set"] == name, "prompt"].tolist() for name in prompt_sets}
    if cached != prompt_sets:
        raise HarnessError(f"cached generations {store.path(GENERATIONS, key)} do not match the prompts; "
                           "rerun with --force")
    return out


def score_stage(store: Store, key: str, judge_spec: PluginSpec, judges: dict[str, Any], prompts: list[str],
                generations: list[str], force: bool) -> tuple[list[float], str]:
    """P(harmful) per generation from one judge, cached as parquet. Returns (scores, judge id)."""
    import pandas as pd

    if not store.has(SCORES, key) or force:
        judge = judges.get(judge_spec.name)
        if judge is None:
            plugin = registry.get("judge", judge_spec.name)
            judge = judges[judge_spec.name] = plugin.fn(plugin.config.model_validate(judge_spec.params), store)
        scores = judge.score(prompts, generations)
        with store.writing(SCORES, key, {"judge": judge_spec.model_dump(), "judge_id": judge.id}, force=force) as tmp:
            pd.DataFrame({"score": scores}).to_parquet(tmp / "scores.parquet")
    judge_id = store.meta(SCORES, key)["judge_id"]
    return pd.read_parquet(store.path(SCORES, key) / "scores.parquet")["score"].tolist(), judge_id


def evaluate(store: Store, model_key: str, spec: RunSpec, data: SuiteData, judges: dict[str, Any],
             stages: Stages, name: str, force: bool) -> tuple[dict[str, Any], list[str]]:
    """Generate on every eval prompt set at once, score harm with every judge (the first is primary), and
    harmless-QA exact match against the reference answers."""
    from harness.judges import agreement, harmfulness

    harmful = data.eval.select(range(min(spec.eval.n_prompts, len(data.eval))))
    harmless = data.harmless_eval.select(range(min(spec.eval.n_harmless, len(data.harmless_eval))))
    prompt_sets = {"harmful": list(harmful["prompt"]), "harmless": list(harmless["prompt"])}
    gen_key = stable_hash({"model": model_key, "eval": spec.eval.model_dump(), "prompts": prompt_sets})
    with stages.stage(f"{name}.generate", gen_key, cached=store.has(GENERATIONS, gen_key) and not force):
        generations = generate_stage(store, gen_key, model_dir(store, model_key), prompt_sets, spec.eval, force)
    prompts, outputs, categories = prompt_sets["harmful"], generations["harmful"], list(harmful["category"])
    by_judge, ids, all_scores = {}, [], {}
    for judge_spec in spec.judges:
        key = stable_hash({"generations": gen_key, "judge": judge_spec.model_dump()})
        with stages.stage(f"{name}.judge.{judge_spec.name}", key, cached=store.has(SCORES, key) and not force):
            scores, judge_id = score_stage(store, key, judge_spec, judges, prompts, outputs, force)
        all_scores[judge_spec.name] = scores
        by_judge[judge_spec.name] = harmfulness(scores, categories)
        ids.append(judge_id)
    primary = spec.judges[0].name
    metrics: dict[str, Any] = {"harmfulness": by_judge[primary], "judge": primary,
                               "by_judge": {k: {m: v[m] for m in ("mean", "frac_over_0.5")}
                                            for k, v in by_judge.items()},
                               "harmless_qa": exact_match(generations["harmless"], list(harmless["response"])),
                               "artifacts": {"generations": gen_key}}
    if len(spec.judges) > 1:
        second = spec.judges[1].name
        metrics["judge_agreement"] = {"with": second, **agreement(all_scores[primary], all_scores[second])}
    return metrics, ids


def exact_match(generations: list[str], references: list[str]) -> dict[str, float]:
    """Fraction of generations equal to the reference answer (whitespace-stripped)."""
    n = len(references)
    hits = sum(g.strip() == r.strip() for g, r in zip(generations, references, strict=True))
    return {"exact_match": hits / n if n else 0.0, "n": n}


# ----------------------------------------------------------------------------- one run
def run(spec: RunSpec, suite: Suite, overrides: dict[str, Any], *, store: Store, results_dir: Path,
        force: bool = False) -> tuple[RunRecord, bool]:
    """Run (or find) one cell. Returns (record, cached): cached means the record already existed."""
    path = record_path(results_dir, suite.name, suite.protocol_version, spec.run_id)
    if path.exists() and not force:
        return read_record(path), True
    from harness.models import device_name
    from harness.provenance import git_state, package_versions, platform_name, python_version

    stages = Stages()
    with stages.stage("prepare"):
        suite.prepare(store, False)
    data = suite.data()
    evidence = split_evidence(data)
    ctx = StageContext(tokenizer=None, data=data, max_length=suite.max_length, seed=spec.seed)
    judges: dict[str, Any] = {}

    defence = registry.get("defence", spec.defence.name)
    defended = stable_hash({"base": spec.model.model_dump(), "defence": spec.defence.model_dump(), "seed": spec.seed,
                            "data": [fingerprint(data.defence), fingerprint(data.retain)]})
    hit = store.has(MODELS, defended) and not force
    with stages.stage("defend", defended, cached=hit):
        if not hit:
            view = dataclasses.replace(data, attack=None, eval=None, harmless_eval=None)
            train_stage(store, defended, {"stage": "defend", "defence": spec.defence.model_dump()}, spec.model.id,
                        defence.fn, defence.config.model_validate(spec.defence.params),
                        dataclasses.replace(ctx, data=view), f"defend: {spec.defence.name}", force)
    pre, judge_ids = evaluate(store, defended, spec, data, judges, stages, "pre_attack", force)

    attack = registry.get("attack", spec.attack.name)
    attacked = stable_hash({"defended": defended, "attack": spec.attack.model_dump(), "seed": spec.seed,
                            "data": fingerprint(data.attack)})
    hit = store.has(MODELS, attacked) and not force
    with stages.stage("attack", attacked, cached=hit):
        if not hit:
            view = dataclasses.replace(data, defence=None, retain=None, eval=None, harmless_eval=None)
            train_stage(store, attacked, {"stage": "attack", "attack": spec.attack.model_dump()},
                        model_ref(store, defended), attack.fn, attack.config.model_validate(spec.attack.params),
                        dataclasses.replace(ctx, data=view), f"attack: {spec.attack.name}", force)
    post, _ = evaluate(store, attacked, spec, data, judges, stages, "post_attack", force)

    commit, dirty = git_state()
    plugins = {f"{k}:{p.name}": p.version for k, p in (("suite", spec.suite), ("defence", spec.defence),
                                                       ("attack", spec.attack))}
    plugins |= {f"judge:{j.name}": j.version for j in spec.judges}
    record = RunRecord(
        run_id=spec.run_id, suite=suite.name, protocol_version=suite.protocol_version, spec=spec,
        overrides=overrides, evidence=evidence, metrics={"pre_attack": pre, "post_attack": post},
        provenance=Provenance(
            harness_version=__version__, git_commit=commit, git_dirty=dirty, python=python_version(),
            platform=platform_name(), packages=package_versions(), plugins=plugins, judge_ids=judge_ids,
            backend=spec.eval.backend, seed=spec.seed, device=device_name(), stages=stages.info,
            created_at=datetime.now(UTC).isoformat(timespec="seconds")))
    write_record(path, record)
    return record, False
