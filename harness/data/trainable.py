"""Rows a training split cannot train on, dropped where the data first meets the run's tokenizer.

A row teaches through its answer's tokens. Two kinds of row have none: an empty answer (the loss would see
the prompt and EOS alone) and a prompt that fills the training context: `encode_sft` cuts prompt + answer at
the suite's `max_length`, and every answer has at least one token (the EOS or end of turn that closes it), so
a row keeps an answer token exactly when its prompt has fewer than `max_length` tokens. A loader cannot tell,
for it knows neither the run's tokenizer (`--model` picks it) nor its prompt format, so the pipeline drops
such rows from the splits that train, before refusal pairing and before any stage, and counts them in the
record's `evidence.data`. A split that loses nothing is returned as it was (same rows, same fingerprint).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.errors import HarnessError
from harness.suite import SuiteData
from harness.training.collate import PromptFormat

TRAINED = ("defence", "retain", "attack")  # the splits a defence or an attack trains on
ANSWERS = ("response", "refusal")          # the columns a row is trained to answer with (where a split has them)


def trainable_rows(rows: Any, tok: Any, fmt: PromptFormat, max_length: int) -> tuple[list[int], dict[str, int]]:
    """Indices of the rows of `rows` (a dataset with `prompt` and answer columns) that keep an answer token,
    and how many were dropped for an empty answer and for a prompt of `max_length` tokens or more."""
    answers = [list(rows[c]) for c in ANSWERS if c in rows.column_names]
    prompts = list(rows["prompt"])
    distinct = list(dict.fromkeys(prompts))
    fits = {q: n < max_length for q, n in zip(distinct, fmt.prompt_lengths(tok, distinct), strict=True)}
    keep, empty, too_long = [], 0, 0
    for i, q in enumerate(prompts):
        if any(not str(col[i] or "").strip() for col in answers):
            empty += 1
        elif not fits[q]:
            too_long += 1
        else:
            keep.append(i)
    return keep, {"empty_answer": empty, "no_answer_token": too_long}


def drop_untrainable(data: SuiteData, tok: Any, fmt: PromptFormat, max_length: int) -> SuiteData:
    """`data` without the rows of its training splits that keep no answer token. The counts join the data's
    evidence (`<split>_rows_dropped_empty_answer`, `<split>_rows_dropped_no_answer_token`) where the suite
    records how it built its data, or where anything was dropped."""
    changes: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for name in TRAINED:
        rows = getattr(data, name)
        if rows is None:
            continue
        keep, dropped = trainable_rows(rows, tok, fmt, max_length)
        counts |= {f"{name}_rows_dropped_{why}": n for why, n in dropped.items()}
        if not keep and len(rows):
            raise HarnessError(f"no row of the {name} split can train: {dropped['empty_answer']} have an empty "
                               f"answer, {dropped['no_answer_token']} a prompt of {max_length} tokens or more "
                               "(suite.max_length) that leaves no answer token")
        if len(keep) != len(rows):
            changes[name] = rows.select(keep)
    if not changes and not data.evidence:
        return data
    return dataclasses.replace(data, **changes, evidence={**data.evidence, **counts})
