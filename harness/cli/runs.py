"""`harness prepare`, `run`, `sweep`, `tune` and `tune-attack`: the commands that compute."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.cli.options import (
    HomeOpt,
    ModelOpt,
    SetOpt,
    SuiteOpt,
    TunedOpt,
    WorkOpt,
    fail,
    note_published,
    suite_name,
    tuning_dir,
)
from harness.errors import ConfigError


def prepare(suite: Annotated[str | None, typer.Argument(help="suite name (default: the declared default suite)")]
            = None, model: ModelOpt = None, sets: SetOpt = None,
            home: HomeOpt = None,
            force: Annotated[bool, typer.Option("--force/--no-force", help="rebuild even if built")] = False,
            as_json: Annotated[bool, typer.Option("--json", help="print the build report as JSON on stdout")] = False,
            ) -> None:
    """Build what a suite needs (the tiny suite's base model and judge; paired refusals of a real suite's
    model); cached, automatic on first run. Prints one line: built, or already built (and where)."""
    import json

    from harness.pipeline import prepare as prepare_suite
    from harness.preflight import start, writable_dir
    from harness.resolve import resolve_base
    from harness.specs import parse_overrides
    from harness.store.artifacts import Store

    overrides = parse_overrides(sets or [])
    base = resolve_base(suite_name(suite), overrides, model=model)
    store = Store(home)
    writable_dir(store.root, "--home (the artifact store)")
    start(store)
    writes = store.writes
    report = prepare_suite(base.suite, model=base.model, judges=base.judges, eval_spec=base.eval, store=store,
                           force=force)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    settings = ", ".join(f"{k}={v}" for k, v in overrides["suite"].items())
    what = f"suite {base.suite.name}{f' ({settings})' if settings else ''}"
    ref = base.model.id.removeprefix("store:")  # a model the suite builds lives in the store
    where = f"base model {store.root / ref}" if ref != base.model.id else f"{base.model.id}, store {store.root}"
    if store.writes == writes:
        typer.echo(f"{what} is already built ({where}); nothing to do: --force rebuilds, --json prints the report")
    else:
        typer.echo(f"{what} built ({where}; {store.writes - writes} artifact(s) written); --json prints the report")


def run(defence: Annotated[str, typer.Option(metavar="DEFENCE", help="defence name (harness list defences)")],
        attack: Annotated[str, typer.Option(metavar="ATTACK", help="attack name (harness list attacks)")],
        suite: SuiteOpt = None, model: ModelOpt = None,
        seed: Annotated[int, typer.Option(metavar="SEED", help="seed of the defence (and of the attack unless "
                                                               "--attack-seed)")] = 0,
        attack_seed: Annotated[int | None, typer.Option(metavar="SEED", help="seed of the attack (default: "
                                                                             "--seed)")] = None,
        sets: SetOpt = None,
        backend: Annotated[str | None, typer.Option(metavar="hf|vllm|auto", help="generation backend (auto: "
                                                    "vllm with a GPU, "
                                                         "else hf); default: the suite's")] = None,
        results_dir: WorkOpt = Path("runs"), tuned_from: TunedOpt = None, home: HomeOpt = None,
        force: Annotated[bool, typer.Option("--force/--no-force", help="recompute every stage")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="print the run record as JSON on stdout")] = False,
        ) -> None:
    """Defend, evaluate, attack, evaluate: one cell of the benchmark, recorded under runs/ (the working folder;
    `harness publish` copies records into results/)."""
    import time

    from harness.pipeline import run as run_cell
    from harness.preflight import check_run, start
    from harness.resolve import resolve
    from harness.results.console import summary
    from harness.results.publish import check_target
    from harness.results.records import record_path
    from harness.store.artifacts import Store

    begin = time.perf_counter()
    spec, s, overrides = resolve(suite_name(suite), defence, attack, seed=seed, attack_seed=attack_seed, sets=sets,
                                 backend=backend, model=model, tuned_from=tuning_dir(tuned_from))
    check_target(results_dir, s.name, spec.suite.params, spec.model.id)
    store = Store(home)
    check_run(spec, s, overrides, store=store, results_dir=results_dir, force=force)
    note_published(results_dir)
    path = record_path(results_dir, s.name, s.protocol_version, spec.run_id)
    start(store, path.parent)
    record, cached = run_cell(spec, s, overrides, store=store, results_dir=results_dir, force=force)
    if as_json:
        typer.echo(record.model_dump_json(indent=2))
    summary(record, cached=cached, seconds=time.perf_counter() - begin, path=str(path))


def sweep(grid: Annotated[Path, typer.Argument(help="grid file (YAML): suite, model, defences, attacks, conditions; "
                                               "see grids/")],
          executor: Annotated[str, typer.Option(metavar="local|ray", help="local: separate processes on this "
                                                "machine; ray: Ray tasks on a cluster (--ray-address) or a local "
                                                "one")] = "local",
          max_parallel: Annotated[int | None, typer.Option(metavar="N", help="jobs at once (local default 1; ray "
                                                           "default: as many as the cluster's resources allow)")]
          = None,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="list the cells and which are done; run "
                                                "nothing (needs no model)")] = False,
          status: Annotated[bool, typer.Option("--status", help="print done / running / failed / pending per "
                                               "defence")] = False,
          retries: Annotated[int, typer.Option(metavar="N", help="retries of a failing job before it is listed as "
                                                             "failed")] = 1,
          ray_address: Annotated[str | None, typer.Option(metavar="ADDRESS", help="Ray cluster address for ray.init "
                                                          "(e.g. auto, "
                                                          "ray://head:10001); default: $RAY_ADDRESS or a local "
                                                          "cluster")] = None,
          results_dir: WorkOpt = Path("runs"), tuned_from: TunedOpt = None, home: HomeOpt = None) -> None:
    """Run a grid file's cells (each defended model trained once; finished cells are cache hits); exit 1 if any
    cell failed. The store (--home) and --results-dir must be paths every node sees."""
    from harness.store.artifacts import Store
    from harness.sweep.executors import make_executor
    from harness.sweep.runner import prepare_sweep, run_sweep
    from harness.sweep.runner import status as sweep_status
    from harness.sweep.status import dry_run as list_cells
    from harness.sweep.status import status_table, summary

    if executor not in ("local", "ray"):
        fail(f"Unknown executor '{executor}'. Available: local, ray")
    if max_parallel is not None and max_parallel < 1:
        fail(f"--max-parallel must be at least 1, got {max_parallel}")
    if retries < 0:
        fail(f"--retries must be 0 or more, got {retries}")
    if ray_address is not None and executor != "ray":
        fail("--ray-address is for --executor ray")
    store = Store(home)
    plan = prepare_sweep(grid, store=store, results_dir=results_dir, tuned_from=tuning_dir(tuned_from),
                         locate=not dry_run, check=not (dry_run or status))
    if dry_run or status:
        (list_cells(plan, store, results_dir) if dry_run else
         status_table(plan, sweep_status(plan, store, results_dir)))
        return
    note_published(results_dir)
    runner = make_executor(executor, parallel=max_parallel, resources=plan.suite.resources, address=ray_address)
    try:  # SIGTERM is Ctrl-C here too (harness.cli.main): the jobs are stopped by close()
        result = run_sweep(plan, runner, store=store, results_dir=results_dir, retries=retries)
    finally:
        runner.close()
    summary(plan, result, store)
    if not result.ok:
        raise typer.Exit(1)


def tune(defence: Annotated[str, typer.Argument(help="defence name (built-in or plugin)")],
         suite: SuiteOpt = None, sets: SetOpt = None, results_dir: WorkOpt = Path("runs"),
         home: HomeOpt = None,
         scan: Annotated[bool, typer.Option("--scan", help="run every setting of the search space instead (those "
                                            "matching --set defence.FIELD=VALUE); writes <defence>.scan.json "
                                            "as evidence and never changes the tuned settings")] = False) -> None:
    """Tune a defence on the suite's validation data: the same trials, attack and stability guard for every
    defence; writes runs/<suite>/v<N>/tuning/<defence>.json (`harness publish` puts it in results/, which later
    runs take their settings from)."""
    from harness.resolve import load_suite
    from harness.results.publish import check_target
    from harness.specs import parse_overrides
    from harness.store.artifacts import Store
    from harness.tuning.logs import log_path
    from harness.tuning.search import scan as run_scan
    from harness.tuning.search import tune as run_tune
    from harness.tuning.trials import tune_summary

    suite = suite_name(suite)
    overrides = parse_overrides(sets or [])
    suite_spec, s = load_suite(suite, overrides["suite"])
    extra = {target: values for target, values in overrides.items() if values and target not in ("suite", "defence")}
    if extra or (overrides["defence"] and not scan):
        raise ConfigError("tune takes --set suite.FIELD=VALUE, and defence.FIELD=VALUE only with --scan (to fix "
                          "fields of the scanned space); the tuner chooses the defence's settings itself")
    check_target(results_dir, s.name, suite_spec.params)
    note_published(results_dir)
    if scan:
        log = run_scan(suite, defence, store=Store(home), results_dir=results_dir, suite_params=suite_spec.params,
                       fixed=overrides["defence"])
    else:
        log = run_tune(suite, defence, store=Store(home), results_dir=results_dir, suite_params=suite_spec.params)
    for t in log.trials:
        mark = "stable" if t.stable else "UNSTABLE: " + "; ".join(t.missed)
        typer.echo(f"{t.params}  {t.measure or 'harmfulness'} {t.headline:.3f}  AUC {t.auc:.3f}  {mark}  "
                   f"run {t.run_id}")
    if scan:
        typer.echo(f"{len(log.stable)} of {len(log.trials)} scanned settings (of {log.space_size} in the space) "
                   f"pass the stability guard; log {log_path(results_dir, suite, s.protocol_version, defence, 'scan')}")
        return
    for t in log.confirmations:
        typer.echo(f"confirm {t.params} at defence seed {t.seed}: "
                   + ("stable" if t.stable else "UNSTABLE: " + "; ".join(t.missed)) + f"  run {t.run_id}")
    for line in tune_summary(log):
        typer.echo(line)
    typer.echo(f"log {log_path(results_dir, suite, s.protocol_version, defence)}")


def tune_attack(defence: Annotated[str, typer.Argument(help="the defence (at its tuned settings) to attack")],
                suite: SuiteOpt = None, sets: SetOpt = None, results_dir: WorkOpt = Path("runs"),
                tuned_from: TunedOpt = None, home: HomeOpt = None) -> None:
    """Tune an attacker against a tuned defence: the suite's attack zoo and each kind's hyper-parameters, searched
    on the validation data with at least the defender's trial budget under a capability bound (>= 90% of the
    defended model's harmless QA by default); the chosen attack and the next best then run on the test data. Writes
    runs/<suite>/v<N>/tuning/attacker/<defence>.json."""
    from harness.resolve import load_suite
    from harness.results.publish import check_target
    from harness.specs import parse_overrides
    from harness.store.artifacts import Store
    from harness.tuning.attacker import tune_attacker
    from harness.tuning.attacker_log import attacker_log_path, summary_lines

    suite = suite_name(suite)
    overrides = parse_overrides(sets or [])
    if any(values for target, values in overrides.items() if target != "suite"):
        raise ConfigError("tune-attack takes --set suite.FIELD=VALUE only: the attacker chooses its attacks and "
                          "their settings itself, and the defence takes its tuned settings")
    suite_spec, s = load_suite(suite, overrides["suite"])
    check_target(results_dir, s.name, suite_spec.params)
    note_published(results_dir)
    log = tune_attacker(suite, defence, store=Store(home), results_dir=results_dir, suite_params=suite_spec.params,
                        tuned_from=tuning_dir(tuned_from))
    for line in summary_lines(log):
        typer.echo(line)
    typer.echo(f"log {attacker_log_path(results_dir, suite, s.protocol_version, defence)}")
