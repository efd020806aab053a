"""The one training loop. Every defence and attack trains through `train()` with its own loss function.

Order per optimizer step, as in nanoGPT: set LR -> micro-steps (forward, scaled backward) -> clip ->
step -> zero_grad -> log. Plugins supply `loss_fn(model, batch) -> LossOut`, never a loop of their own.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field


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


class LossOut(NamedTuple):
    loss: Any  # scalar tensor to minimise
    metrics: dict[str, float]


class TrainLog(NamedTuple):
    steps: int
    seconds: float
    history: list[dict[str, float]]  # one entry per optimizer step


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


def lm_loss(model: Any, batch: dict[str, Any]) -> LossOut:
    """Causal LM cross-entropy over the tokens whose label is not IGNORE."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    return LossOut(out.loss, {"loss": float(out.loss.detach())})


def build_optimizer(model: Any, cfg: TrainConfig) -> Any:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


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
    optimizer = build_optimizer(model, cfg)
    order = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    model.train()
    if callback:
        callback(0, model)
    step = 0
    for _epoch in range(cfg.epochs):
        perm = torch.randperm(len(rows), generator=order).tolist()
        for first in range(0, len(perm), cfg.batch_size):
            batch_idx = perm[first:first + cfg.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, cfg)
            metrics: dict[str, float] = {}
            chunks = [batch_idx[i:i + micro] for i in range(0, len(batch_idx), micro)]
            for chunk in chunks:
                batch = to_device(collate([rows[i] for i in chunk]), device)
                out = loss_fn(model, batch)
                # Scale so the accumulated gradient is the mean over micro-batches, as one big batch gives.
                (out.loss / len(chunks)).backward()
                for k, v in out.metrics.items():
                    metrics[k] = metrics.get(k, 0.0) + v / len(chunks)
            if cfg.max_grad_norm is not None:
                metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            metrics["lr"] = optimizer.param_groups[0]["lr"]
            history.append(metrics)
            if progress:
                progress(1, f"loss {metrics.get('loss', float('nan')):.3f}")
            if callback and every and step % every == 0 and step != total:
                callback(step, model)
    if callback:
        callback(step, model)
    model.eval()
    return TrainLog(step, time.perf_counter() - start, history)
