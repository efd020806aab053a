"""BeaverTails (`PKU-Alignment/BeaverTails`, or a local file with its columns) as disjoint defence, attack and
evaluation splits in the harness's schema.

Columns read: `prompt`, `response`, `category` (a dict of 14 harm flags) and `is_safe`. A row's
`categories` are the flags that are true (a row can have several); its `category` is the first of them in the
dict's order (the reference's convention, used for per-category scores). Harm subsets use `categories`.

Built as follows (every count goes into the run record's evidence):

1. Unsafe rows (`is_safe` false, at least one flag) are the harmful data; exact duplicate (prompt, answer)
   pairs are dropped. Safe rows are the harmless data.
2. Evaluation: the unsafe rows of the test split, one per distinct prompt, in file order (the reference
   scores the first 300 after the category filter), optionally capped at `eval` prompts.
3. Defence and attack come from the train split's unsafe rows whose prompt and answer are not in the
   evaluation set. Their distinct prompts are shuffled (seeded) and divided between defence and attack in
   proportion to the two sizes, so no prompt is in both; an attack row whose answer also answers a defence
   prompt is dropped. Each split takes rows round-robin over its prompts (every prompt's first answer, then
   every second answer, ...), so a split repeats a prompt only when it has more rows than prompts
   (BeaverTails has ~20 answers per prompt; the paper's 10k + 10k pairs need repeats).
4. Harmless retain rows: safe answers to defence prompts; harmless evaluation rows: safe answers to
   evaluation prompts, one per prompt.

The reference instead takes the first N rows of one file for both defence and attack (attack inside
defence, papers.md §9); `overlap` is not offered.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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


def dedupe(rows: Iterable[Row]) -> tuple[list[Row], int]:
    """Rows without exact (prompt, answer) duplicates, and how many were dropped."""
    seen: set[tuple[str, str]] = set()
    out, total = [], 0
    for r in rows:
        total += 1
        key = (r["prompt"], r["response"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out, total - len(out)


def first_per_prompt(rows: Iterable[Row]) -> list[Row]:
    seen: set[str] = set()
    out = []
    for r in rows:
        if r["prompt"] not in seen:
            seen.add(r["prompt"])
            out.append(r)
    return out


def by_prompt(rows: Iterable[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r["prompt"], []).append(r)
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


def _take(groups: dict[str, list[Row]], n: int, what: str, field: str) -> list[Row]:
    rows = round_robin(list(groups.values()), n)
    if len(rows) < n:
        raise HarnessError(f"BeaverTails {what} split needs {n} rows but only {len(rows)} are left over "
                           f"{len(groups)} prompts; lower suite.{field}")
    return rows


def build(train: Sequence[Row], test: Sequence[Row], sizes: Sizes) -> tuple[dict[str, list[Row]], dict[str, int]]:
    """The five splits (defence, attack, eval, retain, harmless_eval) and the counts that prove them disjoint."""
    harmful_train, dup_train = dedupe(r for r in train if not r["is_safe"] and r["categories"])
    harmful_test, dup_test = dedupe(r for r in test if not r["is_safe"] and r["categories"])
    ev: dict[str, int] = {
        "rows_train": len(train), "rows_test": len(test), "unsafe_train": len(harmful_train) + dup_train,
        "unsafe_without_category": sum(not r["is_safe"] and not r["categories"] for r in (*train, *test)),
        "duplicate_pairs_dropped_train": dup_train, "duplicate_pairs_dropped_test": dup_test,
        "multi_category_rows": sum(len(r["categories"]) > 1 for r in harmful_train)}
    evaluation = first_per_prompt(harmful_test)[: sizes.eval]
    if not evaluation:
        raise HarnessError("BeaverTails test split has no unsafe rows to evaluate on")
    eval_prompts, eval_answers = {r["prompt"] for r in evaluation}, {r["response"] for r in evaluation}
    candidates = [r for r in harmful_train if r["prompt"] not in eval_prompts and r["response"] not in eval_answers]
    ev["train_rows_dropped_shared_with_eval"] = len(harmful_train) - len(candidates)
    groups = by_prompt(candidates)
    prompts = list(groups)
    if len(candidates) < sizes.defence + sizes.attack or len(prompts) < 2:
        raise HarnessError(f"BeaverTails defence and attack need {sizes.defence} + {sizes.attack} harmful rows but "
                           f"{len(candidates)} are left over {len(prompts)} prompts once the evaluation's are set "
                           "aside; lower suite.defence_candidates / suite.attack_size (or suite.eval_size)")
    random.Random(sizes.seed).shuffle(prompts)
    share = round(len(prompts) * sizes.defence / (sizes.defence + sizes.attack))
    n_defence = min(max(share, 1), len(prompts) - 1)
    defence_groups = {p: groups[p] for p in prompts[:n_defence]}
    defence_answers = {r["response"] for g in defence_groups.values() for r in g}
    attack_groups = {p: [r for r in groups[p] if r["response"] not in defence_answers] for p in prompts[n_defence:]}
    ev["attack_rows_dropped_shared_answer"] = sum(len(groups[p]) - len(g) for p, g in attack_groups.items())
    attack_groups = {p: g for p, g in attack_groups.items() if g}
    splits = {"defence": _take(defence_groups, sizes.defence, "defence", "defence_candidates"),
              "attack": _take(attack_groups, sizes.attack, "attack", "attack_size"), "eval": evaluation}
    splits["retain"] = round_robin(list(by_prompt(dedupe(r for r in train if r["is_safe"] and r["prompt"] in
                                                          defence_groups)[0]).values()), sizes.harmless)
    splits["harmless_eval"] = first_per_prompt(r for r in test if r["is_safe"] and r["prompt"] in eval_prompts
                                               )[: sizes.harmless]
    for name in ("retain", "harmless_eval"):
        if not splits[name]:
            raise HarnessError(f"BeaverTails data has no safe answers for the {name} split (rows with is_safe true "
                               f"answering the {'defence' if name == 'retain' else 'evaluation'} prompts)")
    for name in ("defence", "attack", "eval"):
        ev[f"{name}_rows"] = len(splits[name])
        ev[f"{name}_prompts"] = len({r["prompt"] for r in splits[name]})
    return splits, ev
