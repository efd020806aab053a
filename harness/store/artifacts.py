"""The content-addressed artifact store ($HARNESS_HOME, default ~/.cache/immunization-bench).

Each artifact lives in `<root>/<kind>/<key>/`, where the key is the hash of everything that produced it.
An artifact is written into a temporary folder and renamed into place only when complete, with its
`meta.json` (the inputs and a manifest of every file's size and sha256) last; a folder without `meta.json`
never exists under its final name. So an interrupted stage leaves nothing behind but a temporary folder,
which the next start removes.

Reads verify (harness.store.manifest): a missing, truncated or tampered artifact is a cache miss, reported on one
warning line and recomputed. Artifacts written before manifests existed have none: they are used as they
are (unverified; `harness store verify` lists them), since rebuilding a real model's every stage is not
cheap. Writers hold a per-artifact lock (harness.store.locks): identical concurrent runs compute each artifact
once, the others wait for it and reuse it.

The store knows it is one (harness.store.layout: a marker file, and the kinds whose folders hold artifacts).
It writes and deletes only in its own kind folders, never through a link, and deletes only what it wrote
(`Store.owned`), in a marked store.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import CorruptRecordError, DiskFullError, HarnessError, StageError, is_disk_full
from harness.progress import warn
from harness.store import layout
from harness.store.layout import (
    JOURNAL,
    LOCKS,
    atomic_write_text,
    is_real_dir,
    is_regular_file,
    known_kinds,
    public_mode,
)
from harness.store.locks import file_lock, try_lock
from harness.store.manifest import META, build_manifest, check_manifest

MANIFEST = "_files"        # key of the manifest in meta.json (stripped by `Store.meta`)
MISSING = "it is missing"  # the one problem that is an ordinary cache miss, not damage
STALE_SECONDS = 600        # results-folder temporary files older than this belong to no live writer


def default_home() -> Path:
    return Path(os.environ.get("HARNESS_HOME", Path.home() / ".cache" / "immunization-bench"))


def _remove(path: Path) -> None:
    """Best effort: cleaning up after a killed run must never fail the run that cleans."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


class Store:
    """Artifacts by (kind, key), verified on read, written once under a lock."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_home()
        self.writes = 0  # artifacts this process committed: a stage that wrote none was a cache hit
        self._verified: dict[tuple[str, str], tuple[int, int, int]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._marked = False
        self._kinds: set[str] = set(layout.BUILTIN_KINDS)  # kinds this process knows the marker records

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def lock_path(self, kind: str, key: str) -> Path:
        return self.root / LOCKS / kind / f"{key}.lock"

    @contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """The artifact's lock; says on one line when it waits for another process."""
        with file_lock(self.lock_path(kind, key),
                       on_wait=lambda: warn(f"waiting for another run that is computing {kind}/{key}", prefix="")):
            yield

    # ------------------------------------------------------------------------------------------- reading
    def problem(self, kind: str, key: str, *, full: bool = False) -> str | None:
        """Why (kind, key) cannot be used (MISSING for a plain miss), or None when it matches its manifest.
        A verified artifact is not hashed again in this process until its meta.json changes."""
        folder = self.path(kind, key)
        try:
            st = (folder / META).stat()
        except OSError:
            return "meta.json is missing" if folder.is_dir() else MISSING
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if not full and self._verified.get((kind, key)) == stamp:
            return None
        try:
            meta = json.loads((folder / META).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return "meta.json is unreadable"
        if not isinstance(meta, dict):
            return "meta.json is not an object"
        if MANIFEST in meta:
            found = check_manifest(folder, meta[MANIFEST], full=full)
            if found is not None:
                return found
        self._verified[(kind, key)] = stamp
        return None

    def has(self, kind: str, key: str) -> bool:
        """Is there a usable artifact? A damaged one is a miss, reported once on a warning line."""
        problem = self.problem(kind, key)
        if problem is not None and problem != MISSING and (kind, key) not in self._warned:
            self._warned.add((kind, key))
            warn(f"artifact {kind}/{key} is damaged ({problem}); recomputing it")
        return problem is None

    def meta(self, kind: str, key: str) -> dict[str, Any]:
        path = self.path(kind, key) / META
        try:
            meta = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptRecordError(f"artifact {path} is unreadable ({exc}); rerun with --force") from None
        return {k: v for k, v in meta.items() if k != MANIFEST}

    def verified(self, kind: str, key: str) -> bool:
        """Does the artifact carry a manifest (False: written before manifests, used unverified)?"""
        try:
            return MANIFEST in json.loads((self.path(kind, key) / META).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
            return False

    def artifacts(self) -> Iterator[tuple[str, str]]:
        """Every (kind, key) folder in the store's kind folders; temporary folders, lock files, links (a linked
        kind folder is skipped whole) and whatever else lies under the root (a results folder) left out."""
        if not self.root.is_dir():
            return
        for kind in sorted(known_kinds(self.root)):
            kind_dir = self.root / kind
            if is_real_dir(kind_dir):
                for entry in sorted(kind_dir.iterdir()):
                    if not entry.name.startswith(".") and is_real_dir(entry):
                        yield kind, entry.name

    def linked(self) -> list[Path]:
        """Kind folders that are links: never listed, written or deleted through (`kind_folder` says why)."""
        return [self.root / k for k in sorted(known_kinds(self.root)) if (self.root / k).is_symlink()]

    def owned(self, kind: str, key: str) -> bool:
        """Is (kind, key) an artifact this store wrote: a real folder (no link) in a real folder of a known kind,
        holding its meta.json? The only thing a deleting command may remove."""
        kind_dir = self.root / kind
        return (kind in known_kinds(self.root) and is_real_dir(kind_dir) and not key.startswith(".")
                and Path(key).name == key and is_real_dir(kind_dir / key) and is_regular_file(kind_dir / key / META))

    def audit(self) -> Iterator[tuple[str, str, str | None]]:
        """(kind, key, problem) of every artifact, every file hashed (`harness store verify`)."""
        for kind, key in self.artifacts():
            problem = self.problem(kind, key, full=True)
            yield kind, key, problem

    # ------------------------------------------------------------------------------------------- writing
    @contextmanager
    def compute_once(self, kind: str, key: str, *, force: bool = False) -> Iterator[bool]:
        """Yield whether the caller must compute (kind, key) now (and write it with `writing`).

        False: a verified artifact exists. True: it is missing, damaged, or `force`; the artifact's lock is
        held until the block ends, so an identical concurrent run waits here and then finds the artifact.
        """
        if not force and self.has(kind, key):
            yield False
            return
        with self.lock(kind, key):
            yield force or not self.has(kind, key)

    def kind_folder(self, kind: str) -> Path:
        """`<root>/<kind>`, where the store writes and deletes artifacts of `kind`. A kind folder that is a link
        is refused: following it would write and delete outside the store (put a whole store on another disk by
        pointing --home or HARNESS_HOME there)."""
        if not layout.KIND_NAME.fullmatch(kind):
            raise HarnessError(f"'{kind}' is not an artifact kind (lowercase letters, digits, '_' and '-')")
        folder = self.root / kind
        if folder.is_symlink():
            raise HarnessError(f"store folder {folder} is a link to {os.path.realpath(folder)}; the harness writes "
                               f"and deletes only inside the store {self.root}: replace the link with a folder (for "
                               f"another disk, point --home or HARNESS_HOME there)")
        return folder

    def check_folders(self) -> None:
        """Refuse a store whose kind folders (or locks folder) are links, before a run's first stage (one line,
        exit 2)."""
        for kind in sorted(known_kinds(self.root)):
            self.kind_folder(kind)
        if (self.root / LOCKS).is_symlink():
            raise HarnessError(f"store folder {self.root / LOCKS} is a link to {os.path.realpath(self.root / LOCKS)};"
                               f" the harness writes only inside the store {self.root}: replace the link with a folder")

    def mark(self, *, adopt_only: bool = False) -> bool:
        """Make sure the store carries its marker (harness.store.layout); see `layout.mark` for `adopt_only`."""
        if not self._marked:
            self._marked = layout.mark(self.root, adopt_only=adopt_only)
        return self._marked

    def _before_write(self, kind: str, key: str) -> None:
        self.kind_folder(kind)
        if not key or key.startswith(".") or Path(key).name != key:
            raise HarnessError(f"'{key}' is not an artifact key")
        self.mark()
        if kind not in self._kinds:  # a plugin's own kind: recorded in the marker, so listing and gc see it
            layout.add_kind(self.root, kind)
            self._kinds.add(kind)

    @contextmanager
    def writing(self, kind: str, key: str, meta: dict[str, Any], force: bool = False) -> Iterator[Path]:
        """Yield a temporary folder to fill; on success it becomes `path(kind, key)` atomically, with a
        manifest of its files. A verified artifact already there is kept unless `force`; a damaged one is
        replaced. A full disk is a DiskFullError (one line); the temporary folder is removed on the way out."""
        final = self.path(kind, key)
        try:
            self._before_write(kind, key)
            with self.lock(kind, key):  # re-entrant: callers inside `compute_once` already hold it
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.", suffix=".tmp"))
                public_mode(tmp, folder=True)  # a store shared by a cluster's users is read as any folder is
                try:
                    yield tmp
                    self._commit(kind, key, {**meta, MANIFEST: build_manifest(tmp)}, tmp, force)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        except (StageError, HarnessError):
            raise
        except Exception as exc:
            if is_disk_full(exc):
                raise DiskFullError(f"{kind}/{key}", final) from None
            raise

    def _commit(self, kind: str, key: str, content: dict[str, Any], tmp: Path, force: bool) -> None:
        """Rename the filled temporary folder into place (under the artifact's lock), unless a verified one is
        there and not `force`."""
        final = self.path(kind, key)
        atomic_write_text(tmp / META, json.dumps(content, indent=2, sort_keys=True))
        replaced = os.path.lexists(final) and (force or self.problem(kind, key) is not None)
        if replaced:
            trash = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.", suffix=".old"))
            os.replace(final, trash / "x")
            shutil.rmtree(trash, ignore_errors=True)
        if os.path.lexists(final):
            self._journal(kind, key, "kept")  # a verified artifact exists: the first one stays
            return
        os.rename(tmp, final)
        self.writes += 1
        self._verified.pop((kind, key), None)
        self._warned.discard((kind, key))
        self._journal(kind, key, "replaced" if replaced else "written")

    def delete(self, kind: str, key: str, *, if_damaged: bool = False) -> bool:
        """Remove an artifact this store wrote, under its lock, so the next run recomputes it; returns whether
        it did. Only in a marked store, never through a link, never a folder without its meta.json (`owned`).
        `if_damaged`: only while no writer holds its lock, and only if it still fails its manifest once the
        lock is held (a `--force` run replacing it is not damage)."""
        layout.require_marker(self.root, "delete")
        self.kind_folder(kind)
        if not if_damaged:
            with self.lock(kind, key):
                return self._remove_artifact(kind, key)
        with try_lock(self.lock_path(kind, key)) as free:
            if not free or self.problem(kind, key, full=True) in (None, MISSING):
                return False
            return self._remove_artifact(kind, key)

    def _remove_artifact(self, kind: str, key: str) -> bool:
        if not self.owned(kind, key):
            return False
        final = self.path(kind, key)
        trash = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.", suffix=".old"))
        os.replace(final, trash / "x")
        shutil.rmtree(trash, ignore_errors=True)  # rmtree removes links inside, never follows them
        self._verified.pop((kind, key), None)
        self._journal(kind, key, "deleted")
        return True

    def _journal(self, kind: str, key: str, event: str) -> None:
        line = json.dumps({"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "pid": os.getpid(),
                           "kind": kind, "key": key, "event": event})
        fd = os.open(self.root / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())  # one O_APPEND write: concurrent lines never interleave
        finally:
            os.close(fd)

    def clean_temp(self) -> int:
        """Remove the temporary folders killed writers left (`<kind>/.<key>.*.tmp` and `.old`).

        Only those whose artifact lock is free: a live writer holds its artifact's lock for as long as its
        temporary folder exists, so a concurrent run's work in progress is never touched. Only in real kind
        folders: never through a link.
        """
        removed = 0
        if not self.root.is_dir():
            return 0
        for kind in known_kinds(self.root):
            kind_dir = self.root / kind
            if not is_real_dir(kind_dir):
                continue
            for entry in kind_dir.iterdir():
                name = entry.name
                if not (name.startswith(".") and name.endswith((".tmp", ".old"))):
                    continue
                with contextlib.suppress(OSError), try_lock(self.lock_path(kind, name[1:].split(".", 1)[0])) as free:
                    if free:
                        _remove(entry)
                        removed += 1
        return removed


def clean_results_temp(folder: Path) -> int:
    """Remove temporary files killed writers left in a results folder (`.<name>.*.tmp`).

    Record writes hold the folder's lock (harness.results.records), so record temporaries are removed under it;
    other temporaries (tables) only once they are older than any live write could be.
    """
    if not Path(folder).is_dir():
        return 0
    import time

    removed = 0
    with file_lock(Path(folder)):
        for entry in Path(folder).iterdir():
            name = entry.name
            if not (name.startswith(".") and name.endswith(".tmp")) or not entry.is_file():
                continue
            if ".json." in name or time.time() - entry.stat().st_mtime > STALE_SECONDS:
                _remove(entry)
                removed += 1
    return removed


STORE_SCHEME = "store:"


def resolve_ref(ref: str, store: Store) -> str:
    """'store:<kind>/<key>/...' names a path inside the artifact store, so specs stay machine-independent.

    The path must stay inside the store, and the artifact it names must not be damaged: a run that reaches
    a damaged artifact through a ref cannot rebuild it, so this is one error line with the fix.
    """
    if not ref.startswith(STORE_SCHEME):
        return ref
    rel = ref[len(STORE_SCHEME):]
    path = store.root / rel
    resolved, root = path.resolve(), store.root.resolve()
    if root not in resolved.parents:
        raise HarnessError(f"store ref '{ref}' points outside the store {store.root}")
    parts = Path(rel).parts
    if len(parts) >= 2:
        problem = store.problem(parts[0], parts[1])
        if problem is not None and problem != MISSING:
            raise HarnessError(f"artifact {parts[0]}/{parts[1]} is damaged ({problem}); rebuild it: rerun the "
                               f"same command with --force (or `harness store verify --delete`, then rerun)")
    return str(path)
