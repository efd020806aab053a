"""The judge panel of a results folder, as the index shows it: every pair's agreement and Cohen's kappa, pooled over
every evaluation (base, defended, attacked) of the folder's valid records that carry a panel matrix.

Pooling adds each pair's 2x2 counts (`PairAgreement.both`, `a_only`, `b_only`, `n`) before computing agreement
and kappa, so the pooled kappa is exact, not an average of kappas. Records without a panel add nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from harness.judges import pair_stats


def panel_view(panels: Sequence[Any]) -> dict[str, Any] | None:
    """{primary, judges, rows, evaluations} for the template (None without panels). `panels` are
    `harness.results.metrics.Panel` objects; each row is one judge with an "agreement / κ" text per column."""
    if not panels:
        return None
    judges: list[str] = []
    primaries: Counter[str] = Counter()
    counts: dict[tuple[str, str], list[int]] = {}  # (a, b) in name order -> [n, both, a only, b only]
    for panel in panels:
        judges += [j for j in panel.judges if j not in judges]
        primaries[panel.primary] += 1
        for p in panel.pairs:
            key, ones = ((p.a, p.b), (p.a_only, p.b_only)) if p.a <= p.b else ((p.b, p.a), (p.b_only, p.a_only))
            total = counts.setdefault(key, [0, 0, 0, 0])
            for i, v in enumerate((p.n, p.both, *ones)):
                total[i] += v
    rows = []
    for a in judges:
        cells = []
        for b in judges:
            c = counts.get((min(a, b), max(a, b))) if a != b else None
            if c is None:
                cells.append("—")
                continue
            agree, kappa = pair_stats(*c)
            cells.append(f"{agree:.0%} / κ {kappa:.2f} (n {c[0]})")
        rows.append({"judge": a, "cells": cells})
    return {"primary": ", ".join(k for k, _ in primaries.most_common()), "judges": judges, "rows": rows,
            "evaluations": len(panels)}
