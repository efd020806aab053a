"""The budget table (the RepNoise paper's Table 1 shape) built from run records: for each defence,
harmfulness before attack and after every attack of the suite's budget grid, harmless-QA accuracy before
attack, each as mean ± std over seeds, and the defence's *breaking budget*: the weakest budget (the
suite's grid order) whose mean harmfulness exceeds phi, the threshold the records themselves recorded.

Only runs on the suite's full harm set enter (generalization runs, with other harm subsets, have their own
table). Records that differ in evaluation settings (backend, prompt counts, ...) are never merged: such
settings become part of the row label, like defence settings.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.records import RunRecord
from harness.specs import HarmSubsets, canonical_json
from harness.suite import Suite


def mean_std(values: Sequence[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


@dataclass
class Row:
    label: str
    seeds: list[int]
    pre: list[float]
    qa: list[float]
    post: dict[str, list[float]]  # budget label -> per-seed harmfulness
    breaking: str


def _settings(r: RunRecord) -> dict[str, Any]:
    """What distinguishes two rows of one defence: its params and the evaluation settings."""
    return {**r.spec.defence.params, **{f"eval.{k}": v for k, v in r.spec.eval.model_dump().items()}}


def _labels(records: Sequence[RunRecord]) -> list[str]:
    """A readable label per record (same order): the defence name, plus the settings that differ within it."""
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_name[r.spec.defence.name].append(_settings(r))
    varying = {name: sorted({k for s in variants for k in s
                             if len({canonical_json(v.get(k)) for v in variants}) > 1})
               for name, variants in by_name.items()}
    out = []
    for r in records:
        settings, keys = _settings(r), varying[r.spec.defence.name]
        diff = ", ".join(f"{k}={settings.get(k)}" for k in keys)
        out.append(f"{r.spec.defence.name} ({diff})" if diff else r.spec.defence.name)
    return out


def budget_rows(records: Sequence[RunRecord], suite: Suite, suite_params: dict[str, Any]) -> tuple[list[Row], float]:
    """Rows of the budget table for the full-harm-set records of one suite configuration, and phi."""
    records = [r for r in records if r.spec.suite.params == suite_params and r.spec.subsets == HarmSubsets()]
    cells: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    pre: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
    for r, label in zip(records, _labels(records), strict=True):
        m = r.metrics
        pre[label][r.spec.seed] = (m.pre_attack.harmfulness.mean, m.pre_attack.harmless_qa.exact_match)
        for b in suite.budget_grid:
            if r.spec.attack.name == b.attack and all(r.spec.attack.params.get(k) == v for k, v in b.params.items()):
                cells[label][b.label][r.spec.seed] = m.post_attack.harmfulness.mean
    phis = [r.metrics.resistance.phi for r in records]
    phi = statistics.mean(phis) if phis else float("nan")
    reference = suite.reference_defence
    rows = []
    for label in sorted(pre, key=lambda x: (x.split(" (")[0] != reference, x)):
        post = {b.label: list(cells[label][b.label].values()) for b in suite.budget_grid}
        breaking = next((b.label for b in suite.budget_grid if post[b.label] and statistics.mean(post[b.label]) > phi),
                        "none in grid")
        rows.append(Row(label, sorted(pre[label]), [v[0] for v in pre[label].values()],
                        [v[1] for v in pre[label].values()], post, breaking))
    return rows, phi


def markdown(rows: Sequence[Row], suite: Suite, phi: float) -> str:
    budgets = [b.label for b in suite.budget_grid]
    head = ["defence", "seeds", "HS pre", "QA pre", *budgets, "breaks at"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.label, str(len(r.seeds)), mean_std(r.pre), mean_std(r.qa), *(mean_std(r.post[b]) for b in budgets),
                 r.breaking]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nHS: harmfulness (mean P(harmful), primary judge); QA: harmless-QA exact match; columns: "
                 f"lr@samples; phi = {phi:.2f} (from the records); mean ± std over seeds.")
    return "\n".join(lines)
