"""Prompt formatting, SFT tokenization with loss masking, and padding. Each mechanic exists once, here.

A suite's `PromptFormat` says how a question becomes the model's input, and every defence, attack and
evaluation goes through it (collators, generation, perplexity), so training sees exactly what generation sees:

- `plain` (the reference's): the text `"Question: {prompt}\\nAnswer:"`; the answer follows after a space,
  closed by EOS. Special tokens are placed as the tokenizer itself places them: whatever
  `tokenizer(text)` puts in front of the text (e.g. Llama's BOS; nothing for GPT-2 or Qwen) starts the
  prompt, nothing is appended after it.
- `chat`: the tokenizer's own chat template with one user turn (and an optional system turn), with the
  generation prompt; the answer is what the template writes for the assistant turn (its end-of-turn token
  included). The template's text carries its special tokens, so it is tokenized without adding any.

The answer's tokens are those of the whole text (prompt + answer) after the prompt's tokens, as the
tokenizer splits the whole text, so a SentencePiece word boundary after "Answer:" is the one generation
produces; where the tokenizer merges across that boundary, the answer is tokenized on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PROMPT_TEMPLATE = "Question: {prompt}\nAnswer:"
IGNORE = -100  # label id that cross-entropy skips

# Which tokens the SFT loss covers. The reference attack trains on every token ("sequence");
# "answer" masks the prompt out (Boyi Wei's --correct_loss). Padding is never in the loss.
LossOn = Literal["sequence", "answer"]


class PromptFormat(BaseModel):
    """How a question becomes the model's prompt, and how an answer follows it (recorded in the suite spec)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["plain", "chat"] = Field("plain", description="'plain': `template`; 'chat': the tokenizer's "
                                           "chat template")
    template: str = Field(PROMPT_TEMPLATE, description="plain prompt text with a {prompt} slot")
    system: str | None = Field(None, description="chat only: a system message (None: the template's default)")
    prefill: str = Field("", description="evaluation only: the opening of the answer, written into the prompt so "
                         "that the model continues it (a forced prefix); '' for every format a model trains on")

    def key_dump(self) -> dict[str, Any]:
        """The format as cache keys hash it: `prefill` only where one is set, so keys made before it existed hold."""
        data = self.model_dump()
        if not self.prefill:
            del data["prefill"]
        return data

    def prompt_text(self, tok: Any, question: str) -> str:
        """The prompt as text (special tokens of a chat template included, a plain BOS not), ending with the
        forced opening of the answer where `prefill` sets one (after a space in the plain format, where an answer
        starts)."""
        if self.kind == "chat":
            return _chat(tok, self._messages(question), generation_prompt=True) + self.prefill
        text = self.template.format(prompt=question)
        return f"{text} {self.prefill}" if self.prefill else text

    def prompt_ids(self, tok: Any, question: str) -> list[int]:
        """Token ids the model sees before it answers."""
        ids = tok(self.prompt_text(tok, question), add_special_tokens=False)["input_ids"]
        return ids if self.kind == "chat" else special_prefix(tok) + ids

    def prompt_lengths(self, tok: Any, questions: Sequence[str]) -> list[int]:
        """`len(self.prompt_ids(tok, q))` of each question, tokenized in one batch."""
        if not questions:
            return []
        ids = tok([self.prompt_text(tok, q) for q in questions], add_special_tokens=False)["input_ids"]
        prefix = 0 if self.kind == "chat" else len(special_prefix(tok))
        return [prefix + len(i) for i in ids]

    def answer_ids(self, tok: Any, question: str, answer: str) -> list[int]:
        """Token ids of `answer` after the prompt, closed as the format closes an answer (EOS / end of turn)."""
        if self.prefill:
            raise ValueError("a prefilled prompt format is for generation only: an answer to train on starts fresh")
        prompt = self.prompt_text(tok, question)
        if self.kind == "chat":
            full = _chat(tok, [*self._messages(question), {"role": "assistant", "content": answer.strip()}],
                         generation_prompt=False)
            closing: list[int] = []
        else:
            full = prompt + " " + answer.strip()
            closing = [tok.eos_token_id]
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        whole = tok(full, add_special_tokens=False)["input_ids"]
        if whole[:len(p)] == p and full.startswith(prompt):
            return whole[len(p):] + closing
        rest = full[len(prompt):] if full.startswith(prompt) else " " + answer.strip()
        return tok(rest, add_special_tokens=False)["input_ids"] + closing

    def _messages(self, question: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system is not None else []
        return [*system, {"role": "user", "content": question}]


PLAIN = PromptFormat()


def as_format(template: str | PromptFormat) -> PromptFormat:
    """A plain template string (the older interface) or a format, as a format."""
    return template if isinstance(template, PromptFormat) else PromptFormat(template=template)


def _chat(tok: Any, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
    from harness.errors import HarnessError

    if not getattr(tok, "chat_template", None):
        name = getattr(tok, "name_or_path", "") or "of this model"
        raise HarnessError(f"prompt format 'chat': the tokenizer {name} has no chat template (use the plain format)")
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def special_prefix(tok: Any) -> list[int]:
    """The special tokens the tokenizer puts in front of a text by itself (e.g. Llama's BOS; [] for GPT-2)."""
    plain = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return list(full[:i])
    return []


def format_prompt(prompt: str, template: str = PROMPT_TEMPLATE) -> str:
    return template.format(prompt=prompt)


def encode_sft(tokenizer: Any, prompt: str, response: str, *, max_length: int, loss_on: LossOn,
               template: str | PromptFormat = PROMPT_TEMPLATE) -> dict[str, list[int]]:
    """Token ids and labels for one (prompt, response) pair; prompt labels are IGNORE when loss_on='answer'."""
    fmt = as_format(template)
    p = fmt.prompt_ids(tokenizer, prompt)
    a = fmt.answer_ids(tokenizer, prompt, response)
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
    template: str | PromptFormat = PROMPT_TEMPLATE

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        enc = [encode_sft(self.tokenizer, r["prompt"], r[self.target], max_length=self.max_length,
                          loss_on=self.loss_on, template=self.template) for r in rows]
        return pad_batch(enc, self.tokenizer.pad_token_id)
