"""One run, stage by stage; `run` below reads top to bottom in execution order:

    prepare suite -> select data (harm subsets) -> defend -> evaluate base and defended -> attack (with a
    harmfulness curve) -> evaluate -> resistance, stability, trainability -> one immutable record

Every stage is `stages.cached(name, kind, inputs, build)`: the inputs written there are the whole cache key,
so an unchanged re-run costs seconds, an interrupted run resumes at the last finished stage, and all attacks
of a grid share one defended model and its condition metrics.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import __version__, registry
from harness.errors import HarnessError
from harness.evaluation import Evaluator
from harness.metrics import Evidence, Metrics
from harness.plugins import StageContext
from harness.progress import bar
from harness.records import Provenance, RunRecord, read_record, record_path, write_record_once
from harness.specs import PluginSpec, RunSpec
from harness.stages import MODELS, Build, Stages, fingerprint
from harness.store import Store, atomic_write_text
from harness.subsets import filter_categories, subset_evidence
from harness.suite import Suite, SuiteData


def split_evidence(data: SuiteData) -> dict[str, Any]:
    """Sizes of the defence/attack/eval splits and their pairwise prompt overlaps (all must be 0)."""
    prompts = {name: set(getattr(data, name)["prompt"]) for name in ("defence", "attack", "eval")}
    overlaps = {f"{a}&{b}": len(prompts[a] & prompts[b])
                for a, b in (("defence", "attack"), ("defence", "eval"), ("attack", "eval"))}
    bad = {k: v for k, v in overlaps.items() if v}
    if bad:
        raise HarnessError(f"suite splits overlap in prompts: {bad}; defence, attack and eval must be disjoint")
    return {"sizes": {n: len(p) for n, p in prompts.items()}, "prompt_overlap": overlaps}


def select_data(suite: Suite, spec: RunSpec) -> tuple[SuiteData, Evidence]:
    """The suite's data restricted to the run's harm subsets, with the evidence that the splits are disjoint."""
    data = suite.data()
    d_cats, a_cats = suite.subset(spec.subsets.defence), suite.subset(spec.subsets.attack)
    data = dataclasses.replace(data, defence=filter_categories(data.defence, d_cats, "defence"),
                               attack=filter_categories(data.attack, a_cats, "attack"),
                               eval=filter_categories(data.eval, a_cats, "eval"))
    subsets = subset_evidence(spec.subsets.defence, spec.subsets.attack, d_cats, a_cats)
    return data, Evidence.model_validate({**split_evidence(data), "subsets": subsets})


def provenance(spec: RunSpec, judge_ids: list[str], stages: Stages) -> Provenance:
    """Versions, commit, machine and stage timings of a run."""
    from harness.models import device_name
    from harness.provenance import git_state, package_versions, platform_name, python_version

    commit, dirty = git_state()
    plugins = {f"{k}:{p.name}": p.version for k, p in (("suite", spec.suite), ("defence", spec.defence),
                                                       ("attack", spec.attack))}
    plugins |= {f"judge:{j.name}": j.version for j in spec.judges}
    return Provenance(harness_version=__version__, git_commit=commit, git_dirty=dirty, python=python_version(),
                      platform=platform_name(), packages=package_versions(), plugins=plugins, judge_ids=judge_ids,
                      plugin_distributions=registry.distributions(plugins),
                      backend=spec.eval.backend, seed=spec.seed, device=device_name(), stages=stages.info,
                      created_at=datetime.now(UTC).isoformat(timespec="seconds"))


def run(spec: RunSpec, suite: Suite, overrides: dict[str, Any], *, store: Store, results_dir: Path,
        force: bool = False) -> tuple[RunRecord, bool]:
    """Run (or find) one cell. Returns (record, cached): cached means the record already existed."""
    path = record_path(results_dir, suite.name, suite.protocol_version, spec.run_id)
    if path.exists() and not force:
        return read_record(path), True
    stages = Stages(store, force=force)
    start, writes = time.perf_counter(), store.writes
    suite.prepare(store, force)  # --force rebuilds the suite's own artifacts too
    stages.timed("prepare", start, cached=store.writes == writes)
    data, evidence = select_data(suite, spec)
    ctx = StageContext(tokenizer=None, data=data, max_length=suite.max_length, seed=spec.seed)
    evaluator = Evaluator(stages, spec, suite, data)
    base = spec.model.id

    # Defend: the defence sees only its own split and the harmless retain data.
    defended = stages.cached("defend", MODELS, {
        "base": spec.model.model_dump(), "defence": spec.defence.model_dump(), "seed": spec.seed,
        "data": [fingerprint(data.defence), fingerprint(data.retain)]},
        apply_plugin("defence", spec.defence, base, stages,
                     dataclasses.replace(ctx, data=dataclasses.replace(data, attack=None, eval=None, harmless_eval=None,
                                                                        trainability_train=None,
                                                                        trainability_test=None))))
    defended_ref = stages.model_ref(defended)
    base_eval = evaluator.evaluate(base, "base")
    pre = evaluator.evaluate(defended_ref, "pre_attack")

    # Attack: the attack sees only its split; a callback records harmfulness every k steps.
    points: list[list[float]] = []

    def record_point(step: int, model: Any, tok: Any) -> None:
        if step > 0:
            points.append([step, evaluator.harmfulness_now(model, tok)])

    attacked = stages.cached("attack", MODELS, {
        "defended": defended, "attack": spec.attack.model_dump(), "seed": spec.seed,
        "data": fingerprint(data.attack), "curve_every": spec.eval.curve_every},
        apply_plugin("attack", spec.attack, defended_ref, stages,
                     dataclasses.replace(ctx, data=dataclasses.replace(data, defence=None, retain=None, eval=None,
                                                                        harmless_eval=None, trainability_train=None,
                                                                        trainability_test=None),
                                         every=spec.eval.curve_every),
                     on_step=record_point, extra={"curve": points}))
    post = evaluator.evaluate(stages.model_ref(attacked), "post_attack")

    start, writes = time.perf_counter(), store.writes
    curve = json.loads((store.path(MODELS, attacked) / "extra.json").read_text())["curve"]
    metrics = Metrics(base=base_eval, pre_attack=pre, post_attack=post,
                      resistance=evaluator.resistance(base_eval, pre, post, curve),
                      stability=evaluator.stability(defended_ref, base, pre, base_eval),
                      trainability=evaluator.trainability(defended_ref, base))
    stages.timed("conditions", start, cached=store.writes == writes)
    record = RunRecord(run_id=spec.run_id, suite=suite.name, protocol_version=suite.protocol_version, spec=spec,
                       overrides=overrides, evidence=evidence, budget=registry.attack_budget(spec.attack),
                       metrics=metrics, provenance=provenance(spec, evaluator.judge_ids, stages))
    record, wrote = write_record_once(path, record, replace_corrupt=force)
    return record, not wrote


def apply_plugin(kind: registry.Kind, plugin_spec: PluginSpec, source_ref: str, stages: Stages, ctx: StageContext,
                 *, on_step: Callable[[int, Any, Any], None] | None = None,
                 extra: dict[str, Any] | None = None) -> Build:
    """The build of a defend or attack stage: load `source_ref`, apply the plugin, save the result.

    A plugin that returns None changed nothing: the artifact is an alias of its source, no copy is saved.
    `on_step(step, model, tokenizer)` is handed to the plugin as its training callback; `extra` (filled by
    it, e.g. a resistance curve) is saved beside the model as extra.json.
    """
    plugin = registry.get(kind, plugin_spec.name)
    cfg = plugin.config.model_validate(plugin_spec.params)

    def build(tmp: Path) -> dict[str, Any] | None:
        from harness.models import load_causal_lm, save_checkpoint

        model, tok = load_causal_lm(stages.model_path(source_ref))
        callback = (lambda step, m: on_step(step, m, tok)) if on_step else None
        with bar(f"{kind}: {plugin_spec.name}", total=None) as advance:
            result = plugin.fn(model, cfg, dataclasses.replace(ctx, tokenizer=tok, progress=advance, callback=callback))
        atomic_write_text(tmp / "extra.json", json.dumps(extra or {}))
        if result is None:
            return {"alias": source_ref}
        save_checkpoint(result, tok, tmp)
        return None

    return build
