"""Additional safety training (RepNoise baseline `min_harmless_loss`): more SFT on refusals to the
defence split's harmful questions. The reference's loss covers the whole sequence (question and refusal);
`loss_on="answer"` masks the question."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from harness.plugins import DefenceTrainingFields, StageContext, fit
from harness.registry import register_defence
from harness.training.collate import SFTCollator
from harness.training.loop import lm_loss


class Config(DefenceTrainingFields):
    loss_on: Literal["sequence", "answer"] = Field("sequence", description="tokens in the loss (reference: sequence)")


@register_defence("safety-training", config=Config, version="2")
def defend(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """Additional safety training: SFT on refusals to the defence split's harmful questions."""
    collate = SFTCollator(ctx.tokenizer, ctx.max_length, loss_on=cfg.loss_on, target="refusal", template=ctx.template)
    return fit(model, ctx, split="defence", cfg=cfg, collate=collate, loss_fn=lm_loss)
