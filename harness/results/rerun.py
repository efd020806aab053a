"""`harness validate --rerun N`: rerun a seeded random sample of cells end to end and compare their metrics.

Each sampled record's own spec is run again (`harness.pipeline.run`, as `harness run` does) into a temporary
results folder, and the new record's metrics are compared with the committed ones field by field. The store is
a temporary one (everything recomputed: the suite's build, the defence, the attack, every evaluation; removed
afterwards), or the store given with --home, whose cached stages are then reused: a cheap rerun that rebuilds
the record from the stored artifacts and recomputes only what the store lacks.

Only records whose plugins are installed at the record's versions can be rerun (the installed code is what
runs); the sample is drawn from those with `random.Random(seed)`, so the same seed picks the same cells.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness.errors import HarnessError
from harness.results.records import RunRecord
from harness.results.rederive import differences
from harness.store.artifacts import Store


def sample(candidates: Sequence[tuple[Path, RunRecord]], n: int, seed: int) -> list[tuple[Path, RunRecord]]:
    """`n` of the candidates (all of them if fewer), drawn with `random.Random(seed)` from their sorted paths."""
    ordered = sorted(candidates, key=lambda c: str(c[0]))
    return random.Random(seed).sample(ordered, min(n, len(ordered)))


def rerun_cells(cells: Sequence[tuple[Path, RunRecord]], home: Path | None) -> Iterator[tuple[Path, list[str]]]:
    """(record file, differences: [] = the rerun gives the same metrics) for each cell, in order; a cell that
    cannot be rerun gives one line saying why."""
    scratch = Path(tempfile.mkdtemp(prefix="harness-rerun-"))
    try:
        store = Store(home if home is not None else scratch / "store")
        for path, record in cells:
            try:
                new = rerun_one(record, store, scratch / "results")
            except HarnessError as exc:
                yield path, [f"--rerun failed: {exc}"]
                continue
            except Exception as exc:  # a cell that crashes is a finding about that cell; the others still run
                yield path, [f"--rerun failed: {type(exc).__name__}: {exc}"]
                continue
            yield path, compare(record, new)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def rerun_one(record: RunRecord, store: Store, results_dir: Path) -> RunRecord:
    """The record of `record.spec` run again now, written under `results_dir`."""
    from harness.pipeline import run
    from harness.preflight import check_run, start
    from harness.resolve import load_suite

    spec = record.spec
    _, suite = load_suite(spec.suite.name, dict(spec.suite.params))
    if suite.protocol_version != record.protocol_version:
        raise HarnessError(f"the installed suite {suite.name} runs protocol v{suite.protocol_version}, the record "
                           f"v{record.protocol_version}")
    check_run(spec, suite, record.overrides, store=store, results_dir=results_dir)
    start(store)
    new, _ = run(spec, suite, record.overrides, store=store, results_dir=results_dir)
    return new


def compare(record: RunRecord, new: RunRecord) -> list[str]:
    """The metrics that differ between a record and its rerun, at most five lines' worth on one line."""
    found = differences("metrics", record.metrics.model_dump(by_alias=True), new.metrics.model_dump(by_alias=True))
    if not found:
        return []
    more = f" (+{len(found) - 5} more)" if len(found) > 5 else ""
    return [f"--rerun gives other metrics: {'; '.join(found[:5])}{more} (record != rerun)"]
