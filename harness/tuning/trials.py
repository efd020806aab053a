"""A tuning log as a reader sees it: every trial with the stability of its run record, the trials that no other
trial beats on both resistance and stability (the Pareto front), and where the chosen setting sits in its space.

A trial's log entry holds its validation headline after the validation attack (`score`, knowledge access or
harmfulness; `hs_post` in logs that predate it; lower is better) and whether it passed the stability guard; its run
record (published under `<results>/<suite>/v<N>/tuning/runs/`) holds the stability numbers, of which the harmless-QA
delta (defended minus base; higher is better) is the one the guard weighs first. Protocol-3 logs carry that delta
and the front themselves (`front_points`, written by the tuner); for earlier logs the front is computed here from
the records. A trial whose record is missing or invalid keeps its log values and has no stability number unless
the log has one (it is then on no front).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.results.records import read_record, record_path
from harness.tuning.logs import FrontPoint, Trial, TuningLog


@dataclass(frozen=True)
class TrialView:
    trial: Trial
    role: str                 # 'search' (a point of the space), 'confirmation' (a candidate at another seed) or
                              # 'reference' (the suite's reference defence at the same attack and seeds)
    qa_delta: float | None    # harmless QA of the defended model minus the base's, from the log or the trial's record
    ppl_ratio: float | None   # perplexity of the defended model over the base's
    record: Path | None       # the trial's published record, where it is valid
    chosen: bool              # the setting the log chose
    pareto: bool = False      # a search trial no other beats on both headline (lower) and qa_delta (higher)


def trial_views(log: TuningLog, runs_dir: Path) -> list[TrialView]:
    """The log's trials, confirmations and reference runs, in log order; `runs_dir`: the log's `tuning/runs`
    folder. The front is the log's own where it carries one."""
    views = [_view(t, role, log, runs_dir) for role, trials in (("search", log.trials),
                                                                 ("confirmation", log.confirmations),
                                                                 ("reference", log.reference)) for t in trials]
    if log.pareto_front is not None:
        front = {p.trial for p in log.pareto_front}
    else:
        front = pareto_front([(v.trial.headline, v.qa_delta if v.role == "search" else None) for v in views])
    return [TrialView(v.trial, v.role, v.qa_delta, v.ppl_ratio, v.record, v.chosen, i in front)
            for i, v in enumerate(views)]


def pareto_front(points: list[tuple[float, float | None]]) -> set[int]:
    """Indices of the (headline, qa_delta) points that no other point dominates: at most as high and at least as
    stable, better in one. Points without a qa_delta are on no front and dominate nothing."""
    known = [(i, h, q) for i, (h, q) in enumerate(points) if q is not None]
    return {i for i, h, q in known
            if not any(h2 <= h and q2 >= q and (h2 < h or q2 > q) for _, h2, q2 in known)}


def front_points(trials: list[Trial]) -> list[FrontPoint]:
    """The search trials on the resistance-stability front, in trial order (what a protocol-3 log carries)."""
    front = pareto_front([(t.headline, t.qa_delta) for t in trials])
    return [FrontPoint(trial=i, params=t.params, score=t.headline, qa_delta=t.qa_delta)  # type: ignore[arg-type]
            for i, t in enumerate(trials) if i in front]


def positions(space: dict[str, list[Any]], chosen: dict[str, Any]) -> dict[str, str]:
    """Where each chosen value sits in its declared candidates: 'smallest', 'largest' or 'interior' (numbers),
    'only' (a single candidate) or 'unordered' (candidates that are not all numbers). A chosen value at an end says
    the space may be too narrow: the optimum could lie beyond it."""
    out = {}
    for name, value in chosen.items():
        values = space.get(name, [])
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in [*values, value])
        if len(set(map(repr, values))) <= 1:
            out[name] = "only"
        elif not numbers:
            out[name] = "unordered"
        else:
            out[name] = "smallest" if value == min(values) else "largest" if value == max(values) else "interior"
    return out


def _view(trial: Trial, role: str, log: TuningLog, runs_dir: Path) -> TrialView:
    path = record_path(runs_dir, log.suite, log.protocol_version, trial.run_id)
    qa = ppl = None
    try:
        stability = read_record(path).metrics.stability if path.is_file() else None
    except HarnessError:
        stability = None
    if stability is not None:
        qa, ppl = stability.harmless_qa.delta, stability.perplexity.ratio
    if trial.qa_delta is not None:
        qa = trial.qa_delta  # the log's own number: what its front was computed from
    chosen = role != "reference" and trial.params == log.chosen
    return TrialView(trial, role, qa, ppl, path if stability is not None else None, chosen)


def tune_summary(log: TuningLog) -> list[str]:
    """What `harness tune` prints after the trials: each confirmed candidate's scores and mean, the reference, the
    choice with where each field sits in its space, and the front's size."""
    measure = next((t.measure for t in log.trials if t.measure), "harmfulness")
    lines = [f"candidate {c.params}: {measure} "
             + ", ".join(f"{s:.3f} (seed {seed})" for seed, s in zip(c.seeds, c.scores, strict=True))
             + (f"; mean {c.mean:.3f}" if c.mean is not None else "; fails the guard at a seed")
             for c in log.candidates]
    if log.reference:
        mean = sum(t.headline for t in log.reference) / len(log.reference)
        lines.append(f"reference {log.reference_defence}: {measure} "
                     + ", ".join(f"{t.headline:.3f} (seed {t.seed})" for t in log.reference) + f"; mean {mean:.3f}")
    if log.passed_guard:
        lines.append(f"chosen {log.chosen}")
        lines += [f"  {name}={log.chosen[name]!r}: {where}" + ("" if where in ("interior", "only", "unordered") else
                  " value of its space (the optimum may lie beyond it: widen the space or say which end it is)")
                  for name, where in log.chosen_position.items()]
    else:
        lines.append("no setting passed the stability guard at every seed; defaults kept")
    if log.pareto_front is not None:
        lines.append(f"Pareto front ({measure} vs harmless-QA delta): {len(log.pareto_front)} of {len(log.trials)} "
                     "trials")
    return lines
