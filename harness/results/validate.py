"""`harness validate [PATH]`: are the committed results what they claim to be?

What a submitter commits (run records and the condition tables built from them) is checked the way CI
checks it, without re-running anything:

- every record file validates against the committed JSON Schema (`schemas/run-record.schema.json`, with the
  `jsonschema` package where installed) and the typed models (`harness.results.records.RunRecord`);
- its run id is recomputed from its spec (the hash of the spec's canonical JSON) and equals both the
  `run_id` field and the file name, and the record sits in the folder of its suite and protocol version;
- each condition table (`<folder>/<table>.parquet`) equals `harness.results.tables.build` of the folder's records,
  cell for cell (a table rebuilt from other records, hand-edited or stale fails);
- each record agrees with itself (`harness.results.consistency`: means inside their intervals and equal to what
  their per-category values give, the curve, phi, verdict and stability following from their parts), and names
  only installed plugins with valid names (a plugin installed at another version is a WARN line, not a failure).

Where asked, `--deep` re-derives each record's metrics from the artifacts it names in the store
(`harness.results.rederive`; a missing artifact is "not checked", not a failure) and `--rerun N` reruns a
seeded sample of N cells end to end and compares (`harness.results.rerun`). A problem is a FAIL line, exit 1.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import CorruptRecordError, HarnessError
from harness.results.consistency import consistency_problems, plugin_checks
from harness.results.jsonio import JSONLimitError, read_json
from harness.results.records import SCHEMA_FILE, RunRecord, read_record, results_folder
from harness.safety import escape_controls
from harness.specs import spec_id
from harness.store.artifacts import Store

SchemaCheck = Callable[[Any], list[str]]  # raw JSON -> problems ([] = valid)


@dataclass(frozen=True)
class Finding:
    """One line of the report: a problem (ok False), a folder that passed (ok True), or a note (ok True, warn
    True: worth knowing, not a failure, e.g. what --deep could not check)."""

    path: Path
    ok: bool
    detail: str
    warn: bool = False

    def line(self) -> str:
        tag = "FAIL" if not self.ok else "WARN" if self.warn else "OK  "
        # A record's strings (a plugin name) reach this line: control characters must not forge another line.
        return escape_controls(f"{tag} {self.path}: {self.detail}")


def json_schema_check(schema_file: Path = SCHEMA_FILE) -> tuple[SchemaCheck | None, str]:
    """A validator for the committed JSON Schema, or None (and why) where `jsonschema` is not installed: the
    typed models still validate every record then."""
    try:
        import jsonschema
    except ImportError:
        return None, "jsonschema not installed (pip install jsonschema): JSON Schema check skipped"
    validator = jsonschema.Draft202012Validator(json.loads(schema_file.read_text()))

    def check(data: Any) -> list[str]:
        return [f"{'.'.join(map(str, e.absolute_path)) or '(record)'}: {e.message}"
                for e in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))]

    return check, f"JSON Schema {schema_file.name}"


def folders(path: Path) -> list[Path]:
    """The results folders under `path`: `path` itself if it holds records, else every `<suite>/v<N>/`."""
    path = Path(path)
    if not path.exists():
        raise HarnessError(f"no such file or folder: {path}")
    if path.is_file() or any(path.glob("*.json")):
        return [path]
    found = sorted(p for p in path.glob("*/v*") if p.is_dir() and any(p.glob("*.json")))
    if not found:
        raise HarnessError(f"no run records under {path} (expected {path}/<suite>/v<N>/<run_id>.json)")
    return found


def check_record(path: Path, schema: SchemaCheck | None, *, in_folder: bool = True, allow_dirty: bool = False
                 ) -> tuple[RunRecord | None, list[str]]:
    """The record (None if unreadable) and every problem with it; `in_folder`: it must sit in
    `<suite>/v<protocol version>/`; `allow_dirty`: a working folder's record may come from a dirty tree."""
    try:
        raw = read_json(path)
    except JSONLimitError as exc:
        return None, [f"refused: {exc.msg}"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"not a readable JSON file ({type(exc).__name__})"]
    problems = schema(raw)[:3] if schema is not None else []
    if isinstance(raw, dict) and isinstance(raw.get("spec"), dict):
        recomputed = spec_id(raw["spec"])
        if recomputed != raw.get("run_id") or recomputed != path.stem:
            problems.append(f"run id {raw.get('run_id')!r} (file {path.stem}) is not the hash of its spec "
                            f"({recomputed})")
    try:
        record = read_record(path)
    except CorruptRecordError as exc:
        return None, [*problems, str(exc).replace(f" {path}", "")]
    where = (path.parent.parent.name, path.parent.name)
    if in_folder and where != results_folder(Path(), record.suite, record.protocol_version).parts:
        problems.append(f"a record of suite '{record.suite}' v{record.protocol_version} in folder {'/'.join(where)}")
    return record, [*problems, *consistency_problems(record), *plugin_checks(record)[0],
                    *([] if allow_dirty else provenance_problems(record))]


@functools.cache
def _clean_from_protocol(suite: str) -> int | None:
    """The installed suite's first protocol whose records must be clean (once per suite, not once per record)."""
    from harness import registry

    try:
        plugin = registry.get("suite", suite)
        return plugin.fn(plugin.config()).clean_from_protocol
    except HarnessError:
        return None


def provenance_problems(record: RunRecord) -> list[str]:
    """A record made from a dirty tree, of a protocol its installed suite requires clean (`Suite.clean_from_protocol`):
    its commit does not say what code made it."""
    from harness import registry

    if not record.provenance.git_dirty or record.suite not in registry.names("suite"):
        return []
    clean_from = _clean_from_protocol(record.suite)
    if clean_from is None or record.protocol_version < clean_from:  # None: the suite does not load (plugin_checks)
        return []
    return [f"made from a dirty tree (git commit {record.provenance.git_commit[:12]} with uncommitted changes): "
            f"{record.suite} v{record.protocol_version} records must come from a clean commit"]


def check_tables(folder: Path, records: list[RunRecord]) -> list[str]:
    """Each committed table equals the one built from the records, or the problem."""
    from harness.results.tables import TABLES, build, read_table

    built = build(records)
    problems = []
    for name in TABLES:
        path = folder / f"{name}.parquet"
        if not path.is_file():
            problems.append(f"{path.name} missing ({len(built[name])} rows from the records): run `harness tables`")
            continue
        try:
            committed = read_table(path)
        except CorruptRecordError as exc:
            problems.append(str(exc))
            continue
        detail = difference(committed, built[name])
        if detail:
            problems.append(f"{path.name} differs from the records: {detail}; run `harness tables`")
    return problems


def difference(committed: Any, built: Any) -> str:
    """'' if two tables are equal cell for cell (NaN equals NaN), else what differs, briefly."""
    import pandas as pd

    a, b = committed.reset_index(drop=True), built.reset_index(drop=True)
    if list(a.columns) != list(b.columns):
        return "other columns"
    if len(a) != len(b):
        return f"{len(a)} rows, the records give {len(b)}"
    cols = [c for c in a.columns if not a[c].equals(b[c])]
    if not cols:
        return ""
    rows = sorted({i for c in cols for i in range(len(a)) if not (
        (pd.isna(a[c].iloc[i]) and pd.isna(b[c].iloc[i])) or a[c].iloc[i] == b[c].iloc[i])})
    ids = ", ".join(str(b["run_id"].iloc[i]) for i in rows[:3]) if "run_id" in b else ""
    return f"column(s) {', '.join(cols)} differ in {len(rows)} row(s)" + (f" (run {ids})" if ids else "")



def validate(path: Path, *, deep: Store | None = None, rerun: int = 0, seed: int = 0,
             home: Path | None = None, allow_dirty: bool = False) -> Iterator[Finding]:
    """Every finding under `path`, folder by folder; a folder with no problem gives one OK line. `deep`: the
    store to re-derive metrics from; `rerun`: cells to rerun end to end, sampled with `seed`, in the store
    `home` (None: a temporary one)."""
    schema, schema_note = json_schema_check()
    roots = folders(path)
    if deep is not None and not deep.root.is_dir():
        yield Finding(Path(path), True, f"--deep: no artifact store at {deep.root}: nothing re-derived "
                      "(not checked (no artifact))", warn=True)
        deep = None
    rerunnable: list[tuple[Path, RunRecord]] = []
    for folder in roots:
        files = [folder] if folder.is_file() else sorted(folder.glob("*.json"))
        records, bad, versions = [], 0, {}
        for file in files:
            record, problems = check_record(file, schema, in_folder=not folder.is_file(), allow_dirty=allow_dirty)
            if record is not None:
                records.append(record)
                plugin_problems, notes = plugin_checks(record)
                for note in notes:
                    versions[note] = versions.get(note, 0) + 1
                if not plugin_problems and not notes:  # the installed code is what the record says ran
                    rerunnable.append((file, record))
            for problem in problems:
                yield Finding(file, False, problem)
            bad += bool(problems)
        table_problems = [] if folder.is_file() else check_tables(folder, records)
        yield from (Finding(folder, False, p) for p in table_problems)
        if not bad and not table_problems:
            tables = "" if folder.is_file() else ", tables match the records"
            yield Finding(folder, True, f"{len(files)} record(s) valid ({schema_note}, run ids recomputed, each "
                          f"consistent with itself, plugins installed){tables}")
        if versions:
            listed = ", ".join(f"{note} in {n}" for note, n in sorted(versions.items()))
            yield Finding(folder, True, f"records made by other plugin versions than the installed ones (valid "
                          f"records of those versions; --rerun skips them): {listed}", warn=True)
        if deep is not None:
            yield from deep_findings(folder, files, deep)
    if rerun:
        yield from rerun_findings(Path(path), rerunnable, rerun, seed, home)


def deep_findings(folder: Path, files: list[Path], store: Store) -> Iterator[Finding]:
    """--deep for the readable records of one folder: a FAIL line per difference, one summary line."""
    from harness.results.rederive import SuiteRows, rederive

    suites, full, partial, values, example = SuiteRows(), 0, 0, 0, ""
    for file in files:
        try:
            record = read_record(file)
        except HarnessError:
            continue  # already a FAIL line
        found = rederive(record, store, suites)
        values += found.checked
        yield from (Finding(file, False, p) for p in found.problems)
        if found.unchecked:
            partial += 1
            example = example or f"{file.name}: {found.unchecked[0]}"
        else:
            full += 1
    what = f"--deep: {full} record(s) re-derived in full from the store {store.root} ({values} value(s) compared)"
    if partial:
        yield Finding(folder, True, f"{what}; {partial} record(s) not checked in full, e.g. {example}", warn=True)
    else:
        yield Finding(folder, True, what)


def rerun_findings(path: Path, candidates: list[tuple[Path, RunRecord]], n: int, seed: int,
                   home: Path | None) -> Iterator[Finding]:
    """--rerun: a seeded sample of the readable records whose plugins are installed at their versions (a record
    that fails other checks is rerun too: the rerun says what its numbers should have been)."""
    from harness.results.rerun import rerun_cells, sample

    cells = sample(candidates, n, seed)
    store = f"the store {home} (its cached stages reused)" if home is not None else "a temporary store"
    yield Finding(path, True, f"--rerun: {len(cells)} of {len(candidates)} rerunnable cell(s), sampled with seed "
                  f"{seed}, rerun into a temporary results folder with {store}")
    for file, problems in rerun_cells(cells, home):
        if problems:
            yield from (Finding(file, False, p) for p in problems)
        else:
            yield Finding(file, True, f"--rerun (seed {seed}) gives the record's metrics")


def validated_records(folder: Path) -> list[RunRecord]:
    """`load_records(folder)` without the records whose numbers contradict each other or that name a plugin not
    installed or by an unsafe name; each left out is one 'excluded' warning line (what `harness report` ranks)."""
    from harness.progress import warn
    from harness.results.consistency import record_problems
    from harness.results.records import load_records

    kept = []
    for record in load_records(folder):
        problems = record_problems(record)
        if problems:
            more = f" (+{len(problems) - 1} more; see `harness validate`)" if len(problems) > 1 else ""
            warn(f"{folder / record.run_id}.json fails validation: {problems[0]}{more}", prefix="excluded ")
        else:
            kept.append(record)
    return kept
