"""Typed errors. A `HarnessError` is bad input: the CLI prints its message on one line and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """Bad input from the user (unknown name, invalid config, missing file, corrupt record)."""

    exit_code = 2  # the CLI's exit status for it: bad input, found before any work


class RunFailed(HarnessError):
    """Work that started and cannot finish for a reason the user can act on (a training run that diverged):
    one line naming the stage, exit 1, as a failed run and not as bad input."""

    exit_code = 1


class TrainingDiverged(RunFailed):
    """A non-finite loss or weights in training. `stage` is set once the stage that trained is known
    (`harness.stages.Stages.cached`), so the line says where and which setting to lower."""

    def __init__(self, message: str, stage: str | None = None):
        super().__init__(message)
        self.stage = stage


class UnknownNameError(HarnessError):
    """A registry lookup for a name that does not exist."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        super().__init__(f"Unknown {kind} '{name}'.{hint} Available: {', '.join(known) or '(none)'}")


class PluginLoadError(HarnessError):
    """A plugin that is registered (entry point) but fails to import or register."""


class ConfigError(HarnessError):
    """An invalid configuration; the message names every bad field at once."""


class CorruptRecordError(HarnessError):
    """A result record or artifact that is torn, unparsable or fails its schema."""
