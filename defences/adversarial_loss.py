"""Adversarial loss (Immunization paper, App. C; RepNoise baseline `adversarial_loss`).

    L = CE(refusal answer) - lambda * CE(harmful answer),   lambda = 0.1

Both CEs are over the masked answer tokens of a paired batch, with the reference's masked logits
(`mask_logits`, as RepNoise). The reference's checkpoint name implies lr 1e-5, batch 4, 4 epochs on 10k
pairs; the harmful term is unbounded below, which is part of what this baseline shows.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool

from harness.plugins import EPOCHS_SEARCH, LR_SEARCH, DefenceTrainingFields, StageContext, fit
from harness.registry import register_defence
from harness.training.loop import LossOut
from harness.training.paired_batches import PairedCollator, masked_ce


class Config(DefenceTrainingFields):
    lr: float = Field(1e-5, gt=0, description="peak learning rate (reference checkpoint: 1e-5)",
                      json_schema_extra=LR_SEARCH)
    epochs: int = Field(4, ge=1, description="passes over the data (reference checkpoint: 4)",
                        json_schema_extra=EPOCHS_SEARCH)
    batch_size: int = Field(4, ge=1, description="examples per optimizer step (reference checkpoint: 4)")
    adversarial_lambda: float = Field(0.1, ge=0, description="weight of the harmful CE that is maximised",
                                      json_schema_extra={"search": [0.01, 0.1, 0.5]})
    mask_logits: StrictBool = Field(True, description="reference quirk: zero the logits at masked positions too")


@register_defence("adversarial-loss", config=Config, version="2")
def defend(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """Adversarial loss: refusal CE minus lambda times harmful CE (lambda = 0.1)."""
    collate = PairedCollator(ctx.tokenizer, ctx.max_length, template=ctx.template)

    def loss_fn(m: Any, b: dict[str, Any]) -> LossOut:
        keep = masked_ce(m(**b["refusal"]).logits, b["refusal"]["input_ids"], b["refusal_mask"],
                         mask_logits=cfg.mask_logits)
        harm = masked_ce(m(**b["harmful"]).logits, b["harmful"]["input_ids"], b["harmful_mask"],
                         mask_logits=cfg.mask_logits)
        loss = keep - cfg.adversarial_lambda * harm
        return LossOut(loss, {"loss": float(loss.detach()), "refusal_ce": float(keep.detach()),
                              "harmful_ce": float(harm.detach())})

    return fit(model, ctx, split="defence", cfg=cfg, collate=collate, loss_fn=loss_fn)
