"""Stability: is the defended model as capable as the undefended base on harmless reference data?

Measured here as perplexity on held-out harmless text (the full formatted QA sequences) and harmless-QA
exact match (from the pre-attack evaluation), defended vs base. Real suites add lm-eval tasks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from harness.data import PROMPT_TEMPLATE, encode_sft, pad_batch


def perplexity(model: Any, tok: Any, rows: Sequence[dict[str, Any]], *, template: str = PROMPT_TEMPLATE,
               max_length: int = 256, batch_size: int = 32) -> float:
    """exp(mean token NLL) over every token of `rows` (prompt and response), padding excluded."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    device = next(model.parameters()).device
    model.eval()
    for first in range(0, len(rows), batch_size):
        enc = [encode_sft(tok, r["prompt"], r["response"], max_length=max_length, loss_on="sequence",
                          template=template) for r in rows[first:first + batch_size]]
        batch = {k: v.to(device) for k, v in pad_batch(enc, tok.pad_token_id).items()}
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]                                     # (B, T-1)
        nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), reduction="sum",
                              ignore_index=-100)
        total += float(nll)
        count += int((labels != -100).sum())
    return math.exp(total / max(count, 1))


def compare(defended: dict[str, float], base: dict[str, float]) -> dict[str, Any]:
    """Defended vs base for each stability metric: both values, ratio (perplexity) or delta (accuracy)."""
    out: dict[str, Any] = {}
    for name, value in defended.items():
        ref = base[name]
        rel = {"ratio": value / ref if ref else math.inf} if name == "perplexity" else {"delta": value - ref}
        out[name] = {"defended": value, "base": ref, **rel}
    return out
