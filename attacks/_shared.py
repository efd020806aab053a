"""What the attacks that train on harmless data share (benign, identity shift, poisoned task, retain-set).

- `ScheduledFields`: the shared `TrainingFields` plus the two optimiser settings their reference recipes choose
  and the shared fields fix (a cosine decay, no weight decay): the lr schedule after warmup, and weight decay.
- `fit_rows`: `fit` on the rows an attack chose or built (a selection, a mix, rewritten rows) instead of the
  first N rows of one split.
- `qa_rows`: rows reduced to the two columns an SFT collator reads, so rows of two splits can be mixed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field

from harness.errors import HarnessError
from harness.plugins import StageContext, TrainingFields, fit
from harness.training.loop import LossFn, TrainConfig, lm_loss


class ScheduledFields(TrainingFields):
    schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="lr after warmup: cosine or linear decay to 0, or constant")
    weight_decay: float = Field(0.0, ge=0, description="weight decay (decoupled with adamw, L2 with adam)")

    def train_config(self) -> TrainConfig:
        return super().train_config().model_copy(update={"schedule": self.schedule,
                                                         "weight_decay": self.weight_decay})


def qa_rows(rows: Any) -> list[dict[str, str]]:
    """`{"prompt", "response"}` of every row (other columns dropped)."""
    return [{"prompt": r["prompt"], "response": r["response"]} for r in rows]


def fit_rows(model: Any, ctx: StageContext, rows: Sequence[dict[str, Any]], *, cfg: TrainingFields,
             collate: Callable[[list[Any]], Any], loss_fn: LossFn = lm_loss) -> Any:
    """Train as `fit` does (the one loop, the run seed, the stage's progress and callbacks, LoRA), on exactly
    `rows`: they stand in for the retain split of the context `fit` reads, and every one of them is used."""
    if not rows:
        raise HarnessError("the attack built no training rows")
    data = dataclasses.replace(ctx.data, retain=list(rows))
    return fit(model, dataclasses.replace(ctx, data=data), split="retain", cfg=cfg.model_copy(update={"samples": None}),
               collate=collate, loss_fn=loss_fn)
