"""Random initialisation (RepNoise baseline `random`): the same architecture with fresh weights.

It measures how fast an attacker reaches harmful text from scratch, the floor any defence should beat
on cost. Weights come from `from_config` under the run seed (the model's own init scheme).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.plugins import StageContext
from harness.registry import register_defence
from harness.training.loop import seed_everything


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@register_defence("random-init", config=Config, version="1")
def defend(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """Random init: same architecture, fresh weights (a from-scratch attacker's starting point)."""
    from transformers import AutoModelForCausalLM

    seed_everything(ctx.seed + 7919)  # not the run seed: the base model may have been initialised with it
    fresh = AutoModelForCausalLM.from_config(model.config)
    return fresh.to(dtype=next(model.parameters()).dtype, device=next(model.parameters()).device)
