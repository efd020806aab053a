"""Published results and the working folder: what everyday commands may write, and `harness publish`.

`results/` holds the published records, the tables built from them and the tuning logs: what the leaderboard,
`harness report` and CI read, and what runs take their tuned settings from. Everyday commands (`run`, `sweep`,
`tune`, `tune --scan`) write into a working folder, `runs/` (not committed). Only `harness publish` copies
records and logs from there into `results/`, after checking each:

- the record validates (schema, typed models, run id recomputed from its spec, folder of its suite and
  protocol version), as `harness validate` checks it;
- it was made with the suite's default settings and model: the board `results/tiny/v2` is the default tiny
  suite's, so a smoke-size record (or any other `--set suite.*`, `--model`) is never published under that name
  (a tuning trial's settings are the defaults plus the suite's validation settings, as `harness tune` makes
  them), and a record of another protocol version than the installed suite's is refused. A run record may be of
  another numbered world of the default config (`Suite.world_params`, e.g. `--set suite.seed=1`): the board pools
  its worlds (`harness.results.worlds`); tuning logs and trials stay on the default world;
- it was made from a clean tree (`provenance.git_dirty` false) unless `allow_dirty`;
- an existing record is never overwritten (it is kept, and said so); a tuning log that differs from the
  published one replaces it only with `replace_logs` (a re-tune changes every later run's settings); a scan
  log is merged into the published one (scans add evidence).

Everything is checked before anything is written: one refused item writes nothing. Then the condition tables of
every folder that received records are rebuilt.

`--results-dir results` spelled out still writes into the published folder (a maintainer's choice), with a
one-line note; even then, non-default suite settings are refused before any work (`check_target`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError

if TYPE_CHECKING:  # the CLI's option defaults import this module: it stays light
    from harness.results.records import RunRecord

PUBLISHED = Path("results")   # the published results (relative to the working directory)
WORKING = Path("runs")        # where everyday commands write
REPO_RESULTS = Path(__file__).resolve().parents[2] / "results"  # this checkout's published results
MAX_LISTED = 5                # problems named in the one error line


def is_published(folder: Path) -> bool:
    """Is `folder` the published results: ./results, or this source checkout's results/?"""
    here = Path(folder).absolute().resolve()
    return here in (PUBLISHED.absolute().resolve(), REPO_RESULTS)


def writing_note(folder: Path) -> str | None:
    """The one-line note for a command told to write into the published results, or None."""
    if not is_published(folder):
        return None
    return (f"note: --results-dir {folder} writes into the published results (what the leaderboard and CI read); "
            f"everyday runs go to {WORKING}/ and `harness publish` copies them")


def suite_defaults(suite: str) -> tuple[dict[str, Any], str, Any]:
    """(default suite settings, default model id, the suite) of an installed suite."""
    from harness.resolve import load_suite

    spec, s = load_suite(suite, {})
    return dict(spec.params), s.model.id, s


def settings_problem(suite: str, params: dict[str, Any], model_id: str | None = None, *,
                     trial: bool = False, any_world: bool = False) -> str | None:
    """Why records with these suite settings (and base model) cannot sit under `<suite>/` of published
    results, or None. `trial`: a tuning trial, whose settings are the defaults plus the validation ones.
    `any_world`: a run record, which may be of any numbered world of the default config (`Suite.world_params`,
    `harness.results.worlds`: the board pools them); tuning logs and trials stay on the default world."""
    from harness.resolve import load_suite
    from harness.results.worlds import same_board

    defaults, default_model, s = suite_defaults(suite)
    if trial and s.tuning is not None:
        defaults = {**defaults, **dict(s.tuning.suite_params)}
    if params != defaults:
        if not (any_world and same_board(params, defaults, s.world_params)):
            changed = {k: v for k, v in params.items() if defaults.get(k, object()) != v}
            return f"made with suite settings {changed}, not the defaults of the published '{suite}' board"
        default_model = load_suite(suite, params)[1].model.id  # another world: its own base model
    if model_id is not None and model_id != default_model:
        return f"made with model {model_id}, not the '{suite}' suite's {default_model}"
    return None


def check_target(results_dir: Path, suite: str, params: dict[str, Any], model_id: str | None = None) -> None:
    """Before any work: a command told to write into the published results must run the suite's defaults."""
    if not is_published(results_dir):
        return
    problem = settings_problem(suite, params, model_id, any_world=True)
    if problem is not None:
        raise HarnessError(f"--results-dir {results_dir} is the published results and this run would be {problem}: "
                           f"leave out --results-dir (records go to {WORKING}/)")


# ------------------------------------------------------------------------------------------------ publish
@dataclass
class Item:
    """One file to publish: a record (`kind` record or trial) or a log (`tuning`, `scan`), and its content."""

    kind: str
    src: Path
    dst: Path
    text: str = ""


@dataclass
class Plan:
    items: list[Item] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)       # lines: already published, or left in the working folder
    problems: list[str] = field(default_factory=list)   # lines: refused (then nothing is written)


def find(src: Path, run_ids: list[str]) -> list[Path]:
    """The record files of `run_ids` (unique prefixes) under a working folder: grid records and tuning trials."""
    from harness.safety import check_run_id

    out = []
    for run_id in run_ids:
        check_run_id(run_id)
        matches = sorted({*src.glob(f"*/v*/{run_id}*.json"), *src.glob(f"*/v*/tuning/runs/*/v*/{run_id}*.json")})
        if not matches:
            raise HarnessError(f"no run '{run_id}' under {src}")
        if len(matches) > 1:
            raise HarnessError(f"run id prefix '{run_id}' is ambiguous under {src}: "
                               f"{', '.join(m.stem for m in matches[:5])}")
        out.append(matches[0])
    return out


def everything(src: Path) -> tuple[list[Path], list[Path]]:
    """(record files, tuning, scan and tuned-attacker logs) under a working folder."""
    records = sorted({*src.glob("*/v*/*.json"), *src.glob("*/v*/tuning/runs/*/v*/*.json")})
    logs = sorted({*src.glob("*/v*/tuning/*.json"), *src.glob("*/v*/tuning/attacker/*.json")})
    return records, logs


def _log_kind(path: Path) -> tuple[str, Any]:
    """A log file's kind and model: a scan log, a tuned-attacker log (under tuning/attacker/) or a tuning log."""
    from harness.tuning.attacker_log import AttackerLog
    from harness.tuning.logs import ScanLog, TuningLog

    if path.name.endswith(".scan.json"):
        return "scan", ScanLog
    return ("attacker", AttackerLog) if path.parent.name == "attacker" else ("tuning", TuningLog)


def _named_runs(log: Any, path: Path, src: Path) -> list[tuple[str, Path]]:
    """(run id, where its record lives relative to a results folder) of every run a log names: its trials and
    confirmations (tuning/runs/), and a tuned attacker's test runs (ordinary records)."""
    tuning = path.parent.parent if path.parent.name == "attacker" else path.parent
    version = f"v{log.protocol_version}"
    runs = tuning.relative_to(src) / "runs" / log.suite / version
    named = [(t.run_id, runs / f"{t.run_id}.json") for t in [*log.trials, *getattr(log, "confirmations", [])]]
    return named + [(t.run_id, Path(log.suite) / version / f"{t.run_id}.json") for t in getattr(log, "test", [])
                    if t.score is not None]  # a failed test run left no record


def _records_of_logs(logs: list[Path], src: Path) -> list[Path]:
    """The record files under `src` that the logs name (logs that do not parse are reported by `_plan_log`)."""
    out = []
    for path in logs:
        try:
            log = _log_kind(path)[1].model_validate_json(path.read_text())
        except Exception:
            continue
        if getattr(log, "finished", True) is not False:  # an unfinished search is kept back, with its runs
            out += [src / rel for _, rel in _named_runs(log, path, src) if (src / rel).is_file()]
    return out


def plan(src: Path, dst: Path, *, run_ids: list[str], every: bool, allow_dirty: bool = False,
         replace_logs: bool = False, logs: bool = False) -> Plan:
    """What `publish` would write, what it keeps, and every problem; writes nothing. `logs`: also every log under
    `src` (tuning, scan and tuned-attacker logs) with the records it names (trials, a tuned attacker's test runs)."""
    if not src.is_dir():
        raise HarnessError(f"--from {src} is not a folder (the working results, e.g. {WORKING}/)")
    if dst.exists() and not dst.is_dir():
        raise HarnessError(f"--to {dst} is not a folder")
    if src.resolve() == dst.absolute().resolve():
        raise HarnessError(f"--from and --to are the same folder ({src})")
    if (run_ids and every) or not (run_ids or every or logs):
        raise HarnessError("name the run ids to publish, --logs, or --all (not both run ids and --all)")
    from harness.results.validate import json_schema_check

    records, log_files = everything(src) if every else (find(src, run_ids), [])
    if logs and not every:
        log_files = everything(src)[1]
        records = list(dict.fromkeys([*records, *_records_of_logs(log_files, src)]))
    out, schema = Plan(), json_schema_check()[0]
    for path in records:
        _plan_record(out, path, src, dst, schema, skip_settings=every, allow_dirty=allow_dirty)
    for path in log_files:
        _plan_log(out, path, src, dst, replace_logs=replace_logs)
    return out


def _plan_record(out: Plan, path: Path, src: Path, dst: Path, schema: Any, *, skip_settings: bool,
                 allow_dirty: bool) -> None:
    from harness.results.validate import check_record

    rel = path.relative_to(src)
    target = dst / rel
    if target.exists():
        out.kept.append(f"already published: {target} (records are immutable; kept)")
        return
    record, problems = check_record(path, schema)  # as `harness validate` checks it
    if record is None or problems:
        out.problems.append(f"{path}: {problems[0] if problems else 'unreadable'}")
        return
    trial = "tuning" in rel.parts
    problem = _record_problem(record, trial=trial)
    if problem is not None:
        if skip_settings and problem.startswith("made with"):  # --all: a working record, not a mistake
            out.kept.append(f"kept in {src}: {path.name} ({problem})")
        else:
            out.problems.append(f"{path}: {problem}; it stays in {src}")
        return
    if record.provenance.git_dirty and not allow_dirty:
        out.problems.append(f"{path}: made from a dirty tree (git commit {record.provenance.git_commit[:12]} with "
                            "uncommitted changes); rerun from a clean checkout, or pass --allow-dirty")
        return
    out.items.append(Item("trial" if trial else "record", path, target, path.read_text()))


def _record_problem(record: RunRecord, *, trial: bool) -> str | None:
    try:
        _, _, s = suite_defaults(record.suite)
    except HarnessError as exc:
        return f"its suite is not installed ({exc})"
    if record.protocol_version != s.protocol_version:
        return (f"made under protocol v{record.protocol_version}; the installed '{record.suite}' is "
                f"v{s.protocol_version}")
    return settings_problem(record.suite, dict(record.spec.suite.params), record.spec.model.id, trial=trial,
                            any_world=not trial)


def _plan_log(out: Plan, path: Path, src: Path, dst: Path, *, replace_logs: bool) -> None:
    """A tuning or tuned-attacker log (replaces the published one only with `replace_logs`) or a scan log (merged
    into it)."""
    from pydantic import ValidationError

    from harness.tuning.logs import merge_scans, read_log

    name, kind = _log_kind(path)
    scan = name == "scan"
    try:
        log = kind.model_validate_json(path.read_text())
        published = read_log(dst / path.relative_to(src), kind)
    except (ValidationError, OSError, UnicodeDecodeError) as exc:
        out.problems.append(f"{path}: not a valid {name} log ({type(exc).__name__})")
        return
    problem = settings_problem(log.suite, log.suite_params)
    if problem is None and getattr(log, "finished", True) is False:
        problem = "an unfinished search: rerun it to finish (it resumes from its trials)"
    if problem is not None:
        out.kept.append(f"kept in {src}: {path.name} ({problem})")
        return
    missing = _unrecorded_trials(log, path, src, dst)
    if missing:
        out.problems.append(f"{path}: its run(s) {', '.join(missing[:3])} have no record to publish with it")
        return
    target = dst / path.relative_to(src)
    new = merge_scans(published, log) if scan and published is not None else log
    if new == published:
        out.kept.append(f"already published: {target} (same content)")
        return
    covers = published is None or (scan and all(t in new.trials for t in published.trials))
    if not covers and not replace_logs:
        out.problems.append(f"{path}: differs from the published {target} (a re-tune changes every later run's "
                            "settings); pass --replace-logs to replace it")
        return
    out.items.append(Item(name, path, target, _dump(new)))


def _unrecorded_trials(log: Any, path: Path, src: Path, dst: Path) -> list[str]:
    """Run ids a log names (trials, a tuned attacker's test runs) with a record in neither folder."""
    return [run_id for run_id, rel in _named_runs(log, path, src)
            if not (src / rel).is_file() and not (dst / rel).is_file()]


def _dump(log: Any) -> str:
    import json

    return json.dumps(log.model_dump(mode="json"), indent=2) + "\n"


def publish(the_plan: Plan) -> list[Path]:
    """Write a checked plan (refused if it has any problem): records once each (an existing one is kept, even
    one written meanwhile), logs; then rebuild the tables of every folder that received records. Returns the
    rebuilt tables."""
    from harness.results.tables import rebuild
    from harness.store.artifacts import atomic_write_text
    from harness.store.locks import file_lock

    if the_plan.problems:
        listed = "; ".join(the_plan.problems[:MAX_LISTED])
        more = f"; and {len(the_plan.problems) - MAX_LISTED} more" if len(the_plan.problems) > MAX_LISTED else ""
        raise HarnessError(f"publish refused, nothing written: {listed}{more}")
    folders = set()
    for item in the_plan.items:
        item.dst.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(item.dst.parent):  # the lock record writers take: never two writers of one record
            if item.kind in ("record", "trial") and item.dst.exists():
                continue
            atomic_write_text(item.dst, item.text)
        if item.kind == "record":
            folders.add(item.dst.parent)
    return [path for folder in sorted(folders) for path, _ in rebuild(folder)]

