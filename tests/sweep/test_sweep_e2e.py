"""Sweeps end to end on the smoke grid (grids/tiny-smoke.yaml) less its second budget: 2 defences x 1 attack budget
x 2 attack seeds, 4 cells on 2 defended models, through the CLI in subprocesses as users run them. Slow (minutes),
kept in CI.

- Two sweeps started at once on one store and one results folder: every record written once, every artifact
  computed once (the store's journal), every stage of every record computed in at most one record.
- A sweep killed (SIGKILL to its whole process group, mid-way) and re-run: nothing finished is computed again,
  no record duplicated, rewritten or torn, the same metrics as the uninterrupted sweeps.
- The ray executor on a local Ray cluster started by the test (CPU only): the same records as the local one.
- A defence that always fails: retried once, listed with its error, the sweep exits 1 and the rest is done.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.results.records import read_record
from harness.store.artifacts import JOURNAL
from tasks.tiny.suite import PROTOCOL  # the installed protocol: where new tiny runs go
from tests import process
from tests.conftest import REPO
from tests.outside import make_distribution

pytestmark = pytest.mark.slow
SMOKE_GRID = REPO / "grids" / "tiny-smoke.yaml"
SECOND_BUDGET = "    - {attack: sft-250, settings: {lr: 1.0e-3}, label: 1e-3@32}\n"
CELLS = 4
CELL_LINE = re.compile(r"^\[\d+/\d+\] (.*) \([\d.]+ s(, record existed)?\)$", re.M)
BROKEN = '''
from pydantic import BaseModel, ConfigDict
from harness.registry import register_defence


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@register_defence("broken-on-purpose", config=Config, version="1")
def defend(model, cfg, ctx):
    """Fails every time (tests)."""
    raise RuntimeError("this defence always fails")
'''


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    """The smoke grid without its second attack budget: every mechanism these tests check, in half the cells."""
    text = SMOKE_GRID.read_text()
    assert SECOND_BUDGET in text
    path = tmp_path_factory.mktemp("grid") / "tiny-smoke-4.yaml"
    path.write_text(text.replace(SECOND_BUDGET, ""))
    return path


@pytest.fixture(scope="module")
def prepared(smoke_base, home, tmp_path_factory) -> Path:
    """A store holding only the prepared smoke suite."""
    fresh = tmp_path_factory.mktemp("sweep_prepared")
    shutil.copytree(home / "suites", fresh / "suites")
    return fresh


def fresh_store(prepared: Path, root: Path) -> tuple[Path, Path]:
    shutil.copytree(prepared, root / "home")
    return root / "home", root / "results"


def sweep(home: Path, results: Path, grid: Path, *args: str, pythonpath: str | None = None) -> process.CLI:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return process.start(["sweep", str(grid), "--home", str(home), "--results-dir", str(results), *args], env=env,
                         cwd=REPO, session=True)


def finish(proc: process.CLI, code: int = 0) -> str:
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == code, err[-3000:]
    return err


def records_of(results: Path) -> list[Path]:
    return sorted((results / "tiny" / f"v{PROTOCOL}").glob("*.json"))


def computed_once(home: Path, results: Path) -> dict[str, dict]:
    """Check the store and the records; return {run_id: metrics}.

    Every artifact was committed once (the journal has one `written` line per artifact and no `kept`: no
    artifact computed twice), every record reads back whole, no temporary file is left in the results, and no
    stage key is a cache miss in two records (counted from the records' own cache hits)."""
    events = [json.loads(line) for line in (home / JOURNAL).read_text().splitlines()]
    keys = Counter((e["kind"], e["key"]) for e in events)
    assert {e["event"] for e in events} == {"written"} and max(keys.values()) == 1
    records = [read_record(p) for p in records_of(results)]  # a torn or invalid record raises
    assert len(records) == CELLS and {r.run_id for r in records} == {p.stem for p in records_of(results)}
    assert not [p for p in (results / "tiny" / f"v{PROTOCOL}").iterdir() if p.name.startswith(".")]
    misses = Counter(st.key for r in records for st in r.provenance.stages.values() if st.key and not st.cached)
    assert misses and max(misses.values()) == 1, misses
    assert {st.key for r in records for st in r.provenance.stages.values() if st.key} <= {k for _, k in keys}
    return {r.run_id: r.metrics.model_dump() for r in records}


@pytest.fixture(scope="module")
def baseline(prepared, grid, tmp_path_factory) -> dict:
    """Two sweeps of the grid started at once on one store and one results folder."""
    home, results = fresh_store(prepared, tmp_path_factory.mktemp("two_sweeps"))
    procs = [sweep(home, results, grid) for _ in range(2)]
    errs = [finish(p) for p in procs]
    return {"home": home, "results": results, "errs": errs, "metrics": computed_once(home, results)}


def test_two_sweeps_at_once_produce_each_record_once(baseline):
    lines = [m for err in baseline["errs"] for m in CELL_LINE.findall(err)]
    assert len(lines) == 2 * CELLS  # each sweep finishes every cell ...
    written = [label for label, existed in lines if not existed]
    assert len(written) == len(set(written)) == CELLS  # ... and each record is written by exactly one of them
    assert all(f"{CELLS} finished now, 0 job(s) failed" in err for err in baseline["errs"])


def test_status_after_the_sweep(baseline, grid):
    proc = process.run(["sweep", str(grid), "--status", "--home", str(baseline["home"]), "--results-dir",
                        str(baseline["results"])], cwd=REPO, env={**os.environ, "COLUMNS": "200"}, check=True)
    rows = {cells[0]: cells[1:] for line in proc.stderr.splitlines()
            if len(cells := [c.strip() for c in line.strip("│┃ ").split("│")]) == 5}
    assert rows["total"] == [str(CELLS), "0", "0", "0"] and rows["none"] == [str(CELLS // 2), "0", "0", "0"]


def test_killed_sweep_resumes_without_computing_anything_twice(prepared, grid, baseline, tmp_path):
    home, results = fresh_store(prepared, tmp_path)
    proc = sweep(home, results, grid, "--max-parallel", "2")
    while proc.poll() is None and len(records_of(results)) < 1:
        time.sleep(0.1)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and every job it started, mid-way
    proc.communicate()
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in records_of(results)}
    assert 1 <= len(before) < CELLS
    err = finish(sweep(home, results, grid, "--max-parallel", "2"))
    assert f"{len(before)} cell(s) were done before, {CELLS - len(before)} finished now" in err
    assert all((p.stat().st_ino, p.stat().st_mtime_ns) == stat for p, stat in before.items())  # never rewritten
    assert computed_once(home, results) == baseline["metrics"]


def test_ray_executor_gives_the_records_of_the_local_one(baseline, grid, tmp_path):
    """Every job through Ray on the baseline's store (its artifacts computed: the jobs find them, as a rerun on a
    cluster's shared store does; computing them is what the local sweeps above check): the same records."""
    ray = pytest.importorskip("ray")
    from harness.store.artifacts import Store
    from harness.sweep.executors import RayExecutor
    from harness.sweep.runner import prepare_sweep, run_sweep

    home, results = tmp_path / "home", tmp_path / "results"
    shutil.copytree(baseline["home"], home)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        plan = prepare_sweep(grid, store=Store(home), results_dir=results)
        executor = RayExecutor(None, plan.suite.resources)
        result = run_sweep(plan, executor, store=Store(home), results_dir=results)
        executor.close()  # leaves the test's cluster running: it did not start it
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    assert result.ok and result.ran == CELLS and result.defended == 2
    records = [read_record(p) for p in records_of(results)]
    assert {r.run_id: r.metrics.model_dump() for r in records} == baseline["metrics"]
    assert (home / JOURNAL).read_text() == (baseline["home"] / JOURNAL).read_text()  # nothing computed again


def test_failing_defence_is_retried_listed_and_exits_1(baseline, grid, tmp_path):
    pkg = make_distribution(tmp_path / "pkg", "broken-defence", "0.1", modules={"broken_defence": BROKEN},
                            entry_points={"harness.defences": {"broken-on-purpose": "broken_defence"}})
    broken = tmp_path / "grid.yaml"
    broken.write_text(grid.read_text().replace("  - name: safety-training\n    settings: {samples: 32}\n",
                                             "  - name: broken-on-purpose\n"))
    home, results = tmp_path / "home", tmp_path / "results"
    shutil.copytree(baseline["home"], home)  # the none cells are done: only the broken defence runs
    shutil.copytree(baseline["results"], results)
    err = finish(sweep(home, results, broken, pythonpath=str(pkg)), code=1)
    assert "retry 1/1 broken-on-purpose seed 0: RuntimeError: this defence always fails" in err
    # the none cells were done; the broken defence's model and each of its cells fail
    assert f"{CELLS // 2} cell(s) were done before, 0 finished now, {1 + CELLS // 2} job(s) failed" in err
    assert "failures" in err and "python -m harness.sweep.jobs" in err and "(its defended model failed)" in err
    failed = list((home / ".sweeps" / "failed").glob("*.json"))
    assert len(failed) == 1 + CELLS // 2 and {json.loads(p.read_text())["attempts"] for p in failed} == {2, 0}
