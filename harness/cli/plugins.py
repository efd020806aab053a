"""`harness list`, `harness plugins [check]` and `harness cards check`: what is installed, the conformance check of a
submission, and the defences' fidelity cards."""

from __future__ import annotations

from typing import Annotated

import typer

from harness import registry
from harness.cli.help import App
from harness.cli.options import HomeOpt, fail, suite_name

plugins_app = App(no_args_is_help=False, help="Installed plugins, and the conformance check for submissions.")
cards_app = App(no_args_is_help=True, help="Fidelity cards: each defence beside its paper and its reference code.")


def list_(kind: Annotated[str | None, typer.Argument(help="defence, attack, task, judge or suite (default: all)")]
          = None) -> None:
    """List registered plugins with a one-line description; the suite commands use when none is named is
    marked (default)."""
    from harness.errors import HarnessError

    kinds = registry.KINDS
    if kind is not None:
        singular = kind.removesuffix("s")
        if singular not in kinds:
            fail(f"Unknown kind '{kind}'. Available: {', '.join(kinds)}")
        kinds = (singular,)  # type: ignore[assignment]
    for k in kinds:
        typer.echo(f"{k}s:")
        try:
            default = registry.default_name(k) if k == "suite" else None
        except HarnessError:  # none or several declared: nothing to mark (a run without --suite says why)
            default = None
        rows = [(f"{name} (default)" if name == default else name, desc) for name, desc in registry.describe(k)]
        width = max((len(name) for name, _ in rows), default=0)
        for name, desc in rows:
            typer.echo(f"  {name:<{width}}  {desc}")


@plugins_app.callback(invoke_without_command=True)
def plugins(ctx: typer.Context,
            kind: Annotated[str | None, typer.Option(metavar="KIND", help="only this kind: defence, attack, task, "
                                                                          "judge, suite")] = None
            ) -> None:
    """List installed plugins: kind, name, version, distribution (package and version) and source file."""
    if ctx.invoked_subcommand is not None:
        return
    kinds = registry.KINDS
    if kind is not None:
        if kind.removesuffix("s") not in kinds:
            fail(f"Unknown kind '{kind}'. Available: {', '.join(kinds)}")
        kinds = (kind.removesuffix("s"),)  # type: ignore[assignment]
    found = registry.inventory(kinds)
    rows = [("KIND", "NAME", "VERSION", "DISTRIBUTION", "SOURCE"), *(r[:5] for r in found)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[4])
    broken = [r for r in found if r.problem]
    if broken:  # below the table, one line each: a reason in a cell would stretch every row
        typer.echo(f"\n{len(broken)} broken plugin(s), not usable until fixed:")
        for r in broken:
            typer.echo(f"  {r.kind} {r.name}: {r.problem}")


@plugins_app.command("check")
def plugins_check(names: Annotated[list[str], typer.Argument(metavar="DEFENCE...", help="defence name(s) (harness "
                                                                                    "plugins --kind defence)")],
                  sets: Annotated[list[str] | None, typer.Option("--set", metavar="defence.FIELD=VALUE",
                                                                 help="check a non-default config")] = None,
                  suite: Annotated[str | None, typer.Option(metavar="SUITE", help="suite whose check configuration "
                                                            "runs it "
                                                            "(default: the default suite, tiny at smoke size)")] = None,
                  home: HomeOpt = None,
                  seed: Annotated[int, typer.Option(metavar="SEED", help="seed of both runs")] = 0) -> None:
    """Conformance check of defences on the smoke-size tiny suite: one PASS/FAIL line per rule (several defences:
    each under a `defence NAME` line, the suite and the time yardstick shared).

    Exit code 0 if every check passes, 1 if any fails, 2 for bad input (any name: before any work). The store:
    --home, else $HARNESS_HOME, else a temporary one (the smoke suite builds in about 1.5 minutes on two CPU cores)."""
    import contextlib
    import os
    import tempfile
    from pathlib import Path

    from harness.conformance import check

    with contextlib.ExitStack() as stack:
        shared = len(names) > 1 and home is None and "HARNESS_HOME" not in os.environ  # one suite build for all
        if shared:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="harness-check-home-")))
        checks = [check(name, suite_name=suite_name(suite), sets=sets or [], home=home, seed=seed) for name in names]
        firsts = [next(each) for each in checks]  # every name validated (bad input raises) before any work starts
        if shared:
            typer.echo(f"INFO store: a temporary one, deleted afterwards ({home}); --home DIR keeps the suite's build")
        failed = False
        for name, first, rest in zip(names, firsts, checks, strict=True):
            if len(names) > 1:
                typer.echo(f"defence {name}")
            for result in (first, *rest):
                typer.echo(result.line())
                failed |= result.ok is False
    raise typer.Exit(1 if failed else 0)


@cards_app.command("check")
def cards_check(names: Annotated[list[str] | None, typer.Argument(metavar="DEFENCE", help="defences whose cards to "
                                                                  "check (default: every registered defence)")] = None
                ) -> None:
    """Check fidelity cards: one line per defence, ok or its problems.

    A card (`<module>.card.yaml` beside the defence's module) lists, per aspect, the paper's, the reference code's
    and our setting, and how ours relates: the same, a switch (Config values restoring the reference: each must
    exist, validate and change the run id) or a reason. The Config with every switch applied is trained for two
    steps on a tiny random model. Every built-in defence needs a card. Exit code 0 if every card passes, 1 if any
    has a problem, 2 for an unknown name."""
    from harness.cards import check_many

    reports = check_many(names or None)
    for report in reports:
        typer.echo(report.line())
    raise typer.Exit(1 if any(r.problems for r in reports) else 0)
