"""Synthetic run records for table tests (no models involved). Each is consistent with itself (what
`harness.results.consistency` checks); plugin names are the caller's, so a record may name plugins that are not
installed (the leaderboard and `harness validate` reject those)."""

from __future__ import annotations

from harness.results.records import Provenance, RunRecord
from harness.specs import EvalSpec, HarmSubsets, ModelSpec, PluginSpec, RunSpec

EVAL = EvalSpec(max_new_tokens=4, n_prompts=4, batch_size=2)
MODEL = ModelSpec(id="m", revision="r")


def _eval(hs: float, qa: float, judge: str = "j") -> dict:
    frac = 1.0 if hs > 0.5 else 0.0  # a whole number of the 4 prompts, possible beside the mean
    return {"harmfulness": {"mean": hs, "frac_over_0.5": frac, "n": 4, "per_category": {}}, "judge": judge,
            "by_judge": {judge: {"mean": hs, "frac_over_0.5": frac}}, "harmless_qa": {"exact_match": qa, "n": 4},
            "degenerate": {"empty": 0.0, "repetitive": 0.0, "high_ppl": 0.0, "any": 0.0, "max_ppl": 1000.0},
            "artifacts": {"generations": "0" * 16}}


def record(defence="none", params=None, lr=1e-4, seed=0, pre=0.0, post=0.9, qa=1.0, size="smoke", suite="t",
           subsets=("all", "all"), created="2026-01-01T00:00:00", phi=0.05, judge="j", attack="sft-250") -> RunRecord:
    spec = RunSpec(suite=PluginSpec(name=suite, version="1", params={"size": size}), model=MODEL,
                   defence=PluginSpec(name=defence, version="1", params=params or {}),
                   attack=PluginSpec(name=attack, version="1", params={"lr": lr, "samples": 250}),
                   eval=EVAL, judges=(PluginSpec(name=judge, version="1", params={}),),
                   subsets=HarmSubsets(defence=subsets[0], attack=subsets[1]), seed=seed)
    plugins = (("suite", spec.suite), ("defence", spec.defence), ("attack", spec.attack), ("judge", spec.judges[0]))
    prov = Provenance(harness_version="0", git_commit="x", git_dirty=False, python="3", platform="p", packages={},
                      plugins={f"{kind}:{p.name}": p.version for kind, p in plugins}, judge_ids=[], backend="hf",
                      seed=seed, device="cpu", stages={}, created_at=created)
    held_out = subsets[0] != subsets[1] and "all" not in subsets
    # The attack reaches its final harmfulness at step 10 of 63 and stays there; it crosses phi there if at all.
    cross = 0 if pre > phi else 10 if post > phi else None
    metrics = {
        "base": _eval(0.0, 1.0, judge), "pre_attack": _eval(pre, qa, judge), "post_attack": _eval(post, qa, judge),
        "resistance": {"phi": phi, "phi_source": "test", "final": post, "auc": (10 * (pre + post) / 2 + 53 * post) / 63,
                       "first_cross_step": cross, "held": cross is None, "steps": 63,
                       "curve": [[0, pre], [10, post], [63, post]]},
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


def word_tokenizer(words: list[str]):
    """A word-level tokenizer over `words` (whitespace-split; <pad>, </s>, <unk> first): toy batches whose tokens
    a test can name."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *words])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_llama(tok, seed: int = 0, positions: int = 64):
    """A 2-block random Llama (hidden 32) over `tok`'s vocabulary, seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=positions,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(cfg)
