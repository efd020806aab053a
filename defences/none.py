"""No defence: the aligned base model as released. The reference point for every other defence."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.plugins import StageContext
from harness.registry import register_defence


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# seeded=False: the defended model is the base whatever the seed (one model per world, not one per seed)
@register_defence("none", config=Config, version="1", seeded=False)
def defend(model: Any, cfg: Config, ctx: StageContext) -> None:
    """No defence: the aligned base model, unchanged."""
    return None
