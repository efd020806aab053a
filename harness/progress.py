"""Progress bars and console output. Everything goes to stderr so `--json` keeps stdout clean."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# Logs and CI capture stderr: give them a readable width instead of rich's 80-column default.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
Advance = Callable[..., None]


@contextmanager
def bar(description: str, total: int | None) -> Iterator[Advance]:
    """A progress bar; call the yielded function with the number of units done (and optional text)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as progress:
        task = progress.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str = "") -> None:
            progress.update(task, advance=n, info=info)

        yield advance


def say(message: str) -> None:
    console.print(message, highlight=False)


def warn(message: str, prefix: str = "warning: ") -> None:
    """One line on stderr, never wrapped, control characters escaped: scripts and tests read these lines."""
    from harness.safety import escape_controls

    console.print(prefix + escape_controls(message), markup=False, highlight=False, emoji=False, soft_wrap=True)


def new_events(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The complete JSON lines a worker process appended to `path` since byte `offset`, and the new offset (a line
    still being written is left for the next call)."""
    import json

    events: list[dict[str, Any]] = []
    if path.exists():
        with path.open("rb") as handle:
            handle.seek(offset)
            for line in iter(handle.readline, b""):
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                events.append(json.loads(line))
    return events, offset
