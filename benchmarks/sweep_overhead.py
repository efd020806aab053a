"""What does running a grid cost beyond its cells' own work? The smoke grid (grids/tiny-smoke.yaml: 8 cells on
2 defended models, 10 jobs) on a fresh store each time, three ways on this machine:

  local x1   the local executor, one job process at a time
  local x2   the local executor, two job processes at once
  ray x2     the ray executor on a local Ray cluster with 2 CPUs (one per job), started here

Printed per way: the sweep's wall time, the time spent inside jobs (harness.sweep.jobs.execute, summed), and the
scheduling overhead per job: (wall x processes - time inside jobs) / jobs, i.e. every second of a process slot
not spent computing a job (process start and imports, Ray dispatch, a slot idle while the DAG waits for a
defended model), spread over the jobs. Ray's cluster start is printed separately (paid once per sweep).

    python benchmarks/sweep_overhead.py [--prepared STORE]   # STORE: a store with the smoke suite built
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

GRID = Path(__file__).resolve().parent.parent / "grids" / "tiny-smoke.yaml"


def prepared_store(given: Path | None, tmp: Path) -> Path:
    """A store with the smoke suite built: the given one's suites/ folder, or built here (about a minute)."""
    from harness.resolve import load_suite
    from harness.store.artifacts import Store

    out = tmp / "prepared"
    if given is not None:
        shutil.copytree(given / "suites", out / "suites")
    else:
        _, suite = load_suite("tiny", {"size": "smoke"})
        suite.prepare(Store(out), False)
    return out


def one(executor: str, parallel: int, prepared: Path, tmp: Path) -> dict:
    from harness.store.artifacts import Store
    from harness.sweep.executors import make_executor
    from harness.sweep.runner import prepare_sweep, run_sweep

    root = tmp / f"{executor}-{parallel}"
    shutil.copytree(prepared, root / "home")
    store, results = Store(root / "home"), root / "results"
    plan = prepare_sweep(GRID, store=store, results_dir=results)
    runner = make_executor(executor, parallel=None if executor == "ray" else parallel, resources=plan.suite.resources)
    try:
        result = run_sweep(plan, runner, store=store, results_dir=results)
    finally:
        runner.close()
    if not result.ok:
        raise SystemExit(f"{executor} x{parallel}: {len(result.failures)} job(s) failed: {result.failures[0].error}")
    overhead = (result.seconds * parallel - result.job_seconds) / result.jobs
    return {"executor": executor, "processes": parallel, "cells": result.cells, "jobs": result.jobs,
            "wall": result.seconds, "in_jobs": result.job_seconds, "overhead": overhead}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", type=Path, default=None, help="a store with the smoke tiny suite built")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        prepared = prepared_store(args.prepared, tmp)
        rows.append(one("local", 1, prepared, tmp))
        rows.append(one("local", 2, prepared, tmp))
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        ray_start = time.perf_counter() - start
        try:
            rows.append(one("ray", 2, prepared, tmp))
        finally:
            ray.shutdown()
    print(f"smoke grid ({GRID.name}): {rows[0]['cells']} cells, {rows[0]['jobs']} jobs; {os.cpu_count()} CPUs seen")
    print(f"{'executor':<10}{'processes':>10}{'cells':>7}{'wall s':>9}{'in jobs s':>11}{'overhead/job s':>16}")
    for r in rows:
        print(f"{r['executor']:<10}{r['processes']:>10}{r['cells']:>7}{r['wall']:>9.1f}{r['in_jobs']:>11.1f}"
              f"{r['overhead']:>16.2f}")
    print(f"ray: starting the local cluster took {ray_start:.1f} s before the sweep (not in wall)")


if __name__ == "__main__":
    main()
