"""The contracts between the pipeline and defence / attack plugins.

    defend(model, cfg, ctx) -> model | None     # None: "the input model, unchanged" (nothing is saved)
    attack(model, cfg, ctx) -> model

Plugins train with `harness.train.train` and read data only from `ctx.data`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.suite import SuiteData


@dataclass(frozen=True)
class StageContext:
    tokenizer: Any
    data: SuiteData
    max_length: int                          # training context length of the suite
    seed: int
    progress: Callable[..., None] | None = None  # advance a progress bar by optimizer steps

    def bar_total(self, steps: int) -> None:
        """Plugins may announce their step count; the pipeline sizes its bar from it."""
