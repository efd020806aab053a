"""No defence: the aligned base model as released. The reference point for every other defence."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.plugins import StageContext
from harness.registry import register_defence


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@register_defence("none", config=Config, version="1")
def defend(model: Any, cfg: Config, ctx: StageContext) -> None:
    """No defence: the aligned base model, unchanged."""
    return None
