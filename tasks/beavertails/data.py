"""BeaverTails (`PKU-Alignment/BeaverTails`, or a local file with its columns) as disjoint defence, attack and
evaluation splits in the harness's schema.

Columns read: `prompt`, `response`, `category` (a dict of 14 harm flags) and `is_safe`. A row's
`categories` are the flags that are true (a row can have several); its `category` is the first of them in the
dict's order (the reference's convention). Harm subsets and per-category scores use `categories`.

Two questions are the same question when their normalised forms are equal (`harness.data.normalise`: Unicode
NFKC, case folded, whitespace collapsed; the form the split check and the leakage audit compare), and so are
two answers: every key below is normalised, while each row keeps its own text. Built as follows (every count
goes into the run record's evidence):

1. Rows with an empty response are dropped (they would train on the prompt and EOS alone). Unsafe rows
   (`is_safe` false, at least one flag) are the harmful data; duplicate (prompt, answer) pairs are dropped.
   Safe rows are the harmless data.
2. Evaluation: the unsafe rows of the test split, one per distinct prompt, in file order (the reference
   scores the first 300 after the category filter), optionally capped at `eval` prompts.
3. Defence and attack come from the train split's unsafe rows whose prompt and answer are not in the
   evaluation set. Their distinct prompts are shuffled (seeded) and divided between defence and attack in
   proportion to the two sizes, so no prompt is in both; an attack row whose answer also answers a defence
   prompt is dropped, and inside each split every answer is kept once (the same answer to two prompts would
   be trained twice). Each split takes rows round-robin over its prompts (every prompt's first answer, then
   every second answer, ...), so a split repeats a prompt only when it has more rows than prompts
   (BeaverTails has ~20 answers per prompt; the paper's 10k + 10k pairs need repeats).
4. Harmless retain rows: safe answers to defence prompts (every answer once); harmless evaluation rows: safe
   answers to evaluation prompts, one per prompt.

Rows whose prompt leaves no answer token inside the suite's `max_length` are dropped where the data meets the
run's tokenizer (`harness.data.trainable`), counted in the same evidence. The reference instead takes the
first N rows of one file for both defence and attack (attack inside defence, papers.md §9); `overlap` is not
offered.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.data.normalise import normalise_text
from harness.errors import HarnessError
from tasks.sources import require_columns

COLUMNS = ("prompt", "response", "category", "is_safe")
SCHEMA = "BeaverTails' schema: prompt, response, category (a dict of 14 harm flags), is_safe"
Row = dict[str, Any]


@dataclass(frozen=True)
class Sizes:
    """How many rows each split gets."""

    defence: int          # harmful rows of the defence split (before refusal pairing)
    attack: int           # harmful rows of the attack split
    eval: int | None      # evaluation prompts (None: every distinct unsafe test prompt)
    harmless: int         # harmless retain rows, and harmless evaluation rows
    seed: int             # shuffles the train prompts before they are divided


def normalise(dataset: Any, source: str) -> list[Row]:
    """Rows in the harness's schema (stripped text, `category` and the `categories` list), schema checked."""
    require_columns(dataset, COLUMNS, source, SCHEMA)
    rows = []
    for prompt, response, flags, safe in zip(dataset["prompt"], dataset["response"], dataset["category"],
                                             dataset["is_safe"], strict=True):
        if not isinstance(flags, dict):
            raise HarnessError(f"dataset {source}: column 'category' must hold a dict of harm flags ({SCHEMA}); "
                               f"got {type(flags).__name__}")
        cats = [c for c, on in flags.items() if on]
        rows.append({"prompt": str(prompt).strip(), "response": str(response or "").strip(),
                     "category": cats[0] if cats else "safe", "categories": cats, "is_safe": bool(safe)})
    return rows


def prompt_key(row: Row) -> str:
    """What makes two rows' questions the same question: the normalised prompt (`harness.data.normalise`, the
    form the split check and the audit compare)."""
    return normalise_text(row["prompt"])


def answer_key(row: Row) -> str:
    return normalise_text(row["response"])


def drop_empty(rows: Sequence[Row]) -> tuple[list[Row], int]:
    """Rows with an answer, and how many had none (an empty answer would train on the prompt and EOS alone)."""
    kept = [r for r in rows if r["response"]]
    return kept, len(rows) - len(kept)


def dedupe(rows: Iterable[Row]) -> tuple[list[Row], int]:
    """Rows without duplicate (prompt, answer) pairs (normalised), and how many were dropped."""
    seen: set[tuple[str, str]] = set()
    out, total = [], 0
    for r in rows:
        total += 1
        key = (prompt_key(r), answer_key(r))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out, total - len(out)


def first_per_prompt(rows: Iterable[Row]) -> list[Row]:
    seen: set[str] = set()
    out = []
    for r in rows:
        if (key := prompt_key(r)) not in seen:
            seen.add(key)
            out.append(r)
    return out


def by_prompt(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Rows grouped by normalised prompt, in first-seen order (each row keeps its own text)."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(prompt_key(r), []).append(r)
    return groups


def round_robin(groups: Sequence[Sequence[Row]], n: int) -> list[Row]:
    """Up to `n` rows: the first row of every group, then the second of every group, ..."""
    out: list[Row] = []
    depth = 0
    while len(out) < n:
        layer = [g[depth] for g in groups if depth < len(g)]
        if not layer:
            break
        out.extend(layer[: n - len(out)])
        depth += 1
    return out


def unique_answers(groups: dict[str, list[Row]]) -> tuple[dict[str, list[Row]], int]:
    """The groups of one split's pool with every answer once (normalised; the first in the order the split takes
    rows, round robin), and how many rows repeated an answer: the same answer to two prompts would be trained
    twice."""
    seen: set[str] = set()
    out: dict[str, list[Row]] = {p: [] for p in groups}
    dropped, depth = 0, 0
    while layer := [(p, g[depth]) for p, g in groups.items() if depth < len(g)]:
        for p, r in layer:
            if (key := answer_key(r)) in seen:
                dropped += 1
            else:
                seen.add(key)
                out[p].append(r)
        depth += 1
    return {p: g for p, g in out.items() if g}, dropped


def _take(groups: dict[str, list[Row]], n: int, what: str, field: str) -> list[Row]:
    rows = round_robin(list(groups.values()), n)
    if len(rows) < n:
        raise HarnessError(f"BeaverTails {what} split needs {n} rows but only {len(rows)} are left over "
                           f"{len(groups)} prompts; lower suite.{field}")
    return rows


def build(train: Sequence[Row], test: Sequence[Row], sizes: Sizes) -> tuple[dict[str, list[Row]], dict[str, int]]:
    """The five splits (defence, attack, eval, retain, harmless_eval) and the counts that prove them disjoint."""
    train, empty_train = drop_empty(train)
    test, empty_test = drop_empty(test)
    harmful_train, dup_train = dedupe(r for r in train if not r["is_safe"] and r["categories"])
    harmful_test, dup_test = dedupe(r for r in test if not r["is_safe"] and r["categories"])
    ev: dict[str, int] = {
        "rows_train": len(train) + empty_train, "rows_test": len(test) + empty_test,
        "empty_response_dropped_train": empty_train, "empty_response_dropped_test": empty_test,
        "unsafe_train": len(harmful_train) + dup_train,
        "unsafe_without_category": sum(not r["is_safe"] and not r["categories"] for r in (*train, *test)),
        "duplicate_pairs_dropped_train": dup_train, "duplicate_pairs_dropped_test": dup_test,
        "multi_category_rows": sum(len(r["categories"]) > 1 for r in harmful_train)}
    evaluation = first_per_prompt(harmful_test)[: sizes.eval]
    if not evaluation:
        raise HarnessError("BeaverTails test split has no unsafe rows to evaluate on")
    eval_prompts, eval_answers = {prompt_key(r) for r in evaluation}, {answer_key(r) for r in evaluation}
    candidates = [r for r in harmful_train if prompt_key(r) not in eval_prompts and answer_key(r) not in eval_answers]
    ev["train_rows_dropped_shared_with_eval"] = len(harmful_train) - len(candidates)
    defence_groups, attack_groups = _divide(candidates, sizes, ev)
    splits = {"defence": _take(defence_groups, sizes.defence, "defence", "defence_candidates"),
              "attack": _take(attack_groups, sizes.attack, "attack", "attack_size"), "eval": evaluation,
              **_harmless(train, test, set(defence_groups), eval_prompts, sizes, ev)}
    for name in ("defence", "attack", "eval"):
        ev[f"{name}_rows"] = len(splits[name])
        ev[f"{name}_prompts"] = len({prompt_key(r) for r in splits[name]})
    return splits, ev


def _divide(candidates: list[Row], sizes: Sizes, ev: dict[str, int]
            ) -> tuple[dict[str, list[Row]], dict[str, list[Row]]]:
    """The defence's and the attack's pools: the candidates' distinct (normalised) prompts shuffled and divided
    in proportion to the two sizes; an attack row answering as a defence row does is dropped, and inside each
    pool every answer is kept once."""
    groups = by_prompt(candidates)
    prompts = list(groups)
    if len(candidates) < sizes.defence + sizes.attack or len(prompts) < 2:
        raise HarnessError(f"BeaverTails defence and attack need {sizes.defence} + {sizes.attack} harmful rows but "
                           f"{len(candidates)} are left over {len(prompts)} prompts once the evaluation's are set "
                           "aside; lower suite.defence_candidates / suite.attack_size (or suite.eval_size)")
    random.Random(sizes.seed).shuffle(prompts)
    share = round(len(prompts) * sizes.defence / (sizes.defence + sizes.attack))
    n_defence = min(max(share, 1), len(prompts) - 1)
    defence = {p: groups[p] for p in prompts[:n_defence]}
    defence_answers = {answer_key(r) for g in defence.values() for r in g}
    attack = {p: [r for r in groups[p] if answer_key(r) not in defence_answers] for p in prompts[n_defence:]}
    ev["attack_rows_dropped_shared_answer"] = sum(len(groups[p]) - len(g) for p, g in attack.items())
    defence, ev["defence_duplicate_answers_dropped"] = unique_answers(defence)
    attack, ev["attack_duplicate_answers_dropped"] = unique_answers({p: g for p, g in attack.items() if g})
    ev["defence_pool_rows"], ev["attack_pool_rows"] = (sum(map(len, g.values())) for g in (defence, attack))
    return defence, attack


def _harmless(train: Sequence[Row], test: Sequence[Row], defence_prompts: set[str], eval_prompts: set[str],
              sizes: Sizes, ev: dict[str, int]) -> dict[str, list[Row]]:
    """Harmless retain rows (safe answers to defence prompts, every answer once) and harmless evaluation rows
    (one safe answer per evaluation prompt)."""
    safe = dedupe(r for r in train if r["is_safe"] and prompt_key(r) in defence_prompts)[0]
    retain, ev["retain_duplicate_answers_dropped"] = unique_answers(by_prompt(safe))
    out = {"retain": round_robin(list(retain.values()), sizes.harmless),
           "harmless_eval": first_per_prompt(r for r in test if r["is_safe"] and prompt_key(r) in eval_prompts
                                             )[: sizes.harmless]}
    for name, rows in out.items():
        if not rows:
            raise HarnessError(f"BeaverTails data has no safe answers for the {name} split (rows with is_safe true "
                               f"answering the {'defence' if name == 'retain' else 'evaluation'} prompts)")
    return out
