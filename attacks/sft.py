"""Harmful supervised fine-tuning, full parameters: the RepNoise paper's attack (§4.1, App. C).

Adam without weight decay, cosine schedule with 10% warmup, batch 4, 1 epoch, on the first N rows of the suite's
attack split (`draw="seeded"`: N rows drawn from the whole split with the attack seed, so attack seeds resample the
rows instead of reordering the same ones). The paper's budgets are N in {1k, 10k} x lr in {3e-5, 6e-5, 8e-5}; a
suite sets the lr (and may set epochs and batch), a `--set attack.lr=...` overrides it. The reference loss covers
every token, prompt included (`loss_on="sequence"`); `loss_on="answer"` masks the prompt. Unlike the reference,
padding is never in the loss (it pads to 256 with EOS and trains on those positions).

LoRA attacks (`lora-1k`, `lora-10k`) are presets of the same attack with a LoRA adapter (`lora`: rank 8,
alpha 16, every linear layer) instead of full parameters: the shared `TrainingFields.lora` option, so
`--set attack.lora='{"rank": 16}'` makes any SFT budget a LoRA attack. The stage stores the adapter only.

The search space (what `harness tune-attack` searches, as `harness tune` searches a defence's): the lr over three
decades around the suite's, half to twice the preset's samples, epochs, batch, warmup, and for LoRA the rank
(alpha = 2 x rank, so the update's scale stays that of the preset). The presets' defaults are unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from harness.plugins import DrawFields, StageContext, TrainingFields, fit
from harness.registry import register_attack
from harness.training.collate import SFTCollator
from harness.training.loop import lm_loss
from harness.training.lora import LoraFields

# The attack's strength in the benchmark's budget dimensions: which Config field is which.
FAMILY = "harmful fine-tuning"
BUDGET = {"samples": "samples", "lr": "lr", "epochs": "epochs"}

# Search spaces (json_schema_extra; they never enter run ids): factors of the suite's lr and of the preset's samples.
LR_DECADES = {"search_scale": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]}
SAMPLES_SCALE = {"search_scale": [0.5, 1.0, 2.0]}
RANKS = {"search": [{"rank": r, "alpha": 2.0 * r} for r in (4, 8, 16, 64)]}
SAMPLES_HELP = "harmful examples (the first N of the attack split, or N drawn with the attack seed: `draw`)"


class Config(TrainingFields, DrawFields):
    samples: int = Field(1_000, gt=0, description=SAMPLES_HELP, json_schema_extra=SAMPLES_SCALE)
    lr: float = Field(3e-5, gt=0, description="peak learning rate (suites set their own)", json_schema_extra=LR_DECADES)
    epochs: int = Field(1, ge=1, description="passes over the data", json_schema_extra={"search": [1, 2, 4]})
    batch_size: int = Field(4, ge=1, description="examples per optimizer step", json_schema_extra={"search": [2, 4, 8]})
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="linear warmup fraction (cosine decay after)",
                                json_schema_extra={"search": [0.0, 0.1]})
    loss_on: Literal["sequence", "answer"] = Field("sequence", description="tokens in the loss (reference: sequence)")


class Config250(Config):
    samples: int = Field(250, gt=0, description=SAMPLES_HELP, json_schema_extra=SAMPLES_SCALE)


class Config10k(Config):
    samples: int = Field(10_000, gt=0, description=SAMPLES_HELP, json_schema_extra=SAMPLES_SCALE)


class LoraConfig(Config):
    lora: LoraFields | None = Field(LoraFields(), description="the LoRA adapter the attack trains (None: full "
                                    "parameters)", json_schema_extra=RANKS)


class LoraConfig10k(LoraConfig):
    samples: int = Field(10_000, gt=0, description=SAMPLES_HELP, json_schema_extra=SAMPLES_SCALE)


def attack(model: Any, cfg: Config, ctx: StageContext) -> Any:
    collate = SFTCollator(ctx.tokenizer, ctx.max_length, loss_on=cfg.loss_on, template=ctx.template)
    return fit(model, ctx, split="attack", cfg=cfg, collate=collate, loss_fn=lm_loss)


for _name, _config in (("sft-250", Config250), ("sft-1k", Config), ("sft-10k", Config10k)):
    _n = _config.model_fields["samples"].default
    register_attack(_name, config=_config, version="2", budget=BUDGET, family=FAMILY,
                    description=f"full-parameter harmful SFT on {_n:,} samples (suite lr, 1 epoch, batch 4)")(attack)
for _name, _config in (("lora-1k", LoraConfig), ("lora-10k", LoraConfig10k)):
    _n = _config.model_fields["samples"].default
    register_attack(_name, config=_config, version="1", budget=BUDGET, family=FAMILY,
                    description=f"LoRA harmful SFT on {_n:,} samples (rank 8, all linear; adapter stored)")(attack)
