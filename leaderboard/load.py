"""Read what the leaderboard is built from: the condition tables of each results/<suite>/v<N>/ folder.

Numbers come only from tables that pass `harness.results.tables.read_table`. Run records are opened to list the
invalid ones (unreadable, inconsistent with themselves, naming plugins that are not installed) as excluded, with
the reason, and drop their rows, so nothing that fails validation is ranked or disappears silently; and to gather
the judge panel's agreement counts of the valid ones, and apart those on post-attack generations (the tables
hold the primary judge only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.results.tables import TABLES, read_table

VERSION_DIR = re.compile(r"v(\d+)")


@dataclass(frozen=True)
class Exclusion:
    """Something left out of the numbers, and why (shown on the page and in LEADERBOARD.md)."""

    path: str
    reason: str


@dataclass(frozen=True)
class RunInfo:
    """What a page says of a valid record beyond the tables: where it came from and its file."""

    path: Path
    created_at: str
    git_commit: str
    git_dirty: bool
    plugins: dict[str, str]        # 'kind:name' -> plugin version
    distributions: dict[str, str]  # 'kind:name' -> 'distribution==version'


@dataclass
class ResultFolder:
    """One results/<suite>/v<N>/ folder: its readable tables, what was excluded, the valid record ids."""

    suite: str
    protocol_version: int
    path: Path
    tables: dict[str, Any] = field(default_factory=dict)
    exclusions: list[Exclusion] = field(default_factory=list)
    valid_record_ids: set[str] = field(default_factory=set)
    invalid_record_ids: set[str] = field(default_factory=set)
    panels: list[Any] = field(default_factory=list)  # the valid records' judge-panel matrices (metrics.Panel)
    post_attack_pairs: list[Any] = field(default_factory=list)  # their post-attack judge-pair counts (PairAgreement)
    runs: dict[str, RunInfo] = field(default_factory=dict)  # valid record id -> its provenance and file

    @property
    def last_run(self) -> str:
        """When the newest valid record was made (its `created_at`), '' without one."""
        return max((r.created_at for r in self.runs.values()), default="")

    @property
    def stale_record_ids(self) -> list[str]:
        """Valid records that no table holds: the tables predate them (rebuild with `harness tables`)."""
        if "resistance" not in self.tables:
            return []
        return sorted(self.valid_record_ids - set(self.tables["resistance"]["run_id"]))


def result_folders(results_dir: Path) -> list[Path]:
    """Every <suite>/v<N>/ folder under results_dir that holds a table or a record: suites in name order, each
    suite's newest protocol first (v10 before v2 before v1), so a superseded protocol never heads its suite."""
    folders = [p for p in Path(results_dir).glob("*/v*") if p.is_dir() and VERSION_DIR.fullmatch(p.name)]
    folders.sort(key=lambda p: (p.parent.name, -int(p.name[1:])))
    return [p for p in folders if any(p.glob("*.parquet")) or any(p.glob("*.json"))]


def load_folder(folder: Path) -> ResultFolder:
    """Read the four tables (each failure becomes an exclusion) and list invalid records."""
    version = VERSION_DIR.fullmatch(folder.name)
    assert version is not None  # result_folders() only yields v<N> folders
    loaded = ResultFolder(folder.parent.name, int(version.group(1)), folder)
    for name in TABLES:
        path = folder / f"{name}.parquet"
        if not path.exists():
            loaded.exclusions.append(Exclusion(str(path), "table missing (build it with `harness tables`)"))
            continue
        try:
            loaded.tables[name] = read_table(path)
        except HarnessError as exc:
            loaded.exclusions.append(Exclusion(str(path), str(exc)))
    _check_records(folder, loaded)
    # An excluded record is excluded everywhere: its rows (tables built before it broke) leave the numbers too.
    for name, frame in loaded.tables.items():
        loaded.tables[name] = frame[~frame["run_id"].isin(loaded.invalid_record_ids)].reset_index(drop=True)
    return loaded


def _check_records(folder: Path, loaded: ResultFolder) -> None:
    """Validate each record to report the invalid ones; of a valid one only its judge-panel counts are kept. A
    record that reads but contradicts itself or names a plugin that is not installed (or by an unsafe name) is
    invalid too: its rows leave the board (`harness.results.consistency.record_problems`, what `harness validate`
    checks)."""
    from harness.progress import warn
    from harness.results.consistency import record_problems
    from harness.results.judge_agreement import pair_counts
    from harness.results.records import read_record

    for path in sorted(folder.glob("*.json")):
        try:
            record = read_record(path)
        except HarnessError as exc:
            loaded.invalid_record_ids.add(path.stem)
            loaded.exclusions.append(Exclusion(str(path), str(exc)))
            warn(str(exc), prefix="excluded ")  # one line, as every record reader says what it leaves out
            continue
        problems = record_problems(record)
        if problems:
            more = f" (+{len(problems) - 1} more; see `harness validate`)" if len(problems) > 1 else ""
            loaded.invalid_record_ids.add(record.run_id)
            loaded.exclusions.append(Exclusion(str(path), f"fails validation: {problems[0]}{more}"))
            warn(f"{path}: fails validation: {problems[0]}{more}", prefix="excluded ")
        else:
            loaded.valid_record_ids.add(record.run_id)
            p = record.provenance
            loaded.runs[record.run_id] = RunInfo(path, p.created_at, p.git_commit, p.git_dirty, dict(p.plugins),
                                                 dict(p.plugin_distributions))
            m = record.metrics
            loaded.panels += [e.panel for e in (m.base, m.pre_attack, m.post_attack) if e.panel is not None]
            loaded.post_attack_pairs += pair_counts(m.post_attack)
