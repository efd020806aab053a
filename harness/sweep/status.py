"""What `harness sweep` prints: the dry-run cell list, the status table and the end-of-sweep summary (rich
tables on stderr, like every other progress output)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from harness.progress import console
from harness.store.artifacts import Store
from harness.sweep.grid import Plan
from harness.sweep.jobs import job_file
from harness.sweep.runner import STATES, SweepResult, attacker_done, cell_state, plain


def dry_run(the_plan: Plan, store: Store, results_dir: Path) -> None:
    """Every cell with its run id and whether it is done; nothing runs."""
    table = Table(title=f"{plain(the_plan.grid.suite)}: {len(the_plan.cells)} cells on {len(the_plan.nodes)} defended "
                  "model(s)", title_justify="left")
    for col in ("defended model", "attack", "run id", "state"):
        table.add_column(col)
    counts = dict.fromkeys(STATES, 0)
    for cell in the_plan.cells:
        state = "unknown" if the_plan.provisional else cell_state(the_plan, cell, store, results_dir)
        counts[state] = counts.get(state, 0) + 1
        defended, _, attack = cell.label.partition(" x ")
        table.add_row(plain(defended), plain(attack), cell.id, state)
    console.print(table)
    for note in dict.fromkeys(the_plan.notes.values()):  # once per defence, whatever its conditions
        console.print(plain(note), soft_wrap=True, highlight=False)
    if the_plan.provisional:
        console.print(f"{plain(the_plan.provisional)}: the run ids above are provisional (the model's revision enters "
                      "them), so which cells are done is known once a run locates it", soft_wrap=True)
    console.print(", ".join(f"{v} {k}" for k, v in counts.items() if v) + f" of {len(the_plan.cells)} cells",
                  highlight=False)
    for node in the_plan.attackers.values():
        done = attacker_done(the_plan, node, results_dir)
        console.print(f"{plain(node.label)} (seed {node.spec.seed}): {'done' if done else 'pending'}", highlight=False)


def status_table(the_plan: Plan, rows: dict[str, dict[str, int]]) -> None:
    table = Table(title=f"{plain(the_plan.grid.suite)}: {len(the_plan.cells)} cells", title_justify="left")
    table.add_column("defence")
    for state in STATES:
        table.add_column(state, justify="right")
    for group, row in rows.items():
        table.add_row(plain(group), *(str(row[s]) for s in STATES))
    table.add_row("total", *(str(sum(r[s] for r in rows.values())) for s in STATES), style="bold")
    console.print(table)


def summary(the_plan: Plan, result: SweepResult, store: Store) -> None:
    """Per defence: cells, done, failed; then the sweep's counts and every failure with its error."""
    table = Table(title=f"sweep {the_plan.grid.suite}: {result.seconds:.1f} s", title_justify="left")
    for col, justify in (("defence", "left"), ("cells", "right"), ("done", "right"), ("failed", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for group, row in result.by_group.items():
        table.add_row(plain(group), str(row["cells"]), str(row["done"]), str(row["failed"]))
    console.print(table)
    searches = f", {result.attackers} tuned-attacker search(es) finished" if the_plan.attackers else ""
    console.print(f"{result.already} cell(s) were done before, {result.ran} finished now, "
                  f"{len(result.failures)} job(s) failed; {result.defended} defended model(s) built or found"
                  f"{searches}", highlight=False)
    if not result.failures:
        return
    failed = Table(title="failures", title_justify="left")
    for col in ("job", "attempts", "error", "rerun one by hand"):
        failed.add_column(col, overflow="fold")
    for f in result.failures:
        failed.add_row(plain(f.label), str(f.attempts), plain(f.error),
                       f"python -m harness.sweep.jobs {job_file(store.root, f.id)}" if f.attempts else
                       "(its defended model failed)")
    console.print(failed)
