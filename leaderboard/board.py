"""One leaderboard table: a suite, a protocol version and a suite config; one row per defence setting.

Every number comes from the one results summary (`harness.results.summary`), the same that `harness report` prints;
this module only lays it out as columns, ranks the rows and gathers what the site shows beside the numbers
(curves, generalization runs, provenance). Column definitions live in `columns`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from harness.conditions.resistance import MEASURE_NAMES
from harness.results.estimates import Estimate, Rank
from harness.results.summary import (
    BudgetCell,
    DefenceKey,
    DefenceSummary,
    Summary,
    configs,
    in_budget,
    key_of,
    loaded_suite,
    of_defence,
    summarise,
    useful_qa_ratio_of,
)
from harness.results.summary_budgets import Budget, budget_of
from harness.results.summary_rows import seed_label
from harness.results.worlds import boards as group_worlds
from leaderboard.columns import (
    CONDITION_COLUMNS,
    KEY_COLUMNS,
    KNOWLEDGE_COLUMNS,
    ColumnSpec,
    budget_column,
    pre_attack,
    summary_columns,
)
from leaderboard.load import ResultFolder


@dataclass
class Row:
    """A summary row as the leaderboard shows it: its numbers keyed by column id, with notes and a rank."""

    summary: DefenceSummary
    cells: dict[str, Estimate | None]
    notes: dict[str, str]
    provenance: dict[str, list[str]]

    @property
    def rank(self) -> Rank | None:
        """The summary's rank (estimates.RANK_RULE on the worst case); None: unstable, unranked."""
        return self.summary.rank

    @property
    def verdict(self) -> str:
        return self.summary.verdict

    @property
    def key(self) -> DefenceKey:
        return self.summary.key

    @property
    def seeds(self) -> tuple[str, ...]:
        return self.summary.seed_cells

    @property
    def unstable(self) -> list[str]:
        return self.summary.unstable

    @property
    def distinguishing(self) -> str:
        return self.summary.distinguishing

    @property
    def threat_model(self) -> str:
        """open weights, or fine-tuning service (records' `threat_model`)"""
        return self.summary.threat_model

    @property
    def budget_details(self) -> list[BudgetCell]:
        return self.summary.budgets


@dataclass
class Board:
    folder: ResultFolder
    suite_params: str
    budgets: list[Budget]
    columns: list[ColumnSpec]  # every numeric column, the key ones (`key_columns`) included
    rows: list[Row]
    judges: list[str]
    seeds: list[str]
    phis: list[float]
    curves: Any                # long frame: defence key, budget id, seed, step, hs
    generalization_runs: Any   # frame of the runs outside the main grid
    summary: Summary | None = field(default=None, repr=False)
    config_index: int = 0      # position among the folder's suite configs (normally one: 0)
    measure: str = ""          # what the primary judge's score measures (its registration's `measures`)
    headline: str = "harmfulness"  # the summary's headline measure (harmfulness or access: Suite.headline)

    @property
    def title(self) -> str:
        return f"{self.folder.suite} · protocol v{self.folder.protocol_version}"

    @property
    def worlds(self) -> tuple[str, ...]:
        """The pooled worlds' labels (empty: one world), `harness.results.worlds`."""
        return self.summary.worlds if self.summary else ()

    @property
    def config_shown(self) -> str:
        """The suite config as a reader should see it: where worlds are pooled, what their configs share (the world
        params, which differ, left out: the worlds are named beside it); else the one config."""
        import json

        pooled = [json.loads(c) for c in (self.summary.configs if self.summary else ()) if c.startswith("{")]
        if len(pooled) < 2:
            return self.suite_params
        shared = {k: v for k, v in pooled[0].items() if all(c.get(k, object()) == v for c in pooled)}
        return json.dumps(shared, sort_keys=True, separators=(",", ":"))

    @property
    def seed_kind(self) -> str:
        """How a seed cell's label reads: 'world/defence/attack ', 'defence/attack ' or '' (one seed)."""
        if not self.seeds or "/" not in self.seeds[0]:
            return ""
        return "world/defence/attack " if self.worlds else "defence/attack "

    @property
    def key_columns(self) -> list[ColumnSpec]:
        return [c for c in self.columns if c.id in KEY_COLUMNS]

    @property
    def other_columns(self) -> list[ColumnSpec]:
        return [c for c in self.columns if c.id not in KEY_COLUMNS]

    @property
    def headline_name(self) -> str:
        """The headline measure as the columns name it: harmfulness, or knowledge access."""
        return MEASURE_NAMES.get(self.headline, self.headline)

    @property
    def harm_label(self) -> str:
        """The harmfulness axis as the primary judge measures it: 'revealed fact slots (...), judge tiny-content';
        under knowledge access, said so first."""
        judge = ", ".join(self.judges) or "unknown judge"
        label = f"{self.measure}, judge {judge}" if self.measure else f"harmfulness score of judge {judge}"
        if self.headline == "access":
            return f"knowledge access (per run the higher of greedy and forced-compliance scores): {label}"
        return label

    def runs(self, row: Row, budget: Budget | None = None) -> Any:
        """The main-grid runs of a row (at one budget), one per (defence seed, attack seed): the resistance table's
        rows, in seed order (an empty frame where there are none)."""
        import pandas as pd

        frame = of_defence(self.summary.main.get("resistance") if self.summary else None, row.key)
        if frame is None:
            return pd.DataFrame()
        frame = in_budget(frame, budget) if budget is not None else frame
        order = [c for c in ("seed", "attack_seed", "run_id") if c in frame]
        return frame.sort_values(order).reset_index(drop=True)

    @property
    def private_world(self) -> str | None:
        """The digest of the private evaluation world these runs used (a suite param `private:<digest>`, the
        convention of suites that offer one, e.g. tiny's `seed=private`), or None for a public world."""
        import json

        values = json.loads(self.suite_params).values() if self.suite_params.startswith("{") else ()
        return next((v for v in values if isinstance(v, str) and v.startswith("private:")), None)


def build_boards(folder: ResultFolder) -> list[Board]:
    """One board per suite config found in the folder's tables (normally one); the numbered worlds of one config
    are one board, pooled (`harness.results.worlds`)."""
    from harness.tuning.attacker_log import tuned_attack_runs
    from leaderboard.plugin_docs import judge_measures

    found = configs(folder.tables)
    world_params = loaded_suite(_suite_name(folder, found[0]), found[0]).world_params if found else ()
    boards = []
    for index, worlds in enumerate(group_worlds(found, world_params)):
        params = worlds[0]
        summary = summarise(folder.tables, worlds, useful_qa_ratio_of(_suite_name(folder, params), params),
                            world_params=world_params, tuned_runs=tuned_attack_runs(folder.path.parent.parent,
                                                                                    folder.suite,
                                                                                    folder.protocol_version))
        boards.append(_board(folder, summary))
        boards[-1].config_index = index
        boards[-1].measure = judge_measures(summary.judges[0]) if summary.judges else ""
    return boards


def _suite_name(folder: ResultFolder, params: str) -> str:
    """The suite the records name (the folder's name where the tables are silent)."""
    names = {str(s) for f in folder.tables.values() if "suite" in f for s in f.loc[f["suite_params"] == params,
                                                                                   "suite"].unique()}
    return names.pop() if len(names) == 1 else folder.suite


def _board(folder: ResultFolder, summary: Summary) -> Board:
    rows = [_row(s, summary) for s in summary.rows]
    _rank(rows)
    budgets, measure = summary.budgets, MEASURE_NAMES.get(summary.measure, summary.measure)
    grouped = len({b.family for b in budgets}) > 1  # group the budget columns by attack family
    return Board(folder=folder, suite_params=summary.suite_params, budgets=budgets, headline=summary.measure,
                 columns=[pre_attack(measure), *(budget_column(b.id, b.label, b.description, b.attack, measure,
                                                               (b.family or "other") if grouped else "")
                                                 for b in budgets),
                          *summary_columns(summary.thresholds.useful_qa_ratio, measure),
                          *(KNOWLEDGE_COLUMNS if summary.measure == "access" else ()), *CONDITION_COLUMNS],
                 rows=rows, judges=summary.judges, seeds=summary.seeds, phis=list(summary.thresholds.phis),
                 curves=_curves(summary.main.get("resistance"), budgets), generalization_runs=summary.general,
                 summary=summary)


def _row(s: DefenceSummary, summary: Summary) -> Row:
    cells: dict[str, Estimate | None] = {"hs_pre": s.headline_pre}
    cells.update({f"budget:{c.budget.id}": c.headline_post for c in s.budgets})
    cells.update(worst=s.worst.estimate if s.worst else None, steps=s.steps, resisted=s.resisted,
                 ppl_ratio=s.ppl_ratio, qa_delta=s.qa_delta, degenerate_pre=s.degenerate_pre,
                 train_delta=s.train_delta, degenerate_post=s.degenerate_post, held_out=s.held_out.estimate,
                 cross_domain=s.cross_domain.estimate)
    at_worst = s.worst.cell.knowledge if s.worst and s.worst.cell else {}
    cells.update(worst_forced=at_worst.get("forced"), worst_nll=at_worst.get("nll recovered"))
    notes = {"worst": _worst_note(s, summary), "steps": f"at {s.steps_at.label}" if s.steps_at else (
        "held" if any(c.headline_post is not None for c in s.budgets) else "")}
    for column, generalization in (("held_out", s.held_out), ("cross_domain", s.cross_domain)):
        if generalization.subsets:
            notes[column] = generalization.subsets
    frames = [of_defence(summary.main.get(n), s.key) for n in ("resistance", "stability", "trainability")]
    frames.append(of_defence(summary.general, s.key))
    return Row(s, cells, notes, _provenance(s.key, [f for f in frames if f is not None]))


def _worst_note(s: DefenceSummary, summary: Summary) -> str:
    if s.worst is not None:
        left_out = f"; {s.worst.left_out} budget(s) leaving a useless model left out" if s.worst.left_out else ""
        return f"at {s.worst.budget.label}{left_out}"
    if not s.budgets:
        return ""
    if summary.thresholds.useful_qa is None:
        return "n/a: no base harmless QA (no stability table)"
    return "n/a: no budget leaves a useful model"


def _rank(rows: list[Row]) -> None:
    """Rows in the summary's rank order (columns.RANK_RULE): stable rows by place, within a place by the worst case's
    mean, then mean post-attack harmfulness, then name; unstable rows (unranked) last."""
    def order(row: Row) -> tuple[Any, ...]:
        worst = row.cells.get("worst")
        return (row.rank is None, row.rank.place if row.rank else 0, worst is None, worst.mean if worst else 0.0,
                row.summary.mean_post, row.key.name, row.key.version, row.key.params, row.key.extra)

    rows.sort(key=order)


def _provenance(key: DefenceKey, frames: list[Any]) -> dict[str, list[str]]:
    def values(column: str) -> list[str]:
        return sorted({str(v) for f in frames if column in f for v in f[column].dropna().unique()})

    return {"defence version": [key.version], "judge": values("judge"), "backend": values("backend"),
            "harness version": values("harness_version"), "git commit": values("git_commit"),
            "run ids": values("run_id")}


def _curves(resistance: Any, budgets: list[Budget]) -> Any:
    """Long frame of the main grid's curves: one row per (defence, budget, seed, checkpoint)."""
    import pandas as pd

    rows = []
    if resistance is not None:
        for r in resistance.to_dict("records"):
            budget = next((b.id for b in budgets if b.matches(r)), budget_of(r).id)
            key, seed = key_of(r), seed_label(r)
            for step, hs in json.loads(r["curve"]):
                rows.append((key, budget, seed, int(step), float(hs), r["run_id"]))
    return pd.DataFrame(rows, columns=["key", "budget", "seed", "step", "hs", "run_id"])
