"""Representation Rerouting (RR), the circuit-breaker training of Zou et al. 2024, as the reference trains it.

Each step takes a batch of harmful rows (question + harmful answer, every token) and as many retain rows, and
compares the trained model's hidden states with those of the frozen original model (the same model with its
LoRA adapter switched off, or a frozen copy when training every weight):

    L = c_s(t) * mean_{l in target, real tokens} ReLU(cos(h_l, h0_l))        rerouting, harmful rows
      + c_r(t) * mean_{l in retain layers, positions} ||h_l - h0_l||_2       retain, harmless rows
    c_s(t) = alpha * (1 - t / 2T),   c_r(t) = alpha * t / 2T

- t counts optimizer steps from 1 and T is the run's step count (the reference divides by a constant 300 with
  150 steps: the same t/2T), so rerouting starts at ~alpha, retain at ~0, and both end at alpha/2.
- Target layers are hidden-state indices (0: embeddings, L: the last block's output): an int is an index, a
  float a fraction of the depth L (the default 0.3125, 0.625 is the reference's 10 and 20 of 32 layers).
- Retain layers: every hidden state up to one past the deepest target (the reference drops the blocks after
  it and keeps all its hidden states); `full_layers` keeps every state of the whole model.
- Retain rows: the suite's harmless retain split and, with `refusal_retain` (the reference's Llama-3 recipe),
  the harmful questions with their refusals; drawn with a seeded RNG.
- `retain_mean='reference'` averages the distance over rows padded to the context length (pads count 0, as the
  reference pads retain rows to 1024 tokens and takes the mean); 'tokens' averages over real tokens only.
Reference settings: LoRA r=16, alpha 16, dropout 0.05 on every linear layer; lr 1e-4 constant, 150 steps,
batch 16, AdamW without weight decay, clipping 1.0, bf16; alpha 10 (Llama-3-8B) or 5 (Mistral-7B).
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, StrictBool, field_validator

from harness.errors import HarnessError
from harness.models.architecture import decoder_layers
from harness.plugins import DefenceTrainingFields, StageContext, first_rows, fit
from harness.registry import register_defence
from harness.training.collate import SFTCollator
from harness.training.loop import LossOut
from harness.training.lora import LoraFields, is_adapter_model

REFERENCE_LORA = LoraFields(rank=16, alpha=16.0, dropout=0.05, target_modules="all-linear")


class Config(DefenceTrainingFields):
    alpha: float = Field(10.0, gt=0, description="peak coefficient of the schedule (reference: 10 for Llama-3, "
                         "5 for Mistral)", json_schema_extra={"search": [5.0, 10.0, 20.0]})
    target_layers: tuple[int | float, ...] = Field(
        (0.3125, 0.625), min_length=1, description="hidden states to reroute: an int is an index (0: embeddings), "
        "a float in (0, 1] a fraction of the depth (default: the reference's 10 and 20 of 32 layers)",
        json_schema_extra={"search": [[0.3125, 0.625], [0.5, 0.75]]})
    full_layers: StrictBool = Field(False, description="retain on every hidden state (False: up to one past the "
                                    "deepest target, as the reference's truncated model)")
    refusal_retain: StrictBool = Field(True, description="retain rows include the harmful questions with their "
                                       "refusals (the reference's Llama-3 recipe; False: its Mistral recipe)")
    retain_mean: Literal["reference", "tokens"] = Field("reference", description="average the retain distance "
                                                        "over rows padded to the context length, or over real "
                                                        "tokens only")
    lora: LoraFields | None = Field(REFERENCE_LORA, description="the adapter trained (reference: r 16, alpha 16, "
                                    "dropout 0.05, every linear layer); None trains every weight against a "
                                    "frozen copy of the model (twice the memory)")

    @field_validator("target_layers")
    @classmethod
    def _indices_or_fractions(cls, layers: tuple[int | float, ...]) -> tuple[int | float, ...]:
        bad = [x for x in layers if (x < 0 if isinstance(x, int) else not 0 < x <= 1)]
        if bad:
            raise ValueError(f"target layers are indices >= 0 or fractions in (0, 1]; got {bad}")
        return layers


@register_defence("rr", config=Config, version="1", needs=("decoder_layers",))
def defend(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """Representation Rerouting (circuit breakers): send harmful representations orthogonal, keep the rest."""
    depth = len(decoder_layers(model))
    targets = resolve_layers(cfg.target_layers, depth)
    retain = list(range(depth + 1 if cfg.full_layers else min(depth, targets[-1] + 1) + 1))
    rows = first_rows(ctx.data.defence, cfg.samples, "defence")
    frozen = None if cfg.lora is not None else copy.deepcopy(model).requires_grad_(False).eval()
    schedule = Schedule(cfg.alpha, len(rows), cfg.batch_size, cfg.epochs)
    collate = RerouteCollator(SFTCollator(ctx.tokenizer, ctx.max_length, template=ctx.template),
                              retain_pool(ctx, rows if cfg.refusal_retain else None), random.Random(ctx.seed))
    width = ctx.max_length if cfg.retain_mean == "reference" else None

    def loss_fn(m: Any, batch: dict[str, Any]) -> LossOut:
        c_s, c_r = schedule.advance(len(batch["harmful"]["input_ids"]))
        return rr_loss(m, frozen, batch, targets, retain, c_s, c_r, width)

    return fit(model, ctx, split="defence", cfg=cfg, collate=collate, loss_fn=loss_fn)


def resolve_layers(layers: tuple[int | float, ...], depth: int) -> list[int]:
    """Sorted hidden-state indices in 0..depth: ints as given, fractions of `depth` rounded half up."""
    out = sorted({x if isinstance(x, int) else math.floor(x * depth + 0.5) for x in layers})
    if out[-1] > depth:
        raise HarnessError(f"rr target layers {list(layers)} reach hidden state {out[-1]}, but the model has "
                           f"{depth} layers (hidden states 0..{depth}): use indices <= {depth} or fractions")
    return out


@dataclass
class Schedule:
    """c_s = alpha (1 - t/2T) and c_r = alpha t/2T at optimizer step t = 1..T, advanced by rows seen, so a step
    split into micro-batches (grad_accum) keeps one t; the loop's batches are `batch_size` rows of each epoch."""

    alpha: float
    rows: int
    batch_size: int
    epochs: int
    seen: int = 0

    @property
    def total(self) -> int:
        return self.per_epoch * self.epochs

    @property
    def per_epoch(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def weights(self, t: int) -> tuple[float, float]:
        progress = t / (2 * self.total)
        return self.alpha * (1 - progress), self.alpha * progress

    def advance(self, n: int) -> tuple[float, float]:
        """The weights of the step that the next `n` rows belong to."""
        epoch, within = divmod(self.seen, self.rows)
        self.seen += n
        return self.weights(epoch * self.per_epoch + within // self.batch_size + 1)


def retain_pool(ctx: StageContext, refusals: Any | None) -> list[dict[str, str]]:
    """Retain rows: the suite's harmless retain split, plus (question, refusal) of `refusals` when given."""
    pool = [{"prompt": r["prompt"], "response": r["response"]} for r in (ctx.data.retain or [])]
    pool += [{"prompt": r["prompt"], "response": r["refusal"]} for r in (refusals or [])]
    if not pool:
        raise HarnessError("rr needs retain rows: the suite's retain split is empty and refusal_retain is off")
    return pool


@dataclass
class RerouteCollator:
    """Harmful rows (question + harmful answer) and as many retain rows drawn at random from `pool`."""

    encode: SFTCollator
    pool: list[dict[str, str]]
    rng: random.Random

    @property
    def template(self) -> Any:
        return self.encode.template

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        picks = [self.pool[self.rng.randrange(len(self.pool))] for _ in rows]
        return {"harmful": self.encode(rows), "retain": self.encode(picks)}


def rr_loss(model: Any, frozen: Any | None, batch: dict[str, Any], targets: list[int], retain: list[int],
            c_s: float, c_r: float, width: int | None = None) -> LossOut:
    """The weighted rerouting and retain terms (`frozen` None: the original is `model` with its adapter off;
    `width`: the retain mean's padded row length, None for real tokens only)."""
    harmful, kept = batch["harmful"], batch["retain"]
    h0, r0 = original_states(model, frozen, harmful, targets), original_states(model, frozen, kept, retain)
    reroute = reroute_loss(states(model, harmful, targets), h0, harmful["attention_mask"])
    dist = retain_loss(states(model, kept, retain), r0, kept["attention_mask"], width)
    loss = c_s * reroute + c_r * dist
    return LossOut(loss, {"loss": float(loss.detach()), "reroute": float(reroute.detach()),
                          "retain": float(dist.detach()), "c_s": c_s, "c_r": c_r})


def states(model: Any, batch: dict[str, Any], layers: list[int]) -> Any:
    """Hidden states `layers` of `model` on `batch`, stacked: (n_layers, B, T, H)."""
    import torch

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    return torch.stack([out.hidden_states[i] for i in layers])


def original_states(model: Any, frozen: Any | None, batch: dict[str, Any], layers: list[int]) -> Any:
    """The frozen original's hidden states, without gradient, in eval mode (no dropout) as the reference."""
    import contextlib

    import torch

    if frozen is None and not is_adapter_model(model):
        raise HarnessError("rr without a frozen copy needs a LoRA model (its adapter off is the original)")
    net, training = (frozen if frozen is not None else model), model.training
    with model.disable_adapter() if frozen is None else contextlib.nullcontext(), torch.no_grad():
        net.eval()
        try:
            return states(net, batch, layers)
        finally:
            model.train(training)


def reroute_loss(h: Any, h0: Any, mask: Any) -> Any:
    """Mean over layers and real tokens of ReLU(cosine(h, h0)); h, h0: (n, B, T, H), mask: (B, T)."""
    import torch

    cos = torch.nn.functional.cosine_similarity(h.float(), h0.float(), dim=-1)        # (n, B, T)
    m = mask.to(cos.dtype).expand_as(cos)                                            # (n, B, T)
    return (torch.relu(cos) * m).sum() / m.sum()


def retain_loss(h: Any, h0: Any, mask: Any, width: int | None = None) -> Any:
    """L2 distance of the masked states (n, B, T, H) to the original's, averaged over real tokens, or (`width`)
    over every position of rows padded to `width` tokens, pads counting as 0."""
    m = mask.to(h.dtype)[None, :, :, None]                                           # (1, B, T, 1)
    dist = (h * m - h0 * m).float().norm(dim=-1)                                     # (n, B, T)
    return dist.sum() / (len(h) * (mask.size(0) * width if width else m.sum()))
