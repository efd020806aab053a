"""Options and helpers the command modules share: typed option aliases, one-line failures, default names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from harness import registry
from harness.errors import HarnessError
from harness.results.publish import writing_note

SetOpt = Annotated[list[str] | None, typer.Option("--set", metavar="TARGET.FIELD=VALUE", help="override a config "
                                                  "field (targets: suite, defence, attack, eval, subsets, model); "
                                                  "repeat for more")]
ModelOpt = Annotated[str | None, typer.Option("--model", metavar="MODEL", help="base model: a hub id or a local "
                                              "checkpoint folder (default: the suite's); pin with --set "
                                              "model.revision=...")]
SuiteOpt = Annotated[str | None, typer.Option(metavar="SUITE", help="suite name (default: the declared default "
                                                                    "suite, see `harness list suites`)")]
ResultsOpt = Annotated[Path, typer.Option(metavar="DIR", help="results folder holding <suite>/v<N>/ records")]
WorkOpt = Annotated[Path, typer.Option(metavar="DIR", help="where run records are written (<dir>/<suite>/v<N>/): the "
                                       "working folder runs/ by default; `harness publish` copies records into "
                                       "results/")]
TunedOpt = Annotated[Path | None, typer.Option(metavar="DIR", help="results folder whose committed tuning logs "
                                                "(<suite>/v<N>/tuning/) supply each defence's tuned settings; default: "
                                                "./results, also when --results-dir writes elsewhere")]
HomeOpt = Annotated[Path | None, typer.Option(metavar="DIR", help="artifact store; default $HARNESS_HOME or "
                                              "~/.cache/immunization-bench")]
def fail(message: str) -> None:
    raise HarnessError(message)


def suite_name(given: str | None) -> str:
    """The suite a command runs: the one given, or the default a distribution declares."""
    return given or registry.default_name("suite")


def note_published(results_dir: Path) -> None:
    """One line when a computing command was told to write into the published results."""
    note = writing_note(results_dir)
    if note is not None:
        typer.echo(note, err=True)


def tuning_dir(path: Path | None) -> Path:
    """Where runs take tuned settings from: ./results (the committed tuning logs) unless --tuned-from says."""
    if path is None:
        return Path("results")
    if not path.is_dir():
        fail(f"--tuned-from {path} is not a directory (a results folder holding <suite>/v<N>/tuning/)")
    return path


KeepOpt = Annotated[list[Path] | None, typer.Option("--results-dir", metavar="DIR", help="results folder whose "
                                                   "records' artifacts are kept (repeat for more); default: results "
                                                   "and runs")]


def _store_and_results(home: Path | None, results: list[Path] | None) -> tuple[Any, list[Path]]:
    from harness.store.artifacts import Store

    store = Store(home)
    if not store.root.is_dir():
        fail(f"--home {store.root} is not a directory (no artifact store there)")
    folders = results or [Path("results")]
    for folder in folders:  # a mistyped folder would keep nothing: an error, never an empty keep set
        if not folder.is_dir():
            fail(f"--results-dir {folder} is not a directory (the records whose artifacts are kept)")
    return store, folders
