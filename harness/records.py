"""Run records: one immutable JSON per run, named by its run id, under results/<suite>/v<N>/.

Records are the source of truth; tables and the leaderboard are derived from them. A record that is
torn, unparsable or fails the schema is reported by path, never read silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import CorruptRecordError, HarnessError
from harness.specs import SCHEMA_VERSION, RunSpec
from harness.store import atomic_write_text


class StageInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float
    cached: bool
    key: str = Field("", description="artifact key in the store ('' for stages that store nothing)")


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    harness_version: str
    git_commit: str
    git_dirty: bool
    python: str
    platform: str
    packages: dict[str, str]
    plugins: dict[str, str] = Field(description="'kind:name' -> version, for every plugin the run used")
    judge_ids: list[str]
    backend: str
    seed: int
    device: str
    stages: dict[str, StageInfo]
    created_at: str


class RunRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    run_id: str
    suite: str
    protocol_version: int
    spec: RunSpec
    overrides: dict[str, Any] = Field(description="where non-default values came from: suite or user")
    evidence: dict[str, Any] = Field(description="split sizes and pairwise prompt overlaps")
    metrics: dict[str, Any]
    provenance: Provenance


def record_path(results_dir: Path, suite: str, protocol_version: int, run_id: str) -> Path:
    return Path(results_dir) / suite / f"v{protocol_version}" / f"{run_id}.json"


def write_record(path: Path, record: RunRecord) -> None:
    atomic_write_text(path, record.model_dump_json(indent=2) + "\n")


def write_record_once(path: Path, record: RunRecord, *, replace_corrupt: bool = False) -> tuple[RunRecord, bool]:
    """Write `record` unless its file exists; returns (the record on disk, whether this call wrote it).

    Records are immutable: two identical runs finishing together write the file once (the folder's lock
    covers check and write) and both return that file's record. An existing record is never rewritten; if
    this run's metrics differ from it (e.g. `--force` on other hardware) that is one warning line. Only an
    unreadable record file is replaced, and only when `replace_corrupt` (`--force`).
    """
    from harness.locks import file_lock
    from harness.progress import warn

    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.parent):
        if path.exists() and not (replace_corrupt and path.is_file() and _unreadable(path)):
            existing = read_record(path)
            if existing.metrics != record.metrics:
                warn(f"this run's metrics differ from the existing record {path}; the record is immutable and "
                     "was kept (move it away to record this run)")
            return existing, False
        write_record(path, record)
    return record, True


def _unreadable(path: Path) -> bool:
    try:
        read_record(path)
    except CorruptRecordError:
        return True
    return False


def read_record(path: Path) -> RunRecord:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise HarnessError(f"cannot read record {path}: no such file") from None
    except IsADirectoryError:
        raise CorruptRecordError(f"corrupt record {path}: a directory, not a file") from None
    except OSError as exc:
        raise CorruptRecordError(f"unreadable record {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CorruptRecordError(f"corrupt record {path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise CorruptRecordError(f"corrupt record {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    try:
        record = RunRecord.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise CorruptRecordError(f"invalid record {path}: {loc}: {first['msg']}"
                                 f" ({exc.error_count()} problem(s))") from None
    if record.run_id != Path(path).stem or record.spec.run_id != record.run_id:
        raise CorruptRecordError(f"invalid record {path}: run id does not match its file name or spec")
    return record


def find_record(results_dir: Path, run_id: str) -> Path:
    """The record file of a run id (a unique prefix is enough), never a file outside `results_dir`."""
    from harness.safety import check_run_id, inside

    check_run_id(run_id)
    matches = [inside(m, results_dir, "record") for m in sorted(Path(results_dir).glob(f"*/v*/{run_id}*.json"))]
    if not matches:
        raise HarnessError(f"no run '{run_id}' under {results_dir}")
    if len(matches) > 1:
        raise HarnessError(f"run id prefix '{run_id}' is ambiguous: {', '.join(m.stem for m in matches[:5])}")
    return matches[0]
