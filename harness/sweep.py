"""Sweeps: every (defence x budget x seed) cell of a suite's grid, run by the local executor one after
another. Each cell is an ordinary run, so finished cells are cache hits and a grid shares one defended
model per (defence, seed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError
from harness.pipeline import run
from harness.progress import say
from harness.records import RunRecord
from harness.resolve import load_suite, resolve
from harness.specs import parse_overrides
from harness.store import Store


def sweep(suite: str, defences: Sequence[str], seeds: Sequence[int], *, sets: Sequence[str] = (),
          store: Store, results_dir: Path, force: bool = False, model: str | None = None) -> list[RunRecord]:
    """Run the suite's budget grid for each defence and seed. Every spec is validated before any runs."""
    _, s = load_suite(suite, parse_overrides(sets)["suite"])
    if not s.budget_grid:
        raise HarnessError(f"suite '{suite}' defines no budget grid")
    cells = []
    for defence in defences:
        for seed in seeds:
            for budget in s.budget_grid:
                cell_sets = [*sets, *(f"attack.{k}={json.dumps(v)}" for k, v in budget.params.items())]
                cells.append((budget, resolve(suite, defence, budget.attack, seed=seed, sets=cell_sets,
                                              model=model)))
    records = []
    for i, (budget, (spec, s_cell, overrides)) in enumerate(cells, 1):
        say(f"[{i}/{len(cells)}] {spec.defence.name} x {budget.label} seed {spec.seed}")
        record, _ = run(spec, s_cell, overrides, store=store, results_dir=results_dir, force=force)
        records.append(record)
    return records
