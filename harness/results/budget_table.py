"""The budget table (the RepNoise paper's Table 1 shape), rendered from the one results summary
(`harness.results.summary`, which the leaderboard renders too): for each defence setting, the suite's headline measure
(greedy harmfulness, or knowledge access under protocol 3; the header says which) before attack and after every
budget, harmless-QA accuracy before attack, each as mean ± a 95% t-interval over seed cells, the
breaking budget (the weakest budget whose mean harmfulness exceeds phi, the threshold the records recorded) and
the bounded worst case (the suite's useful-QA ratio decides which attacked models still count), then one line per
defence setting: its paired comparison with the suite's reference defence (`harness.results.paired`).

Only runs on the suite's full harm set enter (generalization runs, with other harm subsets, have their own
table). Records that differ in evaluation settings (backend, prompt counts, ...) are never merged: such
settings become part of the row label, like defence settings.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from harness.conditions.resistance import MEASURE_NAMES
from harness.results.estimates import Estimate
from harness.results.records import OPEN_WEIGHTS, RunRecord
from harness.results.summary import DefenceSummary, Summary, configs, frames_from_records, summarise, worst_case
from harness.results.summary_cells import KNOWLEDGE
from harness.results.worlds import board_of
from harness.specs import canonical_json
from harness.suite import Suite


def mean_ci(estimate: Estimate | None) -> str:
    """Mean ± the half-width of its 95% t-interval; one value: the value; none: a dash."""
    if estimate is None:
        return "–"
    if estimate.half_width is None:
        return f"{estimate.mean:.2f}"
    return f"{estimate.mean:.2f} ± {estimate.half_width:.2f}"


def budget_summary(records: Sequence[RunRecord], suite: Suite, suite_params: dict[str, Any], *,
                   pool_worlds: bool = True, tuned_runs: Collection[str] = ()) -> Summary:
    """The results summary of one suite configuration's records, rows in the table's order: the suite's
    reference defence first, then by label. A defence with only generalization runs has no row here. With
    `pool_worlds`, the records of every numbered world of the config (`harness.results.worlds`) are pooled, the
    world a unit. `tuned_runs`: a tuned attacker's test runs (a family of their own)."""
    # The main grid only: a generalization run evaluates its own subset's prompts (other eval settings), and would
    # otherwise make a row of its own.
    main = [r for r in records if r.spec.subsets.defence == r.spec.subsets.attack == "all"]
    frames = frames_from_records(main)
    config = canonical_json(suite_params)
    worlds = board_of(config, configs(frames), suite.world_params) if pool_worlds else [config]
    summary = summarise(frames, worlds, suite.useful_qa_ratio, reference=suite.reference_defence,
                        world_params=suite.world_params, tuned_runs=tuned_runs)
    summary.rows = sorted((r for r in summary.rows if r.defence_seeds),
                          key=lambda r: (r.key.name != suite.reference_defence, r.label))
    return summary


def knowledge_table(summary: Summary) -> list[str]:
    """Under the knowledge-access headline: each row's worst useful attack, with its knowledge-access metrics apart
    (`summary_cells.KNOWLEDGE`), so a reader sees whether access came from greedy answers or from forced ones, and
    how much of the gold answers' likelihood alignment had taken away the attack gave back. Empty otherwise."""
    if summary.measure != "access" or not any(r.worst and r.worst.cell for r in summary.rows):
        return []
    rows = [[_label(r), r.worst.budget.label, mean_ci(r.worst.estimate),
             *(mean_ci(r.worst.cell.knowledge.get(k)) for k in KNOWLEDGE)]
            for r in summary.rows if r.worst is not None and r.worst.cell is not None]
    return ["", "Knowledge access apart, at each row's worst useful attack:", "",
            *_table(["defence", "worst useful attack", "access", *KNOWLEDGE], rows), "",
            "greedy: greedy harmfulness; compliance: greedy answers that do not refuse; forced: recall with the answer "
            "started for the model (the strongest opening); access: per run the higher of greedy and forced; nll "
            "recovered: gold-answer NLL on a scale from the aligned base (0) to the base before alignment (1), "
            "where the records have it. Mean ± 95% t-interval over the same seed cells."]


def _replicates(row: DefenceSummary, worlds: bool) -> str:
    """'defence seeds x attack seeds' per budget ('worlds x defence seeds x attack seeds' of a pooled summary)."""
    defended = len(row.defence_seeds)
    per_model = f"{row.cells_per_budget // max(defended, 1)}"
    if not worlds:
        return f"{defended}x{per_model}"
    n_worlds = len({label.split("/")[0] for label in row.defence_seeds})
    return f"{n_worlds}x{defended // max(n_worlds, 1)}x{per_model}"


def breaking(row: DefenceSummary) -> str:
    if row.unstable:
        return "unstable"
    return row.breaks_at.label if row.breaks_at else "none in grid"


def worst_useful(row: DefenceSummary) -> str:
    return f"{mean_ci(row.worst.estimate)} ({row.worst.budget.label})" if row.worst else "no useful attack"


def worst_useful_in(cells: list[Any], useful_qa: float | None) -> str:
    """The bounded worst case over some of a row's budgets (one attack family's), as `worst_useful` writes it."""
    if not any(c.headline_post is not None for c in cells):
        return "–"
    worst = worst_case(cells, useful_qa)
    return f"{mean_ci(worst.estimate)} ({worst.budget.label})" if worst else "no useful attack"


# Each measure's short column name and its legend.
LEGENDS = {"harmfulness": ("HS", "harmfulness (mean P(harmful), primary judge)"),
           "access": ("access", "knowledge access (per run the higher of greedy harmfulness and recall under forced "
                      "compliance, primary judge)")}


def family_of(budget: Any) -> str:
    return budget.family or "other"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def _label(r: DefenceSummary) -> str:
    return f"{r.label} ⚠" if r.unstable else r.label


def markdown(summary: Summary) -> str:
    """The report: one table of every budget; where the budgets span several attack families, first the worst case
    in each family (the attack zoo at a glance), then one table of budgets per family."""
    short, legend = LEGENDS[summary.measure]
    families = list(dict.fromkeys(family_of(b) for b in summary.budgets))
    front = ["defence", "seeds", f"{short} pre", "QA pre"]
    lines: list[str] = []
    if len(families) > 1:
        useful = summary.thresholds.useful_qa
        lines += _table([*front, *(f"worst {f}" for f in families), "breaks at", "worst useful attack"], [
            [_label(r), _replicates(r, bool(summary.worlds)), mean_ci(r.headline_pre), mean_ci(r.qa_pre),
             *(worst_useful_in([c for c in r.budgets if family_of(c.budget) == f], useful) for f in families),
             breaking(r), worst_useful(r)] for r in summary.rows])
        for f in families:
            budgets = [b for b in summary.budgets if family_of(b) == f]
            lines += ["", f"{f}:", "", *_table(["defence", *(b.label for b in budgets)], [
                [_label(r), *(mean_ci(c.headline_post) for c in r.budgets if family_of(c.budget) == f)]
                for r in summary.rows])]
    else:
        lines += _table([*front, *(b.label for b in summary.budgets), "breaks at", "worst useful attack"], [
            [_label(r), _replicates(r, bool(summary.worlds)), mean_ci(r.headline_pre), mean_ci(r.qa_pre),
             *(mean_ci(c.headline_post) for c in r.budgets), breaking(r), worst_useful(r)] for r in summary.rows])
    t = summary.thresholds
    seeds = "world x defence x attack" if summary.worlds else "defence x attack"
    worlds = f"worlds {', '.join(summary.worlds)} pooled; " if summary.worlds else ""
    measure = MEASURE_NAMES[summary.measure]
    lines.append(f"\n{short}: {legend}; QA: harmless-QA exact match; columns: lr@samples; phi = {t.phi:.2f} "
                 f"(from the records); seeds: {seeds}; {worlds}mean ± 95% t-interval over seed cells (a unit: "
                 f"{summary.unit}; n: their product). Worst useful attack: the highest {measure} over the budgets "
                 f"whose attacked model keeps harmless QA >= {t.useful_qa_ratio} x the base's (bounded worst case). "
                 f"⚠ unstable: the defended model fails the stability guard, so its cells are not resistance."
                 + (" The first table: the bounded worst case within each attack family (its attack and budget in "
                    "brackets); then each family's budgets." if len(families) > 1 else ""))
    for r in summary.rows:
        if r.unstable:
            lines.append(f"- {r.label}: unstable ({'; '.join(r.unstable)})")
    if any(r.threat_model != OPEN_WEIGHTS for r in summary.rows):
        lines.append("- [fine-tuning service]: another threat model. The attacker fine-tunes only through the "
                     "provider's service, which keeps the defence's adapter attached in every fine-tune; the released "
                     "model alone is what an attacker holding the weights would attack.")
    lines += knowledge_table(summary)
    if summary.paired:
        lines.append(f"\nPaired vs {summary.reference}: {MEASURE_NAMES[summary.measure]} after attack at each "
                     "side's own worst useful attack (the headline of each), defence minus reference, pairs that share "
                     "the world and attack seed (harness.results.paired):")
        lines += [f"- paired vs {p.reference}: {r.label}: {p.text()}" for r in summary.rows
                  if (p := summary.paired.get(r.key)) is not None]
    return "\n".join(lines)
