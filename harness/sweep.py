"""Sweeps: every (defence x budget x seed) cell of a suite's grid, run by the local executor one after
another. Each cell is an ordinary run, so finished cells are cache hits and a grid shares one defended
model per (defence, seed).

Every cell is resolved and checked (configs, split sizes, directories) before the first one runs. A
`--set` of a field the grid itself sets (the tiny suite's `attack.lr`) is an error rather than silently
replaced by the grid's value: a single cell with another value is `harness run`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from harness.errors import ConfigError, HarnessError
from harness.pipeline import prefetch_grid, run
from harness.preflight import check_run, start
from harness.progress import say
from harness.records import RunRecord
from harness.resolve import load_suite, resolve
from harness.specs import parse_overrides
from harness.store import Store


def sweep(suite: str, defences: Sequence[str], seeds: Sequence[int], *, attack_seeds: Sequence[int | None] = (None,),
          sets: Sequence[str] = (), store: Store, results_dir: Path, force: bool = False,
          model: str | None = None) -> list[RunRecord]:
    """Run the suite's budget grid for each defence, defence seed and attack seed (None: the defence seed).
    Every spec is validated before any runs."""
    if not seeds:
        raise HarnessError("--seeds names no seed: give comma-separated integers, e.g. --seeds 0,1,2")
    overrides = parse_overrides(sets)
    _, s = load_suite(suite, overrides["suite"])
    if not s.budget_grid:
        raise HarnessError(f"suite '{suite}' defines no budget grid")
    gridded = sorted({k for b in s.budget_grid for k in b.params} & set(overrides["attack"]))
    if gridded:
        values = ", ".join(sorted({f"{b.params[k]}" for b in s.budget_grid for k in gridded if k in b.params}))
        raise ConfigError(f"--set attack.{gridded[0]} conflicts with the budget grid, which sets it for every cell "
                          f"({values}); run one cell with another value with `harness run`")
    cells = []
    for defence in defences:
        for seed in seeds:
            for attack_seed in attack_seeds:
                for budget in s.budget_grid:
                    cell_sets = [*sets, *(f"attack.{k}={json.dumps(v)}" for k, v in budget.params.items())]
                    spec, s_cell, applied = resolve(suite, defence, budget.attack, seed=seed, attack_seed=attack_seed,
                                                    sets=cell_sets, model=model, tuned_from=results_dir)
                    check_run(spec, s_cell, applied, store=store, results_dir=results_dir, force=force)
                    cells.append((budget, (spec, s_cell, applied)))
    start(store, results_dir / s.name / f"v{s.protocol_version}")
    if not force:  # vLLM: every LoRA attack of one defended model generates on one engine start (cached for run)
        prefetch_grid([(spec, s_cell) for _, (spec, s_cell, _) in cells], store=store, results_dir=results_dir)
    records = []
    for i, (budget, (spec, s_cell, applied)) in enumerate(cells, 1):
        say(f"[{i}/{len(cells)}] {spec.defence.name} x {budget.label} seed {spec.seed}/{spec.attack_seed_used}")
        record, _ = run(spec, s_cell, applied, store=store, results_dir=results_dir, force=force)
        records.append(record)
    return records
