"""Retain-set fine-tuning: fine-tune the defended model on the defender's own harmless retain distribution.

A domain-adjacent benign attack. TAR's red-teaming script (rishub-tamirisa/tamper-resistance, red_teaming/) has
strategies that fine-tune on the retain data (`pure_pile_bio_retain`: text next to the hazardous domain, the
distribution TAR trains the model to keep) instead of the forget data; Qi et al. 2024, "On evaluating the
durability of safeguards for open-weight LLMs", re-ran it (boyiwei/TAR-Reproduce, red_teaming/orig_implement.slurm,
where the retain set is one of the two datasets) with: AdamW, lr 2e-5, 1,000 steps at batch 64 (8 per GPU on 4,
2 accumulation steps), 100 steps of linear warmup then a cosine annealing 4x longer than the run, which ends at
about 90% of the peak lr (here: 10% warmup, then constant), loss on every token (the retain data is raw text). It
asks whether a safeguard survives training that the defender itself counts as harmless.

Here the data is the suite's retain split (`reads=("retain",)`), the first N rows, `epochs` passes; the loss
covers prompt and answer (`loss_on="sequence"`, the reference's raw-text loss). A suite's lr, epochs and batch
(its attack defaults) replace the reference's, as for every attack.

Presets: `retain-ft-250`, `retain-ft-1k`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from attacks._shared import ScheduledFields
from harness.plugins import LR_SEARCH, DrawFields, StageContext, fit
from harness.registry import register_attack
from harness.training.collate import SFTCollator
from harness.training.loop import lm_loss

BUDGET = {"samples": "samples", "lr": "lr", "epochs": "epochs"}


class Config(ScheduledFields, DrawFields):
    samples: int = Field(1_000, gt=0, description="harmless rows (first N of the retain split)")
    lr: float = Field(2e-5, gt=0, description="peak learning rate (suites set their own)", json_schema_extra=LR_SEARCH)
    batch_size: int = Field(64, ge=1, description="examples per optimizer step")
    optimizer: Literal["adam", "adamw"] = Field("adamw", description="reference: AdamW")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="linear warmup fraction (reference: 100 of 1,000 "
                                "steps)")
    schedule: Literal["cosine", "linear", "constant"] = Field(
        "constant", description="lr after warmup (reference: a cosine 4x longer than the run, nearly constant)",
        json_schema_extra={"search": ["constant", "cosine"]})
    loss_on: Literal["sequence", "answer"] = Field("sequence", description="tokens in the loss (reference: every "
                                                   "token of raw text)",
                                                   json_schema_extra={"search": ["sequence", "answer"]})


class Config250(Config):
    samples: int = Field(250, gt=0, description="harmless rows (first N of the retain split)")


def attack(model: Any, cfg: Config, ctx: StageContext) -> Any:
    collate = SFTCollator(ctx.tokenizer, ctx.max_length, loss_on=cfg.loss_on, template=ctx.template)
    return fit(model, ctx, split="retain", cfg=cfg, collate=collate, loss_fn=lm_loss)


for _name, _config in (("retain-ft-250", Config250), ("retain-ft-1k", Config)):
    register_attack(_name, config=_config, version="1", budget=BUDGET, reads=("retain",), family="benign fine-tuning",
                    rows=lambda cfg: {"retain": cfg.samples},
                    description=f"fine-tuning on the first {_config.model_fields['samples'].default:,} rows of the "
                    "defender's harmless retain split (TAR red-teaming, Qi et al. 2024)")(attack)
