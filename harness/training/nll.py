"""Teacher-forced negative log-likelihood of texts under a model: the one batched loop behind perplexity
(stability) and the conditional perplexity of generations (degenerate outputs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.training.collate import IGNORE, LossOn, PromptFormat, encode_sft, pad_batch


def summed_nll(model: Any, tok: Any, pairs: Sequence[tuple[str, str]], *, template: str | PromptFormat,
               max_length: int, loss_on: LossOn, batch_size: int = 32, label: str = "teacher-forced NLL"
               ) -> list[tuple[float, int]]:
    """(summed next-token NLL, token count) of each (prompt, text) pair, formatted as in training.

    `loss_on="answer"` scores the text given its prompt; `"sequence"` scores prompt and text. Padding is never
    counted; sequences longer than `max_length` tokens are truncated (as in training). `label` names the
    progress bar.
    """
    from harness.progress import bar

    with bar(label, total=len(pairs), unit="text") as advance:
        return _summed_nll(model, tok, pairs, template=template, max_length=max_length, loss_on=loss_on,
                           batch_size=batch_size, advance=advance)


def _summed_nll(model: Any, tok: Any, pairs: Sequence[tuple[str, str]], *, template: str | PromptFormat,
                max_length: int, loss_on: LossOn, batch_size: int, advance: Any) -> list[tuple[float, int]]:
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    model.eval()
    out: list[tuple[float, int]] = []
    for first in range(0, len(pairs), batch_size):
        enc = [encode_sft(tok, p, t, max_length=max_length, loss_on=loss_on, template=template)
               for p, t in pairs[first:first + batch_size]]
        batch = {k: v.to(device) for k, v in pad_batch(enc, tok.pad_token_id).items()}
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]                                      # (B, T-1): token t+1 at position t
        nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, reduction="none",
                              ignore_index=IGNORE)                          # (B, T-1)
        counts = (labels != IGNORE).sum(dim=1)                               # (B,)
        out += [(float(s), int(c)) for s, c in zip(nll.sum(dim=1), counts, strict=True)]
        advance(len(counts))
    return out
