"""The tuned attacker (`harness tune-attack DEFENCE`): an attacker with at least the defender's trial budget, searching
attack kinds and their hyper-parameters against one defended model, under a capability bound.

- The defended model: the defence at its tuned settings (the committed tuning log's choice, as runs take them; its
  defaults where there is none), at one defence seed.
- The space: the suite's zoo (`TuningProtocol.attacks`; by default every registered attack whose Config declares a
  search space), each kind with the space its own Config declares (`harness.tuning.attack_space`). The core names no
  attack: a kind joins the search by declaring `search` / `search_scale` on its fields, as a defence does.
- The budget: `TuningProtocol.attacker_budget` distinct runs (at least the defender's `trials`); a space no larger
  is run whole. Points the suite cannot run (more samples than the validation split holds) are skipped before any
  work, listed, and not counted.
- The data: the validation split (`TuningProtocol.suite_params`), as the defender's tuning; the trials are ordinary
  cached runs recorded under `tuning/runs/`.
- The score: the post-attack headline (knowledge access where the record has it, else harmfulness), maximised; a
  trial whose attacked model keeps less than `capability_bound` x the defended model's harmless QA breaks the bound
  and is never chosen, however harmful (an attack that destroys the model has not extracted anything useful). A
  run that fails (training diverged) scores nothing and is infeasible.
- The proposer (`harness.tuning.samplers`): the suite's `TuningProtocol.sampler`, the defender's too: Optuna's TPE
  (seeded), or seeded random draws. With `TuningProtocol.attacker_starts_at_reference`, its first trial is the
  suite's validation attack (`TuningProtocol.attack`, the yardstick every defence was tuned against) where that is a
  point of the space (the log's `first`), so the chosen attack is never weaker on the validation data than it.
- The result: the strongest feasible trial (chosen) and the strongest feasible trial of another kind (next best;
  the second strongest where no other kind has one), each run again on the *test* data as an ordinary record.

Resumable: the proposers are deterministic given their seed and what they are told, so a rerun proposes the same
points and finds their records cached; failed runs, which leave no record, are taken from the log's earlier entry
with the same run id instead of being retrained. The log is written after every trial
(`harness.tuning.attacker_log`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel

from harness import registry
from harness.errors import ConfigError, CorruptRecordError, HarnessError, PluginLoadError, PluginRefused, RunFailed
from harness.progress import say
from harness.specs import PluginSpec, validate_config
from harness.store.artifacts import Store
from harness.suite import Suite, TuningProtocol
from harness.tuning.attack_space import Point, ZooSpace
from harness.tuning.attacker_log import (
    AttackerLog,
    AttackTrial,
    FirstPoint,
    ReportedRun,
    SkippedPoint,
    attacker_log_path,
)
from harness.tuning.logs import declares_space, log_path, read_log, search_space, tuned_settings, write_log
from harness.tuning.samplers import Outcome, make_proposer, require_optuna

QA_TOLERANCE = 1e-9  # exact-match fractions at the bound (0.9 x 0.7 vs 0.63) must not fail by rounding


class Plan(NamedTuple):
    """A search, checked before any work: the suite, its protocol, the space and the defended model's settings."""

    suite_name: str
    suite_spec: PluginSpec
    suite: Suite
    protocol: TuningProtocol
    space: ZooSpace
    zoo: dict[str, str]           # attack -> version
    left_out: dict[str, str]      # attack -> why the suite cannot run any point of it
    defended: dict[str, Any]      # the defence's tuned settings ({}: none)
    validation: dict[str, Any]    # the suite params of the validation runs
    first: tuple[Point, ...] = ()  # run before the proposer's own points: the suite's validation attack


def plan(suite_name: str, defence: str, *, suite_params: dict[str, Any], tuned_from: Path | None) -> Plan:
    """Check everything a search needs (the protocol, the defence, every kind of the zoo and each candidate value
    against its Config; the optimiser installed) and build its space. Every problem is one ConfigError."""
    from harness.resolve import load_suite

    suite_spec, suite = load_suite(suite_name, suite_params)
    protocol = suite.tuning
    if protocol is None:
        raise ConfigError(f"suite '{suite_name}' declares no tuning protocol: nothing to tune an attacker on")
    registry.get("defence", defence)  # an unknown defence fails here
    if protocol.attacker_budget < protocol.trials:
        raise ConfigError(f"suite '{suite_name}' gives the attacker {protocol.attacker_budget} trials, fewer than the "
                          f"defender's {protocol.trials}")
    if not 0 <= protocol.capability_bound <= 1:
        raise ConfigError(f"capability_bound {protocol.capability_bound} of suite '{suite_name}' is not in [0, 1]")
    if protocol.sampler == "tpe":
        require_optuna()
    defended = tuned_settings(tuned_from, suite_name, suite.protocol_version, suite_spec.params, defence,
                              suite.world_params) \
        if tuned_from is not None else {}
    validation = {**suite_spec.params, **protocol.suite_params}
    kinds = list(protocol.attacks) if protocol.attacks is not None else default_zoo()
    if not kinds:
        raise ConfigError("no registered attack declares a search space: the attacker has nothing to search")
    spaces, zoo, left_out, problems = {}, {}, {}, []
    for kind in kinds:
        try:
            space, version, why = _kind_space(suite_name, defence, kind, defended, validation)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if why:
            left_out[kind] = why
        else:
            spaces[kind], zoo[kind] = space, version
    if problems:
        raise ConfigError(" | ".join(problems))
    if not spaces:
        raise ConfigError(f"no attack of the zoo can run on suite '{suite_name}': "
                          + "; ".join(f"{k}: {why}" for k, why in left_out.items()))
    first = _reference_point(suite_name, defence, protocol, defended, validation, spaces) \
        if protocol.attacker_starts_at_reference else ()
    return Plan(suite_name, suite_spec, suite, protocol, ZooSpace(spaces), zoo, left_out, defended, validation, first)


def _reference_point(suite_name: str, defence: str, protocol: TuningProtocol, defended: dict[str, Any],
                     validation: dict[str, Any], spaces: dict[str, dict[str, list[Any]]]) -> tuple[Point, ...]:
    """The suite's validation attack as a point of the attacker's space: its searched fields at the values a run of it
    takes. None (said so) where its kind is not searched or one of those values is not a candidate of its space."""
    from harness.resolve import resolve

    reference = protocol.attack
    space = spaces.get(reference.attack)
    if space is None:
        say(f"the tuned attacker does not start at the validation attack: '{reference.attack}' is not in its zoo")
        return ()
    spec, _, _ = resolve(suite_name, defence, reference.attack, tuned=defended,
                         extra={"suite": validation, "attack": dict(reference.params)})
    params = {field: spec.attack.params.get(field) for field in space}
    off = [f"{field}={value!r}" for field, value in params.items() if value not in space[field]]
    if off:
        say(f"the tuned attacker does not start at the validation attack: {', '.join(off)} of '{reference.attack}' "
            "is not a candidate of its space")
        return ()
    return (Point(reference.attack, params),)


def default_zoo() -> list[str]:
    """Every registered attack whose Config declares a search space (one that fails to load is named and left out)."""
    from rich.markup import escape

    out = []
    for name in registry.names("attack"):
        try:
            plugin = registry.get("attack", name)
        except PluginLoadError as exc:
            say(f"[yellow]left out of the attacker's zoo[/]: {escape(str(exc))}")
            continue
        if declares_space(plugin.config):
            out.append(name)
    return out


def _kind_space(suite_name: str, defence: str, kind: str, defended: dict[str, Any],
                validation: dict[str, Any]) -> tuple[dict[str, list[Any]], str, str]:
    """One kind's search space at the suite's values (each candidate validated against its Config), its version,
    and why it is left out ('' where it is not): no sample count of its space fits the validation attack split."""
    from harness.preflight import split_sizes
    from harness.resolve import resolve

    plugin = registry.get("attack", kind)
    spec, suite, _ = resolve(suite_name, defence, kind, tuned=defended, extra={"suite": validation})
    params = spec.attack.params
    space = {field: _distinct(values) for field, values in search_space(plugin.config, params).items()}
    if not space:
        raise ConfigError(f"attack '{kind}' of the attacker's zoo declares no search space (Field(json_schema_extra="
                          "{'search': [...]}) on its Config's fields)")
    for field, values in space.items():
        for value in values:
            validate_config(f"attack '{kind}' search space", plugin.config, {**params, field: value},
                            prefix="attack.")
    # `samples`, the shared convention of training plugins (the first N rows of the split; harness.preflight), is
    # the one field the suite's data bounds: candidates beyond the validation split are no points of this suite.
    rows = split_sizes(spec, suite)["attack"]
    if "samples" in space:
        space["samples"] = [n for n in space["samples"] if not isinstance(n, int) or n <= rows]
    elif isinstance(params.get("samples"), int) and params["samples"] > rows:
        space["samples"] = []
    why = "" if all(space.values()) else f"no sample count of its space fits the validation attack split ({rows} rows)"
    return space, plugin.version, why


def _distinct(values: list[Any]) -> list[Any]:
    """Candidates without repeats (integer scales can meet: 0.5 and 1 x 1 sample), in order."""
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def tune_attacker(suite_name: str, defence: str, *, store: Store, results_dir: Path, suite_params: dict[str, Any],
                  tuned_from: Path | None = None, seed: int = 0, test_worlds: Sequence[dict[str, Any]] = (),
                  attack_seeds: Sequence[int] = ()) -> AttackerLog:
    """Search the zoo against the defended model (defence seed `seed`) on the validation data, choose, run the
    chosen attack and the next best on the test data, and write the log. Returns the log.

    The test runs run in each of `test_worlds` (suite params that pick another world of the same config, e.g. a
    grid's `worlds`; default: the searched world) at each of `attack_seeds` (default: the defence seed), so the
    tuned attacker's numbers have the same units as the grid's cells: the attack chosen on one world's validation
    data, as the defences' settings are, then applied in every world."""
    p = plan(suite_name, defence, suite_params=suite_params, tuned_from=tuned_from)
    protocol, budget = p.protocol, p.protocol.attacker_budget
    path = attacker_log_path(results_dir, suite_name, p.suite.protocol_version, defence)
    failed = _earlier_failures(path)
    whole = p.space.size() <= budget
    proposer = make_proposer("whole" if whole else protocol.sampler, p.space, protocol.seed, first=p.first)
    runs_dir = log_path(results_dir, suite_name, p.suite.protocol_version, defence).parent / "runs"
    head = _head(p, defence, seed, "whole" if whole else protocol.sampler)
    trials: list[AttackTrial] = []
    skipped: list[SkippedPoint] = []
    seen: dict[str, Outcome] = {}
    while len(trials) < budget and (point := proposer.ask(seen)) is not None:
        result = _trial(p, defence, point, seed=seed, store=store, runs_dir=runs_dir, failed=failed,
                        label=f"tune-attack {defence} {len(trials) + 1}/{budget}")
        if isinstance(result, SkippedPoint):
            skipped.append(result)
            seen[point.key] = Outcome(0.0, 1.0)
        else:
            trials.append(result)
            seen[point.key] = outcome(result, protocol.capability_bound)
        proposer.tell(point, seen[point.key])
        write_log(path, AttackerLog(**head, trials=trials, skipped=skipped, finished=False))
    chosen, next_best = choose(trials)
    test = [_test_run(p, defence, t, role, seed=seed, store=store, results_dir=results_dir, world=dict(world),
                      attack_seed=attack_seed)
            for role, t in (("chosen", chosen), ("next best", next_best)) if t is not None
            for world in (test_worlds or [{}]) for attack_seed in (attack_seeds or [None])]
    log = AttackerLog(**head, trials=trials, skipped=skipped, finished=True, chosen=chosen, next_best=next_best,
                      test=test)
    write_log(path, log)
    return log


def outcome(trial: AttackTrial, bound: float) -> Outcome:
    """What the proposer learns: the score (0 for a failed run) and the distance past the capability bound."""
    if trial.score is None or trial.qa_defended is None or trial.qa_attacked is None:
        return Outcome(0.0, 1.0)
    return Outcome(trial.score, bound * trial.qa_defended - trial.qa_attacked - QA_TOLERANCE)


def choose(trials: list[AttackTrial]) -> tuple[AttackTrial | None, AttackTrial | None]:
    """The strongest feasible trial (ties: the one keeping more harmless QA, then the earlier), and the next best:
    the strongest feasible trial of another kind, else the second strongest."""
    ranked = sorted((t for t in trials if t.feasible), key=lambda t: (-(t.score or 0.0), -(t.qa_attacked or 0.0)))
    if not ranked:
        return None, None
    others = [t for t in ranked[1:] if t.attack != ranked[0].attack]
    return ranked[0], others[0] if others else (ranked[1] if len(ranked) > 1 else None)


def measured(record: Any, attack: str, params: dict[str, Any], bound: float, model: type[BaseModel] = AttackTrial,
             **extra: Any) -> Any:
    """A trial (or a reported test run) from a run record: the headline and the capability bound."""
    pre, post = record.metrics.pre_attack, record.metrics.post_attack
    access = post.access
    qa_defended, qa_attacked = pre.harmless_qa.exact_match, post.harmless_qa.exact_match
    return model(attack=attack, params=params, run_id=record.run_id,
                 score=access if access is not None else post.harmfulness.mean,
                 measure="access" if access is not None else "harmfulness", qa_defended=qa_defended,
                 qa_attacked=qa_attacked, feasible=qa_attacked >= bound * qa_defended - QA_TOLERANCE, **extra)


def _trial(p: Plan, defence: str, point: Point, *, seed: int, store: Store, runs_dir: Path,
           failed: dict[str, AttackTrial], label: str) -> AttackTrial | SkippedPoint:
    """Run one point on the validation data (an ordinary cached run), or say why the suite cannot run it."""
    from rich.markup import escape

    from harness.pipeline import run
    from harness.preflight import check_split_sizes
    from harness.resolve import resolve

    spec, suite, overrides = resolve(p.suite_name, defence, point.attack, seed=seed, tuned=p.defended,
                                     extra={"suite": p.validation, "attack": point.params})
    try:
        check_split_sizes(spec, suite, overrides)
    except HarnessError as exc:
        say(escape(f"[{label.rsplit(' ', 1)[0]}] skipped {point.attack} {point.params}: {exc}"))
        return SkippedPoint(attack=point.attack, params=point.params, reason=str(exc))
    say(escape(f"[{label}] {point.attack} {point.params}"))  # brackets are rich markup otherwise
    if spec.run_id in failed:
        return failed[spec.run_id]
    try:
        record, _ = run(spec, suite, overrides, store=store, results_dir=runs_dir)
    except PluginRefused as exc:  # the attack cannot run this point on this suite (e.g. its prompt is too long)
        say(escape(f"[{label.rsplit(' ', 1)[0]}] skipped {point.attack} {point.params}: {exc}"))
        return SkippedPoint(attack=point.attack, params=point.params, reason=str(exc))
    except RunFailed as exc:
        return AttackTrial(attack=point.attack, params=point.params, run_id=spec.run_id, score=None, measure=None,
                           qa_defended=None, qa_attacked=None, feasible=False, error=str(exc))
    return measured(record, point.attack, point.params, p.protocol.capability_bound)


def _test_run(p: Plan, defence: str, trial: AttackTrial, role: str, *, seed: int, store: Store, results_dir: Path,
              world: dict[str, Any], attack_seed: int | None) -> ReportedRun:
    """Run a chosen point on the test data of a world (an ordinary record under `results_dir`)."""
    from harness.pipeline import run
    from harness.preflight import check_split_sizes
    from harness.resolve import resolve

    spec, suite, overrides = resolve(p.suite_name, defence, trial.attack, seed=seed, attack_seed=attack_seed,
                                     tuned=p.defended,
                                     extra={"suite": {**p.suite_spec.params, **world}, "attack": trial.params})
    where = dict(world={k: v for k, v in world.items() if p.suite_spec.params.get(k) != v}, attack_seed=attack_seed)
    failure = dict(attack=trial.attack, params=trial.params, run_id=spec.run_id, score=None, measure=None,
                   qa_defended=None, qa_attacked=None, feasible=False, role=role, **where)
    try:
        check_split_sizes(spec, suite, overrides)  # the test split may hold fewer rows than the validation one
    except HarnessError as exc:
        return ReportedRun(**failure, error=str(exc))
    try:
        record, _ = run(spec, suite, overrides, store=store, results_dir=results_dir)
    except (PluginRefused, RunFailed) as exc:
        return ReportedRun(**failure, error=str(exc))
    return measured(record, trial.attack, trial.params, p.protocol.capability_bound, ReportedRun, role=role, **where)


def _head(p: Plan, defence: str, seed: int, sampler: str) -> dict[str, Any]:
    """The log's fields that say what was searched, and how."""
    protocol = p.protocol
    return dict(suite=p.suite_name, protocol_version=p.suite.protocol_version, suite_params=p.suite_spec.params,
                validation=dict(protocol.suite_params), defence=defence,
                defence_version=registry.get("defence", defence).version, defence_params=p.defended,
                defence_seed=seed, zoo=p.zoo, left_out=p.left_out, space=p.space.spaces,
                space_size=p.space.size(), sampler=sampler, sampler_seed=protocol.seed,
                capability_bound=protocol.capability_bound, trials_budget=protocol.attacker_budget,
                defender_trials_budget=protocol.trials,
                first=[FirstPoint(attack=q.attack, params=q.params) for q in p.first] if sampler != "whole" else [])


def _earlier_failures(path: Path) -> dict[str, AttackTrial]:
    """Failed runs of an earlier (or interrupted) search, by run id: they left no record to find cached."""
    try:
        earlier = read_log(path, AttackerLog)
    except CorruptRecordError:
        return {}
    return {t.run_id: t for t in earlier.trials if t.error} if earlier is not None else {}
