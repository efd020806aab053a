"""TAR: tamper-resistant safeguards by first-order meta-learning (Tamirisa et al., ICLR 2025).

One optimizer step of the shared loop, on a batch x_tr of the defence split's harmful rows:
  1. A simulated attacker fine-tunes a functional copy of the trainable weights for K = `inner_steps` steps of
     harmful SFT (answer tokens, `adversary_batch_size` rows per step, drawn from the defence rows outside
     x_tr, or from all of them where every row repeats one of x_tr) with a fresh AdamW whose lr is drawn from
     `inner_lrs`. With probability `switch_prob` it first trains on harmless retain rows and turns harmful at
     step floor(Beta(a, b) * K) (the reference's `retain_forget_switch` adversary).
  2. After every `inner_subsample`-th attack step k, the tamper-resistance loss L_TR of the attacked copy on
     x_tr is differentiated w.r.t. the copy; the gradients add up with weight tr_weight * exp(lambda (k-K+1)).
  3. Outer gradient: that sum (first order: the attacked weights' gradient is applied to the weights the attack
     started from) plus that of retain_weight * L_retain, where L_retain is the CE of harmless retain rows and,
     with `retain_representations`, the mean over hidden states of the L2 distance to the initial model's.
L_TR `dpo` (the reference's harmful-request setting): DPO (beta 0.1) preferring the refusal to the harmful
answer, reference log-probs from the initial model. `entropy` (its knowledge-restriction setting): minus the
entropy of the next-token distribution where the harmful answer is predicted.

The loop takes `loss_fn(model, batch) -> LossOut`: the meta-gradient g enters as the zero-valued surrogate
<g, theta> - <g, theta>.detach(), so backward leaves g plus the retain gradient in theta.grad, and the outer
weights change only in the loop's optimizer step. grad_accum = n runs n independent attacks per step (the
reference's `tar_num_tasks_sampled`), each on its slice of x_tr, averaged.

Reference (harmful-request refusal: `dpo`, as TamperBench transcribes the paper's Table 12): 100 outer steps at
lr 6e-5 (schedule-free AdamW), K = 64, TR gradient every 4th step, adversary lrs {2e-6, 2e-5, 4e-5}, tr_weight
0.1, retain_weight 1, lambda 0.0625, no representation term, harmful adversary only. Bio: `entropy`, tr_weight 4,
the representation term, a third of the attacks switching (Beta(6, 3)).
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from pydantic import Field, PositiveFloat, StrictBool, model_validator

from harness.errors import HarnessError
from harness.plugins import DefenceTrainingFields, StageContext, first_rows, fit
from harness.registry import register_defence
from harness.training.collate import IGNORE, PromptFormat, SFTCollator
from harness.training.loop import LossOut

ADVERSARY_WEIGHT_DECAY = 0.01  # torch AdamW's default, which the reference's inner optimizer keeps


class Config(DefenceTrainingFields):
    tr_loss: Literal["dpo", "entropy"] = Field("dpo", description="tamper-resistance loss after the attack: DPO "
                                               "refusal over harmful answer (refusal setting), or minus entropy")
    tr_weight: float = Field(0.1, ge=0, description="scale of the tamper-resistance gradient (refusal 0.1, bio 4)",
                             json_schema_extra={"search": [0.1, 1.0, 4.0]})
    retain_weight: float = Field(1.0, ge=0, description="weight of the retain loss")
    retain_representations: StrictBool = Field(False, description="add the hidden states' L2 distance to the "
                                               "initial model to the retain loss (bio setting)")
    inner_steps: int = Field(4, ge=1, description="simulated attack steps K per outer step (reference: 64)")
    inner_subsample: int = Field(2, ge=1, description="take the TR gradient after every N-th attack step "
                                 "(reference: 4)")
    inner_lrs: tuple[PositiveFloat, ...] = Field((3e-5, 1e-4, 3e-4), min_length=1, description="attack lrs, one "
                                                 "drawn per outer step (reference: 2e-6, 2e-5, 4e-5)")
    adversary_batch_size: int = Field(4, ge=1, description="harmful rows per attack step")
    schedule_lambda: float = Field(0.0625, ge=0, description="TR weight of attack step k: exp(lambda (k-K+1))")
    switch_prob: float = Field(0.0, ge=0, le=1, description="share of attacks that train on harmless rows first")
    switch_beta: tuple[PositiveFloat, PositiveFloat] = Field((6.0, 3.0), description="Beta(a, b) of the switch "
                                                             "point, as a fraction of K")
    dpo_beta: float = Field(0.1, gt=0, description="DPO temperature")

    @model_validator(mode="after")
    def _takes_a_tr_gradient(self) -> Config:
        if self.inner_subsample > self.inner_steps:
            raise ValueError(f"inner_subsample {self.inner_subsample} > inner_steps {self.inner_steps}: the attack "
                             "would never be scored")
        return self


@register_defence("tar", config=Config, version="1")
def defend(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """TAR: meta-learn against simulated harmful fine-tuning (first order) while keeping harmless behaviour."""
    if ctx.data.retain is None or not len(ctx.data.retain):
        raise HarnessError("tar needs the suite's harmless retain split, which is empty")
    base = None  # the initial model: the DPO reference and the representation anchor
    if cfg.tr_loss == "dpo" or cfg.retain_representations:
        base = copy.deepcopy(model).eval().requires_grad_(False)
    pool = list(first_rows(ctx.data.defence, cfg.samples, "defence"))
    collate = TarCollator(ctx.tokenizer, ctx.max_length, ctx.template, cfg, pool, ctx.data.retain,
                          random.Random(f"tar-{ctx.seed}"))
    return fit(model, ctx, split="defence", cfg=cfg, collate=collate, loss_fn=lambda m, b: tar_loss(m, b, cfg, base))


@dataclass
class TarCollator:
    """x_tr rows -> their harmful (and refusal) batch, K attack batches stacked (K, B, T), an attack lr, and as
    many retain rows; all draws come from one seeded RNG, so the stream is reproducible."""

    tokenizer: Any
    max_length: int
    template: PromptFormat
    cfg: Config
    pool: list[dict[str, Any]]
    retain: Any
    rng: random.Random

    def encode(self, rows: list[dict[str, Any]], target: str, loss_on: Literal["answer", "sequence"]) -> Any:
        return SFTCollator(self.tokenizer, self.max_length, loss_on=loss_on, target=target,
                           template=self.template)(rows)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        cfg, rng = self.cfg, self.rng
        taken = {(r["prompt"], r["response"]) for r in rows}
        free = [r for r in self.pool if (r["prompt"], r["response"]) not in taken] or self.pool  # toy data: all repeat
        harmless_until = 0
        if rng.random() < cfg.switch_prob:
            harmless_until = int(rng.betavariate(*cfg.switch_beta) * cfg.inner_steps)
        picks = [self.retain[rng.randrange(len(self.retain))] if k < harmless_until else rng.choice(free)
                 for k in range(cfg.inner_steps) for _ in range(cfg.adversary_batch_size)]
        attack = self.encode(picks, "response", "answer")
        batch = {"harmful": self.encode(rows, "response", "answer"), "adversary_lr": rng.choice(cfg.inner_lrs),
                 "adversary": {k: v.view(cfg.inner_steps, cfg.adversary_batch_size, -1) for k, v in attack.items()},
                 "retain": self.encode([self.retain[rng.randrange(len(self.retain))] for _ in rows], "response",
                                       "sequence")}
        if cfg.tr_loss == "dpo":
            batch["refusal"] = self.encode(rows, "refusal", "answer")
        return batch


class Attack(NamedTuple):
    meta: dict[str, Any]           # sum of weighted L_TR gradients w.r.t. the attacked weights, by parameter name
    tr_total: float                # sum of the weighted L_TR values
    tr_losses: list[float]         # L_TR after each scored attack step
    adversary_losses: list[float]  # the attacker's SFT loss at each of its steps


def tar_loss(model: Any, batch: dict[str, Any], cfg: Config, base: Any) -> LossOut:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    attack = simulate_attack(model, params, batch, cfg, base)
    retain, metrics = retain_loss(model, batch["retain"], base if cfg.retain_representations else None)
    dot = sum((attack.meta[n] * p).sum() for n, p in params.items())
    loss = cfg.retain_weight * retain + (dot - dot.detach()) + attack.tr_total  # value: the two terms
    metrics.update(loss=float(loss.detach()), tr=sum(attack.tr_losses) / len(attack.tr_losses),
                   adversary_first=attack.adversary_losses[0], adversary_last=attack.adversary_losses[-1])
    return LossOut(loss, metrics)


def simulate_attack(model: Any, params: dict[str, Any], batch: dict[str, Any], cfg: Config, base: Any) -> Attack:
    """Run the inner loop on clones of `params` (the model's own weights are only read) and collect the
    first-order meta-gradient."""
    import torch
    from torch.func import functional_call

    fast = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    leaves = list(fast.values())
    optimizer = torch.optim.AdamW(leaves, lr=batch["adversary_lr"], weight_decay=ADVERSARY_WEIGHT_DECAY)
    meta = {n: torch.zeros_like(p) for n, p in fast.items()}
    reference = dpo_reference(base, batch) if cfg.tr_loss == "dpo" else None

    def run(inputs: dict[str, Any]) -> Any:
        return functional_call(model, fast, args=(), kwargs=inputs)

    adversary, tr_losses, total, k_last = [], [], 0.0, cfg.inner_steps - 1
    for k in range(cfg.inner_steps):
        loss = run({key: v[k] for key, v in batch["adversary"].items()}).loss
        for p, g in zip(leaves, torch.autograd.grad(loss, leaves, allow_unused=True), strict=True):
            p.grad = g
        optimizer.step()
        adversary.append(float(loss.detach()))
        if (k + 1) % cfg.inner_subsample:
            continue
        weight = cfg.tr_weight * math.exp(cfg.schedule_lambda * (k - k_last))
        tr = tamper_loss(run, batch, cfg, reference)
        for n, g in zip(fast, torch.autograd.grad(tr, leaves, allow_unused=True), strict=True):
            if g is not None:
                meta[n].add_(g, alpha=weight)
        tr_losses.append(float(tr.detach()))
        total += weight * tr_losses[-1]
    return Attack(meta, total, tr_losses, adversary)


def tamper_loss(run: Any, batch: dict[str, Any], cfg: Config, reference: Any) -> Any:
    harmful = batch["harmful"]
    rejected = run(_inputs(harmful)).logits                               # (B, T, V)
    if cfg.tr_loss == "entropy":
        return -masked_entropy(rejected, harmful["labels"])
    refusal = batch["refusal"]
    chosen = answer_logps(run(_inputs(refusal)).logits, refusal["labels"])
    return dpo_loss(chosen, answer_logps(rejected, harmful["labels"]), *reference, beta=cfg.dpo_beta)


def dpo_reference(base: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """The initial model's answer log-probs of (refusal, harmful answer)."""
    import torch

    with torch.no_grad():
        return tuple(answer_logps(base(**_inputs(batch[k])).logits, batch[k]["labels"])  # type: ignore[return-value]
                     for k in ("refusal", "harmful"))


def dpo_loss(chosen: Any, rejected: Any, ref_chosen: Any, ref_rejected: Any, *, beta: float) -> Any:
    import torch.nn.functional as F

    margin = (chosen - ref_chosen) - (rejected - ref_rejected)           # (B,)
    return -F.logsigmoid(beta * margin).mean()


def answer_logps(logits: Any, labels: Any) -> Any:
    """Summed log-probability of each row's labelled tokens.  logits (B, T, V), labels (B, T) -> (B,)."""
    targets, keep = labels[:, 1:], labels[:, 1:] != IGNORE               # token t+1 is predicted at t
    logp = logits[:, :-1].float().log_softmax(-1)                         # (B, T-1, V)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * keep).sum(-1)


def masked_entropy(logits: Any, labels: Any) -> Any:
    """Mean entropy of the next-token distributions at the positions that predict a labelled token."""
    keep = (labels[:, 1:] != IGNORE).float()                              # (B, T-1)
    logp = logits[:, :-1].float().log_softmax(-1)                         # (B, T-1, V)
    entropy = -(logp.exp() * logp).sum(-1)                                # (B, T-1)
    return (entropy * keep).sum() / keep.sum().clamp(min=1)


def retain_loss(model: Any, batch: dict[str, Any], base: Any) -> tuple[Any, dict[str, float]]:
    """CE of the retain rows; with `base`, plus the mean over hidden states of the L2 distance to base's."""
    import torch

    out = model(**batch, output_hidden_states=base is not None)
    metrics = {"retain": float(out.loss.detach())}
    if base is None:
        return out.loss, metrics
    with torch.no_grad():
        anchor = base(**_inputs(batch), output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].float()                               # (B, T)
    dist = [((h - a).float().norm(dim=-1) * mask).sum() / mask.sum() for h, a in zip(out.hidden_states, anchor,
                                                                                    strict=True)]
    drift = sum(dist) / len(dist)
    metrics["drift"] = float(drift.detach())
    return out.loss + drift, metrics


def _inputs(batch: dict[str, Any]) -> dict[str, Any]:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
