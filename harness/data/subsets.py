"""Harm subsets: which categories a defence trains on and an attack (and its evaluation) uses.

Names come from the suite: "all" (the suite's default categories), a group name (e.g. "violence", or a
second harm domain such as "toxic_continuation"), or "~group" for every default category except the group's
(withhold it from the defence). Generalization runs use disjoint subsets; the evidence
(names, categories, category and prompt overlap) is recorded in every row.

A row may carry several categories (BeaverTails flags several per answer, in a `categories` list column).
Which subsets such a row belongs to is the run's `subsets.rule`:

- `all` (the default, as the first records): only a subset holding *all* its flags, so a defence trained on
  "~violence" never sees a row flagged violence and category-disjoint subsets give row-disjoint data; but a
  group keeps only its single-group rows (in BeaverTails about 70% of the rows flagged violence carry another
  flag too, and are in no single-group subset).
- `any`: a group holds every row carrying *one* of its flags, so it keeps all its rows. A complement "~g"
  still holds only rows carrying no flag of g (under either rule: withholding a group withholds every row
  that mentions it), so "~violence" / "violence" stay row-disjoint and held out. Two groups may now share
  rows (a row flagged hate and violence is in "toxic" and in "violence"): the evidence counts the defence
  rows that carry a category of the attack (`defence_rows_with_attack_flags`); a run is held out only at 0.

A row without a `categories` column carries its one `category`: for such data the two rules agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


RULES = ("all", "any")


def row_flags(dataset: Any) -> list[list[str]]:
    """Each row's harm categories: its `categories` list where the split has one, else its one `category`."""
    if dataset is None:
        return []
    if "categories" in dataset.column_names:
        return [list(cs or []) for cs in dataset["categories"]]
    return [[c] for c in dataset["category"]]


def in_subset(flags: list[str], categories: frozenset[str], rule: str = "all") -> bool:
    """Whether a row with these flags belongs to the subset of `categories` under `rule` (all or any flag)."""
    if rule not in RULES:
        raise ValueError(f"unknown subset rule {rule!r}; rules are {', '.join(RULES)}")
    if not flags:
        return False
    return set(flags) <= categories if rule == "all" else not categories.isdisjoint(flags)


def rule_for(name: str, rule: str) -> str:
    """The rule a subset name is filtered with: a complement ("~g") always with `all` (no flag of g), a group
    or "all" with the run's rule."""
    return "all" if name.startswith("~") else rule


def filter_categories(dataset: Any, categories: frozenset[str], what: str, rule: str = "all") -> Any:
    """Rows of `dataset` in the subset of `categories` under `rule`; an empty result is an error."""
    if dataset is None:
        return None
    keep = [i for i, flags in enumerate(row_flags(dataset)) if in_subset(flags, categories, rule)]
    if not keep:
        raise HarnessError(f"the {what} split has no rows in the harm categories {sorted(categories)} "
                           f"(subsets.rule={rule})")
    return dataset.select(keep) if len(keep) != len(dataset) else dataset


def subset_evidence(defence: str, attack: str, d_cats: frozenset[str], a_cats: frozenset[str],
                    defence_flags: Iterable[list[str]] = ()) -> dict[str, Any]:
    """Names, categories and overlap of the two subsets; `defence_flags` (each defence row's flags, after the
    subset filter) counts the defence rows that carry a category of the attack: a run is held out only when
    the categories are disjoint and no such row was trained on."""
    overlap = sorted(d_cats & a_cats)
    shared = sum(not a_cats.isdisjoint(flags) for flags in defence_flags)
    return {"defence_subset": defence, "attack_subset": attack, "defence_categories": sorted(d_cats),
            "attack_categories": sorted(a_cats), "category_overlap": len(overlap),
            "defence_rows_with_attack_flags": shared, "held_out": not overlap and not shared}
