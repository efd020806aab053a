"""RepNoise: Representation Noising (Rosati et al., NeurIPS 2024), as the reference implements it.

Algorithm 1, line 12 (the code's form; the main text's eq. 5 swaps the names of alpha and beta):

    L = L_retain + beta * mean_l MMD(acts_l[mask], N(0, I)) - alpha * log(H)

- Batches are *paired*: harmful question+answer and the same question+refusal, padded to one width; the
  mask is the answer tokens where the pair differs (harness.training.paired_batches).
- L_retain: cross-entropy on the refusal's masked tokens.
- MMD: multi-kernel Gaussian MMD (5 kernels, bandwidth multiplier 2, bandwidth = mean pairwise squared
  distance of the pooled points without gradient, divided by 2^(5//2)) between each layer's masked
  post-MLP, pre-residual activations and Gaussian noise masked the same way; each sample is flattened to
  one T*H vector (B vs B points); biased estimate with the diagonal. Averaged over all layers.
- H, the layer-wise (logit-lens) ascent term: masked CE of the harmful answer from the final logits plus
  one from `lm_head(final_norm(h))` for each of the L+1 hidden states (embeddings and every layer; the
  last state is already normed, so its lens is the final logits).
  Normalisation `reference` reproduces the code's operator precedence: H = (sum of L+2 CE terms)/(L+1) + 1
  (so log H >= 0); `mean` is the plain mean of the L+2 terms.

Paper defaults: alpha=1, beta=1e-3, lr 2e-5, batch 8, 1 epoch, Adam, cosine, 10% warmup, max length 128.
Ablations (Tables 14/15): `noise=false`, `ascent=false`, `mask=false`, `layerwise=false`.
Reference quirk kept as the default (papers.md §2.2.5): `mask_logits=True` also zeroes the logits before the
first differing answer token, as `masked_token_ce_loss` does; `mask_logits=False` is the plain masked CE.
The harmless retain term (`retain_harmless`) is a shared option of every training defence (DefenceTrainingFields),
set by the suite for all defences alike. No gradient clipping (the reference clips nothing).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictBool

from harness.models.architecture import final_norm, mlp_modules
from harness.plugins import DefenceTrainingFields, StageContext, fit
from harness.registry import register_defence
from harness.training.hooks import capture_outputs
from harness.training.loop import LossOut
from harness.training.paired_batches import PairedCollator, masked_ce


class Config(DefenceTrainingFields):
    alpha: float = Field(1.0, ge=0, description="weight of -log(layer-wise ascent CE)",
                         json_schema_extra={"search": [0.5, 1.0, 2.0]})        # part of the paper's grid (B.2)
    beta: float = Field(1e-3, ge=0, description="weight of the MMD noise term",
                        json_schema_extra={"search": [1e-3, 1e-2, 1e-1, 1.0]})
    kernel_mul: float = Field(2.0, gt=1, description="bandwidth ratio between MMD kernels")
    kernel_num: int = Field(5, ge=1, description="number of Gaussian kernels")
    max_length: int = Field(128, gt=8, description="context length of the defence (reference: 128)")
    ascent_norm: Literal["reference", "mean"] = Field("reference", description="(sum)/(L+1)+1, or the mean")
    noise: StrictBool = Field(True, description="ablation: False drops the MMD term")
    ascent: StrictBool = Field(True, description="ablation: False drops the ascent term")
    mask: StrictBool = Field(True, description="ablation: False targets every harmful token, prompt included")
    layerwise: StrictBool = Field(True, description="ablation: False uses only the final logits for ascent")
    mask_logits: StrictBool = Field(True, description="reference quirk: zero the logits at masked positions too "
                                    "(False: plain masked CE)")


@register_defence("repnoise", config=Config, version="2", needs=("mlp", "final_norm"))
def defend(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """RepNoise: push harmful representations to noise at every layer, ascend on harmful answers."""
    collate = PairedCollator(ctx.tokenizer, min(cfg.max_length, ctx.max_length), template=ctx.template,
                             mask_answers=cfg.mask)
    return fit(model, ctx, split="defence", cfg=cfg, collate=collate, loss_fn=lambda m, b: repnoise_loss(m, b, cfg))


def repnoise_loss(model: Any, batch: dict[str, Any], cfg: Config) -> LossOut:
    harmful, refusal = batch["harmful"], batch["refusal"]
    h_mask, r_mask = batch["harmful_mask"], batch["refusal_mask"]
    retain = masked_ce(model(**refusal).logits, refusal["input_ids"], r_mask, mask_logits=cfg.mask_logits)
    loss, metrics = retain, {"retain": float(retain.detach())}
    with capture_outputs(model, mlp_modules(model)) as acts:
        out = model(**harmful, output_hidden_states=cfg.ascent and cfg.layerwise)
    if cfg.noise:
        noise = sum(masked_mmd(a, h_mask, cfg) for a in acts) / len(acts)
        loss = loss + cfg.beta * noise
        metrics["mmd"] = float(noise.detach())
    if cfg.ascent:
        h = ascent_ce(model, out, harmful["input_ids"], h_mask, cfg)
        loss = loss - cfg.alpha * h.log()
        metrics["ascent_ce"] = float(h.detach())
    metrics["loss"] = float(loss.detach())
    return LossOut(loss, metrics)


def ascent_ce(model: Any, out: Any, ids: Any, mask: Any, cfg: Config) -> Any:
    """H: CE of the harmful answer from the final logits and (layer-wise) from every hidden state."""
    terms = [masked_ce(out.logits, ids, mask, mask_logits=cfg.mask_logits)]
    if cfg.layerwise:
        head, norm = model.get_output_embeddings(), final_norm(model)
        states = out.hidden_states                                   # L+1 of (B, T, H); the last is normed
        terms += [masked_ce(head(norm(s)), ids, mask, mask_logits=cfg.mask_logits) for s in states[:-1]]
        terms.append(terms[0])                                       # lens of the last state = final logits
    total = sum(terms)
    if cfg.ascent_norm == "mean":
        return total / len(terms)
    return total / max(1, len(terms) - 1) + 1.0                      # reference: (L+2 terms) / (L+1) + 1


def masked_mmd(acts: Any, mask: Any, cfg: Config) -> Any:
    """MMD between masked activations (B, T, H) and equally masked Gaussian noise; one point per sample."""
    import torch

    acts = acts.reshape(*mask.shape, -1)                             # (B, T, H); OPT's inline MLP gives (B*T, H)
    m = mask.unsqueeze(-1).to(acts.dtype)                            # (B, T, 1)
    x = (acts * m).flatten(1).float()                                # (B, T*H)
    y = (torch.randn_like(acts) * m).flatten(1).float()              # (B, T*H)
    return mmd(x, y, cfg.kernel_mul, cfg.kernel_num)


def mmd(x: Any, y: Any, kernel_mul: float = 2.0, kernel_num: int = 5) -> Any:
    """Biased multi-kernel Gaussian MMD^2 estimate between point sets x (n, d) and y (n, d)."""
    import torch

    n = x.size(0)
    pooled = torch.cat([x, y])                                       # (2n, d)
    sq = pooled.pow(2).sum(1)                                        # (2n,)
    dist = (sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T).clamp(min=0)  # (2n, 2n) squared L2
    points = pooled.size(0)
    bandwidth = dist.detach().sum() / (points * points - points)     # mean off-diagonal distance, no grad
    bandwidth = bandwidth / kernel_mul ** (kernel_num // 2)
    kernel = sum(torch.exp(-dist / (bandwidth * kernel_mul**i)) for i in range(kernel_num))
    xx, yy, xy, yx = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:], kernel[n:, :n]
    return (xx + yy - xy - yx).mean()
