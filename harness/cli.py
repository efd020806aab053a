"""The `harness` command line. Thin: parsing and printing only; all logic lives in harness/.

Every failure a user can cause is one `error:` line on stderr (control characters escaped) and exit 2;
Ctrl-C is one line saying how to resume and exit 130. Tracebacks are for bugs.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from harness import registry
from harness.errors import ConfigError, HarnessError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Immunization Bench: does a defence against harmful fine-tuning actually work?")
store_app = typer.Typer(no_args_is_help=True, help="Inspect the artifact store.")
app.add_typer(store_app, name="store")

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config field: TARGET.FIELD=VALUE "
                                                  "(targets: suite, defence, attack, eval, subsets, model)")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="base model: a hub id or a local checkpoint folder "
                                              "(default: the suite's); pin with --set model.revision=...")]
SuiteOpt = Annotated[str | None, typer.Option(help="suite name (default: the declared default suite, see "
                                                "`harness list suites`)")]
ResultsOpt = Annotated[Path, typer.Option(help="where run records are written (results/<suite>/v<N>/)")]
TunedOpt = Annotated[Path | None, typer.Option(help="results folder whose committed tuning logs (<suite>/v<N>/"
                                                "tuning/) supply each defence's tuned settings; default: ./results, "
                                                "also when --results-dir writes elsewhere")]
HomeOpt = Annotated[Path | None, typer.Option(help="artifact store; default $HARNESS_HOME or "
                                              "~/.cache/immunization-bench")]
INTERRUPTED = "interrupted; rerun the same command to resume from the last finished stage"


def fail(message: str) -> None:
    raise HarnessError(message)


def suite_name(given: str | None) -> str:
    """The suite a command runs: the one given, or the default a distribution declares."""
    return given or registry.default_name("suite")


@app.command("list")
def list_(kind: Annotated[str | None, typer.Argument(help="defence, attack, task, judge or suite")] = None) -> None:
    """List registered plugins with a one-line description."""
    kinds = registry.KINDS
    if kind is not None:
        singular = kind.removesuffix("s")
        if singular not in kinds:
            fail(f"Unknown kind '{kind}'. Available: {', '.join(kinds)}")
        kinds = (singular,)  # type: ignore[assignment]
    for k in kinds:
        typer.echo(f"{k}s:")
        for name, desc in registry.describe(k):
            typer.echo(f"  {name:<18} {desc}")


plugins_app = typer.Typer(no_args_is_help=False, help="Installed plugins, and the conformance check for submissions.")
app.add_typer(plugins_app, name="plugins")


@plugins_app.callback(invoke_without_command=True)
def plugins(ctx: typer.Context,
            kind: Annotated[str | None, typer.Option(help="only this kind: defence, attack, task, judge, suite")] = None
            ) -> None:
    """List installed plugins: kind, name, version, distribution (package and version) and source file."""
    if ctx.invoked_subcommand is not None:
        return
    kinds = registry.KINDS
    if kind is not None:
        if kind.removesuffix("s") not in kinds:
            fail(f"Unknown kind '{kind}'. Available: {', '.join(kinds)}")
        kinds = (kind.removesuffix("s"),)  # type: ignore[assignment]
    rows = [("KIND", "NAME", "VERSION", "DISTRIBUTION", "SOURCE"), *registry.inventory(kinds)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[4])


@plugins_app.command("check")
def plugins_check(name: Annotated[str, typer.Argument(help="defence name (harness plugins --kind defence)")],
                  sets: Annotated[list[str] | None, typer.Option("--set", help="defence.FIELD=VALUE: check a "
                                                                 "non-default config")] = None,
                  suite: Annotated[str | None, typer.Option(help="suite whose check configuration runs it "
                                                            "(default: the default suite, tiny at smoke size)")] = None,
                  home: HomeOpt = None,
                  seed: Annotated[int, typer.Option(help="seed of both runs")] = 0) -> None:
    """Conformance check of a defence on the smoke-size tiny suite: one PASS/FAIL line per rule.

    Exit code 0 if every check passes, 1 if any fails, 2 for bad input. The store: --home, else
    $HARNESS_HOME, else a temporary one (the smoke suite builds in about a minute)."""
    from harness.conformance import check

    failed = False
    for result in check(name, suite_name=suite_name(suite), sets=sets or [], home=home, seed=seed):
        typer.echo(result.line())
        failed |= result.ok is False
    raise typer.Exit(1 if failed else 0)


def tuning_dir(path: Path | None) -> Path:
    """Where runs take tuned settings from: ./results (the committed tuning logs) unless --tuned-from says."""
    if path is None:
        return Path("results")
    if not path.is_dir():
        fail(f"--tuned-from {path} is not a directory (a results folder holding <suite>/v<N>/tuning/)")
    return path


@app.command()
def prepare(suite: Annotated[str | None, typer.Argument(help="suite name (default: the declared default suite)")]
            = None, model: ModelOpt = None, sets: SetOpt = None,
            home: HomeOpt = None, force: Annotated[bool, typer.Option("--force/--no-force")] = False) -> None:
    """Build what a suite needs (the tiny suite's base model and judge; paired refusals of a real suite's
    model); cached, automatic on first run."""
    import json

    from harness.pipeline import prepare as prepare_suite
    from harness.preflight import start, writable_dir
    from harness.resolve import resolve_base
    from harness.specs import parse_overrides
    from harness.store import Store

    base = resolve_base(suite_name(suite), parse_overrides(sets or []), model=model)
    store = Store(home)
    writable_dir(store.root, "--home (the artifact store)")
    start(store)
    report = prepare_suite(base.suite, model=base.model, judges=base.judges, eval_spec=base.eval, store=store,
                           force=force)
    typer.echo(json.dumps(report, indent=2))


@app.command()
def run(defence: Annotated[str, typer.Option(help="defence name (harness list defences)")],
        attack: Annotated[str, typer.Option(help="attack name (harness list attacks)")],
        suite: SuiteOpt = None, model: ModelOpt = None,
        seed: Annotated[int, typer.Option(help="seed of the defence (and of the attack unless --attack-seed)")] = 0,
        attack_seed: Annotated[int | None, typer.Option(help="seed of the attack (default: --seed)")] = None,
        sets: SetOpt = None,
        backend: Annotated[str | None, typer.Option(help="generation backend: hf, vllm or auto (vllm with a GPU, "
                                                         "else hf); default: the suite's")] = None,
        results_dir: ResultsOpt = Path("results"), tuned_from: TunedOpt = None, home: HomeOpt = None,
        force: Annotated[bool, typer.Option("--force/--no-force", help="recompute every stage")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="print the run record as JSON on stdout")] = False,
        ) -> None:
    """Defend, evaluate, attack, evaluate: one cell of the benchmark, recorded under results/."""
    import time

    from harness.pipeline import run as run_cell
    from harness.preflight import check_run, start
    from harness.records import record_path
    from harness.report import summary
    from harness.resolve import resolve
    from harness.store import Store

    begin = time.perf_counter()
    spec, s, overrides = resolve(suite_name(suite), defence, attack, seed=seed, attack_seed=attack_seed, sets=sets,
                                 backend=backend, model=model, tuned_from=tuning_dir(tuned_from))
    store = Store(home)
    check_run(spec, s, overrides, store=store, results_dir=results_dir, force=force)
    path = record_path(results_dir, s.name, s.protocol_version, spec.run_id)
    start(store, path.parent)
    record, cached = run_cell(spec, s, overrides, store=store, results_dir=results_dir, force=force)
    if as_json:
        typer.echo(record.model_dump_json(indent=2))
    summary(record, cached=cached, seconds=time.perf_counter() - begin, path=str(path))


@app.command()
def sweep(grid: Annotated[Path, typer.Argument(help="grid file (YAML): suite, model, defences, attacks, conditions; "
                                               "see grids/")],
          executor: Annotated[str, typer.Option(help="local: separate processes on this machine; ray: Ray tasks on "
                                                "a cluster (--ray-address) or a local one")] = "local",
          max_parallel: Annotated[int | None, typer.Option(help="jobs at once (local default 1; ray default: as "
                                                           "many as the cluster's resources allow)")] = None,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="list the cells and which are done; run "
                                                "nothing (needs no model)")] = False,
          status: Annotated[bool, typer.Option("--status", help="print done / running / failed / pending per "
                                               "defence")] = False,
          retries: Annotated[int, typer.Option(help="retries of a failing job before it is listed as failed")] = 1,
          ray_address: Annotated[str | None, typer.Option(help="Ray cluster address for ray.init (e.g. auto, "
                                                          "ray://head:10001); default: $RAY_ADDRESS or a local "
                                                          "cluster")] = None,
          results_dir: ResultsOpt = Path("results"), tuned_from: TunedOpt = None, home: HomeOpt = None) -> None:
    """Run a grid file's cells (each defended model trained once; finished cells are cache hits); exit 1 if any
    cell failed. The store (--home) and --results-dir must be paths every node sees."""
    from harness.executors import make_executor
    from harness.store import Store
    from harness.sweep import prepare_sweep, run_sweep
    from harness.sweep import status as sweep_status
    from harness.sweep_report import dry_run as list_cells
    from harness.sweep_report import status_table, summary

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
    runner = make_executor(executor, parallel=max_parallel, resources=plan.suite.resources, address=ray_address)
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's kill stops the jobs too, as Ctrl-C does
    try:
        result = run_sweep(plan, runner, store=store, results_dir=results_dir, retries=retries)
    finally:
        runner.close()
    summary(plan, result, store)
    if not result.ok:
        raise typer.Exit(1)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@app.command()
def report(suite: SuiteOpt = None, sets: SetOpt = None,
           results_dir: ResultsOpt = Path("results")) -> None:
    """Print the budget table (Table 1 shape) of a suite from its run records, as Markdown."""
    from harness.budget_table import budget_summary, markdown
    from harness.preflight import readable_dir
    from harness.records import load_records
    from harness.resolve import load_suite
    from harness.specs import parse_overrides

    readable_dir(results_dir, "--results-dir")
    suite = suite_name(suite)
    suite_spec, s = load_suite(suite, parse_overrides(sets or [])["suite"])
    folder = results_dir / s.name / f"v{s.protocol_version}"
    summary = budget_summary(load_records(folder), s, suite_spec.params)
    if not summary.rows:
        fail(f"no run records for suite '{suite}' {suite_spec.params} under {folder}")
    typer.echo(markdown(summary))


@app.command()
def tables(suite: Annotated[str | None, typer.Option(help="suite name (default: every suite under results/)")] = None,
           results_dir: ResultsOpt = Path("results"),
           quiet: Annotated[bool, typer.Option("--quiet", help="write the tables, print only their paths")] = False
           ) -> None:
    """Rebuild the condition tables (resistance, stability, generalization, trainability) from run records."""
    from harness.preflight import readable_dir, writable_dir
    from harness.records import load_records
    from harness.safety import check_name, inside
    from harness.tables import build, write_table

    readable_dir(results_dir, "--results-dir")
    pattern = check_name(suite, "suite") if suite is not None else "*"
    folders = sorted(inside(p, results_dir, "results folder") for p in results_dir.glob(f"{pattern}/v*")
                     if p.is_dir())
    if not folders:
        fail(f"no run records under {results_dir}/{pattern}/v*")
    for folder in folders:
        writable_dir(folder, "results folder")
    for folder in folders:
        built = build(load_records(folder))
        for name, frame in built.items():
            path = write_table(frame, name, folder)
            typer.echo(f"{path}  ({len(frame)} rows)")
            if not quiet and len(frame):
                cols = [c for c in frame.columns if c not in ("suite_params", "defence_params", "attack_params",
                        "harness_version", "git_commit", "run_id", "suite", "protocol_version", "judge", "backend",
                        "defence_version")]
                typer.echo(frame[cols].to_string(index=False, max_colwidth=24, float_format=lambda x: f"{x:.3f}"))


@app.command()
def leaderboard(results_dir: Annotated[Path, typer.Option(help="results folder holding <suite>/v<N>/ tables")]
                = Path("results"),
                out: Annotated[Path, typer.Option(help="writes <out>/site/ and <out>/LEADERBOARD.md")]
                = Path("leaderboard")) -> None:
    """Build the static leaderboard site and LEADERBOARD.md from the committed condition tables."""
    from leaderboard.build import build_leaderboard

    typer.echo(str(build_leaderboard(results_dir, out)))


@app.command()
def validate(path: Annotated[Path, typer.Argument(help="a results folder (results/, results/<suite>/v<N>/) or one "
                                                      "record file")] = Path("results")) -> None:
    """Check run records against the record schema, recompute each run id from its spec, and check that the
    committed tables match the records. Exit 0 if all is valid, 1 if anything is not, 2 for a bad path."""
    from harness.validate import validate as validate_results

    failed = False
    for finding in validate_results(path):
        typer.echo(finding.line())
        failed |= not finding.ok
    raise typer.Exit(1 if failed else 0)


@app.command()
def show(run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
         results_dir: ResultsOpt = Path("results"),
         as_json: Annotated[bool, typer.Option("--json", help="print the raw record")] = False) -> None:
    """Print a run record readably."""
    from harness.records import find_record, read_record
    from harness.report import show_record

    record = read_record(find_record(results_dir, run_id))
    if as_json:
        typer.echo(record.model_dump_json(indent=2))
    else:
        show_record(record)


@store_app.command("verify")
def store_verify(home: HomeOpt = None,
                 delete: Annotated[bool, typer.Option("--delete", help="delete damaged artifacts (the next run "
                                                                       "recomputes them)")] = False) -> None:
    """Hash every file of every artifact against its manifest; exit 1 if any is damaged (and kept)."""
    from harness.store import Store

    store = Store(home)
    if not store.root.is_dir():
        fail(f"--home {store.root} is not a directory (no artifact store there)")
    counts = {"ok": 0, "damaged": 0, "deleted": 0, "unverified": 0}
    for kind, key, problem in store.audit():
        if problem is None:
            counts["ok" if store.verified(kind, key) else "unverified"] += 1
            if not store.verified(kind, key):
                typer.echo(f"unverified {kind}/{key}: no manifest (written before verification existed)")
            continue
        if delete:
            store.delete(kind, key)
        counts["deleted" if delete else "damaged"] += 1
        typer.echo(f"{'deleted' if delete else 'damaged'} {kind}/{key}: {problem}")
    typer.echo(", ".join(f"{v} {k}" for k, v in counts.items()) + f" artifact(s) in {store.root}")
    if counts["damaged"]:
        raise typer.Exit(1)


KeepOpt = Annotated[list[Path] | None, typer.Option("--results-dir", help="results folder whose records' artifacts "
                                                   "are kept (repeat: a grid's runs/ too); default: results")]


def _store_and_results(home: Path | None, results: list[Path] | None) -> tuple[Any, list[Path]]:
    from harness.store import Store

    store = Store(home)
    if not store.root.is_dir():
        fail(f"--home {store.root} is not a directory (no artifact store there)")
    folders = results or [Path("results")]
    for folder in folders:  # a mistyped folder would keep nothing: an error, never an empty keep set
        if not folder.is_dir():
            fail(f"--results-dir {folder} is not a directory (the records whose artifacts are kept)")
    return store, folders


@store_app.command("ls")
def store_ls(home: HomeOpt = None, results_dir: KeepOpt = None) -> None:
    """Size of the artifact store per kind and per suite (the suites whose records need each artifact)."""
    from harness.store_gc import human, usage

    store, folders = _store_and_results(home, results_dir)
    use = usage(store, folders)
    typer.echo(f"{'KIND':<14}{'ARTIFACTS':>10}{'SIZE':>12}{'NO RECORD NEEDS':>18}")
    for kind, (n, total, free) in use.by_kind().items():
        typer.echo(f"{kind:<14}{n:>10}{human(total):>12}{human(free):>18}")
    typer.echo(f"\n{'SUITE':<28}{'ARTIFACTS':>10}{'SIZE':>12}")
    for suite, (n, total) in use.by_suite().items():
        typer.echo(f"{suite:<28}{n:>10}{human(total):>12}")
    typer.echo(f"\ntotal {human(sum(use.sizes.values()))} in {len(use.sizes)} artifact(s) in {store.root}")


@store_app.command("gc")
def store_gc(home: HomeOpt = None, results_dir: KeepOpt = None,
             min_age_hours: Annotated[float, typer.Option(min=0, help="never delete artifacts younger than this (a "
                                                          "running grid's have no record yet)")] = 24.0,
             yes: Annotated[bool, typer.Option("--yes", help="delete (default: a dry run that lists what would "
                                                             "go)")] = False) -> None:
    """Delete artifacts that no run record under --results-dir needs (dry run unless --yes)."""
    from harness.store_gc import garbage, human

    store, folders = _store_and_results(home, results_dir)
    found = garbage(store, folders, min_age_hours=min_age_hours)
    for (kind, key), size in found:
        if yes:
            store.delete(kind, key)
        typer.echo(f"{'deleted' if yes else 'would delete'} {kind}/{key} ({human(size)})")
    total = human(sum(size for _, size in found))
    typer.echo(f"{'deleted' if yes else 'dry run: would delete'} {len(found)} artifact(s), {total}; kept what the "
               f"records under {', '.join(map(str, folders))} need" + ("" if yes else " (--yes deletes)"))


@app.command()
def tune(defence: Annotated[str, typer.Argument(help="defence name (built-in or plugin)")],
         suite: SuiteOpt = None, sets: SetOpt = None, results_dir: ResultsOpt = Path("results"),
         home: HomeOpt = None,
         scan: Annotated[bool, typer.Option("--scan", help="run every setting of the search space instead (those "
                                            "matching --set defence.FIELD=VALUE); writes <defence>.scan.json "
                                            "as evidence and never changes the tuned settings")] = False) -> None:
    """Tune a defence on the suite's validation data: the same trials, attack and stability guard for every
    defence; writes results/<suite>/v<N>/tuning/<defence>.json, which later runs take their settings from."""
    from harness.resolve import load_suite
    from harness.specs import parse_overrides
    from harness.store import Store
    from harness.tune import log_path
    from harness.tune import scan as run_scan
    from harness.tune import tune as run_tune

    suite = suite_name(suite)
    overrides = parse_overrides(sets or [])
    suite_spec, s = load_suite(suite, overrides["suite"])
    extra = {target: values for target, values in overrides.items() if values and target not in ("suite", "defence")}
    if extra or (overrides["defence"] and not scan):
        raise ConfigError("tune takes --set suite.FIELD=VALUE, and defence.FIELD=VALUE only with --scan (to fix "
                          "fields of the scanned space); the tuner chooses the defence's settings itself")
    if scan:
        log = run_scan(suite, defence, store=Store(home), results_dir=results_dir, suite_params=suite_spec.params,
                       fixed=overrides["defence"])
    else:
        log = run_tune(suite, defence, store=Store(home), results_dir=results_dir, suite_params=suite_spec.params)
    for t in log.trials:
        mark = "stable" if t.stable else "UNSTABLE: " + "; ".join(t.missed)
        typer.echo(f"{t.params}  harmfulness {t.hs_post:.3f}  AUC {t.auc:.3f}  {mark}  run {t.run_id}")
    if scan:
        typer.echo(f"{len(log.stable)} of {len(log.trials)} scanned settings (of {log.space_size} in the space) "
                   f"pass the stability guard; log {log_path(results_dir, suite, s.protocol_version, defence, 'scan')}")
        return
    for t in log.confirmations:
        typer.echo(f"confirm {t.params} at defence seed {t.seed}: "
                   + ("stable" if t.stable else "UNSTABLE: " + "; ".join(t.missed)) + f"  run {t.run_id}")
    verdict = f"chosen {log.chosen}" if log.passed_guard else "no setting passed the stability guard; defaults kept"
    typer.echo(f"{verdict}; log {log_path(results_dir, suite, s.protocol_version, defence)}")


@app.command()
def schema(check: Annotated[bool, typer.Option("--check", help="exit 1 if the committed schema file is stale")]
           = False) -> None:
    """Write the run record's JSON Schema (schemas/run-record.schema.json) from the typed record models."""
    import json

    from harness.records import SCHEMA_FILE, record_schema

    text = json.dumps(record_schema(), indent=2, sort_keys=True) + "\n"
    if check:
        current = SCHEMA_FILE.read_text() if SCHEMA_FILE.is_file() else ""
        if current != text:
            typer.echo(f"{SCHEMA_FILE} is stale: run `harness schema`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{SCHEMA_FILE} is up to date")
        return
    from harness.store import atomic_write_text

    atomic_write_text(SCHEMA_FILE, text)
    typer.echo(str(SCHEMA_FILE))


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI; turn every user error into one escaped line (exit 2) and Ctrl-C into one (exit 130)."""
    from harness.safety import escape_controls

    try:
        code = app(args=argv, standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except HarnessError as exc:
        typer.echo(f"error: {escape_controls(str(exc))}", err=True)
        code = 2
    except typer.TyperException as exc:  # usage errors: unknown option, missing or malformed value
        message = exc.format_message()
        if message:
            typer.echo(f"error: {escape_controls(message)}", err=True)
        code = exc.exit_code if message else 0  # no message: a group called bare, its help already printed
    if code == 130:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while exiting must not add a traceback
        typer.echo(INTERRUPTED, err=True)
    if code:
        sys.exit(code)
    return None


if __name__ == "__main__":
    main()
