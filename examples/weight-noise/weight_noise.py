"""Weight noise, then realign: an example outside defence for Immunization Bench.

What it does: every weight matrix W (embeddings, attention, MLP, LM head; not norms or biases) becomes
W + sigma * std(W) * N(0, I), from a generator seeded by the run seed; then the model is fine-tuned with the
suite's training budget on refusals to the defence split's harmful questions, with the suite's harmless retain
term (the shared `retain_harmless` option every training defence gets).

Why: harmful fine-tuning attacks succeed cheaply because the knowledge an aligned model hides is a few
steps away in weight space. Noise moves the weights off that point (random initialisation is the extreme,
which destroys utility); realigning on refusals and harmless QA recovers what the defender wants kept.
Whether the attacker's path back is longer is what the benchmark measures: this module makes no claim.
It is deliberately simple: the point is the packaging (Config, version, entry point, tests), the shape to
copy for a submission.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from harness.plugins import DefenceTrainingFields, StageContext, fit
from harness.registry import register_defence
from harness.training.collate import SFTCollator
from harness.training.loop import lm_loss

__version__ = "2"


class Config(DefenceTrainingFields):
    """The suite's training budget (lr, epochs, batch_size, retain_harmless, ...) comes through
    DefenceTrainingFields, exactly as for the built-in defences."""

    sigma: float = Field(0.1, ge=0, description="noise std as a fraction of each weight matrix's own std",
                         json_schema_extra={"search": [0.03, 0.1, 0.3]})


@register_defence("weight-noise", config=Config, version=__version__)
def defend(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """Weight noise: perturb every weight matrix with seeded Gaussian noise, then realign on refusals."""
    add_noise(model, cfg.sigma, ctx.seed)
    collate = SFTCollator(ctx.tokenizer, ctx.max_length, loss_on="answer", target="refusal", template=ctx.template)
    return fit(model, ctx, split="defence", cfg=cfg, collate=collate, loss_fn=lm_loss)


def add_noise(model: Any, sigma: float, seed: int) -> None:
    """W += sigma * std(W) * N(0, I) for every parameter with 2+ dimensions, in place; noise drawn on the CPU
    from its own generator, so it depends only on the seed (not on the device or on global RNG state)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # registration order: fixed, so the same seed gives the same noise
            if p.dim() < 2:
                continue
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)  # (*p.shape)
            p.add_((noise * sigma * p.float().std()).to(device=p.device, dtype=p.dtype))
