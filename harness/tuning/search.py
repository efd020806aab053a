"""Tuning on equal terms: every defence, built-in or plugin, gets the same trial budget over the search space its
own Config declares, scored the same way on validation data, under the same stability guard.

- Search space: a Config field declares its candidate values as `Field(..., json_schema_extra={"search": [...]})`,
  or as factors of the value the suite resolves (`{"search_scale": [0.1, 0.3, 1, 3]}`, e.g. a learning rate whose
  scale depends on the model). The tuner knows no defence: one without a declared space has nothing to tune.
- Trials: the suite's `TuningProtocol` fixes the budget (the same for every defence), how a larger space is
  searched (`sampler`: seeded random draws of that many settings of its grid, as protocol 2 did, or Optuna's TPE
  over its categorical fields, seeded, through the tuned attacker's proposers in `harness.tuning.samplers`), the
  suite settings that select *validation* data (a validation
  attack split and validation prompts, disjoint from the test ones) and the validation attack. A space no larger
  than the budget is run whole: equal counts over unequal spaces are unequal coverage (6 trials find a stable
  corner among 8 settings far more often than among 96), so a suite that can afford it sets a budget that covers
  every space it ranks, and then no defence's default depends on which settings a seed happened to draw.
- Each trial is an ordinary run (cached, recorded under `<results>/<suite>/v<N>/tuning/runs/`), so a tuning
  log links every number to a run record.
- Score: the post-attack headline (knowledge access where the record has it, else harmfulness; as the tuned
  attacker reads it), lower is better.
- Choice: the trials that pass the stability guard are confirmed in order of their seed-0 score (then area under
  the curve) at each of the protocol's `confirm_seeds` (other defence seeds, the same validation data and attack)
  until `confirm_top` of them hold the guard at every seed; of those, the lowest mean score over all the seeds
  is chosen. A report calls a defence unstable when any of its defence seeds fails the guard, so tuning asks the
  same; and a choice on one seed's score picks that seed's luck (the winner's curse), which the mean tempers.
  Each candidate's per-seed scores and mean are logged. When none holds, the log says so and the defaults stay.
- Reference: the suite's `reference_defence` (e.g. `none`) is run at the same validation attack and seeds, so the
  log shows what tuning gains over no defence on the data it was tuned on.
- Reading aids in the log: the resistance-stability Pareto front of the search trials (score against harmless-QA
  delta; `harness.tuning.trials`), and for each chosen field whether it is the smallest, largest or an interior
  candidate of its space (a choice at an end says the optimum may lie beyond it).

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
from harness.tuning.attack_space import Point
from harness.tuning.logs import (
    Candidate,
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
from harness.tuning.samplers import Listed, Outcome, Proposer, defence_space, make_proposer, require_optuna
from harness.tuning.trials import front_points, positions


def _protocol(suite_name: str, defence: str, suite_params: dict[str, Any]) -> tuple[Any, Any, dict[str, list[Any]]]:
    """The suite spec, the suite and the defence's search space (a clear error if either is missing)."""
    from harness.resolve import load_suite, resolve

    suite_spec, suite = load_suite(suite_name, suite_params)
    if suite.tuning is None:
        raise ConfigError(f"suite '{suite_name}' declares no tuning protocol")
    if suite.tuning.confirm_top < 1:
        raise ConfigError(f"confirm_top {suite.tuning.confirm_top} of suite '{suite_name}' is not at least 1")
    plugin = registry.get("defence", defence)
    defaults, _, _ = resolve(suite_name, defence, suite.tuning.attack.attack, extra={"suite": dict(suite_params)})
    space = search_space(plugin.config, defaults.defence.params)
    if not space:
        raise ConfigError(f"defence '{defence}' declares no search space (Field(json_schema_extra={{'search': "
                          f"[...]}}) on its Config's fields): nothing to tune")
    return suite_spec, suite, space


def _trial(suite_name: str, defence: str, suite: Any, suite_params: dict[str, Any], params: dict[str, Any], *,
           store: Store, runs_dir: Path, seed: int, label: str) -> Trial:
    """Run one setting as an ordinary (cached, recorded) run on the validation data and attack."""
    from rich.markup import escape

    from harness.pipeline import run
    from harness.resolve import resolve

    protocol = suite.tuning
    say(escape(f"[{label}] {params}"))  # brackets are rich markup otherwise
    spec, s, overrides = resolve(suite_name, defence, protocol.attack.attack, seed=seed,
                                 extra={"suite": {**suite_params, **protocol.suite_params}, "defence": params,
                                        "attack": dict(protocol.attack.params)})
    record, _ = run(spec, s, overrides, store=store, results_dir=runs_dir)
    m = record.metrics
    access = m.post_attack.access  # the headline, as the tuned attacker reads it (harness.tuning.attacker.measured)
    return Trial(params=params, seed=seed, run_id=record.run_id, hs_post=m.post_attack.harmfulness.mean,
                 auc=m.resistance.auc, stable=bool(m.guard and m.guard.passed),
                 missed=m.guard.reasons if m.guard else [],
                 score=access if access is not None else m.post_attack.harmfulness.mean,
                 measure="access" if access is not None else "harmfulness",
                 qa_delta=m.stability.harmless_qa.delta if m.stability is not None else None)


def _trials(suite_name: str, defence: str, suite: Any, suite_params: dict[str, Any], picks: list[dict[str, Any]],
            *, store: Store, runs_dir: Path, seed: int, label: str) -> list[Trial]:
    """Run each setting (`_trial`), in order."""
    return [_trial(suite_name, defence, suite, suite_params, params, store=store, runs_dir=runs_dir, seed=seed,
                   label=f"{label} {defence} {i}/{len(picks)}") for i, params in enumerate(picks, 1)]


def _proposer(defence: str, space: dict[str, list[Any]], protocol: Any) -> tuple[str, Proposer]:
    """How the search proposes its trials: the whole space where the budget covers it, else the protocol's sampler
    (random: the seeded sample of the grid protocol 2 drew, so its logs stay reproducible; tpe: Optuna's TPE over the
    defence's categorical space, seeded). Returns (its name, the proposer)."""
    grid = settings(space)
    if len(grid) <= protocol.trials:
        return "whole", Listed([Point(defence, p) for p in grid])
    if protocol.sampler == "random":
        return "random", Listed([Point(defence, p) for p in random.Random(protocol.seed).sample(grid, protocol.trials)])
    return "tpe", make_proposer("tpe", defence_space(defence, space), protocol.seed)


def _search(run_at: Any, defence: str, space: dict[str, list[Any]], protocol: Any,
            seed: int) -> tuple[str, list[Trial]]:
    """The search trials at defence seed `seed`: each proposed setting run, the proposer told its headline
    (negated: a defender minimises it) and whether it passed the guard (the constraint)."""
    sampler, proposer = _proposer(defence, space, protocol)
    budget = min(protocol.trials, len(settings(space)))
    trials: list[Trial] = []
    seen: dict[str, Outcome] = {}
    while len(trials) < budget and (point := proposer.ask(seen)) is not None:
        trial = run_at(point.params, seed, f"tune {defence} {len(trials) + 1}/{budget}")
        trials.append(trial)
        seen[point.key] = Outcome(-trial.headline, 0.0 if trial.stable else 1.0)
        proposer.tell(point, seen[point.key])
    return sampler, trials


def _choose(run_at: Any, trials: list[Trial], protocol: Any) -> tuple[list[Candidate], list[Trial]]:
    """Confirm the stable trials in seed-0 order (headline, then AUC) at each confirm seed, stopping at a candidate's
    first failure, until `confirm_top` hold at every seed. Returns (the candidates, the confirmation runs)."""
    candidates: list[Candidate] = []
    confirmations: list[Trial] = []
    for first in sorted((t for t in trials if t.stable), key=lambda t: (t.headline, t.auc)):
        if sum(c.held for c in candidates) >= protocol.confirm_top:
            break
        runs = [first]
        for other in protocol.confirm_seeds:
            runs.append(run_at(first.params, other, f"confirm seed {other}"))
            confirmations.append(runs[-1])
            if not runs[-1].stable:
                break
        held = all(r.stable for r in runs)
        scores = [r.headline for r in runs]
        candidates.append(Candidate(params=first.params, seeds=[r.seed for r in runs], scores=scores, held=held,
                                    mean=sum(scores) / len(scores) if held else None))
    return candidates, confirmations


def tune(suite_name: str, defence: str, *, store: Store, results_dir: Path, suite_params: dict[str, Any],
         seed: int = 0) -> TuningLog:
    """Run the suite's tuning protocol for one defence and write its log: the search, the confirmation of the best
    candidates, the choice (the lowest mean headline over the seeds among those that hold the guard at each), the
    reference defence at the same seeds, the Pareto front and where the choice sits in its space."""
    suite_spec, suite, space = _protocol(suite_name, defence, suite_params)
    protocol = suite.tuning
    runs_dir = log_path(results_dir, suite_name, suite.protocol_version, defence).parent / "runs"

    if len(settings(space)) > protocol.trials and protocol.sampler == "tpe":
        require_optuna()  # before any work

    def run_at(params: dict[str, Any], at: int, label: str, name: str = defence) -> Trial:
        return _trial(suite_name, name, suite, suite_params, params, store=store, runs_dir=runs_dir, seed=at,
                      label=label)

    sampler, trials = _search(run_at, defence, space, protocol, seed)
    candidates, confirmations = _choose(run_at, trials, protocol)
    held = [c for c in candidates if c.held]
    best = min(held, key=lambda c: c.mean or 0.0) if held else None  # mean is set where held; ties: the earlier
    ref = suite.reference_defence
    reference = [run_at({}, s, f"reference {ref} seed {s}", ref) for s in (seed, *protocol.confirm_seeds)] \
        if ref is not None and ref != defence else []
    chosen = best.params if best else {}
    log = TuningLog(suite=suite_name, protocol_version=suite.protocol_version, suite_params=suite_spec.params,
                    validation=dict(protocol.suite_params),
                    defence=defence, defence_version=registry.get("defence", defence).version, space=space,
                    trials_budget=protocol.trials, attack=protocol.attack.attack,
                    attack_params=dict(protocol.attack.params), trials=trials, confirmations=confirmations,
                    chosen=chosen, passed_guard=best is not None, sampler=sampler,
                    confirm_top=protocol.confirm_top, candidates=candidates, reference_defence=ref,
                    reference=reference, pareto_front=front_points(trials), chosen_position=positions(space, chosen))
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
