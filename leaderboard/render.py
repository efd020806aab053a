"""Pages (jinja2, autoescape on) and LEADERBOARD.md from boards.

Every string from a plugin or a table reaches HTML through jinja2's autoescaping and Markdown through
`md_escape`; nothing is marked safe. View dicts are built here so the templates only lay out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from harness.results.estimates import Estimate
from harness.results.summary import run_kind
from harness.results.summary_budgets import budget_label
from leaderboard.board import Board, Row
from leaderboard.columns import BUDGET_RULE, RANK_RULE, UNSTABLE_RULE, ColumnSpec, format_half_width, format_value
from leaderboard.panel import panel_view
from leaderboard.plugin_docs import defence_info

TEMPLATES = Path(__file__).parent / "templates"
HEAT_COLUMNS = {"hs_pre", "worst", "held_out", "cross_domain"}
SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


def slug(text: str) -> str:
    """A file-name-safe slug; names that needed changing get a hash so two names never share a page."""
    clean = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return clean if clean == text else f"{clean or 'x'}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


class Site:
    """Renders the pages of one build into `folder` (links to records are made relative to `final`)."""

    def __init__(self, boards: list[Board], folders: list[Any], results_dir: Path, final: Path):
        import jinja2

        self.boards, self.folders, self.final = boards, folders, final.resolve()
        self.results_dir = results_dir.resolve()
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.globals.update(unstable_rule=UNSTABLE_RULE, rank_rule=RANK_RULE, budget_rule=BUDGET_RULE)
        self.infos = {name: defence_info(name) for name in sorted({r.key.name for b in boards for r in b.rows})}
        self.scans: dict[Path | None, str] = {}  # a scan log read (and a bad one reported) once per build

    def _scan(self, path: Path | None) -> str:
        if path not in self.scans:
            self.scans[path] = scan_summary(path)
        return self.scans[path]

    def write(self, folder: Path, plots: list[dict[str, str]]) -> None:
        (folder / "defence").mkdir(parents=True, exist_ok=True)
        index = self.env.get_template("index.html.j2").render(
            root="", boards=[self._board_view(b, p) for b, p in zip(self.boards, plots, strict=True)],
            defences=[{"name": i.name, "description": i.description, "page": f"defence/{slug(i.name)}.html"}
                      for i in self.infos.values()],
            folders=[{"path": str(f.path), "exclusions": f.exclusions, "stale": f.stale_record_ids}
                     for f in self.folders],
            excluded_count=sum(len(f.exclusions) for f in self.folders))
        (folder / "index.html").write_text(index)
        page = self.env.get_template("defence.html.j2")
        for name, info in self.infos.items():
            entries = [self._entry(b, p, r) for b, p in zip(self.boards, plots, strict=True)
                       for r in b.rows if r.key.name == name]
            (folder / "defence" / f"{slug(name)}.html").write_text(page.render(root="../", defence=info,
                                                                               entries=entries))

    def _board_view(self, board: Board, plots: dict[str, str]) -> dict[str, Any]:
        groups, previous = [], None
        for column in board.columns:
            label = _group(column)
            if label != previous:
                groups.append({"label": label, "span": 0})
                previous = label
            groups[-1]["span"] += 1
        return {"anchor": board_anchor(board), "title": board.title, "version": board.folder.protocol_version,
                "judges": board.judges, "seeds": board.seeds, "phis": [f"{p:g}" for p in board.phis],
                "suite_params": board.suite_params, "private_world": board.private_world, "columns": board.columns,
                "groups": groups, "panel": panel_view(board.folder.panels),
                "run_count": len({i for r in board.rows for i in dict(r.provenance)["run ids"]}),
                "plots": {k: f"plots/{v}" for k, v in plots.items()},
                "rows": [self._row_view(board, row) for row in board.rows]}

    def _row_view(self, board: Board, row: Row, full_notes: bool = False) -> dict[str, Any]:
        return {"name": row.key.name, "version": row.key.version, "distinguishing": row.distinguishing,
                "rank": row.rank, "unstable": row.unstable, "seeds": row.seeds, "params": row.key.params,
                "page": f"defence/{slug(row.key.name)}.html", "provenance": list(row.provenance.items()),
                "cells": [self._cell(board, row, c, i, full_notes) for i, c in enumerate(board.columns)]}

    def _cell(self, board: Board, row: Row, column: ColumnSpec, index: int, full_notes: bool) -> dict[str, Any]:
        estimate, note = row.cells.get(column.id), row.notes.get(column.id, "")
        view = cell_view(estimate, column.fmt, note, column.label)
        if not full_notes and column.id not in ("held_out", "cross_domain"):
            view["note"] = ""  # the main table stays compact; the defence page and the tooltip say where
        heat = column.id in HEAT_COLUMNS or column.id.startswith("budget:")
        view.update(anchor=f"{entry_anchor(board, row)}-c{index}", label=column.label, tooltip=column.tooltip,
                    heat=_heat(estimate) if heat else "",
                    runs=[self._run(board, i) for i in (estimate.run_ids if estimate else ())])
        return view

    def _entry(self, board: Board, plots: dict[str, str], row: Row) -> dict[str, Any]:
        from leaderboard.plots import plot_name

        anchor = entry_anchor(board, row)
        budgets = []
        for j, d in enumerate(row.budget_details):
            ids = sorted({i for e in (d.hs_post, d.steps, d.degenerate_post) if e for i in e.run_ids})
            budgets.append({"label": d.budget.label, "anchor": f"{anchor}-b{j}", "held": d.held,
                            "hs_post": cell_view(d.hs_post, "prob", "", "post-attack harmfulness"),
                            "steps": cell_view(d.steps, "steps", "held" if d.steps is None and d.hs_post else "",
                                               "steps to φ"),
                            "degenerate_post": cell_view(d.degenerate_post, "prob", "", "degenerate after attack"),
                            "runs": [self._run(board, i) for i in ids]})
        tuning = tuning_log_path(board, row.key.name)
        return {"anchor": anchor, "board_title": board.title, "row": self._row_view(board, row),
                "ranked": sum(1 for r in board.rows if r.rank), "judges": board.judges,
                "settings": [(k, json.dumps(v)) for k, v in sorted(row.key.settings.items())],
                "tuning_log": tuning.read_text() if tuning and tuning.is_file() else "",
                "tuning_path": str(tuning) if tuning else "(no safe file name for this defence)",
                "scan": self._scan(tuning.with_suffix(".scan.json") if tuning else None),
                "plot": f"../plots/{plots[plot_name(row)]}", "budgets": budgets,
                "cells": self._row_view(board, row, full_notes=True)["cells"],
                "generalization": self._generalization(board, row)}

    def _generalization(self, board: Board, row: Row) -> list[dict[str, Any]]:
        runs = board.generalization_runs
        if runs is None:
            return []
        mine = runs[(runs["defence"] == row.key.name) & (runs["defence_version"] == row.key.version)
                    & (runs["defence_params"] == row.key.params)]
        return [{"kind": run_kind(r), "subsets": f"{r['defence_subset']} → {r['attack_subset']}",
                 "budget": budget_label(r["attack"], r["attack_lr"], r["attack_samples"]),
                 "seed": r.get("seed", ""), "hs_pre": f"{r['hs_pre']:.2f}", "hs_post": f"{r['hs_post']:.2f}",
                 "held": "yes" if r["held"] else "no", "run": self._run(board, r["run_id"])}
                for r in mine.to_dict("records")]

    def _run(self, board: Board, run_id: str) -> dict[str, str]:
        record = (board.folder.path / f"{run_id}.json").resolve()
        return {"id": run_id, "href": os.path.relpath(record, self.final / "defence")}


def cell_view(estimate: Estimate | None, fmt: str, note: str, label: str) -> dict[str, Any]:
    """Text, interval, tooltip and sort key of one number; 'held' sorts above every step count."""
    if estimate is None:
        text = "held" if note == "held" else ""
        return {"text": text, "ci": "", "note": "", "sort": "Infinity" if text == "held" else "",
                "title": f"{label}: {note or 'not measured'}"}
    value = format_value(estimate.mean, fmt)
    interval = estimate.interval
    spread = (f"95% CI [{format_value(interval[0], fmt)}, {format_value(interval[1], fmt)}]" if interval
              else "no interval (n = 1)")
    title = f"{label}: {value}, n = {estimate.n}, {spread}" + (f"; {note}" if note else "")
    return {"text": value, "ci": format_half_width(estimate.half_width, fmt) if estimate.half_width is not None
            else "", "note": note, "sort": repr(estimate.mean),
            "title": title}


def _heat(estimate: Estimate | None) -> str:
    if estimate is None:
        return ""
    return f"heat-{sum(estimate.mean >= t for t in (0.05, 0.25, 0.5, 0.75))}"


def _group(column: ColumnSpec) -> str:
    if column.id == "hs_pre" or column.id.startswith("budget:"):
        return "harmfulness before / after attack, per budget (lr@samples)"
    if column.id in ("worst", "steps", "resisted"):
        return "resistance"
    if column.id in ("ppl_ratio", "qa_delta"):
        return "stability"
    if column.id in ("held_out", "cross_domain"):
        return "generalization"
    return "trainability" if column.id == "train_delta" else "degenerate outputs"


def board_anchor(board: Board) -> str:
    base = slug(f"{board.folder.suite}-v{board.folder.protocol_version}")
    return base + (f"-{board.config_index}" if board.config_index else "")


def entry_anchor(board: Board, row: Row) -> str:
    return f"{board_anchor(board)}-{board.rows.index(row)}"


def scan_summary(path: Path | None) -> str:
    """One line from a `harness tune --scan` log: how many scanned settings pass the guard ('' if none)."""
    from harness.errors import HarnessError
    from harness.progress import warn
    from harness.tuning.logs import ScanLog, read_log

    if path is None or not path.is_file():
        return ""
    try:
        log = read_log(path, ScanLog)  # bounded and validated: a hostile log is one line, never a crash
    except HarnessError as exc:
        warn(str(exc), prefix="excluded ")
        return ""
    stable = ", ".join(json.dumps(p, sort_keys=True) for p in log.stable) or "none"
    parts = "; ".join(json.dumps(f, sort_keys=True) if f else "the whole space" for f in log.scans)
    return (f"{len(log.stable)} of {len(log.trials)} scanned settings (of {log.space_size} in the space; "
            f"scanned: {parts}) pass the stability guard: {stable}. Log: {path}")


def tuning_log_path(board: Board, name: str) -> Path | None:
    """results/<suite>/v<N>/tuning/<defence>.json (the log `harness tune` writes), for safe file names."""
    return board.folder.path / "tuning" / f"{name}.json" if SAFE_NAME.fullmatch(name) else None
