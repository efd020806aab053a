"""Harmful supervised fine-tuning, full parameters: the RepNoise paper's attack (§4.1, App. C).

Adam without weight decay, cosine schedule with 10% warmup, batch 4, 1 epoch, on the first N rows of the
suite's attack split. The paper's budgets are N in {1k, 10k} x lr in {3e-5, 6e-5, 8e-5}; a suite sets the
lr (and may set epochs and batch), a `--set attack.lr=...` overrides it. The reference loss covers every
token, prompt included (`loss_on="sequence"`); `loss_on="answer"` masks the prompt. Unlike the reference,
padding is never in the loss (it pads to 256 with EOS and trains on those positions).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.data import SFTCollator
from harness.plugins import StageContext, first_rows
from harness.registry import register_attack
from harness.train import TrainConfig, lm_loss, train

BUDGETS = {"sft-250": 250, "sft-1k": 1_000, "sft-10k": 10_000}


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(1_000, gt=0, description="harmful examples (first N of the attack split)")
    lr: float = Field(3e-5, gt=0, description="peak learning rate (suites set their own)")
    epochs: int = Field(1, ge=1, description="passes over the samples")
    batch_size: int = Field(4, ge=1, description="examples per optimizer step")
    loss_on: Literal["sequence", "answer"] = Field("sequence", description="tokens in the loss (reference: sequence)")
    optimizer: Literal["adam", "adamw"] = Field("adam", description="reference: Adam, no weight decay")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="linear warmup fraction")


def attack(model: Any, cfg: Config, ctx: StageContext) -> Any:
    rows = first_rows(ctx.data.attack, cfg.samples, "attack")
    train_cfg = TrainConfig(lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer,
                            warmup_ratio=cfg.warmup_ratio)
    collate = SFTCollator(ctx.tokenizer, ctx.max_length, loss_on=cfg.loss_on)
    train(model, rows, collate, lm_loss, train_cfg, seed=ctx.seed, progress=ctx.progress, callback=ctx.callback,
          every=ctx.every)
    return model


def _budget_config(name: str, samples: int) -> type[Config]:
    """The Config of one named budget: the shared fields, with its own default sample count."""
    return type(f"Config_{name.replace('-', '_')}", (Config,),
                {"__annotations__": {"samples": int},
                 "samples": Field(samples, gt=0, description="harmful examples (first N of the attack split)"),
                 "__module__": __name__})


for _name, _n in BUDGETS.items():
    register_attack(_name, config=_budget_config(_name, _n), version="1",
                    description=f"full-parameter harmful SFT on {_n:,} samples (suite lr, 1 epoch, batch 4)")(attack)
