"""What did a committed grid and its tuning cost? Prints, from the records' own provenance (the seconds each
stage took when it was computed, not when it was a cache hit), the compute time per defence and stage kind,
for the grid and for the defences' tuning trials.

    python benchmarks/grid_cost.py [results/tiny/v2]
    python benchmarks/grid_cost.py runs/tiny/v3 --project grids/tiny-v3.yaml [GRID ...] --workers 2 \
        [--tuning results/tiny/v3/tuning/runs]

`--project` plans each grid file (as `harness sweep --dry-run` does) and prices its cells and defended models from
the measured records of the folder (grid records and tuning trials): a cell at the median of the computed attack,
post-attack and conditions stages of the records with its attack, samples and epochs (an unmeasured budget: the
attack's measured seconds per sample-epoch times its samples and epochs, plus the median post-attack evaluation);
a defended model at the median computed defend stage of the defence's tuning trials at its tuned settings (else
of all its trials), plus the median pre-attack, stability and trainability stages of any record (a sweep computes
them in its defend jobs, where records see cache hits: tuning trials compute the first two). Cells already
recorded in the folder cost nothing. What was estimated rather than measured is said so.

Compute time is summed over processes (one thread each): with P processes on P free cores the grid's wall time
is about compute / P plus process start-up (a sweep prints its measured wall time at the end). Stage seconds
are wall seconds of the process that computed them, so they include any contention on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from harness.results.records import load_records

KINDS = (("prepare", "prepare"), ("defend", "defend"), ("base.", "base eval"), ("pre_attack.", "pre-attack eval"),
         ("attack", "attack + curve"), ("post_attack.", "post-attack eval"), ("stability.", "stability"),
         ("trainability.", "trainability"), ("conditions", "conditions"))


def kind_of(stage: str) -> str:
    return next((label for prefix, label in KINDS if stage.startswith(prefix)), "other")


def costs(records: list) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Seconds of computed (not cached) stages per defence and stage kind; records per defence. `prepare` is
    counted once per record (loading the built suite) only where it was computed."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    n: dict[str, int] = defaultdict(int)
    for r in records:
        name = r.spec.defence.name
        n[name] += 1
        for stage, info in r.provenance.stages.items():
            if not info.cached:
                out[name][kind_of(stage)] += info.seconds
    return out, n


def table(title: str, records: list) -> None:
    per, n = costs(records)
    kinds = [label for _, label in KINDS if any(label in v for v in per.values())]
    print(f"\n{title}: compute seconds of stages that ran (cache hits excluded)")
    print("| defence | records | " + " | ".join(kinds) + " | total | per record |")
    print("|---" * (len(kinds) + 4) + "|")
    total = 0.0
    for name in sorted(per):
        row = per[name]
        s = sum(row.values())
        total += s
        print(f"| {name} | {n[name]} | " + " | ".join(f"{row.get(k, 0):.0f}" for k in kinds)
              + f" | {s:.0f} | {s / n[name]:.1f} |")
    print(f"| **all** | {sum(n.values())} | " + " | ".join(
        f"{sum(v.get(k, 0) for v in per.values()):.0f}" for k in kinds) + f" | {total:.0f} | "
        f"{total / max(sum(n.values()), 1):.1f} |")


CELL_KINDS = ("attack + curve", "post-attack eval", "conditions")
NODE_KINDS = ("pre-attack eval", "stability", "trainability")


def computed(record, kinds) -> float | None:
    """Seconds of the record's computed stages of these kinds (None: none of them was computed here)."""
    found = [i.seconds for stage, i in record.provenance.stages.items() if kind_of(stage) in kinds and not i.cached]
    return sum(found) if found else None


def work(spec) -> tuple[str, int, int]:
    params = spec.attack.params
    return spec.attack.name, int(params.get("samples") or 0), int(params.get("epochs") or 1)


def project(paths: list[Path], grid: list, tuning: list, workers: int) -> None:
    """Price every planned cell and defended model of the grid files from the measured records."""
    import tempfile

    from harness.sweep.grid import load_grid, plan

    done = {r.run_id for r in grid}
    measured = [r for r in [*grid, *tuning] if r.spec.subsets.attack == "all"]
    cell_s: dict[tuple, list[float]] = defaultdict(list)
    attack_rate: dict[str, list[float]] = defaultdict(list)
    post: list[float] = []
    for r in measured:
        attack = computed(r, ("attack + curve",))
        evaluation = computed(r, ("post-attack eval",))
        if attack is None or evaluation is None:
            continue
        name, samples, epochs = work(r.spec)
        if r in grid:  # tuning trials draw no curve and run on the validation split: not a grid cell's cost
            cell_s[work(r.spec)].append(computed(r, CELL_KINDS))
        if samples:
            attack_rate[name].append(attack / (samples * epochs))
        post.append(evaluation)
    node_parts = {k: [v for r in measured if (v := computed(r, (k,))) is not None] for k in NODE_KINDS}
    node_extra = sum(statistics.median(v) for v in node_parts.values() if v)
    missing_node = [k for k, v in node_parts.items() if not v]
    defend: dict[str, list[tuple[dict, float]]] = defaultdict(list)
    for r in tuning:
        if (s := computed(r, ("defend",))) is not None:
            defend[r.spec.defence.name].append((r.spec.defence.params, s))
    estimated: set[str] = set()
    rows: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0])
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            the_plan = plan(load_grid(path), results_dir=Path(tmp), tuned_from=Path("results"), locate=False)
            for node in the_plan.nodes.values():
                name = node.spec.defence.name
                trials = defend.get(name, [])
                exact = [s for params, s in trials if params == node.spec.defence.params]
                seconds = statistics.median(exact or [s for _, s in trials] or [0.0])
                if not exact:
                    estimated.add(f"{name}: defend ({'all its trials' if trials else 'no trial: 0 s'})")
                row = rows[name]
                row[0] += 1
                row[2] += seconds + node_extra
            for cell in the_plan.cells:
                if cell.id in done:
                    continue
                key = work(cell.spec)
                if cell_s.get(key):
                    seconds = statistics.median(cell_s[key])
                else:
                    own = attack_rate.get(key[0])
                    rate = statistics.median(own or [x for v in attack_rate.values() for x in v] or [0.0])
                    seconds = rate * key[1] * key[2] + (statistics.median(post) if post else 0.0)
                    estimated.add(f"cell {key[0]} {key[1]}x{key[2]}: from {key[0] if own else 'every attack'}'s "
                                  "seconds per sample-epoch")
                rows[cell.spec.defence.name][1] += 1
                rows[cell.spec.defence.name][3] += seconds
    print(f"\nProjection of {', '.join(map(str, paths))} ({len(done)} cells already recorded, left out)")
    print("| defence | defended models | cells | models s | cells s | total h |")
    print("|---|---|---|---|---|---|")
    for name, (nodes, cells, node_s, cells_s) in sorted(rows.items()):
        print(f"| {name} | {nodes} | {cells} | {node_s:.0f} | {cells_s:.0f} | {(node_s + cells_s) / 3600:.2f} |")
    total = sum(r[2] + r[3] for r in rows.values())
    print(f"| **all** | {sum(r[0] for r in rows.values())} | {sum(r[1] for r in rows.values())} | "
          f"{sum(r[2] for r in rows.values()):.0f} | {sum(r[3] for r in rows.values()):.0f} | {total / 3600:.2f} |")
    print(f"\ncompute {total / 3600:.2f} h; wall with {workers} one-thread workers on {workers} free cores: "
          f"{total / 3600 / workers:.2f} h (plus process start-up)")
    for line in sorted(estimated):
        print(f"- estimated: {line}")
    if missing_node:
        print(f"- no measured {', '.join(missing_node)} stage: left out of the defended models' cost")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", default="results/tiny/v2", type=Path)
    ap.add_argument("--project", nargs="+", type=Path, metavar="GRID", help="grid files to price from the records")
    ap.add_argument("--workers", type=int, default=2, help="one-thread workers of the projected sweep")
    ap.add_argument("--tuning", type=Path, help="the tuning trials' records (default: RESULTS/tuning/runs)")
    args = ap.parse_args()
    grid = load_records(args.results) if args.results.is_dir() else []
    runs = args.tuning or args.results / "tuning" / "runs"
    tuning = [r for folder in sorted({p.parent for p in runs.rglob("*.json")}) for r in load_records(folder)]
    if args.project:
        project(args.project, grid, tuning, args.workers)
        return
    table(f"Grid ({args.results}; what a sweep's defend jobs computed is a cache hit in every record, so only "
          "their wall time, in the sweep's log, counts it)", grid)
    if tuning:
        table("Tuning trials", tuning)
    stage_medians = defaultdict(list)
    for r in grid:
        for stage, info in r.provenance.stages.items():
            if not info.cached:
                stage_medians[kind_of(stage)].append(info.seconds)
    if stage_medians:
        print("\nMedian seconds of one computed stage, by kind")
        print("| stage | n | median s |")
        print("|---|---|---|")
        for k, v in sorted(stage_medians.items()):
            print(f"| {k} | {len(v)} | {statistics.median(v):.1f} |")


if __name__ == "__main__":
    main()
