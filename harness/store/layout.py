"""What makes a folder an artifact store, and which of its folders hold artifacts.

Why: `harness store gc --yes` and `harness store verify --delete` delete. Pointed at the wrong folder (a home
directory, a checkout) they must delete nothing, so a store says it is one: a marker file
(`.immunization-bench-store.json`, with the store's format version) that the harness writes when it creates a
store, or when a run adopts a folder an earlier version created (one holding the journal, the locks folder or
an artifact with its meta.json). The deleting commands refuse a folder without it. `harness store init`
marks such an older store by hand.

Artifacts live only in folders of known kinds: the built-in stage kinds below, and any kind a plugin wrote
(recorded in the marker when the store first writes it). Everything else under the store root (a results
folder kept there, the sweep's job files, anything a user put there) is not an artifact and is never listed,
verified or deleted.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.store.locks import file_lock

MARKER = ".immunization-bench-store.json"
FORMAT = 1                 # bump when the layout changes in a way an older harness must not read or delete
JOURNAL = "journal.jsonl"  # one line per artifact this store committed (audits; counts computations in tests)
LOCKS = ".locks"
META = "meta.json"

# The built-in artifact kinds (harness.stages re-exports the stage kinds; plugins import them from here).
MODELS, GENERATIONS, SCORES = "models", "generations", "scores"
DEGENERATE, STABILITY, TRAINABILITY, GOLD_NLL = "degenerate", "stability", "trainability", "gold_nll"
PAIRING, SUITES, FLOORS = "pairing", "suites", "floors"
BUILTIN_KINDS = frozenset({MODELS, GENERATIONS, SCORES, DEGENERATE, STABILITY, TRAINABILITY, GOLD_NLL, PAIRING,
                           SUITES, FLOORS})
KIND_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")  # a plain folder name: no dots, no separators


_UMASK: int | None = None


def umask() -> int:
    """The process's umask, read without changing it where Linux allows (/proc): `os.umask(0)` then restore
    would briefly let another thread (a sweep's) create files with no mask at all."""
    global _UMASK
    if _UMASK is None:
        try:
            line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("Umask:"))
            _UMASK = int(line.split()[1], 8)
        except (OSError, StopIteration, ValueError, IndexError):
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return _UMASK


def public_mode(fd_or_path: int | str | Path, *, folder: bool = False) -> None:
    """Give a file (or folder) made by `mkstemp` / `mkdtemp` (always 0600 / 0700) the mode an ordinary
    `open` / `mkdir` would have given it under the user's umask, so records, tables and logs are as readable
    as any other file the user writes."""
    mode = (0o777 if folder else 0o666) & ~umask()
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, mode)
    else:
        os.chmod(fd_or_path, mode)


def same_content(path: Path, data: bytes) -> bool:
    """Does `path` already hold exactly `data`? (A rewrite of identical bytes would still change its mtime and
    touch a committed file for nothing.)"""
    try:
        return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def atomic_write_text(path: Path, text: str) -> bool:
    """Write `text` to `path` via a temporary file and a rename, so readers never see half a file; with the
    user's umask. A file that already holds exactly `text` is left untouched. Returns whether it wrote."""
    data = text.encode()
    if same_content(path, data):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            public_mode(fh.fileno())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def is_regular_file(path: Path) -> bool:
    """A file, not a link to one (links are never followed when deciding what the store owns)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def read_marker(root: Path) -> dict[str, Any] | None:
    """The store's marker, or None when `root` has none; an unreadable or newer-format marker is an error."""
    path = Path(root) / MARKER
    if not os.path.lexists(path):
        return None
    try:
        if not is_regular_file(path):
            raise ValueError("not a regular file")
        marker = json.loads(path.read_text())
        if not isinstance(marker, dict) or not isinstance(marker.get("format"), int):
            raise ValueError("no format version")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise HarnessError(f"store marker {path} is unreadable ({exc}); it is the harness's own file: remove it "
                           f"and run `harness store init --home {root}`") from None
    if marker["format"] > FORMAT:
        raise HarnessError(f"store {root} has format {marker['format']}; this harness reads format {FORMAT} and "
                           "up to it: upgrade the harness")
    return marker


def known_kinds(root: Path) -> set[str]:
    """The kinds whose folders hold artifacts: the built-in ones and those the marker records (plugins')."""
    try:
        marker = read_marker(root) or {}
    except HarnessError:
        marker = {}  # listing must not fail on a torn marker; the deleting commands refuse it on their own
    extra = marker.get("kinds", [])
    return set(BUILTIN_KINDS) | {k for k in extra if isinstance(k, str) and KIND_NAME.fullmatch(k)}


def looks_like_store(root: Path) -> bool:
    """Does `root` hold what only the harness writes: its journal, its locks folder, or an artifact of a
    built-in kind with its meta.json? (A store created before markers existed.)"""
    root = Path(root)
    if is_regular_file(root / JOURNAL) or is_real_dir(root / LOCKS):
        return True
    return any(is_real_dir(root / kind) and any(is_regular_file(entry / META) for entry in (root / kind).iterdir()
                                                if is_real_dir(entry))
               for kind in sorted(BUILTIN_KINDS))


def _write_marker(root: Path, kinds: set[str], created: str | None = None) -> None:
    marker = {"format": FORMAT, "created": created or datetime.now(UTC).isoformat(timespec="seconds"),
              "by": "immunization-bench", "kinds": sorted(kinds)}
    atomic_write_text(root / MARKER, json.dumps(marker, indent=2) + "\n")


def mark(root: Path, *, adopt_only: bool) -> bool:
    """Write the marker unless `root` has one; returns whether `root` is (now) a marked store.

    `adopt_only`: only a new or empty folder, or one that looks like a store, is marked (a run's start: the run
    has written nothing yet). Otherwise (the store is about to write an artifact) the folder becomes a store.
    """
    root = Path(root)
    if read_marker(root) is not None:
        return True
    if adopt_only and root.is_dir() and any(root.iterdir()) and not looks_like_store(root):
        return False
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / LOCKS / "store.lock"):  # concurrent first runs: one marker, never a torn one
        if read_marker(root) is None:
            _write_marker(root, set())
    return True


def add_kind(root: Path, kind: str) -> None:
    """Record a plugin's artifact kind in the marker, so listing and gc see its artifacts."""
    with file_lock(Path(root) / LOCKS / "store.lock"):
        marker = read_marker(root) or {}
        kinds = set(known_kinds(root)) - BUILTIN_KINDS
        if kind not in kinds:
            _write_marker(Path(root), kinds | {kind}, marker.get("created"))


def require_marker(root: Path, command: str) -> None:
    """Refuse (one line, before any work) to delete in a folder that is not marked as a store."""
    if not Path(root).is_dir():
        raise HarnessError(f"--home {root} is not a directory (no artifact store there)")
    if read_marker(root) is None:
        hint = (f"it looks like a store an earlier version wrote: mark it with `harness store init --home {root}`"
                if looks_like_store(root) else "it does not look like one either (no journal, locks or artifacts)")
        raise HarnessError(f"{command}: {root} is not marked as an artifact store (no {MARKER}); nothing deleted; "
                           f"{hint}")


def init(root: Path) -> str:
    """`harness store init`: mark a new or empty folder, or a store an earlier version wrote; never an
    unrelated folder (the marker is what lets gc delete there). Returns what it did, in words."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise HarnessError(f"--home {root} is not a directory")
    if read_marker(root) is not None:
        return f"{root} is already an artifact store (format {FORMAT})"
    if not mark(root, adopt_only=True):
        raise HarnessError(f"{root} does not look like an artifact store (no {JOURNAL}, {LOCKS} or artifact "
                           f"folders with meta.json) and is not empty; not marked")
    return f"marked {root} as an artifact store (format {FORMAT})"
