"""`harness report`, `tables`, `leaderboard`, `validate`, `show` and `schema`: the commands that read records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.cli.options import HomeOpt, ResultsOpt, SetOpt, SuiteOpt, fail, suite_name


def report(suite: SuiteOpt = None, sets: SetOpt = None,
           results_dir: ResultsOpt = Path("results")) -> None:
    """Print the budget table (Table 1 shape) of a suite from its run records, as Markdown. Records that fail
    validation (inconsistent numbers, plugins not installed) are left out, each named on stderr."""
    from harness.preflight import readable_dir
    from harness.resolve import load_suite
    from harness.results.budget_table import budget_rows, markdown
    from harness.results.records import results_folder
    from harness.results.validate import validated_records
    from harness.specs import parse_overrides

    readable_dir(results_dir, "--results-dir")
    suite = suite_name(suite)
    suite_spec, s = load_suite(suite, parse_overrides(sets or [])["suite"])
    folder = results_folder(results_dir, s.name, s.protocol_version)
    rows, phi = budget_rows(validated_records(folder), s, suite_spec.params)
    if not rows:
        fail(f"no run records for suite '{suite}' {suite_spec.params} under {folder}")
    typer.echo(markdown(rows, s, phi))


def tables(suite: Annotated[str | None, typer.Option(help="suite name (default: every suite under results/)")] = None,
           results_dir: ResultsOpt = Path("results"),
           quiet: Annotated[bool, typer.Option("--quiet", help="write the tables, print only their paths")] = False
           ) -> None:
    """Rebuild the condition tables (resistance, stability, generalization, trainability) from run records."""
    from harness.preflight import readable_dir, writable_dir
    from harness.results.records import load_records
    from harness.results.tables import build, write_table
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
        built = build(load_records(folder))
        for name, frame in built.items():
            path = write_table(frame, name, folder)
            typer.echo(f"{path}  ({len(frame)} rows)")
            if not quiet and len(frame):
                cols = [c for c in frame.columns if c not in ("suite_params", "defence_params", "attack_params",
                        "harness_version", "git_commit", "run_id", "suite", "protocol_version", "judge", "backend",
                        "defence_version")]
                typer.echo(frame[cols].to_string(index=False, max_colwidth=24, float_format=lambda x: f"{x:.3f}"))


def leaderboard(results_dir: Annotated[Path, typer.Option(help="results folder holding <suite>/v<N>/ tables")]
                = Path("results"),
                out: Annotated[Path, typer.Option(help="writes <out>/site/ and <out>/LEADERBOARD.md")]
                = Path("leaderboard")) -> None:
    """Build the static leaderboard site and LEADERBOARD.md from the committed condition tables."""
    from leaderboard.build import build_leaderboard

    typer.echo(str(build_leaderboard(results_dir, out)))


def validate(path: Annotated[Path, typer.Argument(help="a results folder (results/, results/<suite>/v<N>/) or one "
                                                      "record file")] = Path("results"),
             deep: Annotated[bool, typer.Option("--deep", help="also re-derive each record's metrics from the "
                                                "generations and scores it names in the artifact store (--home); "
                                                "what the store lacks is reported as not checked")] = False,
             rerun: Annotated[int, typer.Option(min=0, help="also rerun N randomly sampled cells end to end into a "
                                                "temporary results folder and compare their metrics (in the --home "
                                                "store, reusing its cached stages, or in a temporary store)")] = 0,
             seed: Annotated[int, typer.Option(min=0, help="seed of the --rerun sample")] = 0,
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
    for finding in validate_results(path, deep=Store(home) if deep else None, rerun=rerun, seed=seed, home=home):
        typer.echo(finding.line())
        failed |= not finding.ok
    raise typer.Exit(1 if failed else 0)


def show(run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix)")],
         results_dir: ResultsOpt = Path("results"),
         as_json: Annotated[bool, typer.Option("--json", help="print the raw record")] = False) -> None:
    """Print a run record readably."""
    from harness.results.console import show_record
    from harness.results.records import find_record, read_record

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
