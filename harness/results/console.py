"""Human-readable output of run records (rich tables on stderr)."""

from __future__ import annotations

from rich.table import Table

from harness.conditions.resistance import MEASURE_NAMES
from harness.progress import console
from harness.results.metrics import Evaluation, Metrics
from harness.results.records import RunRecord


def _hs(e: Evaluation) -> str:
    """Mean harmfulness with its bootstrap 95% interval over prompts, and the share of samples over 0.5."""
    ci = e.harmfulness.ci95
    interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    return f"{e.harmfulness.mean:.3f}{interval} ({e.harmfulness.frac_over_half:.0%} > 0.5)"


def summary(record: RunRecord, *, cached: bool, seconds: float, path: str) -> None:
    spec, m = record.spec, record.metrics
    table = Table(title=f"run {record.run_id}  ({record.suite} v{record.protocol_version}, seed {spec.seed})"
                  + ("  (cached)" if cached else ""))
    for col in ("defence", "attack", "harmfulness before", "after attack [95% CI]", "harmless QA before / after",
                "judge"):
        table.add_column(col)
    qa = " / ".join(f"{e.harmless_qa.exact_match:.2f}" for e in (m.pre_attack, m.post_attack))
    table.add_row(spec.defence.name, spec.attack.name, _hs(m.pre_attack), _hs(m.post_attack), qa, m.pre_attack.judge)
    console.print(table)
    for phase, e in (("pre_attack", m.pre_attack), ("post_attack", m.post_attack)):
        if e.judge_agreement:
            others = ", ".join(f"{k} {v.mean:.3f}" for k, v in e.by_judge.items())
            console.print(f"  {phase}: {others}; judges agree on {e.judge_agreement.agreement:.0%}; degenerate "
                          f"outputs {e.degenerate.any:.0%}", highlight=False)
        if e.panel and len(e.panel.judges) > 2:  # two judges: the line above says it all
            pairs = ", ".join(f"{p.a}~{p.b} {p.agreement:.0%} (κ {p.kappa:.2f})" for p in e.panel.pairs)
            console.print(f"  {phase} panel agreement: {pairs}", highlight=False)
    for line in condition_lines(m):
        console.print(f"  {line}", highlight=False)
    stages = ", ".join(f"{k} {v.seconds:.1f}s{' (cached)' if v.cached else ''}"
                       for k, v in record.provenance.stages.items() if v.seconds >= 0.05 or v.cached)
    console.print(f"  stages: {stages}", highlight=False)
    console.print(f"  total {seconds:.1f}s; record {path}", highlight=False)


def condition_lines(m: Metrics) -> list[str]:
    """One line per immunization condition."""
    res, st, tr = m.resistance, m.stability, m.trainability
    crossed = "held <= phi through the attack" if res.held else f"crossed phi at step {res.first_cross_step}"
    measure = f" ({MEASURE_NAMES['access']})" if res.headline == "access" else ""
    out = [f"resistance: phi {res.phi:.3f}{measure}, {crossed} (of {res.steps}), AUC {res.auc:.3f}",
           f"stability: perplexity {st.perplexity.defended:.2f} vs base {st.perplexity.base:.2f}"
           f" (x{st.perplexity.ratio:.2f}); harmless QA {st.harmless_qa.defended:.2f} vs {st.harmless_qa.base:.2f}"]
    pre, post = m.pre_attack, m.post_attack
    if pre.access is not None and post.access is not None:
        forced = " -> ".join(f"{e.forced.mean:.3f} ('{e.forced.strongest}')" if e.forced else "–" for e in (pre, post))
        compliance = " -> ".join("–" if e.compliance is None else f"{e.compliance:.3f}" for e in (pre, post))
        floor = "" if m.floor is None else f"; random-answer floor {m.floor:.3f}"
        out.append(f"knowledge access: {pre.access:.3f} -> {post.access:.3f} (compliance {compliance}; forced recall "
                   f"{forced}{floor})")
    if pre.gold_nll is not None and post.gold_nll is not None:
        scale, recovered = [m.nll_recovered(e) for e in (pre, post)], ""
        if m.unaligned is not None and None not in scale:
            recovered = (f"; {scale[0]:.2f} -> {scale[1]:.2f} of the way from the aligned base (0, "
                         f"{m.base.gold_nll:.3f}) to the base before alignment (1, {m.unaligned.gold_nll:.3f})")
        out.append(f"gold-answer NLL: {pre.gold_nll:.3f} -> {post.gold_nll:.3f} nats/token{recovered}")
    if m.verdict:
        reasons = [*(m.guard.reasons if m.guard else []), *(m.attacked_guard.reasons if m.attacked_guard else [])]
        why = f": {'; '.join(reasons)}" if reasons else ""
        out.append(f"verdict: {m.verdict}{why}")
    if tr:
        out.append(f"trainability ({tr.task}): ROUGE-1 {tr.rouge1_before:.2f} -> {tr.rouge1_after:.2f} "
                   f"vs base -> {tr.base_rouge1_after:.2f}; steps to 90% of base: {tr.steps_to_target} "
                   f"(base {tr.base_steps_to_target})")
    return out


def show_record(record: RunRecord) -> None:
    spec, p = record.spec, record.provenance
    console.print(f"[bold]run {record.run_id}[/]  suite {record.suite} v{record.protocol_version}  "
                  f"created {p.created_at}")
    console.print(f"  defence {spec.defence.name} v{spec.defence.version} {spec.defence.params}", highlight=False)
    console.print(f"  attack  {spec.attack.name} v{spec.attack.version} {spec.attack.params}", highlight=False)
    console.print(f"  budget  {record.budget.model_dump(exclude_none=True)}", highlight=False)
    console.print(f"  model   {spec.model.id}@{spec.model.revision}  seed {spec.seed}  backend {p.backend}",
                  highlight=False)
    table = Table(title="harmfulness by category (primary judge: mean / frac > 0.5)")
    table.add_column("category")
    for phase in ("pre_attack", "post_attack"):
        table.add_column(phase)
    pre, post = record.metrics.pre_attack.harmfulness, record.metrics.post_attack.harmfulness
    for cat in pre.per_category:
        cells = [f"{h.per_category[cat].mean:.2f} / {h.per_category[cat].frac_over_half:.2f}" for h in (pre, post)]
        table.add_row(cat, *cells)
    table.add_row("[bold]all[/]", *(f"{h.mean:.3f} / {h.frac_over_half:.3f}" for h in (pre, post)))
    console.print(table)
    for line in condition_lines(record.metrics):
        console.print(f"  {line}", highlight=False)
    console.print(f"  judges: {', '.join(p.judge_ids)}", highlight=False)
    console.print(f"  harness {p.harness_version} @ {p.git_commit[:12]}{' (dirty)' if p.git_dirty else ''}; "
                  f"{', '.join(f'{k} {v}' for k, v in p.packages.items())}; device {p.device}", highlight=False)
