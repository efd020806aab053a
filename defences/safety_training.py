"""Additional safety training (RepNoise baseline `min_harmless_loss`): more SFT on refusals to the
defence split's harmful questions. Loss on the answer tokens only."""

from __future__ import annotations

from typing import Any

from harness.data import SFTCollator
from harness.plugins import StageContext, TrainingFields, fit
from harness.registry import register_defence
from harness.train import lm_loss


class Config(TrainingFields):
    pass


@register_defence("safety-training", config=Config, version="1")
def defend(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """Additional safety training: SFT on refusals to the defence split's harmful questions."""
    collate = SFTCollator(ctx.tokenizer, ctx.max_length, loss_on="answer", target="refusal", template=ctx.template)
    return fit(model, ctx, split="defence", cfg=cfg, collate=collate, loss_fn=lm_loss)
