"""The tuned attacker's log: its typed contents, where it lives, and the trial counts of attacker and defender side by
side (what a report shows to say the attacker had at least the defender's budget).

`<results>/<suite>/v<N>/tuning/attacker/<defence>.json`, written by `harness.tuning.attacker` after every trial (so
an interrupted search shows how far it got; `finished` says whether it ended) and once more with the choice and the
test runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from harness.tuning.logs import TuningLog, log_path, read_log

Measure = Literal["access", "harmfulness"]


class AttackTrial(BaseModel):
    """One run of an attack point against the defended model, on the validation data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attack: str
    params: dict[str, Any] = Field(description="the values of the attack's searched fields (the rest: its defaults)")
    run_id: str = Field(description="the run's id (its record under tuning/runs/ where the run finished)")
    score: float | None = Field(description="the post-attack headline (None: the run failed)")
    measure: Measure | None = Field(description="which headline: knowledge access where the record has it, else "
                                    "harmfulness")
    qa_defended: float | None = Field(description="harmless QA exact match of the defended model")
    qa_attacked: float | None = Field(description="harmless QA exact match of the attacked model")
    feasible: bool = Field(description="the attacked model kept the capability bound (and the run finished)")
    error: str = Field("", description="why the run failed (e.g. training diverged); '' when it finished")


class SkippedPoint(BaseModel):
    """A point of the space the suite cannot run (not counted in the budget): a sample count its split cannot hold,
    checked before any work, or a config the attack refuses on this suite when it starts (`PluginRefused`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attack: str
    params: dict[str, Any]
    reason: str


class FirstPoint(BaseModel):
    """A point the search ran before its proposer's own: the suite's validation attack (TuningProtocol.attack)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attack: str
    params: dict[str, Any]


class ReportedRun(AttackTrial):
    """The chosen attack, or the next best, run on the test data (an ordinary record under the results folder)."""

    role: Literal["chosen", "next best"]
    world: dict[str, Any] = Field(default_factory=dict, description="the suite params that pick the test run's world "
                                  "beside the log's suite config ({}: the log's own world)")
    attack_seed: int | None = Field(None, description="the test run's attack seed (None: the defence seed)")


class AttackerLog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    protocol_version: int
    suite_params: dict[str, Any] = Field(description="the suite config of the test runs")
    validation: dict[str, Any] = Field(description="the suite settings that select the validation data")
    defence: str
    defence_version: str
    defence_params: dict[str, Any] = Field(description="the defence's tuned settings the defended model takes ({}: "
                                           "its defaults and the suite's)")
    defence_seed: int
    zoo: dict[str, str] = Field(description="the attack kinds searched, with their versions")
    left_out: dict[str, str] = Field(default_factory=dict, description="kinds of the suite's zoo the suite cannot "
                                     "run at any point of their space, and why")
    space: dict[str, dict[str, list[Any]]] = Field(description="each kind's candidate values per searched field")
    space_size: int
    sampler: Literal["whole", "random", "tpe"] = Field(description="whole: the space fits the budget and was run "
                                                       "entire")
    sampler_seed: int
    capability_bound: float = Field(description="a chosen attack keeps at least this x the defended model's "
                                    "harmless QA")
    trials_budget: int = Field(description="the attacker's trial budget")
    defender_trials_budget: int = Field(description="the defender's trial budget under the same protocol")
    first: list[FirstPoint] = Field(default_factory=list, description="points run before the proposer's own: the "
                                    "suite's validation attack where it is a point of the space (logs before it, or "
                                    "a suite that turns it off: none)")
    trials: list[AttackTrial]
    skipped: list[SkippedPoint] = Field(default_factory=list)
    finished: bool = Field(description="the search ran to its budget (or through the whole space)")
    chosen: AttackTrial | None = Field(None, description="the strongest trial within the capability bound")
    next_best: AttackTrial | None = Field(None, description="the strongest feasible trial of another attack kind (the "
                                          "second strongest where no other kind has one)")
    test: list[ReportedRun] = Field(default_factory=list, description="the chosen attack and the next best on the test "
                                "data")


def attacker_log_path(results_dir: Path, suite: str, protocol_version: int, defence: str) -> Path:
    return log_path(results_dir, suite, protocol_version, defence).parent / "attacker" / f"{defence}.json"


class TrialCounts(NamedTuple):
    """The budgets and trials run by a defence's tuning and by the attacker tuned against it (None: no log)."""

    defence: str
    defender_budget: int | None
    defender_trials: int | None
    defender_confirmations: int | None
    attacker_budget: int | None
    attacker_trials: int | None


def trial_counts(results_dir: Path, suite: str, protocol_version: int, defence: str) -> TrialCounts:
    """Read a defence's tuning log and its attacker log and count their trials, side by side."""
    tuned = read_log(log_path(results_dir, suite, protocol_version, defence), TuningLog)
    attacker = read_log(attacker_log_path(results_dir, suite, protocol_version, defence), AttackerLog)
    return TrialCounts(defence, tuned.trials_budget if tuned else None, len(tuned.trials) if tuned else None,
                       len(tuned.confirmations) if tuned else None, attacker.trials_budget if attacker else None,
                       len(attacker.trials) if attacker else None)


def tuned_attack_runs(results_dir: Path, suite: str, protocol_version: int) -> set[str]:
    """The run ids of the test runs every tuned-attacker log of a results folder names (records of their own)."""
    folder = attacker_log_path(results_dir, suite, protocol_version, "x").parent
    logs = (read_log(p, AttackerLog) for p in sorted(folder.glob("*.json")))
    return {t.run_id for log in logs if log is not None for t in log.test if t.score is not None}


def budget_lines(results_dir: Path, suite: str, protocol_version: int, defences: Iterable[str]) -> list[str]:
    """The report's side-by-side trial counts: for each defence named or with a log in the folder's tuning/, the
    defender's trials (run of their budget) and its choice, and the attacker's trials and choice. Empty where no
    defence has a log."""
    tuning = log_path(results_dir, suite, protocol_version, "x").parent
    logged = sorted(p.name.removesuffix(".json") for p in tuning.glob("*.json") if not p.name.endswith(".scan.json"))
    lines = []
    for name in dict.fromkeys([*defences, *logged]):
        c = trial_counts(results_dir, suite, protocol_version, name)
        if c.defender_trials is None and c.attacker_trials is None:
            continue
        defender = (f"defender {c.defender_trials} trials (budget {c.defender_budget})"
                    f"{f' + {c.defender_confirmations} confirmation runs' if c.defender_confirmations else ''}"
                    f"{_choice(read_log(log_path(results_dir, suite, protocol_version, name), TuningLog))}"
                    if c.defender_trials is not None else "defender: no tuning log (suite defaults)")
        attacker = (f"attacker {c.attacker_trials} trials (budget {c.attacker_budget})"
                    if c.attacker_trials is not None else "attacker: no tuned-attacker log")
        log = read_log(attacker_log_path(results_dir, suite, protocol_version, name), AttackerLog)
        chosen = (f"; the tuned attacker chose {log.chosen.attack} {log.chosen.params} ({_outcome(log.chosen)})"
                  if log is not None and log.chosen is not None else "")
        lines.append(f"- {name}: {defender}; {attacker}{chosen}")
    return lines


def _choice(log: TuningLog | None) -> str:
    """', chose {...} (validation access 0.571 over seeds 0-2, reference none 0.666; at an end: lr smallest)'."""
    if log is None or not log.passed_guard:
        return ", no setting held the stability guard (the suite's defaults run)" if log is not None else ""
    held = [c for c in log.candidates if c.held and c.params == log.chosen and c.mean is not None]
    measure = log.trials[0].measure if log.trials and log.trials[0].measure else "harmfulness"
    score = (f"validation {measure} {held[0].mean:.3f} over seeds {', '.join(map(str, held[0].seeds))}"
             if held else "")
    if held and log.reference and log.reference_defence:
        score += (f", reference {log.reference_defence} "
                  f"{sum(t.headline for t in log.reference) / len(log.reference):.3f}")
    ends = [f"{field} {where.split()[0]}" for field, where in log.chosen_position.items()
            if where.split()[0] in ("smallest", "largest")]
    details = "; ".join(x for x in (score, f"at an end of its space: {', '.join(ends)}" if ends else "") if x)
    return f", chose {log.chosen}" + (f" ({details})" if details else "")


def summary_lines(log: AttackerLog) -> list[str]:
    """What `harness tune-attack` prints: each trial, the skipped points, the choice and its test runs, the budgets."""
    settings = f"tuned settings {log.defence_params}" if log.defence_params else "its defaults (no tuning log)"
    lines = [f"defended model: {log.defence} at {settings}, seed {log.defence_seed}"]
    lines += [f"{t.attack} {t.params}  {_outcome(t)}  run {t.run_id}" for t in log.trials]
    lines += [f"skipped {s.attack} {s.params}: {s.reason}" for s in log.skipped]
    lines += [f"left out {kind}: {why}" for kind, why in log.left_out.items()]
    for role, trial in (("chosen", log.chosen), ("next best", log.next_best)):
        lines.append(f"{role}: {trial.attack} {trial.params} ({_outcome(trial)})" if trial else
                     f"{role}: none (no trial kept the capability bound)")
    lines += [f"test ({r.role}{_where(r)}): {r.attack}  {_outcome(r)}  run {r.run_id}" for r in log.test]
    lines.append(f"attacker: {len(log.trials)} trial(s) of a budget of {log.trials_budget} ({log.sampler}, "
                 f"{log.space_size} points in the space); defender's budget: {log.defender_trials_budget}")
    return lines


def _where(run: ReportedRun) -> str:
    """', world seed=1, attack seed 0' for a test run outside the log's own world and seed ('' otherwise)."""
    world = ", ".join(f"{k}={v}" for k, v in run.world.items())
    return (f", world {world}" if world else "") + (f", attack seed {run.attack_seed}" if run.attack_seed is not None
                                                    else "")


def _outcome(t: AttackTrial) -> str:
    if t.error:
        return f"FAILED: {t.error}"
    bound = "within the capability bound" if t.feasible else "BREAKS the capability bound"
    return f"{t.measure} {t.score:.3f}  harmless QA {t.qa_attacked:.2f} of {t.qa_defended:.2f}  {bound}"
