"""One run, stage by stage:

    prepare suite -> select data (harm subsets) -> defend -> evaluate base and defended -> attack (with a
    harmfulness curve) -> evaluate -> stability, trainability (per defended model) -> one immutable record

Every stage is cached (harness.stages), so an unchanged re-run costs seconds, an interrupted run resumes at
the last finished stage, and all attacks of a grid share one defended model and its condition metrics.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import __version__, registry
from harness.conditions import stability, trainability
from harness.conditions.resistance import curve_metrics
from harness.errors import HarnessError
from harness.plugins import StageContext
from harness.records import Provenance, RunRecord, read_record, record_path, write_record_once
from harness.specs import RunSpec, stable_hash
from harness.stages import MODELS, Evaluator, Stages, fingerprint, model_ref, stored_extra, train_stage
from harness.store import Store
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


def select_data(suite: Suite, spec: RunSpec) -> tuple[SuiteData, dict[str, Any]]:
    """The suite's data restricted to the run's harm subsets, with the evidence that the splits are disjoint."""
    data = suite.data()
    d_cats, a_cats = suite.subset(spec.subsets.defence), suite.subset(spec.subsets.attack)
    data = dataclasses.replace(data, defence=filter_categories(data.defence, d_cats, "defence"),
                               attack=filter_categories(data.attack, a_cats, "attack"),
                               eval=filter_categories(data.eval, a_cats, "eval"))
    evidence = split_evidence(data)
    evidence["subsets"] = subset_evidence(spec.subsets.defence, spec.subsets.attack, d_cats, a_cats)
    return data, evidence


def provenance(spec: RunSpec, judge_ids: list[str], stages: Stages) -> Provenance:
    from harness.models import device_name
    from harness.provenance import git_state, package_versions, platform_name, python_version

    commit, dirty = git_state()
    plugins = {f"{k}:{p.name}": p.version for k, p in (("suite", spec.suite), ("defence", spec.defence),
                                                       ("attack", spec.attack))}
    plugins |= {f"judge:{j.name}": j.version for j in spec.judges}
    return Provenance(harness_version=__version__, git_commit=commit, git_dirty=dirty, python=python_version(),
                      platform=platform_name(), packages=package_versions(), plugins=plugins, judge_ids=judge_ids,
                      backend=spec.eval.backend, seed=spec.seed, device=device_name(), stages=stages.info,
                      created_at=datetime.now(UTC).isoformat(timespec="seconds"))


def run(spec: RunSpec, suite: Suite, overrides: dict[str, Any], *, store: Store, results_dir: Path,
        force: bool = False) -> tuple[RunRecord, bool]:
    """Run (or find) one cell. Returns (record, cached): cached means the record already existed."""
    path = record_path(results_dir, suite.name, suite.protocol_version, spec.run_id)
    if path.exists() and not force:
        return read_record(path), True
    stages = Stages()
    writes = store.writes
    with stages.stage("prepare", cached=lambda: store.writes == writes):
        suite.prepare(store, force)
    data, evidence = select_data(suite, spec)
    ctx = StageContext(tokenizer=None, data=data, max_length=suite.max_length, seed=spec.seed)
    evaluator = Evaluator(store, spec, suite, data, stages, force)
    base = spec.model.id

    # Defend: the defence sees only its own split and the harmless retain data.
    defence = registry.get("defence", spec.defence.name)
    defended = stable_hash({"base": spec.model.model_dump(), "defence": spec.defence.model_dump(), "seed": spec.seed,
                            "data": [fingerprint(data.defence), fingerprint(data.retain)]})
    with store.compute_once(MODELS, defended, force=force) as need, stages.stage("defend", defended, cached=not need):
        if need:
            view = dataclasses.replace(data, attack=None, eval=None, harmless_eval=None)
            train_stage(store, defended, {"stage": "defend", "defence": spec.defence.model_dump()}, base,
                        defence.fn, defence.config.model_validate(spec.defence.params),
                        dataclasses.replace(ctx, data=view), f"defend: {spec.defence.name}", force)
    defended_ref = model_ref(store, defended)
    base_metrics = evaluator.evaluate(base, "base")
    pre = evaluator.evaluate(defended_ref, "pre_attack")

    # Attack: the attack sees only its split; a callback records harmfulness every k steps.
    attack = registry.get("attack", spec.attack.name)
    attacked = stable_hash({"defended": defended, "attack": spec.attack.model_dump(), "seed": spec.seed,
                            "data": fingerprint(data.attack), "curve_every": spec.eval.curve_every})
    with store.compute_once(MODELS, attacked, force=force) as need, stages.stage("attack", attacked, cached=not need):
        if need:
            points: list[list[float]] = []

            def record_point(step: int, model: Any, tok: Any) -> None:
                if step > 0:
                    points.append([step, evaluator.harmfulness_now(model, tok)])

            view = dataclasses.replace(data, defence=None, retain=None, eval=None, harmless_eval=None)
            train_stage(store, attacked, {"stage": "attack", "attack": spec.attack.model_dump()}, defended_ref,
                        attack.fn, attack.config.model_validate(spec.attack.params),
                        dataclasses.replace(ctx, data=view, every=spec.eval.curve_every),
                        f"attack: {spec.attack.name}", force, on_step=record_point, extra={"curve": points})
    post = evaluator.evaluate(model_ref(store, attacked), "post_attack")

    written = store.writes
    with stages.stage("conditions", cached=lambda: store.writes == written):
        conditions = measure_conditions(evaluator, suite, base, defended_ref, base_metrics, pre, post,
                                        stored_extra(store, attacked)["curve"])
    record = RunRecord(
        run_id=spec.run_id, suite=suite.name, protocol_version=suite.protocol_version, spec=spec,
        overrides=overrides, evidence=evidence,
        metrics={"base": base_metrics, "pre_attack": pre, "post_attack": post, **conditions},
        provenance=provenance(spec, evaluator.judge_ids, stages))
    record, wrote = write_record_once(path, record, replace_corrupt=force)
    return record, not wrote


def measure_conditions(evaluator: Evaluator, suite: Suite, base: str, defended: str, base_metrics: dict[str, Any],
                       pre: dict[str, Any], post: dict[str, Any], points: list[list[float]]) -> dict[str, Any]:
    """Resistance (curve vs phi), stability and trainability (defended vs base)."""
    base_hs = base_metrics["harmfulness"]["mean"]
    phi = suite.phi if suite.phi is not None else base_hs + suite.phi_tolerance
    final_step = int(points[-1][0]) if points else 1
    curve = [(0, pre["harmfulness"]["mean"]), *((int(s), v) for s, v in points[:-1]),
             (final_step, post["harmfulness"]["mean"])]
    resistance = {**curve_metrics(curve, phi), "phi_source": "suite" if suite.phi is not None else
                  f"base pre-attack harmfulness {base_hs:.4f} + tolerance {suite.phi_tolerance}"}
    stab = stability.compare(
        {"perplexity": evaluator.perplexity(defended), "harmless_qa": pre["harmless_qa"]["exact_match"]},
        {"perplexity": evaluator.perplexity(base), "harmless_qa": base_metrics["harmless_qa"]["exact_match"]})
    lm = evaluator.lm_eval(defended), evaluator.lm_eval(base)
    if lm[0] is not None and lm[1] is not None:
        stab["lm_eval"] = {task: {m: {"defended": v, "base": lm[1]["scores"][task][m],
                                      "delta": v - lm[1]["scores"][task][m]} for m, v in scores.items()}
                           for task, scores in lm[0]["scores"].items()}
        stab["lm_eval_versions"] = lm[0]["versions"]
    out: dict[str, Any] = {"resistance": resistance, "stability": stab}
    curves = evaluator.trainability_curve(defended), evaluator.trainability_curve(base)
    if curves[0] is not None and curves[1] is not None and suite.trainability is not None:
        out["trainability"] = {"task": suite.trainability.task, **trainability.compare(curves[0], curves[1])}
    return out
