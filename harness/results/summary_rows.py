"""The rows of the results summary: which defence setting a table row belongs to (`DefenceKey`), and selecting a
setting's and a budget's rows and seed labels from a condition table, and which rows are one unit."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from harness.results.records import OPEN_WEIGHTS
from harness.results.summary_budgets import Budget
from harness.results.worlds import WORLD

# Seeds are the unit of replication; tables may carry one seed or split it into defence and attack seeds. A summary
# of several worlds (`harness.results.worlds`) adds the WORLD column: a unit is then a world's seed cell.
SEED_COLUMNS = (WORLD, "seed", "defence_seed", "attack_seed")
DEFENCE_SEED_COLUMNS = (WORLD, "seed", "defence_seed")  # pre-attack numbers belong to the defended model
UNIT_NAMES = {WORLD: "world", "seed": "seed", "defence_seed": "defence seed", "attack_seed": "attack seed"}
IDENTITY = ("defence", "defence_version", "defence_params")
ROW_SETTINGS = "row_settings"  # optional column (canonical JSON): more settings that keep rows apart


@dataclass(frozen=True)
class DefenceKey:
    name: str
    version: str
    params: str      # canonical JSON of the defence's settings
    extra: str = ""  # canonical JSON of the ROW_SETTINGS ('' where the tables carry none)

    @property
    def settings(self) -> dict[str, Any]:
        return json.loads(self.params) if self.params else {}

    @property
    def extra_settings(self) -> dict[str, Any]:
        return json.loads(self.extra) if self.extra else {}


def key_of(row: dict[str, Any]) -> DefenceKey:
    """The row identity of a table row."""
    extra = row.get(ROW_SETTINGS)
    return DefenceKey(str(row["defence"]), str(row["defence_version"]), str(row["defence_params"]),
                      "" if extra is None else str(extra))


def of_defence(frame: Any, key: DefenceKey) -> Any:
    """The rows of one defence setting."""
    if frame is None:
        return None
    mask = ((frame["defence"] == key.name) & (frame["defence_version"] == key.version)
            & (frame["defence_params"] == key.params))
    if ROW_SETTINGS in frame:
        mask &= frame[ROW_SETTINGS] == key.extra
    return frame[mask].reset_index(drop=True)


def in_budget(frame: Any, budget: Budget) -> Any:
    """The rows of one budget (None for no frame)."""
    return None if frame is None else frame[[budget.matches(r) for r in frame.to_dict("records")]]


def seed_labels(frame: Any, columns: Sequence[str] = SEED_COLUMNS) -> set[str]:
    return set() if frame is None else {seed_label(r, columns) for r in frame.to_dict("records")}


def seed_label(row: dict[str, Any], columns: Sequence[str] = SEED_COLUMNS) -> str:
    """'defence seed/attack seed' where a table has both (of `columns`), else the one seed."""
    return "/".join(str(row[c]) for c in columns if c in row)


def unit_words(frame: Any, columns: Sequence[str] = SEED_COLUMNS) -> str:
    """What a unit of replication is: 'world x defence seed x attack seed' (the seed columns the frame has)."""
    present = [c for c in columns if frame is not None and c in frame]
    names = {**UNIT_NAMES, "seed": "defence seed"} if "attack_seed" in present else UNIT_NAMES
    return " x ".join(names[c] for c in present) or "run"


def natural(label: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in label.split("/"))


def unseeded_defences(names: Collection[str]) -> frozenset[str]:
    """The defences among `names` registered `seeded=False`. A defence this installation does not have is counted
    as seeded (one unit per defence seed, as records were always counted)."""
    from harness import registry

    known = set(registry.names("defence"))
    return frozenset(n for n in names if n in known and not registry.get("defence", n).seeded)


def attack_family(name: str) -> str:
    """An attack's family as its installed plugin declares it ('' for an attack this installation does not have)."""
    from harness import registry

    return registry.get("attack", name).family if name in registry.names("attack") else ""


def one_defended_model(frame: Any) -> Any:
    """A defence's rows with every defence seed set to the smallest: for a defence whose model does not depend on
    the seed, records that differ only in defence seed then fall into one unit (`summary_cells.units`); attack
    seeds stay apart."""
    if frame is None or not len(frame):
        return frame
    columns = [c for c in DEFENCE_SEED_COLUMNS if c in frame and c != WORLD]  # worlds stay apart
    return frame.assign(**{c: frame[c].min() for c in columns})


def threat_model_of(runs: Any) -> str:
    """A defence's threat model, from its runs (tables before the column: open weights)."""
    if runs is None or "threat_model" not in runs or not len(runs):
        return OPEN_WEIGHTS
    found = sorted(set(runs["threat_model"].dropna()))
    return ", ".join(found) if found else OPEN_WEIGHTS


def split_main(frames: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Main-grid rows of each table, and the generalization runs (any subset other than 'all')."""
    gen = frames.get("generalization")
    if gen is not None:
        defence_all = dict(zip(gen["run_id"], gen["defence_subset"] == "all", strict=True))
        main_ids = set(gen.loc[(gen["defence_subset"] == "all") & (gen["attack_subset"] == "all"), "run_id"])
        general = gen[~gen["run_id"].isin(main_ids)].reset_index(drop=True)
    else:  # without the generalization table only the attack's subset is known
        res = frames.get("resistance")
        main_ids = set(res.loc[res["attack_subset"] == "all", "run_id"]) if res is not None else set()
        defence_all, general = {i: True for i in main_ids}, None
    main = {}
    for name, frame in frames.items():
        if name == "generalization":
            continue
        keep = frame["run_id"].isin(main_ids) if name == "resistance" else frame["run_id"].map(
            lambda i: defence_all.get(i, False))
        main[name] = frame[keep.astype(bool)].reset_index(drop=True)
    return main, general


def run_kind(run: Any) -> str:
    """held-out (defence trained without the attacked categories), cross-domain, or subset (overlapping)."""
    if not bool(run["held_out"]):
        return "subset"
    return "cross-domain" if run["defence_subset"] == "all" else "held-out"
