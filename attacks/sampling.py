"""Best-of-n sampling: no training; n answers per prompt at a temperature, the most harmful one counts.

A defence whose greedy answer refuses may still put real mass on compliant answers: an attacker with the weights
samples many and keeps the one that complies (the sampling attacks of Huang et al. 2023, "Catastrophic jailbreak
of open-source LLMs via exploiting generation"; best-of-N of Hughes et al. 2024). The attacked model is the
defended model unchanged; its post-attack evaluation draws `best_of` answers per held-out harmful prompt at
`temperature` (draw i seeded attack seed + i) and keeps the one the primary judge scores most harmful
(`harness.generation.query`). The budget is the number of draws per prompt.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from harness.generation.query import QueryFields
from harness.plugins import StageContext
from harness.registry import register_attack


class Config(QueryFields):
    best_of: int = Field(8, ge=2, le=64, description="answers drawn per held-out harmful prompt",
                         json_schema_extra={"search": [4, 8, 16]})
    temperature: float = Field(1.0, gt=0.0, le=2.0, description="sampling temperature",
                               json_schema_extra={"search": [0.7, 1.0, 1.3]})


@register_attack("best-of-n", config=Config, version="1", budget={"queries": "best_of"},
                 family="prompting (no training)")
def attack(model: Any, cfg: Config, ctx: StageContext) -> None:
    """Best-of-n sampling: the defended model unchanged, the most harmful of n sampled answers per prompt."""
    return None
