"""Store hygiene: what the artifact store holds (`harness store ls`) and removing what nothing needs
(`harness store gc`). A 7B grid writes terabytes: every attacked model, every generation.

What is *needed* is computed, never guessed: the artifacts the run records of the given results folders name
(their stages' keys in `provenance.stages`, and every `store:<kind>/<key>` ref in them: the suite-built base
model, judges), then everything those artifacts' metadata names in turn (an attack's defended model, an
adapter's base, a score's generations), to a fixed point. gc deletes only the rest, and only artifacts older
than `min_age_hours` (a running grid's fresh artifacts have no record yet). Deletion goes through
`Store.delete` (under the artifact's lock), only in a store that carries its marker, and only artifacts the
store wrote (`Store.owned`: a real `<store>/<kind>/<key>/` folder of a known kind, with its meta.json; never
through a link, never a results folder kept inside the store). A record file that cannot be read would keep
nothing for its artifacts, so gc refuses to run while one exists.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from harness.errors import HarnessError
from harness.results.jsonio import loads, read_text
from harness.store.artifacts import Store
from harness.store.layout import require_marker
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
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # record files that could not be read, why

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
        # every entry named like a record, not only regular files: a FIFO or a device is reported, never opened
        yield from sorted(p for p in Path(folder).glob("**/*.json") if not p.is_dir())


def roots(text: str, by_key: dict[str, list[Artifact]]) -> set[Artifact]:
    """Artifacts a record's (or a meta.json's) text names: store refs, and any 16-hex key that is an artifact."""
    found = {(k, v) for k, v in REF.findall(text) if (k, v) in by_key.get(v, [])}
    for key in KEY.findall(text):
        found.update(by_key.get(key, []))
    return found


@dataclass
class Records:
    """The JSON files of the results folders: (text, suite) of each object, and the files that cannot be read."""

    texts: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # (file, why it cannot be read)


def read_records(results_dirs: Iterable[Path]) -> Records:
    out = Records()
    for path in record_files(results_dirs):
        try:
            text = read_text(path)  # bounded, like every record reader
            data = loads(text)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            out.unreadable.append((path, getattr(exc, "msg", None) or str(exc) or type(exc).__name__))
            continue
        if isinstance(data, dict):  # tables and tuning logs are JSON too; what they name is kept as well
            out.texts.append((text, str(data.get("suite", "?"))))
    return out


def needed(store: Store, records: Records) -> dict[Artifact, set[str]]:
    """Every artifact the records need, with the suites whose records need it."""
    by_key: dict[str, list[Artifact]] = {}
    for kind, key in store.artifacts():
        by_key.setdefault(key, []).append((kind, key))
    suites: dict[Artifact, set[str]] = {}
    for text, suite in records.texts:
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
    records = read_records(results_dirs)
    sizes = {art: folder_size(store.path(*art)) for art in store.artifacts()}
    return Usage(sizes, needed(store, records), unreadable=records.unreadable)


def refuse_unreadable(unreadable: list[tuple[Path, str]]) -> None:
    """gc keeps what records name: an unreadable one names nothing, so its artifacts would look unneeded."""
    if unreadable:
        more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        files = "; ".join(f"{path}: {why}" for path, why in unreadable[:3]) + more
        raise HarnessError(f"store gc: cannot read {len(unreadable)} file(s) of the results folders ({files}); "
                           "what they need is unknown, so nothing is collected: restore or remove them")


@dataclass
class Collection:
    """What `garbage` found: the artifacts to delete, with their bytes, and how many it keeps for each reason."""

    garbage: list[tuple[Artifact, int]] = field(default_factory=list)
    needed: int = 0        # a record under the results folders needs it
    young: int = 0         # no record needs it, but younger than the minimum age (a running grid's)
    not_owned: int = 0     # not an artifact the store wrote (no meta.json), or a results folder lives in it

    def kept(self, min_age_hours: float) -> str:
        """`kept 12: 9 needed by the records, 3 younger than 24 h (--min-age-hours)`."""
        reasons = [f"{self.needed} needed by the records", f"{self.young} younger than {min_age_hours:g} h "
                   "(--min-age-hours; a running grid's artifacts have no record yet)"]
        if self.not_owned:
            reasons.append(f"{self.not_owned} not the store's own artifacts")
        return f"kept {self.needed + self.young + self.not_owned}: " + ", ".join(reasons)


def garbage(store: Store, results_dirs: Iterable[Path], *, min_age_hours: float) -> Collection:
    """Every artifact the store wrote that no record needs and older than `min_age_hours`, with bytes, and the
    counts of what is kept and why. A HarnessError while a record file cannot be read."""
    results_dirs = list(results_dirs)
    records = read_records(results_dirs)
    refuse_unreadable(records.unreadable)
    keep = needed(store, records)
    cutoff = time.time() - min_age_hours * 3600
    results = [Path(r).resolve() for r in results_dirs]
    out = Collection()
    for art in store.artifacts():
        folder = store.path(*art)
        try:
            if art in keep:
                out.needed += 1
                continue
            if not store.owned(*art):
                out.not_owned += 1
                continue
            if folder.stat().st_mtime > cutoff:
                out.young += 1
                continue
        except OSError:  # removed meanwhile (a concurrent gc, or a run replacing it)
            continue
        where = folder.resolve()
        if any(r == where or where in r.parents or r in where.parents for r in results):
            out.not_owned += 1  # a results folder kept inside an artifact folder (or holding one): never garbage
            continue
        out.garbage.append((art, folder_size(folder)))
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
    """Hash every artifact against its manifest, deleting the damaged ones if asked (the next run recomputes them).

    Deleting needs a marked store, and removes only artifacts the store wrote (a folder without its meta.json
    is reported, not removed) that still fail their manifest under their lock, with no writer holding it.
    """
    if delete:
        require_marker(store.root, "store verify --delete")
    for kind, key, problem in store.audit():
        if problem is None:
            verified = store.verified(kind, key)
            yield Checked("ok" if verified else "unverified", kind, key,
                          "" if verified else "no manifest (written before verification existed)")
            continue
        if not delete:
            yield Checked("damaged", kind, key, problem)
        elif store.delete(kind, key, if_damaged=True):
            yield Checked("deleted", kind, key, problem)
        elif store.problem(kind, key, full=True) is None:
            yield Checked("ok", kind, key, "")  # a writer replaced it meanwhile
        else:
            why = "a run holds its lock" if store.owned(kind, key) else "no meta.json: not an artifact the store wrote"
            yield Checked("damaged", kind, key, f"{problem}; left in place ({why})")
