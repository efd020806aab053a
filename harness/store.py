"""The content-addressed artifact store ($HARNESS_HOME, default ~/.cache/immunization-bench).

Each artifact lives in `<root>/<kind>/<key>/`, where the key is the hash of everything that produced it.
An artifact is written into a temporary folder and renamed into place only when complete, with its
`meta.json` (the inputs) last; a folder without `meta.json` never exists under its final name. So an
interrupted stage leaves nothing behind, and two workers finishing the same artifact keep the first.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import CorruptRecordError

META = "meta.json"


def default_home() -> Path:
    return Path(os.environ.get("HARNESS_HOME", Path.home() / ".cache" / "immunization-bench"))


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    """Artifacts by (kind, key)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_home()

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        return (self.path(kind, key) / META).is_file()

    def meta(self, kind: str, key: str) -> dict[str, Any]:
        path = self.path(kind, key) / META
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CorruptRecordError(f"artifact {path} is unreadable ({exc}); rerun with --force") from None

    @contextmanager
    def writing(self, kind: str, key: str, meta: dict[str, Any], force: bool = False) -> Iterator[Path]:
        """Yield a temporary folder to fill; on success it becomes `path(kind, key)` atomically."""
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.", suffix=".tmp"))
        try:
            yield tmp
            atomic_write_text(tmp / META, json.dumps(meta, indent=2, sort_keys=True))
            if final.exists() and (force or not (final / META).is_file()):
                trash = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.", suffix=".old"))
                os.replace(final, trash / "x")
                shutil.rmtree(trash, ignore_errors=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / META).is_file():  # not a concurrent finisher: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


STORE_SCHEME = "store:"


def resolve_ref(ref: str, store: Store) -> str:
    """'store:<kind>/<key>/...' names a path inside the artifact store, so specs stay machine-independent."""
    if ref.startswith(STORE_SCHEME):
        return str(store.root / ref[len(STORE_SCHEME):])
    return ref
