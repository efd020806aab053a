"""The one training loop. Every defence and attack trains through `train()` with its own loss function.

Order per optimizer step, as in nanoGPT: set LR -> micro-steps (forward, scaled backward) -> clip ->
step -> zero_grad -> log. Plugins supply `loss_fn(model, batch) -> LossOut`, never a loop of their own.

Gradient accumulation (the one rule, for every loss): an optimizer step over k micro-batches follows the
gradient of the *batch* loss. A loss that is a mean over tokens says so by returning `LossOut.tokens` (the
count it averages over): the step's loss is then sum(token losses) / total tokens, exactly one batch's
cross-entropy on the same rows, however unequal the micro-batches' token counts. A loss that is not a token
mean (RepNoise's MMD, a sum of terms with different token counts) leaves `tokens` None and is weighted by
its micro-batch's rows: the mean over rows for per-row losses; a batch-level statistic such as MMD is
computed per micro-batch (as the reference's per-device batches do). One micro-batch is the loss as it is.

Precision (`TrainConfig.precision`, recorded in the plugin's config): `model` trains in the dtype the model
was loaded in (the run's dtype); `autocast-bf16` keeps float32 weights and optimizer state and runs forward
and backward under bf16 autocast; `bf16-master` stores the weights in bf16 and keeps float32 master weights
and optimizer state (the step is taken in float32 and copied back). `gradient_checkpointing` recomputes
activations in backward instead of keeping them (non-reentrant, so hooks and LoRA work).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

Precision = Literal["model", "autocast-bf16", "bf16-master"]


class TrainConfig(BaseModel):
    """Optimizer and schedule. The reference uses Adam without weight decay, cosine, 10% warmup."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(gt=0, description="peak learning rate")
    epochs: int = Field(1, ge=1, description="passes over the data")
    batch_size: int = Field(4, ge=1, description="examples per optimizer step")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step (must divide batch_size)")
    optimizer: Literal["adam", "adamw"] = Field("adam", description="torch.optim.Adam or AdamW")
    weight_decay: float = Field(0.0, ge=0, description="decoupled for adamw, L2 for adam")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="fraction of steps with linear warmup")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="decay after warmup")
    max_grad_norm: float | None = Field(1.0, description="gradient clipping norm; None disables")
    precision: Precision = Field("model", description="model: the loaded dtype; autocast-bf16: float32 weights, "
                                 "bf16 autocast; bf16-master: bf16 weights, float32 master weights and optimizer")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (less memory)")


class LossOut(NamedTuple):
    loss: Any  # scalar tensor to minimise
    metrics: dict[str, float]
    tokens: int | None = None  # the loss is a mean over this many tokens (None: not a token mean)


class TrainLog(NamedTuple):
    steps: int
    seconds: float
    history: list[dict[str, float]]  # one entry per optimizer step
    tokens: int = 0                   # input tokens seen (attention mask), for tokens/s


LossFn = Callable[[Any, dict[str, Any]], LossOut]
StepCallback = Callable[[int, Any], None]  # (optimizer step, model)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (if present) and torch. The one place seeds are set."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total`."""
    warmup = math.ceil(cfg.warmup_ratio * total)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - warmup) / max(1, total - warmup)
    if cfg.schedule == "linear":
        return cfg.lr * (1.0 - progress)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def label_tokens(labels: Any) -> int:
    """Tokens a causal-LM loss averages over: labels after the one-token shift that are not IGNORE."""
    from harness.training.collate import IGNORE

    return int((labels[:, 1:] != IGNORE).sum())                      # labels: (B, T)


def lm_loss(model: Any, batch: dict[str, Any]) -> LossOut:
    """Causal LM cross-entropy over the tokens whose label is not IGNORE (a token mean: `tokens` is set)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    return LossOut(out.loss, {"loss": float(out.loss.detach())}, label_tokens(batch["labels"]))


def build_optimizer(params: Sequence[Any], cfg: TrainConfig) -> Any:
    import torch

    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(list(params), lr=cfg.lr, weight_decay=cfg.weight_decay)


class MasterWeights:
    """float32 master copies of bf16 trainable weights: the optimizer steps on them, the model gets a copy."""

    def __init__(self, params: Sequence[Any]):
        self.params = list(params)
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params]

    def grads_to_master(self) -> None:
        for p, m in zip(self.params, self.master, strict=True):
            m.grad = None if p.grad is None else p.grad.float()
            p.grad = None

    def master_to_model(self) -> None:
        for p, m in zip(self.params, self.master, strict=True):
            p.data.copy_(m.data)


def set_precision(model: Any, precision: Precision) -> tuple[list[Any], MasterWeights | None, Any]:
    """(parameters the optimizer steps, master weights or None, autocast context factory) for `precision`."""
    import contextlib

    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    if precision == "bf16-master":
        model.to(torch.bfloat16)
        master = MasterWeights(trainable)
        return master.master, master, contextlib.nullcontext
    if precision == "autocast-bf16":
        device = next(model.parameters()).device.type
        return trainable, None, lambda: torch.autocast(device_type=device, dtype=torch.bfloat16)
    return trainable, None, contextlib.nullcontext


def scale_grads(params: Sequence[Any], factor: float) -> None:
    for p in params:
        if p.grad is not None:
            p.grad.mul_(factor)


def to_device(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    """Move every tensor of a (possibly nested) batch to `device`; non-tensors pass through."""
    return {k: to_device(v, device) if isinstance(v, dict) else v.to(device) if hasattr(v, "to") else v
            for k, v in batch.items()}


def n_steps(n_rows: int, cfg: TrainConfig) -> int:
    return math.ceil(n_rows / cfg.batch_size) * cfg.epochs


def train(model: Any, rows: Sequence[Any], collate: Callable[[list[Any]], dict[str, Any]], loss_fn: LossFn,
          cfg: TrainConfig, *, seed: int, callback: StepCallback | None = None, every: int = 0,
          progress: Callable[..., None] | None = None) -> TrainLog:
    """Train `model` in place on `rows` for `cfg.epochs`; returns the per-step loss history.

    `callback(step, model)` runs before the first step, every `every` steps, and after the last.
    """
    import torch

    if cfg.batch_size % cfg.grad_accum:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by grad_accum {cfg.grad_accum}")
    seed_everything(seed)
    total = n_steps(len(rows), cfg)
    micro = cfg.batch_size // cfg.grad_accum
    params, master, autocast = set_precision(model, cfg.precision)
    stepped = master.master if master else params            # what the optimizer and the clipping see
    optimizer = build_optimizer(stepped, cfg)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    order = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    history: list[dict[str, float]] = []
    seen = 0
    start = time.perf_counter()
    model.train()
    if progress:  # the stage's bar learns its total (a plugin's process relays it to the parent's bar)
        progress(0, expect=total)
    if callback:
        callback(0, model)
    step = 0
    for _epoch in range(cfg.epochs):
        perm = torch.randperm(len(rows), generator=order).tolist()
        for first in range(0, len(perm), cfg.batch_size):
            batch_idx = perm[first:first + cfg.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, cfg)
            chunks = [batch_idx[i:i + micro] for i in range(0, len(batch_idx), micro)]
            weights, parts = [], []
            for chunk in chunks:
                batch = to_device(collate([rows[i] for i in chunk]), device)
                seen += count_inputs(batch)
                with autocast():
                    out = loss_fn(model, batch)
                check_finite(out.loss, step)
                # Per-token accumulation: backward of (token count x mean) sums token losses; the sum of the
                # weights divides the gradient once all micro-batches are in (see the module docstring).
                weight = len(chunk) if out.tokens is None else out.tokens
                (out.loss if len(chunks) == 1 else out.loss * weight).backward()
                weights.append(weight)
                parts.append((out.tokens is None, out.metrics))
            if len({none for none, _ in parts}) > 1:
                raise ValueError("loss_fn returned LossOut.tokens for some micro-batches and not others")
            total_weight = sum(weights)
            if len(chunks) > 1:
                scale_grads(params, 1.0 / max(total_weight, 1))
            metrics = dict(parts[0][1]) if len(chunks) == 1 else {
                k: sum(w * m.get(k, 0.0) for w, (_, m) in zip(weights, parts, strict=True)) / max(total_weight, 1)
                for k in parts[0][1]}
            if master:
                master.grads_to_master()
            if cfg.max_grad_norm is not None:
                metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(stepped, cfg.max_grad_norm))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if master:
                master.master_to_model()
            step += 1
            metrics["lr"] = optimizer.param_groups[0]["lr"]
            history.append(metrics)
            if progress:
                progress(1, f"loss {metrics.get('loss', float('nan')):.3f}")
            if callback and every and step % every == 0 and step != total:
                callback(step, model)
    check_weights(stepped, step)
    if callback:
        callback(step, model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    model.eval()
    return TrainLog(step, time.perf_counter() - start, history, seen)


def check_finite(loss: Any, step: int) -> None:
    """Stop at the first non-finite loss: a diverged run (e.g. a learning rate far too high) would otherwise
    train to the end on NaN weights and fail later, far from its cause, on a metric that cannot be recorded."""
    import torch

    value = loss.detach()
    if not bool(torch.isfinite(value).all()):
        from harness.errors import TrainingDiverged

        raise TrainingDiverged(f"training diverged (loss is {float(value.float().sum())} at step {step + 1})")


def check_weights(params: Sequence[Any], steps: int) -> None:
    """The trained weights are finite (the last step can overflow them with every loss before it finite)."""
    import torch

    for p in params:
        if not bool(torch.isfinite(p.detach()).all()):
            from harness.errors import TrainingDiverged

            raise TrainingDiverged(f"training diverged (weights are not finite after step {steps})")


def count_inputs(batch: dict[str, Any]) -> int:
    """Input tokens of a (possibly nested) batch: the sum of its attention masks."""
    total = 0
    for key, value in batch.items():
        if isinstance(value, dict):
            total += count_inputs(value)
        elif key == "attention_mask" and hasattr(value, "sum"):
            total += int(value.sum())
    return total
