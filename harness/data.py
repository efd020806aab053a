"""Prompt formatting, SFT tokenization with loss masking, and padding. Each mechanic exists once, here.

All suites share one text format (the reference's): the model sees `"Question: {q}\\nAnswer:"` and the
answer follows after a space, closed by EOS. Prompt and answer are tokenized separately and concatenated,
so training sees exactly the token boundary that generation sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

PROMPT_TEMPLATE = "Question: {prompt}\nAnswer:"
IGNORE = -100  # label id that cross-entropy skips

# Which tokens the SFT loss covers. The reference attack trains on every token ("sequence");
# "answer" masks the prompt out (Boyi Wei's --correct_loss). Padding is never in the loss.
LossOn = Literal["sequence", "answer"]


def format_prompt(prompt: str, template: str = PROMPT_TEMPLATE) -> str:
    return template.format(prompt=prompt)


def format_answer(response: str) -> str:
    return " " + response.strip()


def encode_sft(tokenizer: Any, prompt: str, response: str, *, max_length: int, loss_on: LossOn,
               template: str = PROMPT_TEMPLATE) -> dict[str, list[int]]:
    """Token ids and labels for one (prompt, response) pair; prompt labels are IGNORE when loss_on='answer'."""
    p = tokenizer(format_prompt(prompt, template), add_special_tokens=False)["input_ids"]
    a = tokenizer(format_answer(response), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p + a)[:max_length]
    labels = list(ids)
    if loss_on == "answer":
        labels[: len(p)] = [IGNORE] * min(len(p), len(labels))
    return {"input_ids": ids, "labels": labels}


def pad_batch(rows: Sequence[dict[str, list[int]]], pad_id: int, side: Literal["left", "right"] = "right"
              ) -> dict[str, Any]:
    """Pad `input_ids` (and `labels`, with IGNORE) to the longest row; returns torch tensors."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": []}
    if "labels" in rows[0]:
        out["labels"] = []
    for r in rows:
        n = width - len(r["input_ids"])

        def pad(seq: list[int], value: int, n: int = n) -> list[int]:
            return [value] * n + seq if side == "left" else seq + [value] * n

        out["input_ids"].append(pad(r["input_ids"], pad_id))
        out["attention_mask"].append(pad([1] * len(r["input_ids"]), 0))
        if "labels" in out:
            out["labels"].append(pad(r["labels"], IGNORE))
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


@dataclass(frozen=True)
class SFTCollator:
    """Turns rows with `prompt` and a target column into a padded training batch."""

    tokenizer: Any
    max_length: int
    loss_on: LossOn = "sequence"
    target: str = "response"
    template: str = PROMPT_TEMPLATE

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        enc = [encode_sft(self.tokenizer, r["prompt"], r[self.target], max_length=self.max_length,
                          loss_on=self.loss_on, template=self.template) for r in rows]
        return pad_batch(enc, self.tokenizer.pad_token_id)
