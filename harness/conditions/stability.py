"""Stability: is the defended model as capable as the undefended base on harmless reference data?

Measured here as perplexity on held-out harmless text (the full formatted QA sequences) and harmless-QA
exact match (from the pre-attack evaluation), defended vs base. Real suites add lm-eval tasks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from harness.training.collate import PromptFormat
from harness.training.nll import summed_nll


def perplexity(model: Any, tok: Any, rows: Sequence[dict[str, Any]], *, template: str | PromptFormat,
               max_length: int, label: str = "perplexity") -> float:
    """exp(mean token NLL) over every token of `rows` (prompt and response), padding excluded."""
    nll = summed_nll(model, tok, [(r["prompt"], r["response"]) for r in rows], template=template,
                     max_length=max_length, loss_on="sequence", label=label)
    return math.exp(sum(s for s, _ in nll) / max(sum(c for _, c in nll), 1))


def compare(defended: dict[str, float], base: dict[str, float]) -> dict[str, Any]:
    """Defended vs base for each stability metric: both values, ratio (perplexity) or delta (accuracy)."""
    out: dict[str, Any] = {}
    for name, value in defended.items():
        ref = base[name]
        rel = {"ratio": value / ref if ref else math.inf} if name == "perplexity" else {"delta": value - ref}
        out[name] = {"defended": value, "base": ref, **rel}
    return out
