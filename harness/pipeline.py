"""One run, stage by stage; `run` below reads top to bottom in execution order:

    prepare suite, locate the base model, check the judges -> data (refusal pairing if the suite needs it,
    harm subsets) -> defend -> evaluate base and defended -> attack (with a harmfulness curve) -> evaluate ->
    resistance, stability, trainability -> one immutable record

Every stage is `stages.cached(name, kind, inputs, build)`: the inputs written there are the whole cache key,
so an unchanged re-run costs seconds, an interrupted run resumes at the last finished stage, and all attacks
of a grid share one defended model and its condition metrics.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import __version__, registry
from harness.conditions.resistance import resistance as measure_resistance
from harness.data.audit import audit, leaks
from harness.data.normalise import distinct
from harness.data.subsets import filter_categories, row_flags, rule_for, subset_evidence
from harness.errors import HarnessError
from harness.evaluation import Evaluator
from harness.generation.query import Query, QueryFields
from harness.plugins import StageContext
from harness.progress import bar
from harness.results.metrics import Evidence, Guard, Metrics, verdict_of
from harness.results.records import (
    FINE_TUNING_SERVICE,
    OPEN_WEIGHTS,
    LoadedModel,
    Provenance,
    RunRecord,
    read_record,
    record_path,
    write_record_once,
)
from harness.specs import EvalSpec, ModelSpec, PluginSpec, RunSpec
from harness.stages import MODELS, Build, Loading, Stages, data_fingerprint, freeze_long_lived
from harness.store.artifacts import Store, atomic_write_text
from harness.suite import Suite, SuiteData


def split_evidence(data: SuiteData) -> dict[str, Any]:
    """Sizes of the defence/attack/eval splits (distinct prompts) and their pairwise prompt overlaps (all must
    be 0); answer overlaps where the splits carry answers; and how the suite built its data. Prompts and answers
    are compared normalised (`harness.data.normalise`, as the audit compares them): a case or spacing variant of
    a question in two splits is an overlap."""
    names = ("defence", "attack", "eval")
    pairs = (("defence", "attack"), ("defence", "eval"), ("attack", "eval"))
    prompts = {name: distinct(getattr(data, name)["prompt"]) for name in names}
    overlaps = {f"{a}&{b}": len(prompts[a] & prompts[b]) for a, b in pairs}
    bad = {k: v for k, v in overlaps.items() if v}
    if bad:
        raise HarnessError(f"suite splits overlap in prompts: {bad}; defence, attack and eval must be disjoint")
    out: dict[str, Any] = {"sizes": {n: len(p) for n, p in prompts.items()}, "prompt_overlap": overlaps}
    answers = {n: distinct(a for a in getattr(data, n)["response"] if a) for n in names
               if "response" in getattr(data, n).column_names}
    out["answer_overlap"] = {f"{a}&{b}": len(answers[a] & answers[b]) for a, b in pairs
                             if a in answers and b in answers}
    if data.evidence:
        out["data"] = dict(data.evidence)
    return out


def select_data(suite: Suite, spec: RunSpec, data: SuiteData | None = None) -> tuple[SuiteData, Evidence]:
    """The suite's data restricted to the run's harm subsets, with the evidence that the splits are disjoint."""
    data = data if data is not None else suite.data()
    names = spec.subsets
    d_cats, a_cats = suite.subset(names.defence), suite.subset(names.attack)
    d_rule, a_rule = rule_for(names.defence, names.rule), rule_for(names.attack, names.rule)
    data = dataclasses.replace(data, defence=filter_categories(data.defence, d_cats, "defence", d_rule),
                               attack=filter_categories(data.attack, a_cats, "attack", a_rule),
                               eval=filter_categories(data.eval, a_cats, "eval", a_rule))
    subsets = subset_evidence(spec.subsets.defence, spec.subsets.attack, d_cats, a_cats, row_flags(data.defence))
    splits = {"defence": data.defence, "retain": data.retain, "attack": data.attack, "eval": data.eval,
              "harmless_eval": data.harmless_eval, **data.other}
    found = audit(splits)
    leaked = leaks(found, suite.audit_by_design)
    if leaked:
        raise HarnessError(f"leakage audit: the splits share content ({'; '.join(leaked[:6])}"
                           f"{f'; +{len(leaked) - 6} more' if len(leaked) > 6 else ''}) that suite {suite.name} does "
                           "not declare by design (Suite.audit_by_design); nothing was trained")
    return data, Evidence.model_validate({**split_evidence(data), "subsets": subsets, "audit": found})


def locate_base(model: ModelSpec, suite: Suite, stages: Stages) -> LoadedModel:
    """Find the base model's folder (a hub snapshot at the spec's commit, a local folder with the spec's
    data_fingerprint, or the suite's store path) and bind its id to it; what was loaded, for the provenance."""
    from harness.models.checkpoints import locate

    if model.revision == "store" or model.id.startswith("store:"):
        source, path = "store", stages.model_path(model.id)
    else:
        ckpt = locate(model.id, revision=model.revision, store=stages.store, remote_code=suite.trust_remote_code)
        source, path = ckpt.source, ckpt.path
        stages.bind(model.id, path)
    return LoadedModel(id=model.id, revision=model.revision, source=source, dtype=model.dtype,
                       trust_remote_code=suite.trust_remote_code)


def check_judges(judges: tuple[PluginSpec, ...], store: Store) -> None:
    """Every judge that can check its config (checkpoint, label, tokens) does so now, before any work."""
    for judge in judges:
        plugin = registry.get("judge", judge.name)
        if plugin.check is not None:
            plugin.check(plugin.config.model_validate(judge.params), store)


def check_needs(spec: RunSpec, suite: Suite, stages: Stages) -> None:
    """The defence and the attack find the parts of the base model they reach into (`needs`), checked on its
    structure before refusal pairing or any training (one line, exit 2 where they cannot)."""
    from harness.models.architecture import check_model_path

    for kind, plugin_spec in (("defence", spec.defence), ("attack", spec.attack)):
        plugin = registry.get(kind, plugin_spec.name)
        if plugin.needs:
            check_model_path(stages.model_path(spec.model.id), plugin.needs, who=f"{kind} '{plugin.name}'",
                             trust_remote_code=suite.trust_remote_code)


def suite_data(suite: Suite, stages: Stages, *, model: ModelSpec, judge: PluginSpec, backend: str) -> SuiteData:
    """The suite's data without the training rows that keep no answer token under the base model's tokenizer
    (`harness.data.trainable`); where the suite pairs refusals itself, its defence split with the base model's
    own harmless answers as refusals (a cached stage, built once by `harness prepare`)."""
    from harness.data.refusal_pairing import pair_refusals
    from harness.data.trainable import drop_untrainable
    from harness.models.loading import load_tokenizer

    tok = load_tokenizer(stages.model_path(model.id), trust_remote_code=suite.trust_remote_code)
    data = drop_untrainable(suite.data(), tok, suite.prompt, suite.max_length)
    if suite.pairing is None:
        return data
    paired, counts = pair_refusals(stages, data.defence, protocol=suite.pairing, model=model, judge=judge,
                                   backend=backend, prompt=suite.prompt)
    return dataclasses.replace(data, defence=paired, evidence={**data.evidence, **counts})


def prepare(suite: Suite, *, model: ModelSpec, judges: tuple[PluginSpec, ...], eval_spec: EvalSpec, store: Store,
            force: bool = False) -> dict[str, Any]:
    """`harness prepare`: build what the suite needs, check the base model and judges, pair refusals."""
    report = dict(suite.prepare(store, force))
    stages = Stages(store, force=force, loading=Loading(model.dtype, suite.trust_remote_code))
    report["model"] = locate_base(model, suite, stages).model_dump()
    check_judges(judges, store)
    if suite.pairing is not None:
        data = suite_data(suite, stages, model=model, judge=judges[0], backend=eval_spec.backend)
        report["pairing"] = {k: v for k, v in data.evidence.items() if k.startswith("pairing_")}
    return report


def provenance(spec: RunSpec, judge_ids: list[str], stages: Stages, model: LoadedModel) -> Provenance:
    """Versions, commit, machine and stage timings of a run."""
    from harness.models.loading import device_name
    from harness.results.provenance import git_state, package_versions, platform_name, processor_name, python_version

    commit, dirty = git_state()
    plugins = {f"{k}:{p.name}": p.version for k, p in (("suite", spec.suite), ("defence", spec.defence),
                                                       ("attack", spec.attack))}
    plugins |= {f"judge:{j.name}": j.version for j in spec.judges}
    return Provenance(harness_version=__version__, git_commit=commit, git_dirty=dirty, python=python_version(),
                      platform=platform_name(), packages=package_versions(), plugins=plugins, judge_ids=judge_ids,
                      plugin_distributions=registry.distributions(plugins),
                      backend=spec.eval.backend, seed=spec.seed, device=device_name(), processor=processor_name(),
                      stages=stages.info, model=model,
                      created_at=datetime.now(UTC).isoformat(timespec="seconds"))


@dataclasses.dataclass
class CellContext:
    """What every stage of one cell works with: its stages, data, evidence, stage context and evaluator."""

    spec: RunSpec
    suite: Suite
    stages: Stages
    data: SuiteData
    evidence: Evidence
    ctx: StageContext
    evaluator: Evaluator
    loaded: LoadedModel


def open_cell(spec: RunSpec, suite: Suite, *, store: Store, force: bool = False) -> CellContext:
    """Prepare the suite, locate the base model, check the judges and select the cell's data (stage `prepare`)."""
    stages = Stages(store, force=force, loading=Loading(spec.model.dtype, suite.trust_remote_code))
    start, writes = time.perf_counter(), store.writes
    suite.prepare(store, force)  # --force rebuilds the suite's own artifacts too
    loaded = locate_base(spec.model, suite, stages)
    check_judges(spec.judges, store)
    check_needs(spec, suite, stages)
    stages.timed("prepare", start, cached=store.writes == writes)
    freeze_long_lived()
    data, evidence = select_data(suite, spec, suite_data(suite, stages, model=spec.model, judge=spec.judges[0],
                                                         backend=spec.eval.backend))
    ctx = StageContext(tokenizer=None, data=data, max_length=suite.max_length, seed=spec.seed, template=suite.prompt)
    return CellContext(spec, suite, stages, data, evidence, ctx, Evaluator(stages, spec, suite, data), loaded)


def defend_stage(cell: CellContext) -> str:
    """The defended model's store key. The defence sees the splits `dataviews.STAGE_SPLITS` gives the defence
    stage (its own split and the harmless retain data); the key names exactly those."""
    spec, data, stages = cell.spec, cell.data, cell.stages
    return stages.cached("defend", MODELS, {
        "base": spec.model.model_dump(), "defence": spec.defence.key_dump(), "seed": spec.seed,
        "data": [data_fingerprint(data.defence), data_fingerprint(data.retain)]},
        apply_plugin("defence", spec.defence, spec.model.id, stages, cell.ctx))


def attack_stage(cell: CellContext, defended: str) -> str:
    """The attacked model's store key (a full model, or a LoRA adapter on the defended model). The attack sees
    only its split (`dataviews.STAGE_SPLITS`) and the splits it declares (`reads`); a callback records
    harmfulness every k steps into the artifact's extra.json. A defence's service adapter is attached while the
    attack trains (`harness.training.service`): the defended key names it."""
    spec, data, stages = cell.spec, cell.data, cell.stages
    points: list[list[float]] = []

    def record_point(step: int, model: Any, tok: Any) -> None:
        if step > 0:
            points.append([step, cell.evaluator.harmfulness_now(model, tok)])

    reads = registry.get("attack", spec.attack.name).reads  # further splits it declares (none: its split alone)
    return stages.cached("attack", MODELS, {
        "defended": defended, "attack": spec.attack.key_dump(), "seed": spec.attack_seed_used,
        "data": data_fingerprint(data.attack), "curve_every": spec.eval.curve_every,
        **({"reads": {r: data_fingerprint(getattr(data, r)) for r in reads}} if reads else {}),
        **{k: v for k in ("curve_points", "curve_prompts") if (v := getattr(spec.eval, k))}},
        apply_plugin("attack", spec.attack, stages.model_ref(defended), stages,
                     dataclasses.replace(cell.ctx, seed=spec.attack_seed_used, every=spec.eval.curve_every,
                                         points=spec.eval.curve_points),
                     on_step=record_point, extra={"curve": points}, service=stages.service_adapter(defended)))


def attack_query(spec: RunSpec) -> Query | None:
    """How the attack has the held-out harmful prompts asked at evaluation (`harness.generation.query`): its
    config's query options, the draws seeded by the attack seed; None (greedy) for an attack without them."""
    cfg = registry.get("attack", spec.attack.name).config.model_validate(spec.attack.params)
    return cfg.query(spec.attack_seed_used) if isinstance(cfg, QueryFields) else None


def run(spec: RunSpec, suite: Suite, overrides: dict[str, Any], *, store: Store, results_dir: Path,
        force: bool = False) -> tuple[RunRecord, bool]:
    """Run (or find) one cell. Returns (record, cached): cached means the record already existed."""
    path = record_path(results_dir, suite.name, suite.protocol_version, spec.run_id)
    if path.exists() and not force:
        return read_record(path), True
    cell = open_cell(spec, suite, store=store, force=force)
    stages, evaluator, base = cell.stages, cell.evaluator, spec.model.id

    defended = defend_stage(cell)
    defended_ref = stages.model_ref(defended)
    base_eval = evaluator.evaluate(base, "base")
    pre = evaluator.evaluate(defended_ref, "pre_attack")
    attacked = attack_stage(cell, defended)
    post = evaluator.evaluate(stages.model_ref(attacked), "post_attack", query=attack_query(spec))

    start, writes = time.perf_counter(), store.writes
    curve = json.loads((store.path(MODELS, attacked) / "extra.json").read_text())["curve"]
    resistance = measure_resistance(base_eval, pre, post, curve, phi=suite.phi, tolerance=suite.phi_tolerance,
                                    headline=suite.headline)
    stability = evaluator.versus_base.stability(defended_ref, base, pre, base_eval)
    service = stages.service_adapter(defended)
    passed, missed = suite.guard.check(stability, pre)
    intact, broke = suite.guard.check_attacked(post, base_eval)
    metrics = Metrics(base=base_eval, pre_attack=pre, post_attack=post, resistance=resistance, stability=stability,
                      trainability=evaluator.versus_base.trainability(defended_ref, base, service=service),
                      guard=Guard(passed=passed, reasons=missed,
                                  **suite.guard.evidence(stability.harmless_qa.defended, pre.harmless_qa.n)),
                      attacked_guard=Guard(passed=intact, reasons=broke,
                                           **suite.guard.evidence(post.harmless_qa.exact_match, post.harmless_qa.n)),
                      verdict=verdict_of(passed, resistance.held, intact), floor=evaluator.floor(),
                      unaligned=evaluator.unaligned())
    stages.timed("conditions", start, cached=store.writes == writes)
    record = RunRecord(run_id=spec.run_id, suite=suite.name, protocol_version=suite.protocol_version, spec=spec,
                       threat_model=FINE_TUNING_SERVICE if service else OPEN_WEIGHTS,
                       overrides=overrides, evidence=cell.evidence, budget=registry.attack_budget(spec.attack),
                       metrics=metrics, provenance=provenance(spec, evaluator.judge_ids, stages, cell.loaded),
                       samples=evaluator.samples)
    record, wrote = write_record_once(path, record, replace_corrupt=force)
    return record, not wrote


def defend(spec: RunSpec, suite: Suite, *, store: Store, force: bool = False) -> str:
    """What every attack of one defended model shares, computed once (a sweep's defend job): the defended
    model, the base and pre-attack evaluations, stability and trainability. The cells that attack it find
    all of it cached. Returns the defended model's key."""
    cell = open_cell(spec, suite, store=store, force=force)
    key = defend_stage(cell)
    ref, base = cell.stages.model_ref(key), spec.model.id
    base_eval, pre = cell.evaluator.evaluate(base, "base"), cell.evaluator.evaluate(ref, "pre_attack")
    cell.evaluator.versus_base.stability(ref, base, pre, base_eval)
    cell.evaluator.versus_base.trainability(ref, base, service=cell.stages.service_adapter(key))
    return key


def prefetch_grid(cells: Sequence[tuple[RunSpec, Suite]], *, store: Store, results_dir: Path,
                  force: bool = False) -> int:
    """Train every unrecorded cell's defended and attacked model (cached stages), then generate the post-attack
    evaluations of all attacked LoRA adapters that share a defended model on one vLLM engine start
    (`ModelOutputs.generate_adapters`). `run` then finds those generations cached. Returns the adapters served
    in batches; a no-op for the hf backend (it loads each model anyway) and for full-weight attacks."""
    groups: dict[tuple[str, str], list[tuple[CellContext, str]]] = {}
    for spec, suite in cells:
        if spec.eval.backend != "vllm":
            continue
        if record_path(results_dir, suite.name, suite.protocol_version, spec.run_id).exists() and not force:
            continue
        cell = open_cell(spec, suite, store=store, force=force)
        attacked_ref = cell.stages.model_ref(attack_stage(cell, defend_stage(cell)))
        adapter = cell.stages.adapter(attacked_ref)
        if adapter is not None:
            groups.setdefault((adapter[0], cell.evaluator.outputs.group_key()), []).append((cell, attacked_ref))
    served = 0
    for members in groups.values():
        if len(members) > 1:
            served += members[0][0].evaluator.outputs.generate_adapters([ref for _, ref in members], "post_attack")
    return served


def apply_plugin(kind: registry.Kind, plugin_spec: PluginSpec, source_ref: str, stages: Stages, ctx: StageContext,
                 *, on_step: Callable[[int, Any, Any], None] | None = None,
                 extra: dict[str, Any] | None = None, service: Path | None = None) -> Build:
    """The build of a defend or attack stage: the plugin runs in its own process (`harness.sandbox`) on the
    model `source_ref` and the stage's view of `ctx.data`, saved to a private folder with its allowed splits
    only; it cannot import the suite's data builders or read the store beyond its input model. A read of a
    withheld split or a guard refusal fails the stage (one line), and nothing is stored.

    A plugin that returns None changed nothing: the artifact is an alias of its source, no copy is saved.
    `on_step(step, model, tokenizer)` is called for each point of the plugin's training callback (the plugin's
    process saves the model at that step; it is loaded here, after training); `extra` (filled by it, e.g. a
    resistance curve) is saved beside the model as extra.json. `service`: a service adapter the plugin's process
    attaches while the plugin runs (`harness.training.service`); a defence that keeps one back leaves it in the
    artifact (`service_adapter` in its metadata).
    """
    plugin = registry.get(kind, plugin_spec.name)
    plugin.config.model_validate(plugin_spec.params)  # a bad config fails here, before a process starts

    def build(tmp: Path) -> dict[str, Any] | None:
        from harness.models.loading import load_tokenizer
        from harness.sandbox.launch import load_snapshot, model_plan, run_plugin
        from harness.stages import free_memory

        plan = model_plan(stages, source_ref)
        if service is not None:
            plan = plan.model_copy(update={"service_adapter": str(service)})
        with bar(f"{kind}: {plugin_spec.name}", total=None, info="starting its process") as advance:
            outcome = run_plugin(kind, plugin_spec.name, dict(plugin_spec.params), plan, ctx, out=tmp,
                                 store_root=stages.store.root, progress=advance, curve=on_step is not None)
            try:  # inside the bar: a failed plugin's stage ends "stopped", not "done"
                response = outcome.raise_for_failure()
            except BaseException:
                outcome.cleanup()
                raise
        try:
            if on_step is not None and response.snapshots:
                tok = load_tokenizer(plan.path, trust_remote_code=plan.trust_remote_code)
                with bar(f"{kind}: {plugin_spec.name}: curve", len(response.snapshots), unit="point") as point:
                    for snap in response.snapshots:
                        model = load_snapshot(stages, source_ref, snap)
                        on_step(snap.step, model, tok)
                        del model
                        free_memory()
                        point(1, f"step {snap.step}")
            result = response.result
        finally:
            outcome.cleanup()
        atomic_write_text(tmp / "extra.json", json.dumps(extra or {}))
        meta = {"alias": source_ref} if result == "unchanged" else {"adapter_of": source_ref} \
            if result == "adapter" else {}
        return {**meta, **({"service_adapter": True} if response.service_adapter else {})} or None

    return build
