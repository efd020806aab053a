"""Progress bars and console output. Everything goes to stderr so `--json` keeps stdout clean.

Every stage that can take more than a few seconds runs inside `bar(description, total, unit)`. In a terminal
that is a rich bar with a count, the elapsed time and an ETA. Without one (CI logs, a pipe, a file) it is plain
lines: one when the stage starts, at most one every `HARNESS_PROGRESS_EVERY` seconds while it runs (default
15), and one when it ends, e.g.

    [defence: repnoise] started: 400 steps
    [defence: repnoise] step 120/400 (30%) elapsed 0:41 eta 1:35  loss 2.310
    [defence: repnoise] done: 400 steps in 2:16  loss 1.204

A stage over within GRACE seconds (scoring 56 answers) prints its end line only, so a log is not half
`started` lines of stages that took no time.

A bar whose total is not known when it opens (a plugin's process decides how many steps it trains) learns it
from its first training loop: `advance(0, expect=N)` says N more units are coming (`harness.training.loop`
says so before its first step, and a plugin's process relays it with its other events: `new_events`).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from harness.errors import HarnessError

# Logs and CI capture stderr: give them a readable width instead of rich's 80-column default.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
# advance(n=1, info="", *, expect=None): n more units done; `info` shown beside the count (e.g. the loss);
# `expect`: that many more units are coming (see the module docstring).
Advance = Callable[..., None]
EVERY = "HARNESS_PROGRESS_EVERY"
DEFAULT_EVERY = 15.0
GRACE = 2.0  # seconds before a stage's start line (never more than the interval: 0 prints it at once)


def report_every() -> float:
    """Seconds between two plain progress lines of one bar: $HARNESS_PROGRESS_EVERY, else 15."""
    raw = os.environ.get(EVERY, "").strip()
    if not raw:
        return DEFAULT_EVERY
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise HarnessError(f"{EVERY}={raw!r} is not a number of seconds (0 or more; e.g. {EVERY}=15)")
    return value


def clock(seconds: float) -> str:
    """`0:41`, `12:05`, `1:02:03`: a duration as a person reads it."""
    s = max(0, round(seconds))
    hours, rest = divmod(s, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def plural(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 or not unit else 's'}"


def expected_total(total: float | None, done: float, expect: int) -> float:
    """The total once `expect` more units are announced: a bar without a total (or whose total is reached:
    a second training loop in one stage) grows by them; a bar whose owner gave a total already counts them."""
    return done + expect if total is None or done >= total else total


class Lines:
    """A bar as plain lines, for output that is not a terminal: a line at start (`begin`: at once, or from a timer
    thread once the stage has run a moment), at most one every `every` seconds while units advance, and one at
    the end."""

    def __init__(self, description: str, total: int | None, *, unit: str = "step", every: float = DEFAULT_EVERY,
                 write: Callable[[str], None], now: Callable[[], float] = time.monotonic, begin: bool = True,
                 info: str = ""):
        self.description, self.total, self.unit, self.every = description, total, unit, every
        self.write, self.now = write, now
        self.done, self.info = 0, info
        self.before_first = bool(info)  # `info` says what happens before the first advance: dropped then
        self.start = self.last = now()
        # (time, units done) when the work began: the first units, or a training loop's announcement. The ETA is
        # measured from there, so a process's start-up (imports, loading a model) does not inflate it.
        self.begun: tuple[float, int] | None = None
        self.said = False  # the start line is out (or no longer due: the stage ended first)
        self.lock = threading.Lock()
        if begin:
            self.begin()

    def begin(self) -> None:
        """The start line, once, unless the stage has ended."""
        with self.lock:
            if not self.said:
                self.said = True
                self.write(f"[{self.description}] started"
                           + (f": {plural(self.total, self.unit)}" if self.total is not None else ""))

    def advance(self, n: int = 1, info: str = "", *, expect: int | None = None) -> None:
        now = self.now()
        if expect is not None:
            self.total = int(expected_total(self.total, self.done, expect))
            self.begun = (now, self.done)
        self.done += n
        self.info = info or ("" if self.before_first else self.info)
        self.before_first = False
        if self.begun is None and n:
            self.begun = (now, self.done)
        if n and now - self.last >= self.every:
            self.begin()
            self.last = now
            self.write(self.line(now))

    def line(self, now: float) -> str:
        """`[name] step 120/400 (30%) elapsed 0:41 eta 1:35  info`; without a total, `step 120/?` and no ETA."""
        elapsed = now - self.start
        text = f"[{self.description}] {self.unit} {self.done}/{'?' if self.total is None else self.total}"
        if self.total:
            text += f" ({min(100, 100 * self.done // self.total)}%)"
        text += f" elapsed {clock(elapsed)}"
        if self.total and self.begun and self.begun[1] < self.done < self.total and now > self.begun[0]:
            rate = (self.done - self.begun[1]) / (now - self.begun[0])
            text += f" eta {clock((self.total - self.done) / rate)}"
        return text + (f"  {self.info}" if self.info else "")

    def close(self, failed: bool = False) -> None:
        with self.lock:
            self.said = True  # a start line still due is not: the end line says it all
        if self.before_first:
            self.info = ""
        elapsed = clock(self.now() - self.start)
        if failed:
            of = "" if self.total is None else f"/{self.total}"
            self.write(f"[{self.description}] stopped at {self.unit} {self.done}{of} after {elapsed}")
        else:
            self.write(f"[{self.description}] done: {plural(self.done, self.unit)} in {elapsed}"
                       + (f"  {self.info}" if self.info else ""))


def plain(message: str) -> None:
    """One line on stderr, never wrapped nor styled, control characters escaped."""
    from harness.safety import escape_controls

    console.print(escape_controls(message), markup=False, highlight=False, emoji=False, soft_wrap=True)


@contextmanager
def bar(description: str, total: int | None, unit: str = "step", info: str = "") -> Iterator[Advance]:
    """A stage's progress (see the module docstring); call the yielded function as `advance(n, info)` with the
    units done since the last call, or `advance(0, expect=N)` to announce N more. `info` is shown beside the
    count until an `advance` gives another (e.g. what happens before the first unit)."""
    if not console.is_terminal:
        every = report_every()
        grace = min(GRACE, every)
        lines = Lines(description, total, unit=unit, every=every, write=plain, begin=not grace, info=info)
        timer = threading.Timer(grace, lines.begin)
        timer.daemon = True  # never keeps a finished (or interrupted) process alive
        if grace:
            timer.start()
        try:
            yield lines.advance
        except BaseException:
            timer.cancel()
            lines.close(failed=True)
            raise
        timer.cancel()
        lines.close()
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit + "s"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, info=info)
        initial = {"info": bool(info)}  # the opening info is replaced by the first advance, even without one

        def advance(n: int = 1, info: str = "", *, expect: int | None = None) -> None:
            if expect is not None:
                state = progress.tasks[task]
                progress.update(task, total=expected_total(state.total, state.completed, expect))
            fields = {"info": info} if info or initial["info"] else {}
            initial["info"] = False
            progress.update(task, advance=n, **fields)

        yield advance
        if initial["info"]:  # nothing happened after all (a plugin that changed nothing)
            progress.update(task, info="")


def say(message: str) -> None:
    console.print(message, highlight=False)


def warn(message: str, prefix: str = "warning: ") -> None:
    """One line on stderr, never wrapped, control characters escaped: scripts and tests read these lines."""
    plain(prefix + message)


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


def relay(progress: Advance | None, event: dict[str, Any]) -> None:
    """Pass a worker's progress event (`{"event": "progress", "n": .., "info": .., "expect": ..}`) to a bar."""
    if progress is None or event.get("event") != "progress":
        return
    expect = event.get("expect")
    progress(int(event.get("n", 1)), str(event.get("info", "")),
             **({"expect": int(expect)} if expect is not None else {}))
