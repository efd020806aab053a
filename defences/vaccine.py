"""Vaccine: perturbation-aware alignment (Huang et al. 2024; a RepNoise baseline with rho = 1 and 10).

Each step is SAM-like, on the attention blocks' outputs:
  1. forward the alignment batch, take the gradient g_l of the loss w.r.t. every attention output;
  2. eps_l = rho * g_l / ||g|| (norm over all layers), added to those outputs in a second forward;
  3. the optimizer steps on the loss of the perturbed pass, so the model learns to stay aligned when an
     attacker's fine-tuning drifts its hidden states.
Alignment data: refusals to the defence split's harmful questions (the reference's data for this
baseline is unclear, papers.md §11; refusals match the Vaccine paper's alignment stage).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from harness.models.architecture import attention_modules
from harness.plugins import DefenceTrainingFields, StageContext, fit
from harness.registry import register_defence
from harness.training.collate import SFTCollator
from harness.training.hooks import add_to_outputs, capture_outputs
from harness.training.loop import LossOut


class Config(DefenceTrainingFields):
    rho: float = Field(1.0, gt=0, description="perturbation radius (paper baselines: 1 and 10)",
                       json_schema_extra={"search": [0.1, 1.0, 10.0]})


@register_defence("vaccine", config=Config, version="2", needs=("attention",))
def defend(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """Vaccine: align on refusals under worst-case perturbations of attention outputs (SAM-like)."""
    collate = SFTCollator(ctx.tokenizer, ctx.max_length, loss_on="answer", target="refusal",
                          template=ctx.template)
    return fit(model, ctx, split="defence", cfg=cfg, collate=collate, loss_fn=lambda m, b: vaccine_loss(m, b, cfg.rho))


def vaccine_loss(model: Any, batch: dict[str, Any], rho: float) -> LossOut:
    import torch

    modules = attention_modules(model)
    with capture_outputs(model, modules) as acts:
        clean = model(**batch).loss
    grads = torch.autograd.grad(clean, acts)                          # w.r.t. activations only, not weights
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads)) + 1e-12
    eps = [rho * g.detach() / norm for g in grads]                    # each (B, T, H)
    with add_to_outputs(modules, eps):
        perturbed = model(**batch).loss
    return LossOut(perturbed, {"loss": float(perturbed.detach()), "clean_loss": float(clean.detach())})
