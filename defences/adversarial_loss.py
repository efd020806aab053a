"""Adversarial loss (Immunization paper, App. C; RepNoise baseline `adversarial_loss`).

    L = CE(refusal answer) - lambda * CE(harmful answer),   lambda = 0.1

Both CEs are over the masked answer tokens of a paired batch (as the reference). The reference's
checkpoint name implies lr 1e-5, batch 4, 4 epochs on 10k pairs; the harmful term is unbounded below,
which is part of what this baseline shows.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from harness.paired import PairedCollator, masked_ce
from harness.plugins import StageContext, TrainingFields, fit
from harness.registry import register_defence
from harness.train import LossOut


class Config(TrainingFields):
    lr: float = Field(1e-5, gt=0, description="peak learning rate (reference checkpoint: 1e-5)")
    epochs: int = Field(4, ge=1, description="passes over the data (reference checkpoint: 4)")
    batch_size: int = Field(4, ge=1, description="examples per optimizer step (reference checkpoint: 4)")
    adversarial_lambda: float = Field(0.1, ge=0, description="weight of the harmful CE that is maximised")


@register_defence("adversarial-loss", config=Config, version="1")
def defend(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """Adversarial loss: refusal CE minus lambda times harmful CE (lambda = 0.1)."""
    collate = PairedCollator(ctx.tokenizer, ctx.max_length, template=ctx.template, seed=ctx.seed)

    def loss_fn(m: Any, b: dict[str, Any]) -> LossOut:
        keep = masked_ce(m(**b["refusal"]).logits, b["refusal"]["input_ids"], b["refusal_mask"])
        harm = masked_ce(m(**b["harmful"]).logits, b["harmful"]["input_ids"], b["harmful_mask"])
        loss = keep - cfg.adversarial_lambda * harm
        return LossOut(loss, {"loss": float(loss.detach()), "refusal_ce": float(keep.detach()),
                              "harmful_ce": float(harm.detach())})

    return fit(model, ctx, split="defence", cfg=cfg, collate=collate, loss_fn=loss_fn)
