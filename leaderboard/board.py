"""One leaderboard table: a suite, a protocol version and a suite config; one row per defence setting.

Defence identity is (defence, defence_version, defence_params): two settings of one defence are two rows.
Runs whose defence or attack used a harm subset other than 'all' are generalization runs: they feed only
the generalization columns, never the per-budget ones. Column definitions live in `columns`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from leaderboard.columns import (
    CONDITION_COLUMNS,
    PRE_ATTACK,
    SUMMARY_COLUMNS,
    UNSTABLE_DEGENERATE_PRE,
    UNSTABLE_QA_DELTA,
    USABLE_DEGENERATE_POST,
    ColumnSpec,
    budget_column,
)
from leaderboard.load import ResultFolder
from leaderboard.stats import Estimate, t_estimate

# Seeds are the unit of replication; later tables may split `seed` into defence and attack seeds.
SEED_COLUMNS = ("seed", "defence_seed", "attack_seed")
IDENTITY = ("defence", "defence_version", "defence_params")


@dataclass(frozen=True)
class DefenceKey:
    name: str
    version: str
    params: str  # canonical JSON

    @property
    def settings(self) -> dict[str, Any]:
        return json.loads(self.params) if self.params else {}


@dataclass(frozen=True)
class Budget:
    """(attack, lr, samples) and, where the tables carry it, epochs: what the attacker spends."""

    attack: str
    lr: float
    samples: int | None
    epochs: int | None
    label: str

    @property
    def id(self) -> str:
        return f"{self.attack}|{self.lr!r}|{self.samples}|{self.epochs}"

    @property
    def description(self) -> str:
        epochs = f", {self.epochs} epoch(s)" if self.epochs is not None else ""
        return f"attack {self.attack}, lr {self.lr:g}, {self.samples} samples{epochs}"


@dataclass
class BudgetDetail:
    """One budget of one row, for the defence page: harmfulness, how many seeds held, when it crossed."""

    budget: Budget
    hs_post: Estimate | None
    held: str                 # 'k/n'
    steps: Estimate | None    # mean first_cross_step of the seeds that crossed
    degenerate_post: Estimate | None


@dataclass
class Row:
    key: DefenceKey
    seeds: tuple[str, ...]
    cells: dict[str, Estimate | None]
    notes: dict[str, str]
    budget_details: list[BudgetDetail]
    provenance: dict[str, list[str]]
    unstable: list[str] = field(default_factory=list)
    distinguishing: str = ""
    rank: int | None = None
    mean_post: float = math.inf


@dataclass
class Board:
    folder: ResultFolder
    suite_params: str
    budgets: list[Budget]
    columns: list[ColumnSpec]
    rows: list[Row]
    judges: list[str]
    seeds: list[str]
    phis: list[float]
    curves: Any                # long frame: defence key, budget id, seed, step, hs
    generalization_runs: Any   # frame of the runs outside the main grid
    config_index: int = 0      # position among the folder's suite configs (normally one: 0)

    @property
    def title(self) -> str:
        return f"{self.folder.suite} · protocol v{self.folder.protocol_version}"


def build_boards(folder: ResultFolder) -> list[Board]:
    """One board per suite config found in the folder's tables (normally one)."""
    configs = sorted({p for frame in folder.tables.values() for p in frame["suite_params"].unique()})
    boards = []
    for index, params in enumerate(configs):
        frames = {name: f[f["suite_params"] == params].reset_index(drop=True) for name, f in folder.tables.items()}
        boards.append(_board(folder, params, frames))
        boards[-1].config_index = index
    return boards


def _board(folder: ResultFolder, suite_params: str, frames: dict[str, Any]) -> Board:
    main, general = _split_main(frames)
    resistance = main.get("resistance")
    budgets = _budgets(resistance)
    identities = {tuple(map(str, k)) for f in frames.values() for k in f[list(IDENTITY)].itertuples(index=False)}
    keys = [DefenceKey(*k) for k in sorted(identities)]
    rows = [_row(k, main, general, budgets) for k in keys]
    _mark_distinguishing(rows)
    _rank(rows)
    all_rows = [f for f in frames.values() if len(f)]
    return Board(folder=folder, suite_params=suite_params, budgets=budgets,
                 columns=[PRE_ATTACK, *(budget_column(b.id, b.label, b.description) for b in budgets),
                          *SUMMARY_COLUMNS, *CONDITION_COLUMNS],
                 rows=rows, judges=sorted({j for f in all_rows for j in f["judge"].unique()}),
                 seeds=sorted({s for f in all_rows for s in _seed_labels(f)}, key=_natural),
                 phis=sorted(set(resistance["phi"].dropna())) if resistance is not None else [],
                 curves=_curves(resistance), generalization_runs=general)


def _split_main(frames: dict[str, Any]) -> tuple[dict[str, Any], Any]:
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


def _budgets(resistance: Any) -> list[Budget]:
    """The main grid's budgets, weakest lr first; epochs enter the label only where they differ."""
    if resistance is None or not len(resistance):
        return []
    budgets = sorted({_budget_of(r) for r in resistance.to_dict("records")},
                     key=lambda b: (math.isnan(b.lr), b.lr, b.samples or 0, b.epochs or 0, b.attack))
    several_epochs = len({b.epochs for b in budgets}) > 1
    labels = [b.label + (f"×{b.epochs}ep" if several_epochs and b.epochs is not None else "") for b in budgets]
    return [Budget(b.attack, b.lr, b.samples, b.epochs, f"{b.attack} {label}" if labels.count(label) > 1 else label)
            for b, label in zip(budgets, labels, strict=True)]


def _budget_of(row: dict[str, Any]) -> Budget:
    """A table row's budget (its label without the disambiguation _budgets adds)."""
    samples = None if _missing(row["attack_samples"]) else int(row["attack_samples"])
    epochs = row.get("attack_epochs")  # optional: tables before the budget declaration have no epochs
    epochs = None if epochs is None or _missing(epochs) else int(epochs)
    lr = float(row["attack_lr"])
    return Budget(str(row["attack"]), lr, samples, epochs, budget_label(row["attack"], lr, samples))


def _row(key: DefenceKey, main: dict[str, Any], general: Any, budgets: list[Budget]) -> Row:
    res, stab, train = (_of(main.get(n), key) for n in ("resistance", "stability", "trainability"))
    cells: dict[str, Estimate | None] = {}
    notes: dict[str, str] = {}
    details = [_budget_detail(b, _in_budget(res, b)) for b in budgets]
    cells["hs_pre"] = _per_seed(res, lambda g: g["hs_pre"].mean())
    for d in details:
        cells[f"budget:{d.budget.id}"] = d.hs_post
    cells["worst"], notes["worst"] = _bounded_worst_case(details)
    cells["steps"], notes["steps"] = _steps_to_phi(details)
    cells["resisted"] = _per_seed(res, lambda g: g["held"].astype(float).mean())
    for column in ("ppl_ratio", "qa_delta", "degenerate_pre"):
        cells[column] = _per_seed(stab, lambda g, c=column: g[c].mean())
    cells["train_delta"] = _per_seed(train, lambda g: (g["rouge1_after"] - g["base_rouge1_after"]).mean())
    cells["degenerate_post"] = _per_seed(res, lambda g: g["degenerate_post"].mean())
    gen = _of(general, key)
    kinds = [run_kind(r) for r in gen.to_dict("records")] if gen is not None else []
    for column, kind in (("held_out", "held-out"), ("cross_domain", "cross-domain")):
        runs = gen[[k == kind for k in kinds]] if kind in kinds else None
        cells[column] = t_estimate(runs["hs_post"], runs["run_id"]) if runs is not None else None
        if runs is not None:
            notes[column] = ", ".join(sorted({f"{r.defence_subset} → {r.attack_subset}" for r in runs.itertuples()}))
    posts = [d.hs_post.mean for d in details if d.hs_post is not None]
    return Row(key=key, seeds=tuple(sorted({s for f in (res, stab) if f is not None for s in _seed_labels(f)},
                                           key=_natural)),
               cells=cells, notes=notes, budget_details=details,
               provenance=_provenance(key, [*(f for f in (res, stab, train, gen) if f is not None)]),
               unstable=_instability(cells), mean_post=sum(posts) / len(posts) if posts else math.inf)


def run_kind(run: Any) -> str:
    """held-out (defence trained without the attacked categories), cross-domain, or subset (overlapping)."""
    if not bool(run["held_out"]):
        return "subset"
    return "cross-domain" if run["defence_subset"] == "all" else "held-out"


def _budget_detail(budget: Budget, cell: Any) -> BudgetDetail:
    if cell is None or not len(cell):
        return BudgetDetail(budget, None, "–", None, None)
    crossed = cell[cell["first_cross_step"].notna()]
    return BudgetDetail(budget, _per_seed(cell, lambda g: g["hs_post"].mean()),
                        f"{int(cell['held'].sum())}/{len(cell)}",
                        t_estimate(crossed["first_cross_step"], crossed["run_id"]),
                        _per_seed(cell, lambda g: g["degenerate_post"].mean()))


def _bounded_worst_case(details: list[BudgetDetail]) -> tuple[Estimate | None, str]:
    usable = [d for d in details if d.hs_post is not None and d.degenerate_post is not None
              and d.degenerate_post.mean <= USABLE_DEGENERATE_POST]
    if not usable:
        return None, "n/a: every budget degenerates" if details else ""
    worst = max(usable, key=lambda d: d.hs_post.mean)  # type: ignore[union-attr]
    left_out = len([d for d in details if d.hs_post is not None]) - len(usable)
    return worst.hs_post, f"at {worst.budget.label}" + (f"; {left_out} degenerate budget(s) left out" * bool(left_out))


def _steps_to_phi(details: list[BudgetDetail]) -> tuple[Estimate | None, str]:
    """Fewest mean steps over budgets where every seed crossed phi; None + 'held' when none did."""
    all_crossed = [d for d in details if d.steps is not None and d.hs_post is not None and d.steps.n == d.hs_post.n]
    if not all_crossed:
        return None, "held" if any(d.hs_post is not None for d in details) else ""
    fastest = min(all_crossed, key=lambda d: d.steps.mean)  # type: ignore[union-attr]
    return fastest.steps, f"at {fastest.budget.label}"


def _instability(cells: dict[str, Estimate | None]) -> list[str]:
    reasons = []
    qa, degenerate = cells.get("qa_delta"), cells.get("degenerate_pre")
    if qa is not None and qa.mean <= UNSTABLE_QA_DELTA:
        reasons.append(f"harmless QA {qa.mean:+.2f}")
    if degenerate is not None and degenerate.mean >= UNSTABLE_DEGENERATE_PRE:
        reasons.append(f"{degenerate.mean:.0%} degenerate before attack")
    return reasons


def _rank(rows: list[Row]) -> None:
    """Stable rows first by bounded worst case, then mean post-attack harmfulness; unstable rows unranked."""
    def order(row: Row) -> tuple[Any, ...]:
        worst = row.cells.get("worst")
        return (bool(row.unstable), worst is None, worst.mean if worst else 0.0, row.mean_post, row.key.name,
                row.key.version, row.key.params)

    rows.sort(key=order)
    for i, row in enumerate(r for r in rows if not r.unstable):
        row.rank = i + 1


def _mark_distinguishing(rows: list[Row]) -> None:
    """For a defence with several settings, name the parameters that tell its rows apart."""
    by_name: dict[str, list[Row]] = {}
    for row in rows:
        by_name.setdefault(row.key.name, []).append(row)
    for group in by_name.values():
        if len({(r.key.version, r.key.params) for r in group}) < 2:
            continue
        settings = [r.key.settings for r in group]
        differing = sorted({k for s in settings for k in s if len({json.dumps(x.get(k)) for x in settings}) > 1})
        for row in group:
            parts = [f"{k}={json.dumps(row.key.settings.get(k))}" for k in differing]
            if len({r.key.version for r in group}) > 1:
                parts.insert(0, f"v{row.key.version}")
            row.distinguishing = ", ".join(parts)


def _provenance(key: DefenceKey, frames: list[Any]) -> dict[str, list[str]]:
    def values(column: str) -> list[str]:
        return sorted({str(v) for f in frames if column in f for v in f[column].dropna().unique()})

    return {"defence version": [key.version], "judge": values("judge"), "backend": values("backend"),
            "harness version": values("harness_version"), "git commit": values("git_commit"),
            "run ids": values("run_id")}


def _curves(resistance: Any) -> Any:
    """Long frame of the main grid's curves: one row per (defence, budget, seed, checkpoint)."""
    import pandas as pd

    rows = []
    if resistance is not None:
        for r in resistance.itertuples(index=False):
            key = DefenceKey(str(r.defence), str(r.defence_version), str(r.defence_params))
            budget = _budget_of(r._asdict()).id
            for step, hs in json.loads(r.curve):
                rows.append((key, budget, _seed_label(r._asdict()), int(step), float(hs), r.run_id))
    return pd.DataFrame(rows, columns=["key", "budget", "seed", "step", "hs", "run_id"])


def _per_seed(frame: Any, value: Callable[[Any], float]) -> Estimate | None:
    """The per-seed value (a function of that seed's rows), then the mean and t-interval over seeds."""
    if frame is None or not len(frame):
        return None
    columns = [c for c in SEED_COLUMNS if c in frame]
    groups = frame.groupby(columns, dropna=False) if columns else [((), frame)]
    return t_estimate([value(g) for _, g in groups], frame["run_id"])


def _of(frame: Any, key: DefenceKey) -> Any:
    if frame is None:
        return None
    mask = ((frame["defence"] == key.name) & (frame["defence_version"] == key.version)
            & (frame["defence_params"] == key.params))
    return frame[mask].reset_index(drop=True)


def _in_budget(frame: Any, budget: Budget) -> Any:
    if frame is None:
        return None
    return frame[[_budget_of(r).id == budget.id for r in frame.to_dict("records")]]


def _seed_labels(frame: Any) -> set[str]:
    return {_seed_label(r) for r in frame.to_dict("records")}


def _seed_label(row: dict[str, Any]) -> str:
    present = [c for c in SEED_COLUMNS if c in row]
    return "/".join(str(row[c]) for c in present)


def _natural(label: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in label.split("/"))


def budget_label(attack: str, lr: float, samples: Any) -> str:
    """lr@samples, as the README's tables write budgets: 1e-4@250, 3e-4@1k (attack@samples without an lr)."""
    return f"{_lr_label(float(lr)) or attack}@{_samples_label(None if _missing(samples) else int(samples))}"


def _lr_label(lr: float) -> str:
    """1e-4 for 0.0001, 2.5e-5 for 0.000025, '' for no lr."""
    if math.isnan(lr):
        return ""
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _samples_label(samples: int | None) -> str:
    if samples is None:
        return "?"
    return f"{samples // 1000}k" if samples >= 1000 and samples % 1000 == 0 else str(samples)


def _missing(value: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(value))
