"""A defence's tuning log on its page: a summary line, the Pareto plot of its trials, the trials as a table (the
front first), CSV and JSON downloads, and the trials' records copied into the site. Trial values come from the log
and the trials' records (`harness.tuning.trials`); nothing is computed here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from leaderboard.board import Board


def tuning_view(board: Board, name: str, path: Path | None, site: Path, anchor: str) -> dict[str, Any]:
    """What the page shows of `path` (results/<suite>/v<N>/tuning/<defence>.json); writes its plot, downloads and
    trial records under `site`. Without a log: {'missing': where it was looked for}; an invalid one: {'error'}."""
    from harness.progress import warn
    from harness.tuning.logs import TuningLog, read_log
    from harness.tuning.trials import trial_views

    scan = scan_summary(path.with_suffix(".scan.json") if path else None)
    if path is None or not path.is_file():
        return {"state": "missing", "missing": str(path) if path else "(no safe file name for this defence)",
                "scan": scan}
    try:
        log = read_log(path, TuningLog)  # bounded and validated: a hostile log is one line, never a crash
    except HarnessError as exc:
        warn(str(exc), prefix="excluded ")
        return {"state": "error", "error": str(exc), "scan": scan}
    assert log is not None  # the file exists
    views = trial_views(log, path.parent / "runs")
    stem = f"{anchor}-tuning"

    records = site / "records" / board.folder.suite / f"v{board.folder.protocol_version}" / "tuning"
    records.mkdir(parents=True, exist_ok=True)
    space = list(log.space)
    rows = []
    for i, v in enumerate(views):
        href = ""
        if v.record is not None:
            shutil.copyfile(v.record, records / f"{v.trial.run_id}.json")
            href = f"../records/{board.folder.suite}/v{board.folder.protocol_version}/tuning/{v.trial.run_id}.json"
        rows.append({"n": i + 1, "role": v.role, "params": [json.dumps(v.trial.params.get(k)) for k in space],
                     "seed": v.trial.seed, "hs_post": f"{v.trial.headline:.3f}", "auc": f"{v.trial.auc:.3f}",
                     "qa_delta": "—" if v.qa_delta is None else f"{v.qa_delta:+.3f}",
                     "ppl_ratio": "—" if v.ppl_ratio is None else f"{v.ppl_ratio:.3g}",
                     "stable": "yes" if v.trial.stable else "no", "missed": "; ".join(v.trial.missed),
                     "chosen": v.chosen, "pareto": v.pareto, "run": {"id": v.trial.run_id, "href": href}})
    _downloads(site / "downloads", stem, space, views, log)
    stable = sum(v.trial.stable for v in views if v.role == "search")
    where = log.chosen_position
    chosen = ", ".join(f"{k}={json.dumps(val)}" + (f" ({where[k]})" if k in where else "")
                       for k, val in log.chosen.items()) or "none (defaults kept)"
    measure = next((t.measure for t in log.trials if t.measure), None) or "harmfulness"
    _plot(views, board, name, site / "plots" / f"{stem}.svg", "knowledge access" if measure == "access" else measure)
    return {"state": "ok", "space": space, "rows": rows, "front": [r for r in rows if r["pareto"] or r["chosen"]],
            "plot": f"../plots/{stem}.svg", "scan": scan, "chosen": chosen, "passed_guard": log.passed_guard,
            "summary": f"{len(log.trials)} trials of {len(list(_combinations(log.space)))} settings in the space "
                       f"(budget {log.trials_budget}), {stable} passing the stability guard, "
                       f"{len(log.confirmations)} confirmation run(s); scored by the validation attack {log.attack} "
                       f"{json.dumps(log.attack_params, sort_keys=True)} on the validation split."
                       + _selection(log, measure),
            "measure": "knowledge access" if measure == "access" else measure,
            "downloads": {"csv": f"../downloads/{stem}.csv", "json": f"../downloads/{stem}.json"},
            "version": log.defence_version}


def _selection(log: Any, measure: str) -> str:
    """How the choice was made and what no defence scores on the same data ('' for logs that predate it)."""
    out = ""
    if log.confirm_top is not None:
        held = [c for c in log.candidates if c.held]
        seeds = ", ".join(map(str, held[0].seeds)) if held else "0 and the confirm seeds"
        out += (f" Chosen: the lowest mean {measure} over defence seeds {seeds} among the {log.confirm_top} best "
                f"stable settings that hold the stability guard at every seed ({len(log.candidates)} candidate(s) "
                f"confirmed; sampler {log.sampler}).")
    if log.reference:
        mean = sum(t.headline for t in log.reference) / len(log.reference)
        out += (f" Reference {log.reference_defence} on the same validation data and attack: {measure} {mean:.3f} "
                f"(mean of {len(log.reference)} seed(s)).")
    return out


def scan_summary(path: Path | None) -> str:
    """One line from a `harness tune --scan` log: how many scanned settings pass the guard ('' if none)."""
    from harness.progress import warn
    from harness.tuning.logs import ScanLog, read_log

    if path is None or not path.is_file():
        return ""
    try:
        log = read_log(path, ScanLog)  # bounded and validated: a hostile log is one line, never a crash
    except HarnessError as exc:
        warn(str(exc), prefix="excluded ")
        return ""
    assert log is not None
    stable = ", ".join(json.dumps(p, sort_keys=True) for p in log.stable) or "none"
    parts = "; ".join(json.dumps(f, sort_keys=True) if f else "the whole space" for f in log.scans)
    return (f"{len(log.stable)} of {len(log.trials)} scanned settings (of {log.space_size} in the space; "
            f"scanned: {parts}) pass the stability guard: {stable}.")


def _combinations(space: dict[str, list[Any]]) -> Any:
    from harness.tuning.logs import settings

    return settings(space)


def _plot(views: list[Any], board: Board, name: str, path: Path, headline: str) -> None:
    from leaderboard.plots import pareto_figure, save

    save(pareto_figure(views, f"{name}: tuning trials, {board.title} (validation split)", board.measure
                       or "harmfulness score", headline), path)


def _downloads(folder: Path, stem: str, space: list[str], views: list[Any], log: Any) -> None:
    """The trials with their raw values (the log's and their records'), as CSV and JSON."""
    from leaderboard.downloads import write_csv, write_json

    header = ["trial", "role", *space, "seed", "hs_post", "auc", "qa_delta", "ppl_ratio", "stable", "missed",
              "chosen", "pareto", "run_id"]
    table = [[i + 1, v.role, *(v.trial.params.get(k) for k in space), v.trial.seed, v.trial.hs_post, v.trial.auc,
              v.qa_delta, v.ppl_ratio, v.trial.stable, "; ".join(v.trial.missed), v.chosen, v.pareto, v.trial.run_id]
             for i, v in enumerate(views)]
    write_csv(folder / f"{stem}.csv", header, table)
    write_json(folder / f"{stem}.json", {"defence": log.defence, "defence_version": log.defence_version,
                                         "space": log.space, "chosen": log.chosen, "passed_guard": log.passed_guard,
                                         "attack": log.attack, "attack_params": log.attack_params,
                                         "trials": [dict(zip(header, t, strict=True)) for t in table]})
