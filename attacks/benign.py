"""Benign fine-tuning: instruction tuning on harmless rows only; no harmful example is ever trained on.

Qi et al. 2023, "Fine-tuning aligned language models compromises safety, even when users do not intend to!"
(risk level 3): fine-tuning Llama-2-7b-chat or GPT-3.5 on Alpaca or Dolly, safety-related rows removed, raises
their harmfulness. Their Llama-2 recipe (LLM-Tuning-Safety/LLMs-Finetuning-Safety, llama2/): AdamW without weight
decay, lr 2e-5, 1 epoch, batch 128 (64 per GPU on 2), loss on the answer only, no warmup, and an lr that steps
down x0.85 per epoch, so constant within their one epoch (here: `schedule="constant"`).

`selection="similar-to-harmful"` is He et al. 2024, "What's in your 'safe' data?: Identifying benign data that
breaks safety" (princeton-nlp/benign-data-breaks-safety), representation matching: a row's representation is the
final layer's hidden state at its last token (the row as it is trained on: prompt, answer, EOS); its score is the
mean of its `top_k` largest cosine similarities to the representations of harmful anchors (reference: top 1 of
100 anchors); the N best-scoring rows are the training set. Representations come from the model under attack, as
in the paper (the aligned model the attacker holds). Their recipe: 100 rows, 5 epochs, lr 5e-5, batch 20, the same
x0.85-per-epoch steps (here constant). The paper's gradient-matching variant (projected, Adam-preconditioned
per-example gradients scored against harmful and safe anchors) is not implemented.

Here the harmless rows are the suite's retain split (`reads=("retain",)`); the attack split is read only for the
anchors, never trained on. `selection="random"` draws N retain rows with the attack's seed. A suite's lr, epochs
and batch (its attack defaults) replace the reference's, as for every attack.

Presets: `benign-250`, `benign-1k` (random rows, Qi et al.'s recipe), `benign-similar-100` (He et al.'s).
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field

from attacks._shared import ScheduledFields, fit_rows, qa_rows
from harness.plugins import LR_SEARCH, StageContext, first_rows
from harness.registry import register_attack
from harness.training.collate import SFTCollator

BUDGET = {"samples": "samples", "lr": "lr", "epochs": "epochs"}


class Config(ScheduledFields):
    samples: int = Field(1_000, gt=0, description="harmless rows trained on (chosen from the retain split)")
    selection: Literal["random", "similar-to-harmful"] = Field(
        "random", description="random: a seeded draw; similar-to-harmful: the rows whose representations are "
        "nearest the harmful anchors' (He et al. 2024)", json_schema_extra={"search": ["random", "similar-to-harmful"]})
    anchors: int = Field(100, gt=0, description="similar-to-harmful: harmful anchors, the first rows of the attack "
                         "split (all of it when shorter)")
    top_k: int = Field(1, gt=0, description="similar-to-harmful: a row's score is the mean of its top_k "
                       "similarities to the anchors", json_schema_extra={"search": [1, 5]})
    pool: int | None = Field(None, gt=0, description="similar-to-harmful: rank the first `pool` retain rows (None: "
                             "all)")
    lr: float = Field(2e-5, gt=0, description="peak learning rate (suites set their own)", json_schema_extra=LR_SEARCH)
    batch_size: int = Field(128, ge=1, description="examples per optimizer step")
    optimizer: Literal["adam", "adamw"] = Field("adamw", description="reference: AdamW, no weight decay")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="linear warmup fraction (reference: none)")
    schedule: Literal["cosine", "linear", "constant"] = Field("constant", description="lr after warmup "
                                                              "(reference: constant within an epoch)")
    loss_on: Literal["sequence", "answer"] = Field("answer", description="tokens in the loss (reference: answer)")


class Config250(Config):
    samples: int = Field(250, gt=0, description="harmless rows trained on (chosen from the retain split)")


class SimilarConfig(Config):
    samples: int = Field(100, gt=0, description="harmless rows trained on (chosen from the retain split)")
    selection: Literal["random", "similar-to-harmful"] = Field(
        "similar-to-harmful", description="random: a seeded draw; similar-to-harmful: the rows whose representations "
        "are nearest the harmful anchors' (He et al. 2024)",
        json_schema_extra={"search": ["random", "similar-to-harmful"]})
    lr: float = Field(5e-5, gt=0, description="peak learning rate (suites set their own)", json_schema_extra=LR_SEARCH)
    epochs: int = Field(5, ge=1, description="passes over the data", json_schema_extra={"search": [1, 3, 5]})
    batch_size: int = Field(20, ge=1, description="examples per optimizer step")


def attack(model: Any, cfg: Config, ctx: StageContext) -> Any:
    collate = SFTCollator(ctx.tokenizer, ctx.max_length, loss_on=cfg.loss_on, template=ctx.template)
    return fit_rows(model, ctx, select(model, cfg, ctx), cfg=cfg, collate=collate)


def select(model: Any, cfg: Config, ctx: StageContext) -> list[dict[str, str]]:
    """The `cfg.samples` retain rows the attack trains on, by `cfg.selection`."""
    retain = ctx.data.retain
    if cfg.selection == "random":
        first_rows(retain, cfg.samples, "benign fine-tuning")  # fewer rows than samples: the harness's clear error
        return qa_rows(retain[i] for i in sorted(random.Random(ctx.seed).sample(range(len(retain)), cfg.samples)))
    pool = qa_rows(first_rows(retain, cfg.pool, "benign fine-tuning's pool"))
    first_rows(pool, cfg.samples, "benign fine-tuning")
    anchors = qa_rows(first_rows(ctx.data.attack, min(cfg.anchors, len(ctx.data.attack)), "the harmful anchors"))
    scores = similarity_scores(last_token_states(model, ctx, pool), last_token_states(model, ctx, anchors), cfg.top_k)
    return [pool[i] for i in top_indices(scores, cfg.samples)]


def last_token_states(model: Any, ctx: StageContext, rows: list[dict[str, str]], batch: int = 16) -> Any:
    """(N, H) float32: the final layer's hidden state at each row's last token (prompt + answer as trained on,
    EOS included), computed `batch` rows at a time without gradients."""
    import torch

    encode = SFTCollator(ctx.tokenizer, ctx.max_length, loss_on="sequence", template=ctx.template)
    device = next(model.parameters()).device
    was_training, out = model.training, []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            enc = encode(rows[start:start + batch])                          # right-padded
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
            last = mask.sum(dim=1) - 1                                       # (B,) index of the last real token
            out.append(hidden[torch.arange(len(ids), device=device), last].float().cpu())  # (B, H)
    model.train(was_training)
    return torch.cat(out)


def similarity_scores(rows: Any, anchors: Any, top_k: int) -> Any:
    """(N,) the mean of each row's `top_k` largest cosine similarities to the anchors ((N, H) vs (A, H))."""
    import torch

    sims = torch.nn.functional.normalize(rows, dim=1) @ torch.nn.functional.normalize(anchors, dim=1).T  # (N, A)
    return sims.topk(min(top_k, sims.shape[1]), dim=1).values.mean(dim=1)


def top_indices(scores: Any, n: int) -> list[int]:
    """Indices of the `n` highest scores, best first (ties: the earlier row)."""
    import torch

    return torch.argsort(-scores, stable=True)[:n].tolist()


for _name, _config, _how in (("benign-250", Config250, "random; Qi et al. 2023"),
                             ("benign-1k", Config, "random; Qi et al. 2023"),
                             ("benign-similar-100", SimilarConfig, "nearest the harmful anchors; He et al. 2024")):
    register_attack(_name, config=_config, version="1", budget=BUDGET, reads=("retain",), family="benign fine-tuning",
                    rows=lambda cfg: {"retain": cfg.samples if cfg.selection == "random" else max(cfg.samples,
                                                                                               cfg.pool or 0)},
                    description=f"benign fine-tuning on {_config.model_fields['samples'].default:,} harmless retain "
                    f"rows ({_how})")(attack)
