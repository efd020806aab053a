"""The contracts between the pipeline and defence / attack plugins.

    defend(model, cfg, ctx) -> model | None     # None: "the input model, unchanged" (nothing is saved)
    attack(model, cfg, ctx) -> model

Plugins train with `harness.train.train` and read data only from `ctx.data`. They format questions with
`ctx.template`, the suite's prompt format, exactly as the evaluation does: collators take it, and `fit`
refuses a collator whose format differs from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.data import PLAIN, PromptFormat, as_format
from harness.errors import HarnessError
from harness.suite import SuiteData
from harness.train import LossFn, TrainConfig


@dataclass(frozen=True)
class StageContext:
    tokenizer: Any
    data: SuiteData
    max_length: int                          # training context length of the suite
    seed: int
    progress: Callable[..., None] | None = None  # advance a progress bar by optimizer steps
    callback: Callable[[int, Any], None] | None = None  # pass to train(): runs every `every` steps
    every: int = 0
    template: PromptFormat = PLAIN               # the suite's prompt format: give it to every collator


class TrainingFields(BaseModel):
    """Optimisation fields shared by plugins that train (defaults: the RepNoise paper's defence, App. B.2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(2e-5, gt=0, description="peak learning rate")
    epochs: int = Field(1, ge=1, description="passes over the data")
    batch_size: int = Field(8, ge=1, description="examples per optimizer step")
    samples: int | None = Field(None, gt=0, description="first N rows of the plugin's split (None: all)")
    optimizer: Literal["adam", "adamw"] = Field("adam", description="reference: Adam, no weight decay")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="linear warmup fraction (cosine decay after)")

    def train_config(self) -> TrainConfig:
        return TrainConfig(lr=self.lr, epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
                           warmup_ratio=self.warmup_ratio)


def first_rows(rows: Any, n: int | None, what: str) -> Any:
    """The first `n` rows of a dataset (all when n is None); too few rows is a clear error."""
    if n is None:
        return rows
    if n > len(rows):
        raise HarnessError(f"{what} needs {n} samples but the suite's split has {len(rows)}")
    return rows.select(range(n)) if hasattr(rows, "select") else rows[:n]


def fit(model: Any, ctx: StageContext, *, split: str, cfg: TrainingFields, collate: Callable[[list[Any]], Any],
        loss_fn: LossFn) -> Any:
    """Train `model` in place on the first `cfg.samples` rows of `ctx.data.<split>` with the one training
    loop, the plugin's budget, the run seed, and the stage's progress bar and callback. Returns the model."""
    from harness.train import train

    used = getattr(collate, "template", None)
    if used is not None and as_format(used) != ctx.template:
        raise HarnessError(f"{type(collate).__name__} formats prompts as {as_format(used)!r} but the suite's prompt "
                           f"format is {ctx.template!r}: pass template=ctx.template to the collator")
    rows = first_rows(getattr(ctx.data, split), cfg.samples, split)
    train(model, rows, collate, loss_fn, cfg.train_config(), seed=ctx.seed, progress=ctx.progress,
          callback=ctx.callback, every=ctx.every)
    return model
