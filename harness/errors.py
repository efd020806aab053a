"""Typed errors. A `HarnessError` is bad input: the CLI prints its message on one line and exits 2."""

from __future__ import annotations

import difflib
import errno
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


class PluginRefused(HarnessError):
    """A defence or attack refused its config on this suite (it raised a HarnessError in its process: e.g. a
    persona longer than the suite's context). Bad input, exit 2; a search records the point and goes on."""


class ConfigError(HarnessError):
    """An invalid configuration; the message names every bad field at once."""


class CorruptRecordError(HarnessError):
    """A result record or artifact that is torn, unparsable or fails its schema."""


class StageError(Exception):
    """A stage that failed for a reason outside the harness and the user's input (a full disk): the CLI prints
    its one line, naming the stage, and exits 1. Not a HarnessError: the input was fine, rerunning resumes."""


NO_SPACE_PHRASES = ("No space left on device", "StorageFull", "Disk quota exceeded", "os error 28")


def is_disk_full(exc: BaseException) -> bool:
    """Is `exc` a full disk (or quota)? An OSError says so by errno; writers in other languages (safetensors'
    SafetensorError, pyarrow) say so in their message."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(phrase in str(exc) for phrase in NO_SPACE_PHRASES)


class DiskFullError(StageError):
    """No space left while writing `what` (a stage, or an artifact) to `path`."""

    def __init__(self, what: str, path: object, *, stage_named: bool = False):
        self.what, self.path, self.stage_named = what, path, stage_named
        super().__init__(f"no space left on device while writing {what} to {path}; free space and rerun to resume")
