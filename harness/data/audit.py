"""The leakage audit: are a suite's splits disjoint in *content*, not only in prompt ids?

For every pair of splits it counts shared prompts, shared answers (exact, after the normalisation of
`harness.data.normalise`: Unicode form, case and whitespace, the one the loaders and the split check use)
and shared long word n-grams of the answers. An answer n-gram that occurs in many rows is boilerplate (an
answer template, a stock phrase) and is not counted, nor is one that carries fewer than two informative
words (words in at most a fifth of the answers: a template plus one common word, e.g. "here is how step one
get the red", says nothing about which answer it came from): what is left is content one split could leak to
another, e.g. an evaluation answer that the attack data shows. Where both splits of a pair carry a `template`
column (the id of the question template a row was written from), it also counts the template ids they share:
a held-out prompt that differs from the attack data only by its subject is not held out in phrasing. Recorded
in every run's evidence, and enforced:
a nonzero count on a pair the suite does not declare by design (`Suite.audit_by_design`) fails the run before
any training (`leaks`).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from harness.data.normalise import distinct

NGRAM = 8                 # words
BOILERPLATE_SHARE = 0.01  # an n-gram in more than this share of the distinct answers (and 3) is boilerplate
TEMPLATE_WORD_SHARE = 0.2  # a word in more than this share of the distinct answers is not informative


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def audit(splits: Mapping[str, Sequence[Mapping[str, Any]] | None]) -> dict[str, dict[str, int]]:
    """{"prompt": {"a&b": n}, "answer": {...}, "answer_ngram": {...}} over every pair of non-empty splits, and
    "template": {...} over the pairs of splits that both carry templates (only where some split does). Rows are
    dicts with `prompt` and (optionally) `response` and `template`."""
    rows = {name: list(r) for name, r in splits.items() if r is not None and len(r)}
    prompts = {name: distinct(x["prompt"] for x in r) for name, r in rows.items()}
    answers = {name: distinct(x["response"] for x in r if x.get("response")) for name, r in rows.items()}
    grams = {name: {a: ngrams(a) for a in texts} for name, texts in answers.items()}
    every = {a: g for per_split in grams.values() for a, g in per_split.items()}  # each distinct answer once
    counts = Counter(g for per_answer in every.values() for g in per_answer)  # over distinct answers
    limit = max(3, int(BOILERPLATE_SHARE * len(every)))
    words = Counter(w for a in every for w in set(re.findall(r"\w+", a)))
    common = {w for w, c in words.items() if c > TEMPLATE_WORD_SHARE * len(every)}

    def is_content(g: tuple[str, ...]) -> bool:
        return counts[g] <= limit and sum(w not in common for w in g) >= 2

    content = {name: {g for per_answer in per_split.values() for g in per_answer if is_content(g)}
               for name, per_split in grams.items()}
    out: dict[str, dict[str, int]] = {"prompt": {}, "answer": {}, "answer_ngram": {}}
    for a, b in itertools.combinations(sorted(rows), 2):
        pair = f"{a}&{b}"
        out["prompt"][pair] = len(prompts[a] & prompts[b])
        out["answer"][pair] = len(answers[a] & answers[b])
        out["answer_ngram"][pair] = len(content[a] & content[b])
    templates = {name: ids for name, r in rows.items() if (ids := template_ids(r)) is not None}
    if templates:
        out["template"] = {f"{a}&{b}": len(templates[a] & templates[b])
                           for a, b in itertools.combinations(sorted(templates), 2)}
    return out


def template_ids(rows: Sequence[Mapping[str, Any]]) -> set[str] | None:
    """The template ids of a split's rows; None where the split carries no `template` column (a row without
    one in a split that has it counts as no template)."""
    if not any("template" in x for x in rows):
        return None
    return {str(x["template"]) for x in rows if x.get("template") is not None}


def leaks(found: Mapping[str, Mapping[str, int]], by_design: frozenset[str] = frozenset()) -> list[str]:
    """'<kind> <a>&<b>: n' for each nonzero count of an audit that the suite does not declare by design."""
    return [f"{kind} {pair}: {n}" for kind, pairs in found.items() for pair, n in pairs.items()
            if n and f"{kind}:{pair}" not in by_design]
