"""The tiny world's harmful-QA task: disjoint splits in BeaverTails' schema as `datasets.Dataset`s."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.registry import register_task
from tasks.tiny.world import Size, cached_world


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="world seed")
    size: Size = Field("default", description="world size preset")


@register_task("tiny-harmful-qa", config=Config, version="2")
def load(cfg: Config) -> dict[str, Any]:
    """Synthetic BeaverTails-schema harmful QA over the 14 categories (offline, non-actionable); world v3: every
    row names its question template (`template`), held-out rows their subject (`unit`)."""
    from datasets import Dataset

    world = cached_world(cfg.seed, cfg.size)
    splits = {f"harmful_{k}": v for k, v in world.harmful.items()}
    splits |= {f"harmless_{k}": v for k, v in world.harmless.items()}
    return {name: Dataset.from_list(rows) for name, rows in splits.items()}
