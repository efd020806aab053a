"""Targeted latent adversarial training (LAT; Sheshadri et al. 2024, arXiv:2407.15549), as the reference code
(aengusl/latent-adversarial-training: `ProjectedGradLAT`, the jailbreak notebook's Llama-2 recipe) trains it.

Each step, on harmful questions with a harmful answer and a refusal each:
  1. Attack (PGD, no gradient to the weights): perturbations d (B, T, H), added to the residual stream after each
     chosen layer ("embedding": the token embeddings) at the question's positions, start at 0 and take `pgd_steps`
     AdamW steps (lr `inner_lr`) on  a_h * CE(harmful answer) + a_r * away(refusal);  after each step every token's
     vector is projected back into the L2 ball of radius `epsilon`.
  2. Defence (one step of the shared loop) under the final d:  d_r * CE(refusal) + d_h * away(harmful answer)
     + s * CE(a harmless answer of the suite's retain split, unperturbed: the reference's benign SFT batch).
away(y) = -sum_t log(1 - p(y_t)) / #tokens, 0 for tokens with log p(y_t) < `away_threshold` (HarmBench's form). CEs
cover the answers. Each group of weights is normalised to sum 1, as the reference's: (0.5, 0.5); (0.5, 0.5, 1.5).
Both sequences share the question and are padded to one width, so one forward of the stacked pair (2B rows) serves
both terms with the same perturbation at each position (as the reference's). The card (latent_adversarial.card.yaml)
lists every setting beside the reference's, with the switch that restores it (16 PGD steps, LoRA r=64, batch 16).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, model_validator

from harness.errors import HarnessError
from harness.models.architecture import decoder_layers
from harness.plugins import DefenceTrainingFields, StageContext, fit
from harness.registry import register_defence
from harness.training.collate import IGNORE, PromptFormat, SFTCollator, encode_sft, pad_batch
from harness.training.hooks import add_to_outputs
from harness.training.loop import LossOut, lm_loss
from harness.training.paired_batches import masked_ce

# A layer to perturb: "embedding", a block index (negative: from the end; the output of that block), or a fraction
# of depth in [0, 1) (block int(f * L)): the reference's 8, 16, 24, 30 of Llama-2's 32 are 0.25, 0.5, 0.75, 0.9375.
Layer = Literal["embedding"] | StrictInt | Annotated[float, Field(ge=0, lt=1)]
REFERENCE_LAYERS: tuple[Layer, ...] = ("embedding", 0.25, 0.5, 0.75, 0.9375)


class Config(DefenceTrainingFields):
    epsilon: float = Field(6.0, gt=0, description="L2 bound of each token's perturbation at each layer (reference: 6)",
                           json_schema_extra={"search": [0.5, 2.0, 6.0]})
    pgd_steps: int = Field(4, ge=1, description="attack steps per training step (reference: 16; 4 is affordable on "
                           "the tiny world)")
    inner_lr: float = Field(5e-2, gt=0, description="AdamW learning rate of the attack (reference: 5e-2)")
    layers: tuple[Layer, ...] = Field(REFERENCE_LAYERS, min_length=1, description="where the residual stream is "
                                      "perturbed: 'embedding', block indices, or fractions of depth")
    perturb: Literal["prompt", "prompt-and-answers"] = Field(
        "prompt", description="positions perturbed (reference: the question's for Llama-2, with the answers' for "
        "Llama-3)")
    attack_harmful: float = Field(0.5, ge=0, description="attack: weight of the harmful answer's CE ('toward')")
    attack_refusal: float = Field(0.5, ge=0, description="attack: weight of away(refusal) ('away')")
    defence_refusal: float = Field(0.5, ge=0, description="defence: weight of the refusal's CE ('toward')")
    defence_harmful: float = Field(0.5, ge=0, description="defence: weight of away(harmful answer) ('away')")
    sft: float = Field(1.5, ge=0, description="defence: weight of the harmless retain CE, before normalisation")
    away_threshold: float = Field(-5.0, description="tokens with log p below this add nothing to away()")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping norm (reference: 1.0)")

    @model_validator(mode="after")
    def _groups_weigh_something(self) -> Config:
        if self.attack_harmful + self.attack_refusal <= 0:
            raise ValueError("attack_harmful + attack_refusal must be > 0 (the attack needs an objective)")
        if self.defence_refusal + self.defence_harmful + self.sft <= 0:
            raise ValueError("defence_refusal + defence_harmful + sft must be > 0")
        return self


@register_defence("lat", config=Config, version="1", needs=("decoder_layers",))
def defend(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """Targeted LAT: refuse under latent perturbations that a PGD attack optimises towards the harmful answer."""
    retain = ctx.data.retain if cfg.sft > 0 else None
    if cfg.sft > 0 and (retain is None or not len(retain)):
        raise HarnessError("lat with sft > 0 needs the suite's harmless retain split, which is empty (or set sft=0)")
    rng = random.Random(f"lat-sft:{ctx.seed}")            # its own stream, not the shared retain term's picks
    collate = LATCollator(ctx.tokenizer, ctx.max_length, ctx.template, cfg.perturb, retain, rng)
    return fit(model, ctx, split="defence", cfg=cfg, collate=collate, loss_fn=lambda m, b: lat_loss(m, b, cfg))


@dataclass
class LATCollator:
    """Rows with prompt, response (harmful) and refusal -> {"pair": harmful rows then refusal rows, one width, labels
    on the answers; "where": (B, T) positions to perturb; "sft": as many retain rows (answer labels), or absent}."""

    tokenizer: Any
    max_length: int
    template: PromptFormat
    perturb: str = "prompt"
    retain: Any = None                                    # rows for the SFT term (None: no such term)
    rng: random.Random | None = None                      # draws them

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(rows)
        enc = [encode_sft(self.tokenizer, r["prompt"], r[col], max_length=self.max_length, loss_on="answer",
                          template=self.template) for col in ("response", "refusal") for r in rows]
        pair = pad_batch(enc, self.tokenizer.pad_token_id)                 # (2B, T)
        real = pair["attention_mask"].bool()
        where = (pair["labels"] == IGNORE) & real if self.perturb == "prompt" else real
        batch = {"pair": pair, "where": where[:n] | where[n:]}              # (B, T), one mask for both halves
        if self.retain is not None and self.rng is not None:
            picks = [self.retain[self.rng.randrange(len(self.retain))] for _ in rows]
            batch["sft"] = SFTCollator(self.tokenizer, self.max_length, loss_on="answer",
                                       template=self.template)(picks)
        return batch


def lat_loss(model: Any, batch: dict[str, Any], cfg: Config) -> LossOut:
    """The defence's loss under a fresh PGD attack on this batch (see the module docstring)."""
    modules, pair, n = perturbed_modules(model, cfg.layers), batch["pair"], batch["where"].size(0)
    deltas, attack_loss = pgd_attack(model, modules, pair, batch["where"], cfg)
    w_refusal, w_harmful, w_sft = normalised(cfg.defence_refusal, cfg.defence_harmful, cfg.sft)
    refusal, harmful = toward_away(perturbed_logits(model, modules, pair, deltas), pair, slice(n, None),
                                   slice(0, n), cfg.away_threshold)
    loss = w_refusal * refusal + w_harmful * harmful
    metrics = {"refusal_ce": float(refusal.detach()), "harmful_away": float(harmful.detach()),
               "attack_loss": attack_loss}
    if w_sft > 0:
        kept = lm_loss(model, batch["sft"]).loss                          # unperturbed, as the reference's SFT
        loss = loss + w_sft * kept
        metrics["sft"] = float(kept.detach())
    metrics["loss"] = float(loss.detach())
    return LossOut(loss, metrics)


def pgd_attack(model: Any, modules: list[Any], pair: dict[str, Any], where: Any, cfg: Config
               ) -> tuple[list[Any], float]:
    """The perturbations (one (B, T, H) tensor per module, detached, in the model's dtype, zero outside `where`,
    each token's vector of L2 norm <= epsilon) after `pgd_steps` AdamW steps on the attack objective, and that
    objective's last value. Only the perturbations get gradients: the weights' `.grad` is left untouched."""
    import torch

    n, width = where.shape
    embed, hidden = model.get_input_embeddings(), model.config.get_text_config().hidden_size
    dtype, mask = embed.weight.dtype, where.unsqueeze(-1).float()          # the model's dtype; (B, T, 1)
    widths = [m.weight.shape[-1] if m is embed else hidden for m in modules]  # embedding dim, residual width
    attacks = [torch.zeros(n, width, w, device=where.device, requires_grad=True) for w in widths]
    optimizer = torch.optim.AdamW(attacks, lr=cfg.inner_lr)               # the reference's inner optimizer
    w_harmful, w_refusal = normalised(cfg.attack_harmful, cfg.attack_refusal)
    value = float("nan")
    for _ in range(cfg.pgd_steps):
        logits = perturbed_logits(model, modules, pair, [(a * mask).to(dtype) for a in attacks])
        harmful, refusal = toward_away(logits, pair, slice(0, n), slice(n, None), cfg.away_threshold)
        loss = w_harmful * harmful + w_refusal * refusal
        for a, g in zip(attacks, torch.autograd.grad(loss, attacks), strict=True):  # the perturbations' only
            a.grad = g
        optimizer.step()
        with torch.no_grad():
            for a in attacks:                                              # project each token into the ball
                a.mul_((cfg.epsilon / a.norm(dim=-1, keepdim=True).clamp(min=1e-12)).clamp(max=1.0))
        value = float(loss.detach())
    return [(a.detach() * mask).to(dtype) for a in attacks], value


def perturbed_logits(model: Any, modules: list[Any], pair: dict[str, Any], deltas: list[Any]) -> Any:
    """Logits (2B, T, V) of the stacked pair, each delta (B, T, H) added to its module's output in both halves."""
    import torch

    with add_to_outputs(modules, [torch.cat([d, d]) for d in deltas]):
        return model(input_ids=pair["input_ids"], attention_mask=pair["attention_mask"]).logits


def toward_away(logits: Any, pair: dict[str, Any], toward: slice, away: slice, threshold: float) -> tuple[Any, Any]:
    """CE of the answers in rows `toward` and away() of the answers in rows `away` of the stacked pair."""
    ids, answer = pair["input_ids"], pair["labels"] != IGNORE             # (2B, T)
    return (masked_ce(logits[toward], ids[toward], answer[toward]),
            away_loss(logits[away], ids[away], answer[away], threshold))


def perturbed_modules(model: Any, layers: tuple[Layer, ...]) -> list[Any]:
    """The modules whose outputs are perturbed (the input embeddings and/or decoder blocks), each once."""
    blocks = decoder_layers(model)
    picked: list[Any] = []
    for i in layer_indices(layers, len(blocks)):
        module = model.get_input_embeddings() if i == "embedding" else blocks[i]
        if all(module is not p for p in picked):
            picked.append(module)
    return picked


def layer_indices(layers: tuple[Layer, ...], depth: int) -> list[int | str]:
    """Each layer as 'embedding' or a block index in [0, depth); an index outside the model is an error."""
    out: list[int | str] = []
    for spec in layers:
        if isinstance(spec, str):
            out.append(spec)
        elif isinstance(spec, float):
            out.append(int(spec * depth))
        elif -depth <= spec < depth:
            out.append(spec % depth)
        else:
            raise HarnessError(f"lat: layer {spec} is outside the model's {depth} decoder layers "
                               f"(use indices in [-{depth}, {depth - 1}] or fractions of depth in [0, 1))")
    return out


def normalised(*weights: float) -> tuple[float, ...]:
    """Each weight divided by the group's sum, as the reference normalises its coefficients."""
    return tuple(w / sum(weights) for w in weights)


def away_loss(logits: Any, ids: Any, mask: Any, threshold: float) -> Any:
    """-sum log(1 - p(y_t)) over the tokens where `mask` is true / their count; tokens with log p(y_t) < threshold
    add 0 (HarmBench's form).  logits (B, T, V), ids and mask (B, T); token t+1 is predicted at position t."""
    keep = mask[:, 1:].bool()                                              # (B, T-1)
    z = logits[:, :-1][keep].float()                                      # (N, V)
    y = ids[:, 1:][keep].unsqueeze(-1)                                     # (N, 1)
    total = z.logsumexp(-1)                                                # (N,)
    log_p = z.gather(-1, y).squeeze(-1) - total
    log_not = z.scatter(-1, y, float("-inf")).logsumexp(-1) - total        # log(1 - p), stable
    log_not = log_not.masked_fill(log_p < threshold, 0.0)
    return -log_not.sum() / keep.sum().clamp(min=1)
