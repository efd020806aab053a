"""One job of a sweep, run where an executor puts it: a separate process (`python -m harness.sweep.jobs JOB.json`,
the local executor) or a Ray worker (`execute`, the ray executor).

A job is typed data: a complete RunSpec, the record's overrides, the results folder and the store, and
whether it is a defend node (the defended model and what its attacks share), a cell (one run, one record) or a
tuned-attacker search (`harness tune-attack` against the spec's defence: its trials and test runs are records, and a
rerun resumes from them).
Its file is named by its id, so any sweep on any node that needs it writes the same file, and a failed cell
can be rerun by hand: `python -m harness.sweep.jobs <store>/.sweeps/jobs/<id>.json`.

While a job runs it holds its lock (`<store>/.locks/jobs/<id>.lock`): `harness sweep --status` reads a held
lock as running, and a second sweep that reaches the same job waits for it and then finds it done.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.specs import RunSpec
from harness.store.artifacts import LOCKS, Store, atomic_write_text

SWEEPS = ".sweeps"  # under the store: job files and failure logs (dot-named: not an artifact kind)


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["defend", "cell", "attacker"] = Field(description="a defend node, a cell, or a tuned-attacker "
                                                        "search (`harness tune-attack` against the spec's defence)")
    id: str = Field(description="the cell's run id, the defend node's id, or the attacker search's id")
    label: str = Field(description="what the progress lines call it")
    spec: RunSpec
    overrides: dict[str, Any] = Field(description="where the spec's values came from (the record's overrides)")
    results_dir: str
    store: str
    threads: int = Field(1, ge=1, description="CPU threads of torch in this job")
    prefetch: list[RunSpec] = Field(default_factory=list, description="a defend job with the vllm backend: its "
                                    "cells, whose LoRA attacks it trains and generates on one vLLM engine")
    tuned_from: str | None = Field(None, description="an attacker job: the results folder of the tuning logs")
    test_worlds: list[dict[str, Any]] = Field(default_factory=list, description="an attacker job: the worlds (suite "
                                              "params) its test runs run in (empty: the searched world)")
    attack_seeds: list[int | None] = Field(default_factory=list, description="an attacker job: its test runs' "
                                           "attack seeds (empty: the defence seed)")


def job_file(store: Path, job_id: str) -> Path:
    return Path(store) / SWEEPS / "jobs" / f"{job_id}.json"


def failure_file(store: Path, job_id: str) -> Path:
    return Path(store) / SWEEPS / "failed" / f"{job_id}.json"


def lock_file(store: Path, job_id: str) -> Path:
    return Path(store) / LOCKS / "jobs" / f"{job_id}.lock"


def write_job(job: Job) -> Path:
    path = job_file(Path(job.store), job.id)
    atomic_write_text(path, job.model_dump_json(indent=2))
    return path


def execute(job: Job) -> dict[str, Any]:
    """Run a job in this process, under its lock (taken first: `--status` sees it running from here on).
    Returns {id, cached, seconds, writes}: `cached` when the record (cell) already existed, `writes` the
    artifacts this job committed to the store."""
    from harness.store.locks import file_lock

    begin = time.perf_counter()
    with file_lock(lock_file(Path(job.store), job.id)):
        cached, writes = _execute(job)
    failure_file(Path(job.store), job.id).unlink(missing_ok=True)
    return {"id": job.id, "cached": cached, "seconds": round(time.perf_counter() - begin, 3), "writes": writes}


def _execute(job: Job) -> tuple[bool, int]:
    from harness.pipeline import defend, prefetch_grid, run
    from harness.preflight import start as clean_start
    from harness.resolve import load_suite
    from harness.results.records import record_path

    _threads(job.threads)
    store = Store(Path(job.store))
    _, suite = load_suite(job.spec.suite.name, job.spec.suite.params)
    if job.kind == "attacker":
        from harness.tuning.attacker import tune_attacker

        clean_start(store)
        tune_attacker(job.spec.suite.name, job.spec.defence.name, store=store, results_dir=Path(job.results_dir),
                      suite_params=dict(job.spec.suite.params), seed=job.spec.seed,
                      tuned_from=Path(job.tuned_from) if job.tuned_from else None, test_worlds=job.test_worlds,
                      attack_seeds=job.attack_seeds)
        return store.writes == 0, store.writes
    if job.kind == "defend":
        clean_start(store)
        defend(job.spec, suite, store=store)
        if job.prefetch:  # vLLM: every LoRA attack of this defended model generates on one engine start
            prefetch_grid([(spec, suite) for spec in job.prefetch], store=store, results_dir=Path(job.results_dir))
        return store.writes == 0, store.writes
    path = record_path(Path(job.results_dir), suite.name, suite.protocol_version, job.spec.run_id)
    clean_start(store, path.parent)
    _, cached = run(job.spec, suite, job.overrides, store=store, results_dir=Path(job.results_dir))
    return cached, store.writes


def _threads(n: int) -> None:
    """Torch's intra-op threads, so a cell computes the same numbers in any executor."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def main(argv: list[str] | None = None) -> None:
    """`python -m harness.sweep.jobs JOB.json`: run one job; its result is the last line on stdout (JSON).
    Bad input is one `error:` line and exit 2 (1: a run that failed after its checks, or a full disk), as in
    the CLI."""
    from harness.errors import HarnessError, StageError
    from harness.safety import clip, escape_controls

    args = sys.argv[1:] if argv is None else argv
    try:
        if len(args) != 1:
            raise HarnessError("usage: python -m harness.sweep.jobs JOB.json")
        path = Path(args[0])
        if not path.is_file():
            raise HarnessError(f"job file {path} not found")
        try:
            job = Job.model_validate_json(path.read_text())
        except ValidationError as exc:
            raise HarnessError(f"job file {path} is not a valid job: {clip(str(exc))}") from None
        result = execute(job)
    except HarnessError as exc:
        print(f"error: {escape_controls(str(exc))}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except StageError as exc:  # a full disk: the stage named, exit 1 (the sweep retries, then logs the line)
        print(f"error: {escape_controls(str(exc))}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
