"""Harm subsets: which categories a defence trains on and an attack (and its evaluation) uses.

Names come from the suite: "all" (the suite's default categories), a group name (e.g. "violence", or a
second harm domain such as "toxic_continuation"), or "~group" for every default category except the group's
(withhold it from the defence). Generalization runs use disjoint subsets; the evidence
(names, categories, category and prompt overlap) is recorded in every row.

A row may carry several categories (BeaverTails flags several per answer, in a `categories` list column):
such a row belongs to a subset only if *all* its categories are in it, so a defence trained on "~violence"
never sees a row flagged violence, and category-disjoint subsets give row-disjoint data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.errors import HarnessError, UnknownNameError

ALL = "all"


def resolve_subset(name: str, groups: Mapping[str, frozenset[str]], universe: frozenset[str]) -> frozenset[str]:
    """The categories a subset name stands for."""
    if name == ALL:
        return universe
    group = name.removeprefix("~")
    if group not in groups:
        raise UnknownNameError("harm subset", name, [ALL, *groups, *(f"~{g}" for g in groups)])
    # A group may reach beyond the default universe (e.g. a second harm domain); "~g" stays inside it.
    return universe - groups[group] if name.startswith("~") else groups[group]


def filter_categories(dataset: Any, categories: frozenset[str], what: str) -> Any:
    """Rows of `dataset` whose category is in `categories`; an empty result is an error."""
    if dataset is None:
        return None
    if "categories" in dataset.column_names:
        keep = [i for i, cs in enumerate(dataset["categories"]) if cs and set(cs) <= categories]
    else:
        keep = [i for i, c in enumerate(dataset["category"]) if c in categories]
    if not keep:
        raise HarnessError(f"the {what} split has no rows in the harm categories {sorted(categories)}")
    return dataset.select(keep) if len(keep) != len(dataset) else dataset


def subset_evidence(defence: str, attack: str, d_cats: frozenset[str], a_cats: frozenset[str]) -> dict[str, Any]:
    overlap = sorted(d_cats & a_cats)
    return {"defence_subset": defence, "attack_subset": attack, "defence_categories": sorted(d_cats),
            "attack_categories": sorted(a_cats), "category_overlap": len(overlap),
            "held_out": not overlap}
