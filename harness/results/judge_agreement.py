"""How the judges agree on real generations, from run records: every pair's 2x2 counts at 0.5, pooled over the
post-attack evaluations of a results folder (the outputs the headline is measured on), with agreement and Cohen's
kappa of the pooled counts (exact, not an average of kappas).

A record's evaluation carries its panel's counts (`Evaluation.panel`); records before the panel carry the first
two judges' `judge_agreement` and each judge's fraction over 0.5 (`by_judge`), from which the 2x2 counts follow
exactly (`harness.results.consistency` checks they are whole numbers). `rescored` scores the stored generations
of the same evaluations with other judges (e.g. a retrained second judge) instead of the recorded scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from harness.judges import pair_stats, pairwise
from harness.results.metrics import Evaluation, PairAgreement

if TYPE_CHECKING:
    from harness.judges import Judge
    from harness.results.records import RunRecord
    from harness.store.artifacts import Store

PHASES = ("base", "pre_attack", "post_attack")


def pair_counts(ev: Evaluation) -> list[PairAgreement]:
    """The evaluation's 2x2 counts of every judge pair: its panel's, else those of its first two judges
    reconstructed from their agreement and fractions over 0.5 ([] with one judge)."""
    if ev.panel is not None:
        return list(ev.panel.pairs)
    a = ev.judge_agreement
    if a is None:
        return []
    n, first, second = a.n, ev.by_judge[ev.judge].frac_over_half, ev.by_judge[a.other].frac_over_half
    differ = round(n * (1 - a.agreement))           # a_only + b_only
    lead = round(n * (first - second))              # a_only - b_only
    a_only, b_only = (differ + lead) // 2, (differ - lead) // 2
    return [PairAgreement(a=ev.judge, b=a.other, agreement=a.agreement, kappa=a.kappa, n=n,
                          both=round(n * first) - a_only, a_only=a_only, b_only=b_only)]


def pooled(counts: Iterable[PairAgreement]) -> list[dict[str, Any]]:
    """Per judge pair (in first-seen order): the summed counts, how many evaluations, agreement and kappa."""
    sums: dict[tuple[str, str], dict[str, int]] = {}
    for p in counts:
        s = sums.setdefault((p.a, p.b), {"n": 0, "both": 0, "a_only": 0, "b_only": 0, "evaluations": 0})
        for k, v in (("n", p.n), ("both", p.both), ("a_only", p.a_only), ("b_only", p.b_only), ("evaluations", 1)):
            s[k] += v
    out = []
    for (a, b), s in sums.items():
        agree, kappa = pair_stats(s["n"], s["both"], s["a_only"], s["b_only"])
        out.append({"a": a, "b": b, "agreement": agree, "kappa": kappa, **s})
    return out


def recorded(records: Iterable[RunRecord], phase: str = "post_attack") -> list[dict[str, Any]]:
    """The judges' agreement on the records' `phase` generations (post-attack by default), from their metrics."""
    if phase not in PHASES:
        raise ValueError(f"unknown evaluation '{phase}'; expected one of {', '.join(PHASES)}")
    return pooled(p for r in records for p in pair_counts(getattr(r.metrics, phase)))


def rescored(store: Store, records: Iterable[RunRecord], judges: Mapping[str, Judge],
             phase: str = "post_attack") -> tuple[list[dict[str, Any]], list[str]]:
    """The agreement of `judges` (name -> judge) on the stored held-out harmful generations of the records'
    `phase`, each set scored afresh; returns (pooled pairs, run ids whose generations the store lacks)."""
    import pandas as pd

    from harness.stages import GENERATIONS

    counts: list[PairAgreement] = []
    missing = []
    for record in records:
        key = getattr(record.metrics, phase).artifacts.get("generations", "")
        if not key or not store.has(GENERATIONS, key):
            missing.append(record.run_id)
            continue
        frame = pd.read_parquet(store.path(GENERATIONS, key) / "generations.parquet")
        harmful = frame[frame["set"] == "harmful"]
        prompts, outputs = harmful["prompt"].tolist(), harmful["generation"].tolist()
        scores = {name: judge.score(prompts, outputs) for name, judge in judges.items()}
        counts += [PairAgreement.model_validate(p) for p in pairwise(scores)]
    return pooled(counts), missing


def describe(pairs: Sequence[Mapping[str, Any]], what: str = "post-attack generations") -> list[str]:
    """One line per pair, e.g. "tiny-content ~ hf-classifier on post-attack generations: agree on 52.0% (kappa
    -0.01) of 8064 over 36 evaluations"."""
    return [f"{p['a']} ~ {p['b']} on {what}: agree on {p['agreement']:.1%} (kappa {p['kappa']:.2f}) of {p['n']} "
            f"over {p['evaluations']} evaluation{'' if p['evaluations'] == 1 else 's'}" for p in pairs]
