"""`harness validate [PATH]`: are the committed results what they claim to be?

What a submitter commits (run records and the condition tables built from them) is checked the way CI
checks it, without re-running anything:

- every record file validates against the committed JSON Schema (`schemas/run-record.schema.json`, with the
  `jsonschema` package where installed) and the typed models (`harness.results.records.RunRecord`);
- its run id is recomputed from its spec (the hash of the spec's canonical JSON) and equals both the
  `run_id` field and the file name, and the record sits in the folder of its suite and protocol version;
- each condition table (`<folder>/<table>.parquet`) equals `harness.results.tables.build` of the folder's records,
  cell for cell (a table rebuilt from other records, hand-edited or stale fails).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import CorruptRecordError, HarnessError
from harness.results.jsonio import JSONLimitError, read_json
from harness.results.records import SCHEMA_FILE, RunRecord, read_record, results_folder
from harness.specs import spec_id

SchemaCheck = Callable[[Any], list[str]]  # raw JSON -> problems ([] = valid)


@dataclass(frozen=True)
class Finding:
    """One line of the report: a problem (ok False) or a folder that passed (ok True)."""

    path: Path
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.path}: {self.detail}"


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


def check_record(path: Path, schema: SchemaCheck | None, *, in_folder: bool = True
                 ) -> tuple[RunRecord | None, list[str]]:
    """The record (None if unreadable) and every problem with it; `in_folder`: it must sit in
    `<suite>/v<protocol version>/`."""
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
    return record, problems


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


def validate(path: Path) -> Iterator[Finding]:
    """Every finding under `path`, folder by folder; a folder with no problem gives one OK line."""
    schema, schema_note = json_schema_check()
    for folder in folders(path):
        files = [folder] if folder.is_file() else sorted(folder.glob("*.json"))
        records, bad = [], 0
        for file in files:
            record, problems = check_record(file, schema, in_folder=not folder.is_file())
            if record is not None:
                records.append(record)
            for problem in problems:
                yield Finding(file, False, problem)
            bad += bool(problems)
        table_problems = [] if folder.is_file() else check_tables(folder, records)
        yield from (Finding(folder, False, p) for p in table_problems)
        if not bad and not table_problems:
            tables = "" if folder.is_file() else ", tables match the records"
            yield Finding(folder, True, f"{len(files)} record(s) valid ({schema_note}, run ids recomputed){tables}")
