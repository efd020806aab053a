"""The contracts between the pipeline and defence / attack plugins.

    defend(model, cfg, ctx) -> model | None     # None: "the input model, unchanged" (nothing is saved)
    attack(model, cfg, ctx) -> model

Plugins train with `harness.training.loop.train` and read data only from `ctx.data`. They format questions with
`ctx.template`, the suite's prompt format, exactly as the evaluation does: collators take it, and `fit`
refuses a collator whose format differs from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.models.plugin_inputs import CheckpointRef, RunModelRef
from harness.suite import SuiteData
from harness.training.collate import PLAIN, PromptFormat, as_format

# The shared training options live in harness.training.fields (run ids read their key markers without importing
# this module); plugins import them from here, the contract they code against.
from harness.training.fields import EPOCHS_SEARCH, LR_SEARCH, DefenceTrainingFields, DrawFields, TrainingFields
from harness.training.loop import LossFn

__all__ = ["EPOCHS_SEARCH", "LR_SEARCH", "CheckpointRef", "DefenceTrainingFields", "DrawFields", "RunModelRef",
           "StageContext", "TrainingFields", "draw_rows", "first_rows", "fit", "with_retain"]


@dataclass(frozen=True)
class StageContext:
    tokenizer: Any
    data: SuiteData
    max_length: int                          # training context length of the suite
    seed: int
    # The stage's progress bar: progress(n, info) after n optimizer steps; progress(0, expect=N) announces N
    # steps (harness.progress; train() does both).
    progress: Callable[..., None] | None = None
    callback: Callable[[int, Any], None] | None = None  # pass to train(): runs every `every` steps
    every: int = 0
    points: int = 0  # instead of `every`: this many evenly spaced callbacks along the training
    template: PromptFormat = PLAIN               # the suite's prompt format: give it to every collator
    # The local folder of each checkpoint the config names (a `CheckpointRef` field -> its folder), located and
    # pinned by the harness: the plugin's process has no network.
    checkpoints: Mapping[str, Path] = field(default_factory=dict)


def first_rows(rows: Any, n: int | None, what: str) -> Any:
    """The first `n` rows of a dataset (all when n is None); too few rows is a clear error."""
    if n is None:
        return rows
    if n > len(rows):
        raise HarnessError(f"{what} needs {n} samples but the suite's split has {len(rows)}")
    return rows.select(range(n)) if hasattr(rows, "select") else rows[:n]


def draw_rows(rows: Any, n: int | None, what: str, *, draw: str, seed: int) -> Any:
    """`n` rows of a dataset by `DrawFields.draw`: the first n, or n drawn at random from all of them with `seed`
    (kept in the split's order); all rows when n is None. Too few rows is the clear error of `first_rows`."""
    import random

    if draw == "first" or n is None:
        return first_rows(rows, n, what)
    if draw != "seeded":
        raise HarnessError(f"{what}: unknown draw {draw!r} (first, seeded)")
    first_rows(rows, n, what)
    picks = sorted(random.Random(seed).sample(range(len(rows)), n))
    return rows.select(picks) if hasattr(rows, "select") else [rows[i] for i in picks]


def fit(model: Any, ctx: StageContext, *, split: str, cfg: TrainingFields, collate: Callable[[list[Any]], Any],
        loss_fn: LossFn) -> Any:
    """Train `model` in place on `cfg.samples` rows of `ctx.data.<split>` (the first, or a seeded draw where the
    config has `DrawFields`: `draw_rows`) with the one training loop, the plugin's budget, the run seed, and the
    stage's progress bar and callback. Returns the model, or
    with `cfg.lora` the peft model holding the trained adapter (the stage then stores the adapter only)."""
    from harness.training.loop import n_steps, seed_everything, train

    used = getattr(collate, "template", None)
    if used is not None and as_format(used) != ctx.template:
        raise HarnessError(f"{type(collate).__name__} formats prompts as {as_format(used)!r} but the suite's prompt "
                           f"format is {ctx.template!r}: pass template=ctx.template to the collator")
    draw = cfg.draw if isinstance(cfg, DrawFields) else "first"
    rows = draw_rows(getattr(ctx.data, split), cfg.samples, split, draw=draw, seed=ctx.seed)
    if getattr(cfg, "retain_harmless", 0):
        collate, loss_fn = with_retain(collate, loss_fn, ctx, weight=cfg.retain_harmless)  # type: ignore[attr-defined]
    train_cfg = cfg.train_config()
    if cfg.lora is not None:
        from harness.training.lora import build_lora

        seed_everything(ctx.seed)  # the adapter's random init is part of the run
        model = build_lora(model, cfg.lora)
    every = max(1, n_steps(len(rows), train_cfg) // ctx.points) if ctx.points else ctx.every
    train(model, rows, collate, loss_fn, train_cfg, seed=ctx.seed, progress=ctx.progress, callback=ctx.callback,
          every=every)
    return model


def with_retain(collate: Callable[[list[Any]], Any], loss_fn: LossFn, ctx: StageContext, *,
                weight: float) -> tuple[Callable[[list[Any]], Any], LossFn]:
    """Wrap a plugin's batches and loss with a harmless-retain term: each batch also carries as many rows of the
    suite's retain split (drawn with a seeded RNG, so the stream is reproducible), and the loss adds `weight` x
    their causal-LM cross-entropy (prompt and answer, padding excluded)."""
    import random

    from harness.training.collate import SFTCollator
    from harness.training.loop import LossOut, lm_loss

    retain = ctx.data.retain
    if retain is None or not len(retain):
        raise HarnessError("retain_harmless > 0 needs the suite's harmless retain split, which is empty")
    rng = random.Random(ctx.seed)
    encode = SFTCollator(ctx.tokenizer, ctx.max_length, loss_on="sequence", template=ctx.template)

    def collate_both(rows: list[Any]) -> dict[str, Any]:
        picks = [retain[rng.randrange(len(retain))] for _ in rows]
        return {"main": collate(rows), "retain": encode(picks)}

    def loss_both(model: Any, batch: dict[str, Any]) -> LossOut:
        main, kept = loss_fn(model, batch["main"]), lm_loss(model, batch["retain"])
        loss = main.loss + weight * kept.loss
        metrics = {**main.metrics, "loss": float(loss.detach()), "retain_harmless": float(kept.loss.detach())}
        return LossOut(loss, metrics)

    return collate_both, loss_both
