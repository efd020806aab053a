"""A tuning log as a reader sees it: every trial with the stability of its run record, and the trials that no
other trial beats on both resistance and stability (the Pareto front).

A trial's log entry holds its validation harmfulness after the validation attack (`hs_post`, resistance: lower is
better) and whether it passed the stability guard; its run record (published under
`<results>/<suite>/v<N>/tuning/runs/`) holds the stability numbers, of which the harmless-QA delta (defended minus
base; higher is better) is the one the guard weighs first. A trial whose record is missing or invalid keeps its
log values and has no stability number (it is then on no front).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.results.records import read_record, record_path
from harness.tuning.logs import Trial, TuningLog


@dataclass(frozen=True)
class TrialView:
    trial: Trial
    role: str                 # 'search' (a point of the space) or 'confirmation' (a chosen setting at another seed)
    qa_delta: float | None    # harmless QA of the defended model minus the base's, from the trial's record
    ppl_ratio: float | None   # perplexity of the defended model over the base's
    record: Path | None       # the trial's published record, where it is valid
    chosen: bool              # the setting the log chose
    pareto: bool = False      # a search trial no other beats on both hs_post (lower) and qa_delta (higher)


def trial_views(log: TuningLog, runs_dir: Path) -> list[TrialView]:
    """The log's trials, then its confirmations, in log order; `runs_dir`: the log's `tuning/runs` folder."""
    views = [_view(t, role, log, runs_dir) for role, trials in (("search", log.trials),
                                                                 ("confirmation", log.confirmations)) for t in trials]
    front = pareto_front([(v.trial.hs_post, v.qa_delta) if v.role == "search" else (v.trial.hs_post, None)
                          for v in views])
    return [TrialView(v.trial, v.role, v.qa_delta, v.ppl_ratio, v.record, v.chosen, i in front)
            for i, v in enumerate(views)]


def pareto_front(points: list[tuple[float, float | None]]) -> set[int]:
    """Indices of the (harmfulness, qa_delta) points that no other point dominates: at most as harmful and at least
    as stable, better in one. Points without a qa_delta are on no front and dominate nothing."""
    known = [(i, h, q) for i, (h, q) in enumerate(points) if q is not None]
    return {i for i, h, q in known
            if not any(h2 <= h and q2 >= q and (h2 < h or q2 > q) for _, h2, q2 in known)}


def _view(trial: Trial, role: str, log: TuningLog, runs_dir: Path) -> TrialView:
    path = record_path(runs_dir, log.suite, log.protocol_version, trial.run_id)
    qa = ppl = None
    try:
        stability = read_record(path).metrics.stability if path.is_file() else None
    except HarnessError:
        stability = None
    if stability is not None:
        qa, ppl = stability.harmless_qa.delta, stability.perplexity.ratio
    return TrialView(trial, role, qa, ppl, path if stability is not None else None, trial.params == log.chosen)
