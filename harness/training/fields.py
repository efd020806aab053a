"""The training options every training plugin shares: `TrainingFields` (and a defence's `DefenceTrainingFields`).

They sit below `harness.plugins` (which re-exports them) because run ids read their key markers: a shared option
added later is declared `Annotated[..., KEY_OMIT_DEFAULT]` (harness.keying) and is left out of a defence's or an
attack's params in run ids and cache keys while at the default that trains as before it existed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from harness.errors import HarnessError
from harness.keying import KEY_OMIT_DEFAULT
from harness.training.loop import Precision, TrainConfig
from harness.training.lora import LoraFields

# The tuning space every training plugin shares (harness.tuning.tune): the lr as factors of the suite's lr, and epochs.
LR_SEARCH: dict[str, Any] = {"search_scale": [0.1, 0.3, 1.0, 3.0]}
EPOCHS_SEARCH: dict[str, Any] = {"search": [1, 2]}


class TrainingFields(BaseModel):
    """Optimisation fields shared by plugins that train (defaults: the RepNoise paper's defence, App. B.2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(2e-5, gt=0, description="peak learning rate", json_schema_extra=LR_SEARCH)
    epochs: int = Field(1, ge=1, description="passes over the data", json_schema_extra=EPOCHS_SEARCH)
    batch_size: int = Field(8, ge=1, description="examples per optimizer step")
    samples: int | None = Field(None, gt=0, description="first N rows of the plugin's split (None: all)")
    optimizer: Literal["adam", "adamw"] = Field("adam", description="reference: Adam, no weight decay")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="linear warmup fraction (cosine decay after)")
    max_grad_norm: float | None = Field(None, gt=0, description="gradient clipping norm (reference: None, no "
                                        "clipping)")
    # Scale options (a suite sets them for every plugin alike), added after the first records: KEY_OMIT_DEFAULT
    # leaves each out of run ids and cache keys while at the default that trains as before it existed.
    grad_accum: Annotated[int, KEY_OMIT_DEFAULT] = Field(
        1, ge=1, description="micro-batches per optimizer step (divides batch_size); the loss is normalised per "
        "token over the whole batch")
    precision: Annotated[Precision, KEY_OMIT_DEFAULT] = Field(
        "model", description="model: train in the run's dtype; autocast-bf16: float32 weights under bf16 autocast; "
        "bf16-master: bf16 weights, float32 master weights and optimizer state")
    gradient_checkpointing: Annotated[StrictBool, KEY_OMIT_DEFAULT] = Field(
        False, description="recompute activations in backward (less memory, about a third more compute)")
    lora: Annotated[LoraFields | None, KEY_OMIT_DEFAULT] = Field(
        None, description="train a LoRA adapter (peft) instead of every weight; the stage stores the adapter, not a "
        "merged model (None: full parameters)")

    def train_config(self) -> TrainConfig:
        if self.batch_size % self.grad_accum:
            raise HarnessError(f"grad_accum {self.grad_accum} does not divide batch_size {self.batch_size}")
        return TrainConfig(lr=self.lr, epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
                           warmup_ratio=self.warmup_ratio, max_grad_norm=self.max_grad_norm,
                           grad_accum=self.grad_accum, precision=self.precision,
                           gradient_checkpointing=self.gradient_checkpointing)


class DrawFields(BaseModel):
    """Which N rows of its split an attack reads, for the attacks that take N rows (`harness.plugins.draw_rows`).
    Added after the first records: left out of run ids and cache keys while "first", the rows read before it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    draw: Annotated[Literal["first", "seeded"], KEY_OMIT_DEFAULT] = Field(
        "first", description="first: the first N rows of the split (attack seeds only reorder them); seeded: N rows "
        "drawn at random from the whole split with the attack seed, so attack seeds resample the rows")


class DefenceTrainingFields(TrainingFields):
    """TrainingFields of a defence, plus the options a suite sets for every training defence alike."""

    retain_harmless: float = Field(0.0, ge=0, description="weight of a CE on a batch of the suite's harmless retain "
                                   "data each step (0: none, the reference); a suite sets it for all defences or none")
