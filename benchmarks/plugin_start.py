"""A run's plugin processes forked from a warm interpreter (harness/processes/zygote.py) or each started afresh.

Runs the smoke-size tiny suite's `harness run --defence safety-training --attack sft-250` (small splits) on a fresh
copy of a store holding only the prepared suite, alternately with `HARNESS_ZYGOTE=1` (the default) and `=0`, and
prints the median wall seconds and CPU seconds (the run and every process it waited for, the zygote included) of
each, their ratio, and whether the records' metrics agree. Usage:

    python benchmarks/plugin_start.py [--repeats 3] [--home DIR]   (DIR: a store where the smoke suite is built)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = ["run", "--defence", "safety-training", "--attack", "sft-250", "--set", "suite.size=smoke", "--set",
       "defence.samples=48", "--set", "attack.samples=48", "--set", "eval.n_prompts=24", "--set",
       "eval.n_harmless=24", "--json"]


def once(suites: Path, forked: bool) -> tuple[float, float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        shutil.copytree(suites, home / "suites")
        env = {**os.environ, "HARNESS_HOME": str(home), "HARNESS_ZYGOTE": "1" if forked else "0",
               "OMP_NUM_THREADS": "1"}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "harness.cli", *RUN, "--results-dir", str(Path(tmp) / "r")],
                              capture_output=True, text=True, env=env, check=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, json.loads(proc.stdout)["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--home", type=Path, default=None, help="a store where the smoke suite is built")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp)
        if args.home is None:
            env = {**os.environ, "HARNESS_HOME": str(home)}
            subprocess.run([sys.executable, "-m", "harness.cli", "prepare", "tiny", "--set", "suite.size=smoke"],
                           capture_output=True, env=env, check=True)
        runs: dict[str, list[tuple[float, float, dict]]] = {"forked (zygote)": [], "fresh interpreters": []}
        for _ in range(args.repeats):
            for name in runs:
                runs[name].append(once(home / "suites", forked=name.startswith("forked")))
    print(f"| smoke run, 2 plugin processes ({args.repeats} runs each, interleaved) | wall s (median) "
          "| CPU s (median) |")
    print("|---|---|---|")
    for name, rs in runs.items():
        print(f"| {name} | {statistics.median(r[0] for r in rs):.1f} | {statistics.median(r[1] for r in rs):.1f} |")
    (fw, fc), (nw, nc) = [[statistics.median(r[i] for r in rs) for i in (0, 1)] for rs in runs.values()]
    same = len({json.dumps(r[2], sort_keys=True) for rs in runs.values() for r in rs}) == 1
    print(f"\nratio forked / fresh: wall {fw / nw:.2f}, CPU {fc / nc:.2f}; every record's metrics equal: {same}")


if __name__ == "__main__":
    main()
