"""Tuning on equal terms: every defence, built-in or plugin, gets the same trial budget over the search space its
own Config declares, scored the same way on validation data, under the same stability guard.

- Search space: a Config field declares its candidate values as `Field(..., json_schema_extra={"search": [...]})`,
  or as factors of the value the suite resolves (`{"search_scale": [0.1, 0.3, 1, 3]}`, e.g. a learning rate whose
  scale depends on the model). The tuner knows no defence: one without a declared space has nothing to tune.
- Trials: the suite's `TuningProtocol` fixes the budget (the same for every defence), the seed that samples
  that many settings from a larger space's grid, the suite settings that select *validation* data (a validation
  attack split and validation prompts, disjoint from the test ones) and the validation attack. A space no larger
  than the budget is run whole: equal counts over unequal spaces are unequal coverage (6 trials find a stable
  corner among 8 settings far more often than among 96), so a suite that can afford it sets a budget that covers
  every space it ranks, and then no defence's default depends on which settings a seed happened to draw.
- Each trial is an ordinary run (cached, recorded under `<results>/<suite>/v<N>/tuning/runs/`), so a tuning
  log links every number to a run record.
- Choice: among trials that pass the stability guard, the lowest post-attack harmfulness (then the lowest
  area under the curve) whose guard also holds at each of the protocol's `confirm_seeds` (other defence seeds,
  the same validation data and attack): the best candidates are confirmed in turn until one holds at every
  seed. A report calls a defence unstable when any of its defence seeds fails the guard, so tuning asks the
  same; without confirmation the search's winner sits at the guard's edge and fails it at the next seed (the
  winner's curse of a noisy constraint). When none passes, the log says so and the defaults stay unchanged.

The log, `<results>/<suite>/v<N>/tuning/<defence>.json`, is committed; runs of that suite take the chosen
settings from it (between the suite's defaults and the user's `--set`) when the defence version matches.

A scan (`harness tune DEFENCE --scan`) is evidence, not tuning: it runs *every* point of the space (optionally
those with some fields fixed) and records which pass the guard in `<defence>.scan.json`. It never changes the
chosen settings, so the equal trial budget stays the only route to a defence's defaults; it answers whether a
defence that no trial made stable could pass the guard anywhere in (that part of) its space.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from harness import registry
from harness.errors import ConfigError
from harness.progress import say
from harness.store.artifacts import Store
from harness.tuning.logs import (
    ScanLog,
    Trial,
    TuningLog,
    log_path,
    merge_scans,
    read_log,
    search_space,
    settings,
    write_log,
)


def _protocol(suite_name: str, defence: str, suite_params: dict[str, Any]) -> tuple[Any, Any, dict[str, list[Any]]]:
    """The suite spec, the suite and the defence's search space (a clear error if either is missing)."""
    from harness.resolve import load_suite, resolve

    suite_spec, suite = load_suite(suite_name, suite_params)
    if suite.tuning is None:
        raise ConfigError(f"suite '{suite_name}' declares no tuning protocol")
    plugin = registry.get("defence", defence)
    defaults, _, _ = resolve(suite_name, defence, suite.tuning.attack.attack, extra={"suite": dict(suite_params)})
    space = search_space(plugin.config, defaults.defence.params)
    if not space:
        raise ConfigError(f"defence '{defence}' declares no search space (Field(json_schema_extra={{'search': "
                          f"[...]}}) on its Config's fields): nothing to tune")
    return suite_spec, suite, space


def _trials(suite_name: str, defence: str, suite: Any, suite_params: dict[str, Any], picks: list[dict[str, Any]],
            *, store: Store, runs_dir: Path, seed: int, label: str) -> list[Trial]:
    """Run each setting as an ordinary (cached, recorded) run on the validation data and attack."""
    from rich.markup import escape

    from harness.pipeline import run
    from harness.resolve import resolve

    protocol = suite.tuning
    trials = []
    for i, params in enumerate(picks, 1):
        say(escape(f"[{label} {defence} {i}/{len(picks)}] {params}"))  # brackets are rich markup otherwise
        spec, s, overrides = resolve(suite_name, defence, protocol.attack.attack, seed=seed,
                                     extra={"suite": {**suite_params, **protocol.suite_params}, "defence": params,
                                            "attack": dict(protocol.attack.params)})
        record, _ = run(spec, s, overrides, store=store, results_dir=runs_dir)
        m = record.metrics
        trials.append(Trial(params=params, seed=seed, run_id=record.run_id, hs_post=m.post_attack.harmfulness.mean,
                            auc=m.resistance.auc, stable=bool(m.guard and m.guard.passed),
                            missed=m.guard.reasons if m.guard else []))
    return trials


def tune(suite_name: str, defence: str, *, store: Store, results_dir: Path, suite_params: dict[str, Any],
         seed: int = 0) -> TuningLog:
    """Run the suite's tuning protocol for one defence and write its log."""
    suite_spec, suite, space = _protocol(suite_name, defence, suite_params)
    protocol = suite.tuning
    grid = settings(space)
    picks = grid if len(grid) <= protocol.trials else random.Random(protocol.seed).sample(grid, protocol.trials)
    runs_dir = log_path(results_dir, suite_name, suite.protocol_version, defence).parent / "runs"
    trials = _trials(suite_name, defence, suite, suite_params, picks, store=store, runs_dir=runs_dir, seed=seed,
                     label="tune")
    best, confirmations = None, []
    for candidate in sorted((t for t in trials if t.stable), key=lambda t: (t.hs_post, t.auc)):
        for other in protocol.confirm_seeds:
            confirmations += _trials(suite_name, defence, suite, suite_params, [candidate.params], store=store,
                                     runs_dir=runs_dir, seed=other, label=f"confirm seed {other}")
            if not confirmations[-1].stable:
                break
        else:
            best = candidate
            break
    log = TuningLog(suite=suite_name, protocol_version=suite.protocol_version, suite_params=suite_spec.params,
                    validation=dict(protocol.suite_params),
                    defence=defence, defence_version=registry.get("defence", defence).version, space=space,
                    trials_budget=protocol.trials, attack=protocol.attack.attack,
                    attack_params=dict(protocol.attack.params), trials=trials, confirmations=confirmations,
                    chosen=best.params if best else {}, passed_guard=best is not None)
    write_log(log_path(results_dir, suite_name, suite.protocol_version, defence), log)
    return log


def _check_fixed(defence: str, space: dict[str, list[Any]], fixed: dict[str, Any]) -> None:
    """A scan's fixed fields must be fields of the space, at one of their candidate values (ConfigError if not)."""
    for name, value in fixed.items():
        if name not in space:
            raise ConfigError(f"cannot fix '{name}' in a scan of '{defence}': its search space has "
                              f"{', '.join(space)}")
        if value not in space[name]:
            raise ConfigError(f"cannot fix {name}={value!r}: not one of its candidate values {space[name]}")


def scan(suite_name: str, defence: str, *, store: Store, results_dir: Path, suite_params: dict[str, Any],
         fixed: dict[str, Any] | None = None, seed: int = 0) -> ScanLog:
    """Run every setting of the defence's search space (those matching `fixed`), as the tuning trials are run,
    and write the scan log. The tuning log and the chosen settings are left as they are."""
    fixed = dict(fixed or {})
    suite_spec, suite, space = _protocol(suite_name, defence, suite_params)
    _check_fixed(defence, space, fixed)  # before any trial runs
    grid = settings(space)
    picks = [p for p in grid if all(p[k] == v for k, v in fixed.items())]
    runs_dir = log_path(results_dir, suite_name, suite.protocol_version, defence).parent / "runs"
    trials = _trials(suite_name, defence, suite, suite_params, picks, store=store, runs_dir=runs_dir, seed=seed,
                     label="scan")
    protocol = suite.tuning
    log = ScanLog(suite=suite_name, protocol_version=suite.protocol_version, suite_params=suite_spec.params,
                  validation=dict(protocol.suite_params), defence=defence,
                  defence_version=registry.get("defence", defence).version, space=space, scans=[fixed],
                  space_size=len(grid), attack=protocol.attack.attack, attack_params=dict(protocol.attack.params),
                  trials=trials, stable=[t.params for t in trials if t.stable])
    path = log_path(results_dir, suite_name, suite.protocol_version, defence, "scan")
    old = read_log(path, ScanLog)
    log = merge_scans(old, log) if old is not None else log
    write_log(path, log)
    return log
