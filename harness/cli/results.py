"""`harness report`, `tables`, `leaderboard`, `validate`, `show` and `schema`: the commands that read records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.cli.options import HomeOpt, ResultsOpt, SetOpt, SuiteOpt, fail, suite_name


def report(suite: SuiteOpt = None, sets: SetOpt = None,
           results_dir: ResultsOpt = Path("results"),
           protocol: Annotated[int | None, typer.Option(metavar="N", min=1, help="the board of protocol version N "
                                                        "(<suite>/v<N>/, e.g. a published board of an older "
                                                        "protocol); default: the installed suite's")] = None) -> None:
    """Print the budget table (Table 1 shape) of a suite from its run records, as Markdown. Records that fail
    validation (inconsistent numbers, plugins not installed) are left out, each named on stderr. An older
    protocol's board is read as its records say (their budgets, phi and headline measure); the reference defence
    and the useful-QA ratio are the installed suite's. The records of every numbered world of the config (e.g. the
    tiny suite's `suite.seed` 0, 1, 2) are pooled, each world a unit; `--set suite.seed=1` reports one world."""
    from harness.preflight import readable_dir
    from harness.resolve import load_suite
    from harness.results.budget_table import budget_summary, markdown
    from harness.results.judge_agreement import describe, recorded
    from harness.results.records import results_folder
    from harness.results.validate import validated_records
    from harness.specs import canonical_json, parse_overrides
    from harness.tuning.attacker_log import budget_lines, tuned_attack_runs

    readable_dir(results_dir, "--results-dir")
    suite = suite_name(suite)
    suite_sets = parse_overrides(sets or [])["suite"]
    suite_spec, s = load_suite(suite, suite_sets)
    folder = results_folder(results_dir, s.name, protocol or s.protocol_version)
    records = list(validated_records(folder))
    # Every numbered world of the config pooled, unless --set names one world.
    summary = budget_summary(records, s, suite_spec.params, pool_worlds=not set(suite_sets) & set(s.world_params),
                             tuned_runs=tuned_attack_runs(results_dir, s.name, protocol or s.protocol_version))
    if not summary.rows:
        fail(f"no run records for suite '{suite}' {suite_spec.params} under {folder}")
    typer.echo(markdown(summary))
    for line in describe(recorded(r for r in records if canonical_json(r.spec.suite.params) in summary.configs)):
        typer.echo(f"\nJudges: {line}")
    budgets = budget_lines(results_dir, s.name, protocol or s.protocol_version, (r.key.name for r in summary.rows))
    if budgets:
        typer.echo("\nTuning budgets, side by side (the tuning logs under tuning/ and tuning/attacker/):")
        typer.echo("\n".join(budgets))


def tables(suite: Annotated[str | None, typer.Option(metavar="SUITE", help="suite name (default: every suite under "
                                                                          "results/)")] = None,
           results_dir: ResultsOpt = Path("results"),
           quiet: Annotated[bool, typer.Option("--quiet", help="write the tables, print only their paths")] = False
           ) -> None:
    """Rebuild the condition tables (resistance, stability, generalization, trainability) from run records."""
    from harness.preflight import readable_dir, writable_dir
    from harness.results.tables import rebuild
    from harness.safety import check_name, inside

    readable_dir(results_dir, "--results-dir")
    pattern = check_name(suite, "suite") if suite is not None else "*"
    folders = sorted(inside(p, results_dir, "results folder") for p in results_dir.glob(f"{pattern}/v*")
                     if p.is_dir())
    if not folders:
        fail(f"no run records under {results_dir}/{pattern}/v*")
    for folder in folders:
        writable_dir(folder, "results folder")
    for folder in folders:
        for path, frame in rebuild(folder):  # an unchanged table keeps its file
            typer.echo(f"{path}  ({len(frame)} rows)")
            if not quiet and len(frame):
                cols = [c for c in frame.columns if c not in ("suite_params", "defence_params", "attack_params",
                        "harness_version", "git_commit", "run_id", "suite", "protocol_version", "judge", "backend",
                        "defence_version")]
                typer.echo(frame[cols].to_string(index=False, max_colwidth=24, float_format=lambda x: f"{x:.3f}"))


def leaderboard(results_dir: Annotated[Path, typer.Option(metavar="DIR", help="results folder holding <suite>/v<N>/ "
                                                                            "tables")] = Path("results"),
                out: Annotated[Path, typer.Option(metavar="DIR", help="writes <out>/site/ and <out>/LEADERBOARD.md")]
                = Path("leaderboard")) -> None:
    """Build the static leaderboard site and LEADERBOARD.md from the committed condition tables."""
    from leaderboard.build import build_leaderboard

    typer.echo(str(build_leaderboard(results_dir, out)))


def validate(path: Annotated[Path, typer.Argument(help="a results folder (results/, results/<suite>/v<N>/) or one "
                                                      "record file")] = Path("results"),
             deep: Annotated[bool, typer.Option("--deep", help="also re-derive each record's metrics from the "
                                                "generations and scores it names in the artifact store (--home); "
                                                "what the store lacks is reported as not checked")] = False,
             rerun: Annotated[int, typer.Option(min=0, metavar="N", help="also rerun N randomly sampled cells end "
                                                "to end into a temporary results folder and compare their metrics "
                                                "(in the --home store, reusing its cached stages, or in a temporary "
                                                "store)")] = 0,
             seed: Annotated[int, typer.Option(min=0, metavar="SEED", help="seed of the --rerun sample")] = 0,
             allow_dirty: Annotated[bool, typer.Option("--allow-dirty", help="accept records made from a tree with "
                                                       "uncommitted changes where the suite requires clean ones (a "
                                                       "working folder; never results/)")] = False,
             home: HomeOpt = None) -> None:
    """Check run records against the record schema, recompute each run id from its spec, check that each record
    agrees with itself and names installed plugins, and that the committed tables match the records. Exit 0 if
    all is valid (WARN lines are notes), 1 if anything is not, 2 for a bad path or option."""
    from harness.preflight import readable_dir
    from harness.results.validate import validate as validate_results
    from harness.store.artifacts import Store

    if home is not None:
        readable_dir(home, "--home")
    failed = False
    for finding in validate_results(path, deep=Store(home) if deep else None, rerun=rerun, seed=seed, home=home,
                                     allow_dirty=allow_dirty):
        typer.echo(finding.line())
        failed |= not finding.ok
    raise typer.Exit(1 if failed else 0)


def show(run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
         results_dir: Annotated[Path | None, typer.Option(metavar="DIR", help="results folder (default: results/, "
                                                          "then the working "
                                                          "folder runs/)")] = None,
         as_json: Annotated[bool, typer.Option("--json", help="print the raw record")] = False) -> None:
    """Print a run record readably."""
    from harness.results.console import show_record
    from harness.results.publish import PUBLISHED, WORKING
    from harness.results.records import find_record, read_record

    if results_dir is None:  # a published record, else one of this machine's working runs
        found = PUBLISHED.is_dir() and any(PUBLISHED.glob(f"*/v*/{run_id}*.json"))
        results_dir = PUBLISHED if found or not WORKING.is_dir() else WORKING
    record = read_record(find_record(results_dir, run_id))
    if as_json:
        typer.echo(record.model_dump_json(indent=2))
    else:
        show_record(record)


def schema(check: Annotated[bool, typer.Option("--check", help="exit 1 if the committed schema file is stale")]
           = False) -> None:
    """Write the run record's JSON Schema (schemas/run-record.schema.json) from the typed record models."""
    import json

    from harness.results.records import SCHEMA_FILE, record_schema

    text = json.dumps(record_schema(), indent=2, sort_keys=True) + "\n"
    if check:
        current = SCHEMA_FILE.read_text() if SCHEMA_FILE.is_file() else ""
        if current != text:
            typer.echo(f"{SCHEMA_FILE} is stale: run `harness schema`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{SCHEMA_FILE} is up to date")
        return
    from harness.store.artifacts import atomic_write_text

    atomic_write_text(SCHEMA_FILE, text)
    typer.echo(str(SCHEMA_FILE))


def publish(run_ids: Annotated[list[str] | None, typer.Argument(metavar="RUN_ID", help="run ids (or unique "
                                                                "prefixes) of records in --from to publish")] = None,
            every: Annotated[bool, typer.Option("--all", help="every record and tuning log in --from made with the "
                                                "suite's default settings (others are listed and kept)")] = False,
            logs: Annotated[bool, typer.Option("--logs", help="every tuning and tuned-attacker log in --from, with "
                                               "the records it names (trials, the tuned attacker's test runs)")]
            = False,
            source: Annotated[Path, typer.Option("--from", metavar="DIR", help="working results folder")]
            = Path("runs"),
            target: Annotated[Path, typer.Option("--to", metavar="DIR", help="published results folder")]
            = Path("results"),
            allow_dirty: Annotated[bool, typer.Option("--allow-dirty", help="also records made from a git tree "
                                                      "with uncommitted changes (never for a protocol its suite "
                                                      "requires clean)")] = False,
            replace_logs: Annotated[bool, typer.Option("--replace-logs", help="replace a published tuning log that "
                                                       "differs (a re-tune)")] = False,
            dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be published; write "
                                                  "nothing")] = False) -> None:
    """Copy records (and tuning logs) from the working folder into the published results after checks, then
    rebuild that folder's tables. Never overwrites a record; refuses records made with non-default suite settings,
    from a dirty tree (without --allow-dirty), or that do not validate: then nothing is written."""
    from harness.results.publish import plan
    from harness.results.publish import publish as write

    the_plan = plan(source, target, run_ids=list(run_ids or []), every=every, allow_dirty=allow_dirty,
                    replace_logs=replace_logs, logs=logs)
    for line in the_plan.kept:
        typer.echo(line, err=True)
    if not the_plan.problems:
        for item in the_plan.items:
            typer.echo(f"{'would publish' if dry_run else 'publish'} {item.kind}: {item.src} -> {item.dst}")
    if dry_run:
        if the_plan.problems:
            fail(f"publish would be refused: {'; '.join(the_plan.problems)}")
        return
    tables_written = write(the_plan)
    for path in tables_written:
        typer.echo(f"rebuilt {path}")
    records = sum(i.kind == "record" for i in the_plan.items)
    n_logs = sum(i.kind in ("tuning", "scan", "attacker") for i in the_plan.items)
    if not the_plan.items:
        typer.echo(f"nothing new to publish from {source}")
        return
    typer.echo(f"published {records} record(s), {len(the_plan.items) - records - n_logs} tuning trial record(s) and "
               f"{n_logs} log(s) into {target}; rebuild the leaderboard with `harness leaderboard`")
