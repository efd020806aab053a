"""Sweeps: a grid file's DAG of jobs, run by an executor (harness.sweep.executors), resumable, never computing a
cell twice.

- `prepare_sweep`: the grid is read and every cell resolved and checked (configs, split sizes, folders)
  before any work; one error line otherwise.
- `run_sweep`: cells whose record exists are done already. Each defended model still needed is one defend
  job (the defended model and what its attacks share: evaluations, stability, trainability); its cells
  are queued when it finishes, ahead of the defend jobs not started yet, so every attack finds it cached and a
  sweep stopped early leaves the plan's first rows whole. At most `executor.parallel` jobs run at
  once. A failed job is retried `retries` times, then written to `<store>/.sweeps/failed/<id>.json` and
  listed at the end (a failed defend job fails its cells); the sweep goes on with the rest.
- Killed at any point, a sweep resumes where it stopped: records are written once, atomically; stages are
  cached in the store, and an artifact is computed under its lock (a second sweep on the same store waits
  for it and reuses it).
- `status`: done (record exists), running (its job's lock is held, by any sweep on any node), failed (a
  failure log, newer than any success), pending.
- A grid with `tuned_attacker: true` adds one job per defence: the tuned-attacker search (`harness tune-attack`),
  queued after its defence's defend jobs (`rows_in_order`: a sweep cut short leaves whole rows, search included)
  and independent of them (it builds the validation split's defended model); done when its log says finished,
  and a rerun resumes from its trial records.
"""

from __future__ import annotations

import json
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from harness.progress import bar, say
from harness.results.records import record_path
from harness.safety import escape_controls
from harness.specs import canonical_json
from harness.store.artifacts import Store, atomic_write_text
from harness.store.locks import try_lock
from harness.sweep.executors import Executor, JobFailed, ray_error
from harness.sweep.grid import AttackerNode, Cell, DefendNode, Plan, load_grid, plan
from harness.sweep.jobs import Job, failure_file, job_file, lock_file

STATES = ("done", "running", "failed", "pending")


def plain(text: object) -> str:
    """A label or error inside a rich-markup line: shown as it is, control characters escaped."""
    from rich.markup import escape

    return escape(escape_controls(str(text)))


@dataclass
class Failure:
    id: str
    label: str
    kind: str
    attempts: int
    error: str


@dataclass
class SweepResult:
    cells: int
    already: int = 0                    # records that existed before the sweep started
    ran: int = 0                        # cells this sweep finished (record written, or found written meanwhile)
    to_run: int = 0                     # cells without a record when the sweep started
    cached: int = 0                     # of those, cells whose record another run wrote meanwhile
    defended: int = 0                   # defend jobs finished
    attackers: int = 0                  # tuned-attacker searches finished
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    job_seconds: float = 0.0            # time spent inside finished jobs (the rest is startup and scheduling)
    jobs: int = 0                       # jobs finished (defend and cell)
    by_group: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


def prepare_sweep(grid_file: Path, *, store: Store, results_dir: Path, tuned_from: Path | None = None,
                  locate: bool = True, check: bool = True) -> Plan:
    """Read the grid and resolve every cell; `check`: each cell's split sizes and the writable folders too, and
    that a sweep into the published results runs the suite's default settings (`publish.check_target`).
    `tuned_from`: the results folder of the tuning logs (default: `results_dir`). `locate=False` (a dry run)
    does not look up a hub model."""
    from harness.preflight import check_run, readable_dir, writable_dir
    from harness.results.publish import check_target

    readable_dir(results_dir, "--results-dir")
    the_plan = plan(load_grid(grid_file), results_dir=results_dir, tuned_from=tuned_from, locate=locate)
    if check:
        for cell in {c.spec.suite.model_dump_json() + c.spec.model.id: c for c in the_plan.cells}.values():
            check_target(results_dir, the_plan.suite.name, cell.spec.suite.params, cell.spec.model.id)
        writable_dir(store.root, "--home (the artifact store)")
        for cell in the_plan.cells:
            check_run(cell.spec, the_plan.suite, cell.overrides, store=store, results_dir=results_dir)
        if the_plan.attackers:
            from harness.tuning.attacker import plan as attacker_plan

            for node in the_plan.attackers.values():  # the protocol, the zoo and each kind's space, before any work
                attacker_plan(the_plan.suite.name, node.spec.defence.name, suite_params=dict(node.spec.suite.params),
                              tuned_from=the_plan.tuned_from)
    return the_plan


def done(the_plan: Plan, cell: Cell, results_dir: Path) -> bool:
    return record_path(results_dir, the_plan.suite.name, the_plan.suite.protocol_version, cell.id).is_file()


def attacker_done(the_plan: Plan, node: AttackerNode, results_dir: Path) -> bool:
    """Has a tuned-attacker search against this defence finished (its log says so), its chosen attack run on the
    test data in every world and attack seed the node asks for?"""
    from harness.tuning.attacker_log import AttackerLog, attacker_log_path
    from harness.tuning.logs import read_log

    path = attacker_log_path(results_dir, the_plan.suite.name, the_plan.suite.protocol_version, node.spec.defence.name)
    log = read_log(path, AttackerLog)
    if log is None or not log.finished:
        return False
    ran = {(canonical_json({**log.suite_params, **r.world}), r.attack_seed) for r in log.test if r.role == "chosen"}
    asked = {(canonical_json({**log.suite_params, **w}), a) for w in node.test_worlds or [{}]
             for a in node.attack_seeds or [None]}
    return log.chosen is None or asked <= ran


def _job(kind: Literal["defend", "cell", "attacker"], item: Cell | DefendNode | AttackerNode, store: Store,
         results_dir: Path, threads: int, prefetch: list[Job] | None = None, tuned_from: Path | None = None) -> Job:
    return Job(kind=kind, id=item.id, label=item.label, spec=item.spec, overrides=getattr(item, "overrides", {}),
               results_dir=str(Path(results_dir).absolute()), store=str(store.root.absolute()), threads=threads,
               prefetch=[j.spec for j in prefetch or [] if j.spec.eval.backend == "vllm"],
               tuned_from=str(Path(tuned_from).absolute()) if tuned_from is not None else None,
               test_worlds=list(getattr(item, "test_worlds", ())), attack_seeds=list(getattr(item, "attack_seeds", ())))


def run_sweep(the_plan: Plan, executor: Executor, *, store: Store, results_dir: Path,
              retries: int = 1) -> SweepResult:
    """Run every cell of the plan that has no record; see the module docstring."""
    from harness.preflight import start as clean_start

    begin = time.perf_counter()
    threads = the_plan.suite.resources.cpus
    todo = [c for c in the_plan.cells if not done(the_plan, c, results_dir)]
    clean_start(store, record_path(results_dir, the_plan.suite.name, the_plan.suite.protocol_version, "x").parent)
    state = _State(retries=retries, store=store, result=SweepResult(
        cells=len(the_plan.cells), already=len(the_plan.cells) - len(todo), to_run=len(todo)))
    for c in todo:
        state.cells_of.setdefault(c.defend_id, []).append(_job("cell", c, store, results_dir, threads))
    defends = [_job("defend", the_plan.nodes[n], store, results_dir, threads, cells)
               for n, cells in state.cells_of.items()]
    searches = [a for a in the_plan.attackers.values() if not attacker_done(the_plan, a, results_dir)]
    searching = [_job("attacker", a, store, results_dir, threads, tuned_from=the_plan.tuned_from) for a in searches]
    state.queue.extend((job, 1) for job in rows_in_order(defends, searching))
    flight: dict[Future[dict[str, Any]], tuple[Job, int, float]] = {}
    attackers = (f"; {len(searches)} tuned-attacker search(es) of {len(the_plan.attackers)} to run"
                 if the_plan.attackers else "")
    say(f"sweep: {len(the_plan.cells)} cells, {state.result.already} done, {len(todo)} to run on "
        f"{len(state.cells_of)} defended model(s){attackers}; executor {executor.name}, "
        f"{executor.parallel or 'cluster-wide'} at once")
    for note in dict.fromkeys(the_plan.notes.values()):
        say(plain(note))
    with bar("sweep", total=len(todo), unit="cell") as state.advance:
        while state.queue or flight:
            while state.queue and (executor.parallel is None or len(flight) < executor.parallel):
                job, attempt = state.queue.popleft()
                flight[executor.submit(job)] = (job, attempt, time.perf_counter())
            finished, _ = wait(list(flight), return_when=FIRST_COMPLETED)
            for fut in finished:
                job, attempt, started = flight.pop(fut)
                state.settle(fut, job, attempt, time.perf_counter() - started)
    state.result.seconds = round(time.perf_counter() - begin, 3)
    _group_counts(the_plan, state.result, results_dir)
    return state.result


def rows_in_order(defends: list[Job], searches: list[Job]) -> list[Job]:
    """The queue's order: each defence's defend jobs (plan order), then the tuned-attacker search against it, then
    the next defence's. With a defend job's cells run first (`_State.settle`), a sweep cut short leaves whole rows,
    the search included; a search whose defence has nothing left to defend goes first."""
    by_defence: dict[str, list[Job]] = {}
    for job in searches:
        by_defence.setdefault(job.spec.defence.name, []).append(job)
    names = list(dict.fromkeys(job.spec.defence.name for job in defends))
    ordered = [job for name in by_defence if name not in names for job in by_defence[name]]
    for name in names:
        ordered += [job for job in defends if job.spec.defence.name == name] + by_defence.get(name, [])
    return ordered


@dataclass
class _State:
    """A running sweep: the jobs ready to start, the cells waiting for each defended model, the counts."""

    retries: int
    store: Store
    result: SweepResult
    queue: deque[tuple[Job, int]] = field(default_factory=deque)  # (job, attempt)
    cells_of: dict[str, list[Job]] = field(default_factory=dict)  # defend job id -> its cells' jobs
    advance: Any = None  # the progress bar's advance

    def settle(self, fut: Future[dict[str, Any]], job: Job, attempt: int, seconds: float) -> None:
        """One finished job: queue its cells (a defend job), count it, or retry it / record its failure."""
        result = self.result
        try:
            out = fut.result()
        except Exception as exc:
            self.failed(job, attempt, ray_error(exc) if not isinstance(exc, JobFailed) else exc)
            return
        result.jobs += 1
        result.job_seconds += out["seconds"]
        if job.kind == "attacker":
            result.attackers += 1
            say(f"tuned attacker {plain(job.label)} ({seconds:.1f} s{', cached' if out['cached'] else ''})")
            return
        if job.kind == "defend":
            result.defended += 1
            say(f"defended {plain(job.label)} ({seconds:.1f} s{', cached' if out['cached'] else ''})")
            # its cells go first (in plan order), before defended models not started yet: a sweep cut short
            # leaves whole defended models' cells, the plan's rows in order, not every model and few cells
            self.queue.extendleft(reversed([(cell, 1) for cell in self.cells_of.get(job.id, [])]))
            return
        result.ran += 1
        result.cached += bool(out["cached"])
        self.advance(1)
        n = result.ran + sum(f.kind == "cell" for f in result.failures)
        say(f"\\[{n}/{result.to_run}] {plain(job.label)} ({seconds:.1f} s"
            f"{', record existed' if out['cached'] else ''})")

    def failed(self, job: Job, attempt: int, failed: JobFailed) -> None:
        """Retry a failed job, or record it (and, for a defend job, fail its cells without starting them)."""
        if attempt <= self.retries:
            say(f"[yellow]retry {attempt}/{self.retries}[/] {plain(job.label)}: {plain(failed.error)}")
            self.queue.appendleft((job, attempt + 1))
            return
        self.record(job, attempt, failed)
        cells = self.cells_of.get(job.id, []) if job.kind == "defend" else []
        for cell in cells:
            self.record(cell, 0, JobFailed(f"its defended model failed: {failed.error}"))
        self.advance(len(cells) if job.kind == "defend" else 1)

    def record(self, job: Job, attempts: int, failed: JobFailed) -> None:
        """A failure for the summary and for `--status`: `<store>/.sweeps/failed/<id>.json`."""
        self.result.failures.append(Failure(job.id, job.label, job.kind, attempts, failed.error))
        say(f"[red]failed[/] {plain(job.label)}: {plain(failed.error)}")
        log = {"id": job.id, "label": job.label, "kind": job.kind, "attempts": attempts, "error": failed.error,
               "detail": failed.detail, "job": str(job_file(self.store.root, job.id)),
               "time": datetime.now(UTC).isoformat(timespec="seconds")}
        atomic_write_text(failure_file(self.store.root, job.id), json.dumps(log, indent=2))


def _group_counts(the_plan: Plan, result: SweepResult, results_dir: Path) -> None:
    failed = {f.id for f in result.failures}
    for cell in the_plan.cells:
        row = result.by_group.setdefault(cell.group, {"cells": 0, "done": 0, "failed": 0})
        row["cells"] += 1
        row["done"] += done(the_plan, cell, results_dir)
        row["failed"] += cell.id in failed


# ------------------------------------------------------------------------------------------------ status
def cell_state(the_plan: Plan, cell: Cell, store: Store, results_dir: Path) -> str:
    """done / running / failed / pending (see the module docstring)."""
    if done(the_plan, cell, results_dir):
        return "done"
    for job_id in (cell.id, cell.defend_id):
        lock = lock_file(store.root, job_id)
        if lock.is_file():
            with try_lock(lock) as free:
                if not free:
                    return "running"
    if failure_file(store.root, cell.id).is_file():
        return "failed"
    return "pending"


def status(the_plan: Plan, store: Store, results_dir: Path) -> dict[str, dict[str, int]]:
    """Per summary row (defence, settings, condition): how many cells are in each state."""
    rows: dict[str, dict[str, int]] = {}
    for cell in the_plan.cells:
        row = rows.setdefault(cell.group, dict.fromkeys(STATES, 0))
        row[cell_state(the_plan, cell, store, results_dir)] += 1
    for node in the_plan.attackers.values():
        row = rows.setdefault(node.label, dict.fromkeys(STATES, 0))
        row[_attacker_state(the_plan, node, store, results_dir)] += 1
    return rows


def _attacker_state(the_plan: Plan, node: AttackerNode, store: Store, results_dir: Path) -> str:
    if attacker_done(the_plan, node, results_dir):
        return "done"
    lock = lock_file(store.root, node.id)
    if lock.is_file():
        with try_lock(lock) as free:
            if not free:
                return "running"
    return "failed" if failure_file(store.root, node.id).is_file() else "pending"

