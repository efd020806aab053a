"""Where does the time of a run go? Prints the wall time of each stage of one cell, three ways:

  cold     empty artifact store: the suite is built (world, base model, judge), then every stage runs
  forced   suite already built, `--force`: every stage of the cell recomputes (prepare is a lookup)
  warm     unchanged re-run: the record exists, nothing recomputes

Warm and forced are repeated (--repeats) and the median is shown. Usage:

    python benchmarks/stage_times.py [--size default|smoke] [--attack sft-1k] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(home: Path, results: Path, args: argparse.Namespace, *extra: str) -> tuple[float, dict]:
    env = {**os.environ, "HARNESS_HOME": str(home)}
    cmd = [sys.executable, "-m", "harness.cli", "run", "--defence", args.defence, "--attack", args.attack,
           "--set", f"suite.size={args.size}", "--results-dir", str(results), "--json", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"run failed:\n{proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="default")
    ap.add_argument("--defence", default="none")
    ap.add_argument("--attack", default="sft-1k")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home, results = Path(tmp) / "home", Path(tmp) / "results"
        cold_wall, cold = run(home, results, args)
        forced = [run(home, results, args, "--force") for _ in range(args.repeats)]
        warm = [run(home, results, args)[0] for _ in range(args.repeats)]
    stages = list(cold["provenance"]["stages"])
    print(f"tiny suite ({args.size}), {args.defence} x {args.attack}; device {cold['provenance']['device']}; "
          f"median of {args.repeats} for forced/warm")
    print(f"{'stage':<34}{'cold s':>10}{'forced s':>10}")
    for name in stages:
        f = statistics.median(r[1]["provenance"]["stages"][name]["seconds"] for r in forced)
        print(f"{name:<34}{cold['provenance']['stages'][name]['seconds']:>10.2f}{f:>10.2f}")
    print(f"{'total wall (process, incl. imports)':<34}{cold_wall:>10.2f}"
          f"{statistics.median(r[0] for r in forced):>10.2f}")
    print(f"{'warm re-run (cache hit), wall':<34}{statistics.median(warm):>10.2f}")


if __name__ == "__main__":
    main()
