"""Booster: attenuating harmful perturbation (Huang et al. 2024, arXiv 2409.01586), as git-disl/Booster's
`BoosterAlignmentTrainer` (`--optimizer booster`) computes it.

Objective over the trainable weights w:

    min_w  f(w) + lambda * ( h(w) - h(w - alpha * g / ||g||) ),     g = grad h(w)

- f: the alignment loss, cross-entropy of the refusal to a harmful question (answer tokens only);
- h: the harmful loss, cross-entropy of the harmful answer to the same question (answer tokens only);
- the bracket is how much one normalised gradient step of size alpha on harmful data lowers the harmful loss:
  the simulated harmful perturbation. Booster trains the model so that this step buys an attacker little.

The gradient is first order, as in the paper and the code: the step's direction g/||g|| is held constant (no
Hessian-vector product), so each optimizer step follows grad f(w) + lambda * (g - grad h(w~)), w~ = w - alpha g/||g||
(||g|| over all trainable weights, plus 1e-7). It costs three forward/backward passes: harmful at w, harmful at
w~ (the weights are moved in place and restored bit for bit before the alignment pass), alignment at w.
`booster_loss` returns a loss whose value is the objective and whose gradient is exactly that one.

Reference defaults (scripts/alignment/smooth_align.sh): lambda 5, alpha 0.1; LoRA r 32, alpha 4, on q/k/v;
AdamW lr 5e-4, weight decay 0.1, constant schedule without warmup, 20 epochs, batch 10, bf16. The alignment and
harmful data are the same 5000 BeaverTails questions of RepNoise's paired-refusal file (refusals vs harmful
answers), each drawn by its own sampler; here each row of a batch gives both. Everything we set differently is
a row of `booster.card.yaml`, with the Config values that restore the reference.

Tuning space: lambda x alpha (3 x 2) on top of the shared lr and epochs: 48 settings, each defence run about as
costly as RepNoise's (three forward/backward passes a step), half RepNoise's 96.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from harness.plugins import DefenceTrainingFields, StageContext, fit
from harness.registry import register_defence
from harness.training.collate import PromptFormat, SFTCollator
from harness.training.loop import LossOut, TrainConfig

EPS = 1e-7  # added to ||g|| (the reference's)


class Config(DefenceTrainingFields):
    lamb: float = Field(5.0, ge=0, description="lambda: weight of the harmful-loss drop after the simulated step "
                        "(reference: 5; 0 is plain alignment on refusals)",
                        json_schema_extra={"search": [1.0, 5.0, 20.0]})
    alpha: float = Field(0.1, ge=0, description="alpha: L2 length of the simulated harmful step over the trainable "
                         "weights (reference: 0.1)", json_schema_extra={"search": [0.1, 1.0]})
    weight_decay: float = Field(0.0, ge=0, description="optimizer weight decay (decoupled with adamw; reference: "
                                "AdamW, 0.1)")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="decay after warmup "
                                                              "(reference: constant, no warmup)")

    def train_config(self) -> TrainConfig:
        return super().train_config().model_copy(update={"weight_decay": self.weight_decay,
                                                         "schedule": self.schedule})


@register_defence("booster", config=Config, version="1")
def defend(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """Booster: align on refusals while attenuating the harmful-loss drop of a simulated harmful step."""
    collate = BoosterCollator(ctx.tokenizer, ctx.max_length, template=ctx.template)
    return fit(model, ctx, split="defence", cfg=cfg, collate=collate, loss_fn=lambda m, b: booster_loss(m, b, cfg))


@dataclass(frozen=True)
class BoosterCollator:
    """Rows with prompt, refusal and response -> {"align": prompt + refusal, "harmful": prompt + harmful answer},
    each labelled on its answer tokens only (the reference masks the prompt, as its Alpaca-style data does)."""

    tokenizer: Any
    max_length: int
    template: str | PromptFormat

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        def encode(target: str) -> dict[str, Any]:
            return SFTCollator(self.tokenizer, self.max_length, loss_on="answer", target=target,
                               template=self.template)(rows)

        return {"align": encode("refusal"), "harmful": encode("response")}


def booster_loss(model: Any, batch: dict[str, Any], cfg: Config) -> LossOut:
    """f(w) + lambda (h(w) - h(w~)), built so that its gradient is grad f + lambda (grad h(w) - grad h(w~))."""
    if cfg.lamb == 0:  # plain alignment: no harmful passes
        align = model(**batch["align"]).loss
        return LossOut(align, {"loss": float(align.detach()), "align": float(align.detach())})
    params = [p for p in model.parameters() if p.requires_grad]
    before, grads = harmful_grads(model, batch["harmful"], params)            # h(w), g
    norm = grad_norm(grads)
    after, grads_after = perturbed_harmful_grads(model, batch["harmful"], params, grads, cfg.alpha / norm)
    diffs = [g if ga is None else -ga if g is None else g.sub_(ga) for g, ga in zip(grads, grads_after, strict=True)]
    del grads, grads_after                            # only g - g~ stays alive through the alignment pass
    align = model(**batch["align"]).loss                                      # after the weights are restored
    drop = before - after                                                     # h(w) - h(w~), a float
    loss = align + cfg.lamb * (drop + linear_in_weights(params, diffs))
    return LossOut(loss, {"loss": float(loss.detach()), "align": float(align.detach()), "harmful": before,
                          "harmful_after_step": after, "harmful_drop": drop, "harmful_grad_norm": float(norm)})


def harmful_grads(model: Any, batch: dict[str, Any], params: list[Any]) -> tuple[float, list[Any]]:
    """The harmful loss at the current weights and its gradient w.r.t. `params` (None: not used by the loss)."""
    import torch

    loss = model(**batch).loss
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return float(loss.detach()), list(grads)


def grad_norm(grads: Sequence[Any]) -> Any:
    """||g|| over every trainable weight (one vector), plus EPS; a 0-dim float32 tensor."""
    import torch

    return torch.sqrt(sum(g.detach().float().pow(2).sum() for g in grads if g is not None)) + EPS


def perturbed_harmful_grads(model: Any, batch: dict[str, Any], params: list[Any], grads: list[Any],
                            scale: Any) -> tuple[float, list[Any]]:
    """h and grad h at w~ = w - scale * g: the weights are stepped in place and restored from a copy, so the
    model leaves this call exactly as it came (also when the pass fails). Autocast keeps low-precision copies of
    the weights for the whole of the loop's autocast block; they are dropped after each change, or the passes
    would run on stale weights."""
    import torch

    moved = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
    saved = [p.detach().clone() for p, _ in moved]
    try:
        with torch.no_grad():
            for p, g in moved:
                p.sub_((scale * g.float()).to(p.dtype))
        torch.clear_autocast_cache()
        return harmful_grads(model, batch, params)
    finally:
        with torch.no_grad():
            for (p, _), s in zip(moved, saved, strict=True):
                p.copy_(s)
        torch.clear_autocast_cache()


def linear_in_weights(params: Sequence[Any], diffs: Sequence[Any]) -> Any:
    """sum_i <d_i, w_i - stop_grad(w_i)>: exactly 0 in value, gradient d = g - g~ w.r.t. the weights. It carries
    the first-order gradient of h(w) - h(w~) into the loop's one backward pass without a second harmful graph."""
    return sum(((d.detach() * (p - p.detach())).sum() for p, d in zip(params, diffs, strict=True) if d is not None),
               start=0)
