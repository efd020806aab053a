"""Paired batches for defences that contrast a harmful answer with a refusal to the same question.

Both sequences share the question prefix and are padded to one width, so position t of one lines up with
position t of the other. The mask marks the answer tokens where the pair differs (RepNoise's MASK): the
model may still read harmful questions; only what it says back is targeted. Unlike the reference, padding
is never in the mask (it pads with EOS and trains on those positions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.training.collate import PROMPT_TEMPLATE, PromptFormat, encode_sft, pad_batch


def masked_ce(logits: Any, input_ids: Any, mask: Any, *, mask_logits: bool = False) -> Any:
    """Mean next-token cross-entropy over the positions where `mask` is true.  logits (B, T, V), ids/mask (B, T).

    `mask_logits=True` reproduces the reference's `masked_token_ce_loss`, which also multiplies the logits at
    position t by mask[t]: at the first masked token (mask[t]=0, mask[t+1]=1) the logits are all zero, so that
    token's loss is the constant log V with no gradient (the refusal-vs-compliance decision is never trained).
    """
    import torch.nn.functional as F

    targets = input_ids[:, 1:]                       # (B, T-1): token t+1 is predicted at position t
    keep = mask[:, 1:].bool()                        # (B, T-1)
    logp = logits[:, :-1].float()                    # (B, T-1, V)
    if mask_logits:
        logp = logp * mask[:, :-1, None].to(logp.dtype)
    losses = F.cross_entropy(logp.reshape(-1, logp.size(-1)), targets.reshape(-1), reduction="none")
    keep = keep.reshape(-1)
    return (losses * keep).sum() / keep.sum().clamp(min=1)


@dataclass
class PairedCollator:
    """Rows with prompt, response (harmful) and refusal -> aligned harmful/refusal batches and masks.

    """

    tokenizer: Any
    max_length: int
    template: str | PromptFormat = PROMPT_TEMPLATE
    mask_answers: bool = True       # False: every non-pad token of the harmful sequence is targeted

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
        return batch
