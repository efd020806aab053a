"""Advisory locks (`fcntl.flock`) for the artifact store and the results folders.

Why flock: the kernel drops a lock when the file descriptor that holds it closes, and a process that is
killed (even with -9) closes all of them, so a crashed run can never leave a lock stuck: no pid files, no
timeouts, no stale-lock heuristics. Locks are re-entrant within one process: a stage that holds an
artifact's lock may call `Store.writing`, which takes the same lock again (a second `flock` on a new file
descriptor of the same file would otherwise block on ourselves).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# lock path -> [file descriptor, depth]: the locks this process holds (re-entrancy, and `try_lock` skips them).
_HELD: dict[str, list[int]] = {}


def _open(path: Path) -> int:
    """A descriptor to lock: directories are locked as themselves (no extra file in results/), anything
    else through a lock file that is created on first use and left in place (deleting a lock file is racy)."""
    if path.is_dir():
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


@contextmanager
def file_lock(path: Path, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block; `on_wait()` runs once if another process holds it."""
    key = str(Path(path).absolute())
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    fd = _open(Path(path))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        _HELD[key] = [fd, 1]
        try:
            yield
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Take the lock on `path` only if nobody (this process included) holds it; yields whether it did."""
    key = str(Path(path).absolute())
    if key in _HELD:
        yield False
        return
    fd = _open(Path(path))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        _HELD[key] = [fd, 1]
        try:
            yield True
        finally:
            del _HELD[key]
    finally:
        os.close(fd)
