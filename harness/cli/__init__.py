"""The `harness` command line. Thin: each command parses its options, calls one function of harness/ and prints.

The commands live in modules by what they do: `runs` (prepare, run, sweep, tune, tune-attack), `results` (report,
tables, leaderboard, validate, show, publish, schema), `store` (verify, ls, gc) and `plugins` (list, plugins, plugins
check, cards check); this module assembles them into one typer app. Every failure a user can cause is one `error:`
line on stderr (control characters escaped) and exit 2 (exit 1 for a run that fails after its checks: diverged
training or a full disk, with the stage named); Ctrl-C and SIGTERM are one line saying how to resume and exit 130 /
143. Tracebacks are for bugs.
"""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Any

import typer

from harness.cli import plugins, results, runs, store
from harness.cli.help import App
from harness.errors import HarnessError, StageError, is_disk_full

app = App(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
          help="Immunization Bench: does a defence against harmful fine-tuning actually work?")
app.command("list")(plugins.list_)
app.add_typer(plugins.plugins_app, name="plugins")
app.add_typer(plugins.cards_app, name="cards")
for command in (runs.prepare, runs.run, runs.sweep, results.report, results.tables, results.leaderboard,
                results.validate, results.show, runs.tune, results.publish, results.schema):
    app.command()(command)
app.command("tune-attack")(runs.tune_attack)
app.add_typer(store.store_app, name="store")

INTERRUPTED = "interrupted; rerun the same command to resume from the last finished stage"


def version_line() -> str:
    """`immunization-bench 0.1.0 (git 859816d1a2b3, clean)`: the installed package and, in a git checkout, its
    commit and whether the tree has uncommitted changes."""
    from importlib.metadata import PackageNotFoundError, version

    from harness import __version__
    from harness.results.provenance import git_state

    try:
        package = f"immunization-bench {version('immunization-bench')}"
    except PackageNotFoundError:  # run from a source tree that is not installed
        package = f"harness {__version__}"
    commit, dirty = git_state()
    return package + (" (not a git checkout)" if commit == "unknown" else
                      f" (git {commit[:12]}, {'uncommitted changes' if dirty else 'clean'})")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                                help="print the version (package, git commit) and exit")] = False
          ) -> None:
    """Immunization Bench: does a defence against harmful fine-tuning actually work?"""


_TERMINATED: list[int] = []  # set by the SIGTERM handler: typer turns every KeyboardInterrupt into exit 130


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler's or a user's `kill`) unwinds as Ctrl-C does (locks released, temporary files
    removed, a sweep's jobs stopped) and ends with the same line, exit 143."""
    _TERMINATED.append(signum)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI; turn every user error into one escaped line (exit 2; 1 for a run that failed after its
    checks, e.g. diverged training) and Ctrl-C or SIGTERM into one (exit 130 / 143)."""
    from harness.progress import report_every
    from harness.safety import escape_controls

    _TERMINATED.clear()
    previous = _on_sigterm(_terminate)
    try:
        report_every()  # a bad $HARNESS_PROGRESS_EVERY is refused before any work, not in the middle of a run
        code = app(args=argv, standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except HarnessError as exc:
        typer.echo(f"error: {escape_controls(str(exc))}", err=True)
        code = exc.exit_code
    except StageError as exc:  # the input was fine, the machine failed (a full disk): exit 1, the stage named
        typer.echo(f"error: {escape_controls(str(exc))}", err=True)
        code = 1
    except OSError as exc:  # a full disk outside a stage (a record, a table): one line too, never a traceback
        if not is_disk_full(exc):
            raise
        typer.echo(f"error: no space left on device ({escape_controls(str(exc.filename or exc))}); free space "
                   "and rerun to resume", err=True)
        code = 1
    except typer.TyperException as exc:  # usage errors: unknown option, missing or malformed value
        message = exc.format_message()
        if message:
            typer.echo(f"error: {escape_controls(message)}", err=True)
        code = exc.exit_code if message else 0  # no message: a group called bare, its help already printed
    if code == 130 and _TERMINATED:
        code = 143
    if code in (130, 143):
        # A second Ctrl-C or SIGTERM while exiting must not add a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        typer.echo(INTERRUPTED, err=True)
    else:
        _on_sigterm(previous)  # a caller of main() in its own process gets its handler back
    if code:
        sys.exit(code)
    return None


def _on_sigterm(handler: Any) -> Any:
    """Install a SIGTERM handler; returns the previous one (None where signals cannot be set: not the main
    thread, or no handler to restore)."""
    if handler is None:
        return None
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # main() called from another thread: signals stay with the main thread
        return None
