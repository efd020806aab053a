"""Paired comparisons of each defence setting with the suite's reference defence (`Suite.reference_defence`, the
undefended `none`), on the headline measure after the attack.

A pair is one unit both were measured in: the same world (a summary of several worlds names each run's, see
`harness.results.worlds`; else the suite config, one world), the same attack seed and the same budget, so the two
runs of a pair share everything but the defence.
A side's value in a unit is its mean `headline_post` over its defence seeds there (the reference, one model per
world, has one). Each side is taken at its own worst-case budget, the one its headline comes from: the test asks
whether the defence lowers the worst case, and an attack tuned against one defence (its own budget in the table)
has no run against the other, so budget-by-budget pairs would leave the strongest attacks out. Where both worst
cases are the same budget, the pairs share everything but the defence. Test: the Wilcoxon
signed-rank test, two-sided, zero differences split between the ranks (scipy `zero_method="zsplit"`: identical sides
give p = 1); exact for small n, whose smallest reachable p is 2 / 2^n (0.25 for 3 pairs). Fewer than `MIN_PAIRS`
pairs get no p-value, said so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.results.summary_budgets import Budget
from harness.results.summary_rows import WORLD, DefenceKey, in_budget, of_defence

MIN_PAIRS = 3
TEST = "Wilcoxon signed-rank"
UNIT = "world x attack seed"


@dataclass(frozen=True)
class Paired:
    """One defence setting against the reference at one budget."""

    reference: str                   # the reference defence's label
    budget: Budget | None            # where the defence's side was taken (its worst-case budget)
    n: int                           # pairs
    mean_difference: float | None    # defence - reference, mean over pairs (negative: the defence is lower)
    p: float | None                  # None: fewer than MIN_PAIRS pairs (or no budget), no test
    test: str = TEST
    unit: str = UNIT
    reference_budget: Budget | None = None  # where the reference's side was taken (its worst case; None: the same)

    def text(self) -> str:
        """'n = 3 pairs (unit: world x attack seed, at 3e-4@1k), mean difference -0.41, Wilcoxon signed-rank p =
        0.25', or why there is no test."""
        if self.budget is None:
            return "no worst useful attack: no pairs"
        at = self.budget.label
        if self.reference_budget is not None and self.reference_budget.id != self.budget.id:
            at += f" vs {self.reference_budget.label}"
        where = f"unit: {self.unit}, at {at}"
        if self.p is None:
            return f"too few pairs (n = {self.n} < {MIN_PAIRS}; {where}): no test"
        floor = f"; the smallest p {self.n} pairs can give is {2 / 2 ** self.n:.3g}" if self.n < 10 else ""
        return (f"n = {self.n} pairs ({where}), mean difference {self.mean_difference:+.3f}, {self.test} "
                f"p = {self.p:.3g}{floor}")


def signed_rank_p(differences: Sequence[float]) -> float:
    """Two-sided p of the Wilcoxon signed-rank test of paired differences (zeros split: all zero gives 1)."""
    from scipy.stats import wilcoxon  # lazy: scipy.stats costs a second to import

    rounded = [round(float(d), 12) for d in differences]  # float noise of equal means is no difference
    if not any(rounded):
        return 1.0
    return float(wilcoxon(rounded, zero_method="zsplit", alternative="two-sided").pvalue)


def world_of(row: dict[str, Any]) -> str:
    """The world a run evaluates in: the summary's world column where it pools several, else its suite config."""
    world = row.get(WORLD)
    return str(row["suite_params"]) if world is None else str(world)


def unit_means(frame: Any) -> dict[tuple[str, str], float]:
    """(world, attack seed) -> mean headline_post over the frame's rows there (its defence seeds)."""
    sums: dict[tuple[str, str], list[float]] = {}
    for row in frame.to_dict("records"):
        value = row["headline_post"]
        if value is None or not math.isfinite(float(value)):
            continue
        sums.setdefault((world_of(row), str(row.get("attack_seed", ""))), []).append(float(value))
    return {unit: sum(v) / len(v) for unit, v in sums.items()}


def paired(defence: Any, reference: Any, budget: Budget | None, reference_label: str,
           reference_budget: Budget | None = None) -> Paired:
    """Pair a defence's runs (resistance-table rows at `budget`) with the reference's (at `reference_budget`, default
    the same) by unit and test."""
    if budget is None:
        return Paired(reference_label, None, 0, None, None)
    mine, theirs = unit_means(defence), unit_means(reference)
    diffs = [mine[u] - theirs[u] for u in sorted(mine.keys() & theirs.keys())]
    mean = sum(diffs) / len(diffs) if diffs else None
    p = signed_rank_p(diffs) if len(diffs) >= MIN_PAIRS else None
    return Paired(reference_label, budget, len(diffs), mean, p, reference_budget=reference_budget)


def versus_reference(rows: Sequence[Any], resistance: Any, reference: str) -> dict[DefenceKey, Paired]:
    """Each summary row (`DefenceSummary`) but the reference's own against the reference defence's row of the same
    evaluation settings, each at its own worst-case budget. Rows without exactly one such reference row are left
    out."""
    out = {}
    for row in rows:
        refs = [r for r in rows if r.key.name == reference and r.key.extra == row.key.extra]
        if row.key.name == reference or len(refs) != 1 or resistance is None:
            continue
        budget = row.worst.budget if row.worst else None
        theirs_at = refs[0].worst.budget if refs[0].worst else None
        mine = in_budget(of_defence(resistance, row.key), budget) if budget else None
        theirs = in_budget(of_defence(resistance, refs[0].key), theirs_at) if budget and theirs_at else None
        out[row.key] = (paired(mine, theirs, budget, refs[0].label, theirs_at) if theirs is not None
                        else Paired(refs[0].label, budget, 0, None, None))
    return out
