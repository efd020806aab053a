"""Store hygiene: what the artifact store holds (`harness store ls`) and removing what nothing needs
(`harness store gc`). A 7B grid writes terabytes: every attacked model, every generation.

What is *needed* is computed, never guessed: the artifacts the run records of the given results folders name
(their stages' keys in `provenance.stages`, and every `store:<kind>/<key>` ref in them: the suite-built base
model, judges), then everything those artifacts' metadata names in turn (an attack's defended model, an
adapter's base, a score's generations), to a fixed point. gc deletes only the rest, and only artifacts older
than `min_age_hours` (a running grid's fresh artifacts have no record yet). Deletion goes through
`Store.delete` (under the artifact's lock); every path is `<store>/<kind>/<key>` of a listed artifact, so
nothing outside the store is touched.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from harness.progress import warn
from harness.results.jsonio import loads, read_text
from harness.store.artifacts import Store
from harness.store.manifest import META

KEY = re.compile(r"\b[0-9a-f]{16}\b")
REF = re.compile(r"store:([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)")
UNREFERENCED = "(unreferenced)"

Artifact = tuple[str, str]  # (kind, key)


@dataclass
class Usage:
    """Sizes of the store's artifacts, by kind and by the suites whose records need them."""

    sizes: dict[Artifact, int]
    suites: dict[Artifact, set[str]] = field(default_factory=dict)

    def by_kind(self) -> dict[str, tuple[int, int, int]]:
        """kind -> (artifacts, bytes, bytes no record needs)."""
        out: dict[str, tuple[int, int, int]] = {}
        for (kind, key), size in sorted(self.sizes.items()):
            n, total, free = out.get(kind, (0, 0, 0))
            out[kind] = (n + 1, total + size, free + (0 if self.suites.get((kind, key)) else size))
        return out

    def by_suite(self) -> dict[str, tuple[int, int]]:
        """suite -> (artifacts, bytes) its records need (shared artifacts count for every suite)."""
        out: dict[str, tuple[int, int]] = {}
        for art, size in self.sizes.items():
            for suite in self.suites.get(art) or {UNREFERENCED}:
                n, total = out.get(suite, (0, 0))
                out[suite] = (n + 1, total + size)
        return dict(sorted(out.items()))


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def record_files(results_dirs: Iterable[Path]) -> Iterator[Path]:
    for folder in results_dirs:
        yield from sorted(Path(folder).glob("**/*.json"))


def roots(text: str, by_key: dict[str, list[Artifact]]) -> set[Artifact]:
    """Artifacts a record's (or a meta.json's) text names: store refs, and any 16-hex key that is an artifact."""
    found = {(k, v) for k, v in REF.findall(text) if (k, v) in by_key.get(v, [])}
    for key in KEY.findall(text):
        found.update(by_key.get(key, []))
    return found


def needed(store: Store, results_dirs: Iterable[Path]) -> dict[Artifact, set[str]]:
    """Every artifact the records under `results_dirs` need, with the suites whose records need it."""
    by_key: dict[str, list[Artifact]] = {}
    for kind, key in store.artifacts():
        by_key.setdefault(key, []).append((kind, key))
    suites: dict[Artifact, set[str]] = {}
    for path in record_files(results_dirs):
        try:
            text = read_text(path)  # bounded, like every record reader: a hostile file is skipped, not a crash
            suite = str(loads(text).get("suite", "?"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            warn(f"skipped {path}: not a readable JSON record ({getattr(exc, 'msg', type(exc).__name__)}); "
                 "nothing is kept for it")
            continue
        todo = list(roots(text, by_key))
        while todo:
            art = todo.pop()
            if suite in suites.setdefault(art, set()):
                continue
            suites[art].add(suite)
            meta = store.path(*art) / META
            if meta.is_file():
                todo += [a for a in roots(meta.read_text(errors="replace"), by_key) if a != art]
    return suites


def usage(store: Store, results_dirs: Iterable[Path]) -> Usage:
    sizes = {art: folder_size(store.path(*art)) for art in store.artifacts()}
    return Usage(sizes, needed(store, results_dirs))


def garbage(store: Store, results_dirs: Iterable[Path], *, min_age_hours: float) -> list[tuple[Artifact, int]]:
    """(artifact, bytes) of every artifact no record needs and older than `min_age_hours`."""
    keep = needed(store, results_dirs)
    cutoff = time.time() - min_age_hours * 3600
    out = []
    for art in store.artifacts():
        folder = store.path(*art)
        if art in keep or folder.is_symlink() or not folder.is_dir():
            continue
        if folder.stat().st_mtime > cutoff:
            continue
        out.append((art, folder_size(folder)))
    return out


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


class Checked(NamedTuple):
    """One artifact as `harness store verify` found it: ok, unverified (no manifest), damaged or deleted."""

    status: str
    kind: str
    key: str
    problem: str


def verify(store: Store, *, delete: bool) -> Iterator[Checked]:
    """Hash every artifact against its manifest, deleting the damaged ones if asked (the next run recomputes them)."""
    for kind, key, problem in store.audit():
        if problem is None:
            verified = store.verified(kind, key)
            yield Checked("ok" if verified else "unverified", kind, key,
                          "" if verified else "no manifest (written before verification existed)")
            continue
        if delete:
            store.delete(kind, key)
        yield Checked("deleted" if delete else "damaged", kind, key, problem)
