"""Paired batches for defences that contrast a harmful answer with a refusal to the same question.

Both sequences share the question prefix and are padded to one width, so position t of one lines up with
position t of the other. The mask marks the answer tokens where the pair differs (RepNoise's MASK): the
model may still read harmful questions; only what it says back is targeted. Unlike the reference, padding
is never in the mask (it pads with EOS and trains on those positions).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.data import PROMPT_TEMPLATE, PromptFormat, encode_sft, pad_batch


def masked_ce(logits: Any, input_ids: Any, mask: Any) -> Any:
    """Mean next-token cross-entropy over the positions where `mask` is true.  logits (B, T, V), ids/mask (B, T)."""
    import torch.nn.functional as F

    targets = input_ids[:, 1:]                       # (B, T-1): token t+1 is predicted at position t
    keep = mask[:, 1:].bool()                        # (B, T-1)
    logp = logits[:, :-1].float()                    # (B, T-1, V)
    losses = F.cross_entropy(logp.reshape(-1, logp.size(-1)), targets.reshape(-1), reduction="none")
    keep = keep.reshape(-1)
    return (losses * keep).sum() / keep.sum().clamp(min=1)


@dataclass
class PairedCollator:
    """Rows with prompt, response (harmful) and refusal -> aligned harmful/refusal batches and masks.

    With `retain` rows (harmless QA), each batch also carries a harmless batch of the same size, drawn
    with a seeded RNG so the stream is reproducible.
    """

    tokenizer: Any
    max_length: int
    template: str | PromptFormat = PROMPT_TEMPLATE
    mask_answers: bool = True       # False: every non-pad token of the harmful sequence is targeted
    retain: Sequence[dict[str, Any]] | None = None
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _encode(self, rows: Sequence[dict[str, Any]], target: str) -> list[dict[str, list[int]]]:
        return [encode_sft(self.tokenizer, r["prompt"], r[target], max_length=self.max_length, loss_on="sequence",
                           template=self.template) for r in rows]

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        n = len(rows)
        both = pad_batch(self._encode(rows, "response") + self._encode(rows, "refusal"), self.tokenizer.pad_token_id)
        harmful = {k: v[:n] for k, v in both.items()}
        refusal = {k: v[n:] for k, v in both.items()}
        if self.mask_answers:
            differs = harmful["input_ids"] != refusal["input_ids"]                   # (B, T)
        else:
            differs = harmful["attention_mask"].bool()
        batch: dict[str, Any] = {
            "harmful": harmful, "refusal": refusal,
            "harmful_mask": differs & harmful["attention_mask"].bool(),
            "refusal_mask": differs & refusal["attention_mask"].bool(),
        }
        if self.retain:
            picks = [self.retain[self._rng.randrange(len(self.retain))] for _ in range(n)]
            batch["retain"] = pad_batch(self._encode(picks, "response"), self.tokenizer.pad_token_id)
        return batch
