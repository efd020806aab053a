"""CSV and JSON downloads of every table the site shows, written into the site folder: per board its rows (each
number with its 95% interval and n, from the summary) and its runs (the resistance table's rows behind the
cells); per tuning log its trials (`leaderboard.tuning`). Values are raw numbers (no formatting), missing ones
empty (CSV) or null (JSON).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from leaderboard.board import Board

BOARD_FILES = {"csv": ".csv", "json": ".json", "runs_csv": "-runs.csv", "runs_json": "-runs.json"}
RUN_COLUMNS = ("run_id", "defence", "defence_version", "defence_params", "seed", "attack_seed", "attack", "attack_lr",
               "attack_samples", "attack_epochs", "hs_pre", "hs_post", "headline", "headline_pre", "headline_post",
               "access_post", "compliance_post", "forced_post", "floor", "held", "verdict", "first_cross_step",
               "qa_post", "degenerate_post")


def write_board(folder: Path, board: Board, view: dict[str, Any]) -> None:
    """The board's rows and runs, as CSV and JSON, at the names BOARD_FILES gives `view['anchor']`."""
    from leaderboard.render import record_href

    stem = view["anchor"]
    rows = [_row(board, row) for row in board.rows]
    header = ["rank", "rank_shared", "defence", "defence_version", "settings", "seeds", "verdict", "breaks_at",
              "worst_case_budget", "unstable"]
    for column in board.columns:
        header += [column.label, f"{column.label} ci_low", f"{column.label} ci_high", f"{column.label} n"]
    table = []
    for r in rows:
        line = [r["rank"], r["rank_shared"], r["defence"], r["defence_version"], json.dumps(r["settings"]),
                " ".join(r["seeds"]), r["verdict"], r["breaks_at"], r["worst_case_budget"], "; ".join(r["unstable"])]
        for column in board.columns:
            cell = r["cells"][column.label] or {}
            line += [cell.get("mean"), cell.get("ci_low"), cell.get("ci_high"), cell.get("n")]
        table.append(line)
    write_csv(folder / f"{stem}.csv", header, table)
    write_json(folder / f"{stem}.json", {
        "board": board.title, "suite": board.folder.suite, "protocol_version": board.folder.protocol_version,
        "suite_params": json.loads(board.suite_params) if board.suite_params.startswith("{") else board.suite_params,
        "judges": board.judges, "headline": board.headline, "harmfulness": board.harm_label, "phi": board.phis,
        "columns": [{"label": c.label, "better": c.better, "definition": c.tooltip} for c in board.columns],
        "rows": rows})
    runs = []
    for row in board.rows:
        frame = board.runs(row)
        for record in frame.to_dict("records"):
            runs.append([_plain(record.get(c)) for c in RUN_COLUMNS] + [record_href(board, record["run_id"])])
    write_csv(folder / f"{stem}-runs.csv", [*RUN_COLUMNS, "record"], runs)
    write_json(folder / f"{stem}-runs.json", {"board": board.title, "runs": [
        dict(zip([*RUN_COLUMNS, "record"], r, strict=True)) for r in runs]})


def _row(board: Board, row: Any) -> dict[str, Any]:
    s = row.summary
    cells = {}
    for column in board.columns:
        e = row.cells.get(column.id)
        interval = e.interval if e is not None else None
        cells[column.label] = None if e is None else {
            "mean": e.mean, "half_width": e.half_width, "ci_low": interval[0] if interval else None,
            "ci_high": interval[1] if interval else None, "n": e.n, "note": row.notes.get(column.id, "")}
    return {"rank": row.rank.place if row.rank else None, "rank_shared": bool(row.rank and row.rank.shared),
            "defence": row.key.name, "defence_version": row.key.version, "settings": row.key.settings,
            "seeds": list(row.seeds), "verdict": row.verdict, "breaks_at": s.breaks_at.label if s.breaks_at else None,
            "worst_case_budget": s.worst.budget.label if s.worst else None, "unstable": list(row.unstable),
            "cells": cells}


def write_csv(path: Path, header: list[str] | tuple[str, ...], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in (_plain(x) for x in r)] for r in rows])
    path.write_text(buffer.getvalue())


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(_clean(data), indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def _plain(value: Any) -> Any:
    """A table value as plain Python: pandas' NA and NaN become None, numpy scalars Python numbers."""
    import pandas as pd

    if value is None or (not isinstance(value, str | list | dict) and bool(pd.isna(value))):
        return None
    return value.item() if hasattr(value, "item") else value


def _clean(data: Any) -> Any:
    if isinstance(data, dict):
        return {str(k): _clean(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_clean(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return _plain(data)
