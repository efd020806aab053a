"""`harness store verify`, `ls`, `gc` and `init`: what the artifact store holds, and its hygiene."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from harness.cli.help import App
from harness.cli.options import HomeOpt, KeepOpt, fail
from harness.results.publish import PUBLISHED, WORKING

store_app = App(no_args_is_help=True, help="Inspect the artifact store.")


@store_app.command("verify")
def store_verify(home: HomeOpt = None,
                 delete: Annotated[bool, typer.Option("--delete", help="delete damaged artifacts (the next run "
                                                                       "recomputes them)")] = False) -> None:
    """Hash every file of every artifact against its manifest; exit 1 if any is damaged (and kept)."""
    from harness.store.artifacts import Store
    from harness.store.gc import verify

    store = Store(home)
    if not store.root.is_dir():
        fail(f"--home {store.root} is not a directory (no artifact store there)")
    counts = {"ok": 0, "damaged": 0, "deleted": 0, "unverified": 0}
    for found in verify(store, delete=delete):
        counts[found.status] += 1
        if found.status != "ok":
            typer.echo(f"{found.status} {found.kind}/{found.key}: {found.problem}")
    _linked(store)
    typer.echo(", ".join(f"{v} {k}" for k, v in counts.items()) + f" artifact(s) in {store.root}")
    if counts["damaged"]:
        raise typer.Exit(1)


@store_app.command("init")
def store_init(home: HomeOpt = None) -> None:
    """Mark a folder as an artifact store: a new or empty one, or one an earlier version wrote (the deleting
    commands refuse a folder without the mark)."""
    from harness.store.artifacts import Store
    from harness.store.layout import init

    typer.echo(init(Store(home).root))


def _linked(store: Any) -> None:
    for link in store.linked():
        typer.echo(f"skipped {link}: a link; the store neither lists, writes nor deletes through links")


def _store_and_results(home: Path | None, results: list[Path] | None) -> tuple[Any, list[Path]]:
    from harness.store.artifacts import Store

    store = Store(home)
    if not store.root.is_dir():
        fail(f"--home {store.root} is not a directory (no artifact store there)")
    # By default the published records' artifacts and those of the working folder (where runs write) are kept.
    folders = results or [PUBLISHED, *([WORKING] if WORKING.is_dir() else [])]
    for folder in folders:  # a mistyped folder would keep nothing: an error, never an empty keep set
        if not folder.is_dir():
            fail(f"--results-dir {folder} is not a directory (the records whose artifacts are kept)")
    return store, folders


@store_app.command("ls")
def store_ls(home: HomeOpt = None, results_dir: KeepOpt = None) -> None:
    """Size of the artifact store per kind and per suite (the suites whose records need each artifact)."""
    from harness.progress import warn
    from harness.store.gc import human, usage

    store, folders = _store_and_results(home, results_dir)
    use = usage(store, folders)
    for path, why in use.unreadable:
        warn(f"cannot read {path} ({why}): the artifacts it needs count as needed by no record")
    typer.echo(f"{'KIND':<14}{'ARTIFACTS':>10}{'SIZE':>12}{'NO RECORD NEEDS':>18}")
    for kind, (n, total, free) in use.by_kind().items():
        typer.echo(f"{kind:<14}{n:>10}{human(total):>12}{human(free):>18}")
    typer.echo(f"\n{'SUITE':<28}{'ARTIFACTS':>10}{'SIZE':>12}")
    for suite, (n, total) in use.by_suite().items():
        typer.echo(f"{suite:<28}{n:>10}{human(total):>12}")
    _linked(store)
    typer.echo(f"\ntotal {human(sum(use.sizes.values()))} in {len(use.sizes)} artifact(s) in {store.root}")


@store_app.command("gc")
def store_gc(home: HomeOpt = None, results_dir: KeepOpt = None,
             min_age_hours: Annotated[float, typer.Option(min=0, metavar="HOURS", help="never delete artifacts "
                                                          "younger than this (a running grid's have no record yet)")]
             = 24.0,
             yes: Annotated[bool, typer.Option("--yes", help="delete (default: a dry run that lists what would "
                                                             "go)")] = False) -> None:
    """Delete artifacts that no run record under --results-dir needs (dry run unless --yes)."""
    from harness.store.gc import garbage, human
    from harness.store.layout import require_marker

    store, folders = _store_and_results(home, results_dir)
    if yes:
        require_marker(store.root, "store gc --yes")
    collected = garbage(store, folders, min_age_hours=min_age_hours)
    found = collected.garbage
    if yes:  # an artifact that stopped being the store's own since it was listed stays
        found = [(art, size) for art, size in found if store.delete(*art)]
        collected.not_owned += len(collected.garbage) - len(found)
    for (kind, key), size in found:
        typer.echo(f"{'deleted' if yes else 'would delete'} {kind}/{key} ({human(size)})")
    _linked(store)
    total = human(sum(size for _, size in found))
    typer.echo(f"{'deleted' if yes else 'dry run: would delete'} {len(found)} artifact(s), {total}; "
               f"{collected.kept(min_age_hours)}; records read from {', '.join(map(str, folders))}"
               + ("" if yes else " (--yes deletes)"))
