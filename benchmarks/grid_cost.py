"""What did a committed grid and its tuning cost? Prints, from the records' own provenance (the seconds each
stage took when it was computed, not when it was a cache hit), the compute time per defence and stage kind,
for the grid and for the defences' tuning trials.

    python benchmarks/grid_cost.py [results/tiny/v2]

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", default="results/tiny/v2", type=Path)
    args = ap.parse_args()
    grid = load_records(args.results)
    runs = args.results / "tuning" / "runs"
    tuning = [r for folder in sorted({p.parent for p in runs.rglob("*.json")}) for r in load_records(folder)]
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
