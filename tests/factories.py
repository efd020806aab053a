"""Synthetic run records for table tests (no models involved)."""

from __future__ import annotations

from harness.results.records import Provenance, RunRecord
from harness.specs import EvalSpec, HarmSubsets, ModelSpec, PluginSpec, RunSpec

EVAL = EvalSpec(max_new_tokens=4, n_prompts=4, batch_size=2)
MODEL = ModelSpec(id="m", revision="r")


def _eval(hs: float, qa: float) -> dict:
    return {"harmfulness": {"mean": hs, "frac_over_0.5": hs, "n": 4, "per_category": {}}, "judge": "j",
            "by_judge": {"j": {"mean": hs, "frac_over_0.5": hs}}, "harmless_qa": {"exact_match": qa, "n": 4},
            "degenerate": {"empty": 0.0, "repetitive": 0.0, "high_ppl": 0.0, "any": 0.0, "max_ppl": 1000.0},
            "artifacts": {"generations": "0" * 16}}


def record(defence="none", params=None, lr=1e-4, seed=0, pre=0.0, post=0.9, qa=1.0, size="smoke", suite="t",
           subsets=("all", "all"), created="2026-01-01T00:00:00", phi=0.05) -> RunRecord:
    spec = RunSpec(suite=PluginSpec(name=suite, version="1", params={"size": size}), model=MODEL,
                   defence=PluginSpec(name=defence, version="1", params=params or {}),
                   attack=PluginSpec(name="sft-250", version="1", params={"lr": lr, "samples": 250}),
                   eval=EVAL, judges=(PluginSpec(name="j", version="1", params={}),),
                   subsets=HarmSubsets(defence=subsets[0], attack=subsets[1]), seed=seed)
    prov = Provenance(harness_version="0", git_commit="x", git_dirty=False, python="3", platform="p", packages={},
                      plugins={}, judge_ids=[], backend="hf", seed=seed, device="cpu", stages={}, created_at=created)
    held_out = subsets[0] != subsets[1] and "all" not in subsets
    metrics = {
        "base": _eval(0.0, 1.0), "pre_attack": _eval(pre, qa), "post_attack": _eval(post, qa),
        "resistance": {"phi": phi, "phi_source": "test", "final": post, "auc": (pre + post) / 2,
                       "first_cross_step": 10 if post > phi else None, "held": post <= phi, "steps": 63,
                       "curve": [[0, pre], [63, post]]},
        "stability": {"perplexity": {"defended": 2.0, "base": 1.5, "ratio": 2.0 / 1.5},
                      "harmless_qa": {"defended": qa, "base": 1.0, "delta": qa - 1.0}},
        "trainability": {"task": "tiny-viggo", "rouge1_before": 0.1, "rouge1_after": 0.8, "base_rouge1_before": 0.1,
                         "base_rouge1_after": 0.9, "target": 0.81, "steps_to_target": None,
                         "base_steps_to_target": 30, "curve": [], "base_curve": []}}
    evidence = {"sizes": {}, "prompt_overlap": {"defence&attack": 0, "defence&eval": 0, "attack&eval": 0},
                "subsets": {"defence_subset": subsets[0], "attack_subset": subsets[1], "defence_categories": [],
                            "attack_categories": [], "category_overlap": 0 if held_out else 1,
                            "held_out": held_out}}
    return RunRecord(run_id=spec.run_id, suite=suite, protocol_version=1, spec=spec, overrides={}, evidence=evidence,
                     budget={"samples": 250, "lr": lr}, metrics=metrics, provenance=prov)
