"""The judges' agreement on post-attack generations, from records alone (their panel, or the first two judges'
agreement and fractions over 0.5) and from stored generations scored afresh."""

import random
from pathlib import Path

import pytest

from harness.judges import agreement, pairwise
from harness.results.judge_agreement import describe, pair_counts, pooled, recorded, rescored
from harness.results.metrics import JudgeScore, PairAgreement, Panel
from harness.results.records import read_record
from harness.stages import GENERATIONS
from harness.store.artifacts import Store

V2 = Path(__file__).resolve().parents[2] / "results" / "tiny" / "v2"


@pytest.fixture(scope="module")
def record():
    return read_record(sorted(V2.glob("*.json"))[0])


def _with_scores(ev, a, b):
    """`ev` as if its two judges had scored a and b (no panel: the records before it)."""
    frac = {k: sum(s > 0.5 for s in v) / len(v) for k, v in (("tiny-content", a), ("hf-classifier", b))}
    by_judge = {k: JudgeScore.model_validate({"mean": f, "frac_over_0.5": f}) for k, f in frac.items()}
    agree = ev.judge_agreement.model_validate({"with": "hf-classifier", **agreement(a, b)})
    return ev.model_copy(update={"by_judge": by_judge, "judge_agreement": agree, "panel": None,
                                 "judge": "tiny-content"})


@pytest.mark.parametrize("seed", range(5))
def test_counts_follow_exactly_from_agreement_and_fractions(record, seed):
    rng = random.Random(seed)
    n = record.metrics.post_attack.judge_agreement.n
    a = [float(rng.random() < rng.random()) for _ in range(n)]
    b = [float(rng.random() < 0.3) for _ in range(n)]
    (got,) = pair_counts(_with_scores(record.metrics.post_attack, a, b))
    want = pairwise({"tiny-content": a, "hf-classifier": b})[0]
    assert (got.both, got.a_only, got.b_only, got.n) == (want["both"], want["a_only"], want["b_only"], want["n"])


def test_a_panel_is_read_as_it_is(record):
    pair = PairAgreement(a="x", b="y", agreement=0.5, kappa=0.0, n=4, both=1, a_only=1, b_only=1)
    panel = {"primary": "x", "judges": ["x", "y"], "pairs": [pair]}
    ev = record.metrics.post_attack.model_copy(update={"panel": Panel.model_validate(panel)})
    assert pair_counts(ev) == [pair]


def test_pooling_adds_counts_before_kappa():
    one = PairAgreement(a="x", b="y", agreement=1.0, kappa=1.0, n=10, both=5, a_only=0, b_only=0)
    two = PairAgreement(a="x", b="y", agreement=0.0, kappa=-1.0, n=10, both=0, a_only=5, b_only=5)
    (p,) = pooled([one, two])
    assert (p["n"], p["evaluations"], p["agreement"]) == (20, 2, 0.5)
    assert p["kappa"] == pytest.approx(0.0, abs=1e-9)  # pooled: P(x)=0.5, P(y)=0.25, not the mean kappa 0
    assert describe([p]) == ["x ~ y on post-attack generations: agree on 50.0% (kappa 0.00) of 20 over 2 evaluations"]


def test_the_committed_v2_records_give_the_post_attack_numbers(record):
    (p,) = recorded([record])
    ev = record.metrics.post_attack
    assert (p["agreement"], p["n"]) == (pytest.approx(ev.judge_agreement.agreement), ev.judge_agreement.n)
    assert p["kappa"] == pytest.approx(ev.judge_agreement.kappa, abs=1e-9)
    assert recorded([record], "base")[0]["agreement"] == pytest.approx(record.metrics.base.judge_agreement.agreement)
    with pytest.raises(ValueError, match="unknown evaluation 'after'"):
        recorded([record], "after")


class _Fixed:
    def __init__(self, fn):
        self.fn = fn

    def score(self, prompts, generations):
        return [self.fn(g) for g in generations]


def test_rescored_reads_the_stored_generations_and_names_the_missing(tmp_path, record):
    import pandas as pd

    store = Store(tmp_path / "home")
    store.root.mkdir()
    key = record.metrics.post_attack.artifacts["generations"]
    gens = ["Sure, a", "No.", "Sure, b", "Okay, c"]
    with store.writing(GENERATIONS, key, {"stage": "post_attack.generate"}) as tmp:
        pd.DataFrame({"set": ["harmful"] * 4 + ["harmless"], "prompt": list("pqrst"),
                      "generation": [*gens, "Sure, harmless"]}).to_parquet(tmp / "generations.parquet")
    other = record.model_copy(update={"run_id": "f" * 16, "metrics": record.metrics.model_copy(update={
        "post_attack": record.metrics.post_attack.model_copy(update={"artifacts": {"generations": "0" * 16}})})})
    judges = {"sure": _Fixed(lambda g: float(g.startswith("Sure"))), "comply": _Fixed(lambda g: float(g != "No."))}
    (p,), missing = rescored(store, [record, other], judges)
    assert missing == ["f" * 16]
    assert (p["a"], p["b"], p["n"], p["both"], p["a_only"], p["b_only"]) == ("sure", "comply", 4, 2, 0, 1)
