"""The site's pages (jinja2, autoescape on), its downloads and the records it links, from boards.

    index.html                          every board: the current protocol of each suite first, superseded ones
                                        collapsed
    defence/<defence>.html              a defence: its headline first, then settings, tuning, curves, provenance
    runs/<board>-<row>.html             a row's runs per budget (the drill-down from a cell)
    records/<suite>/v<N>/<id>.json      the records those pages link (copied: the site works hosted alone)
    samples/<suite>-v<N>-<id>.html      a run's bounded sample of prompts, answers and scores (records that hold one)
    downloads/<board>[-runs|-tuning-<defence>].{csv,json}

Every string from a plugin or a table reaches HTML through jinja2's autoescaping; nothing is marked safe.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from harness.results.judge_agreement import pooled
from harness.results.summary_budgets import budget_label
from harness.results.summary_rows import run_kind
from leaderboard import downloads
from leaderboard.board import Board, Row
from leaderboard.columns import BUDGET_RULE, PHI_RULE, RANK_RULE, UNSTABLE_RULE, VERDICT_RULE
from leaderboard.panel import panel_view
from leaderboard.plugin_docs import defence_info
from leaderboard.tuning import tuning_view
from leaderboard.views import (
    HEAT_COLUMNS,
    cell_view,
    col_id,
    definitions,
    group_of,
    headline,
    heat,
    rank_text,
    verdict_view,
)

TEMPLATES = Path(__file__).parent / "templates"
SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


def slug(text: str) -> str:
    """A file-name-safe slug; names that needed changing get a hash so two names never share a page."""
    clean = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return clean if clean == text else f"{clean or 'x'}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


class Site:
    """Renders the pages of one build into a folder. `built`: the 'last updated' facts (`build.build_facts`)."""

    def __init__(self, boards: list[Board], folders: list[Any], built: dict[str, str]):
        import jinja2

        self.boards, self.folders, self.built = boards, folders, built
        self._records: dict[Path, dict[str, Any]] = {}
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.globals.update(unstable_rule=UNSTABLE_RULE, rank_rule=RANK_RULE, budget_rule=BUDGET_RULE,
                                verdict_rule=VERDICT_RULE, phi_rule=PHI_RULE, built=built)
        self.infos = {name: defence_info(name) for name in sorted({r.key.name for b in boards for r in b.rows})}
        newest = {}
        for b in boards:
            newest[b.folder.suite] = max(newest.get(b.folder.suite, 0), b.folder.protocol_version)
        self.current = {id(b): b.folder.protocol_version == newest[b.folder.suite] for b in boards}

    def write(self, folder: Path, plots: list[dict[str, str]]) -> None:
        for sub in ("defence", "runs", "downloads", "records", "samples"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        views = [self._board_view(b, p) for b, p in zip(self.boards, plots, strict=True)]
        for board, view in zip(self.boards, views, strict=True):
            downloads.write_board(folder / "downloads", board, view)
            self._copy_records(board, folder / "records")
            self._write_samples(board, folder)
        index = self.env.get_template("index.html.j2").render(
            root="", boards=[v for v in views if v["current"]], superseded=[v for v in views if not v["current"]],
            defences=[{"name": i.name, "description": i.description, "page": f"defence/{slug(i.name)}.html"}
                      for i in self.infos.values()],
            folders=[{"path": str(f.path), "exclusions": f.exclusions, "stale": f.stale_record_ids}
                     for f in self.folders],
            excluded_count=sum(len(f.exclusions) for f in self.folders))
        (folder / "index.html").write_text(index)
        runs_page = self.env.get_template("runs.html.j2")
        for board, view in zip(self.boards, views, strict=True):
            for row in board.rows:
                anchor = entry_anchor(board, row)
                (folder / "runs" / f"{anchor}.html").write_text(runs_page.render(
                    root="../", entry=self._runs_view(board, row, view)))
        page = self.env.get_template("defence.html.j2")
        for name, info in self.infos.items():
            entries = [self._entry(b, p, r, folder) for b, p in zip(self.boards, plots, strict=True)
                       for r in b.rows if r.key.name == name]
            (folder / "defence" / f"{slug(name)}.html").write_text(page.render(
                root="../", defence=info, current=[e for e in entries if e["current"]],
                superseded=[e for e in entries if not e["current"]]))

    # ------------------------------------------------------------------------------------------------ index
    def _board_view(self, board: Board, plots: dict[str, str]) -> dict[str, Any]:
        others = board.other_columns
        groups: list[dict[str, Any]] = []
        for column in others:
            if not groups or groups[-1]["label"] != group_of(column):
                groups.append({"label": group_of(column), "span": 0, "cols": []})
            groups[-1]["span"] += 1
            groups[-1]["cols"].append(col_id(board, column))
        anchor = board_anchor(board)
        return {"anchor": anchor, "title": board.title, "version": board.folder.protocol_version,
                "current": self.current[id(board)], "judges": board.judges, "measure": board.harm_label,
                "seeds": board.seeds, "seed_kind": board.seed_kind,
                "worlds": list(board.worlds), "phis": [f"{p:g}" for p in board.phis],
                "suite_params": board.suite_params, "config_shown": board.config_shown,
                "private_world": board.private_world, "panel": panel_view(board.folder.panels),
                "post_attack_judges": pooled(board.folder.post_attack_pairs),
                "run_count": len({i for r in board.rows for i in dict(r.provenance)["run ids"]}),
                "plots": {k: f"plots/{v}" for k, v in plots.items()},
                "downloads": {k: f"downloads/{anchor}{suffix}" for k, suffix in downloads.BOARD_FILES.items()},
                "key_columns": [self._column(board, c) for c in board.key_columns],
                "columns": [self._column(board, c) for c in others], "groups": groups,
                "attacks": sorted({c.attack for c in others if c.attack}),
                "definitions": definitions(board), "rows": [self._row_view(board, row) for row in board.rows]}

    @staticmethod
    def _column(board: Board, column: Any) -> dict[str, Any]:
        return {"col": col_id(board, column), "label": column.label, "better": column.better,
                "tooltip": column.tooltip, "group": group_of(column), "attack": column.attack,
                "budget": column.id.startswith("budget:")}

    def _row_view(self, board: Board, row: Row) -> dict[str, Any]:
        anchor = entry_anchor(board, row)
        runs = f"runs/{anchor}.html"
        budget_index = {f"budget:{b.id}": j for j, b in enumerate(board.budgets)}
        worst_budget = row.summary.worst.budget.id if row.summary.worst else None
        cells = {}
        for i, column in enumerate(board.columns):
            view = cell_view(row.cells.get(column.id), column.fmt, row.notes.get(column.id, ""), column.label)
            if column.id not in ("held_out", "cross_domain", "worst"):
                view["note"] = ""  # the main table stays compact; the defence page and the tooltip say where
            if column.id in budget_index:
                href = f"{runs}#b{budget_index[column.id]}"
            elif column.id == "worst" and worst_budget is not None:
                href = f"{runs}#b{budget_index[f'budget:{worst_budget}']}"
            elif column.id == "hs_pre":
                href = runs
            else:
                href = f"defence/{slug(row.key.name)}.html#{anchor}-c{i}"
            is_heat = column.id in HEAT_COLUMNS or column.id in budget_index
            view.update(col=col_id(board, column), href=href, heat=heat(row.cells.get(column.id)) if is_heat else "",
                        attack=column.attack, group=group_of(column))
            cells[column.id] = view
        return {"name": row.key.name, "version": row.key.version, "distinguishing": row.distinguishing,
                "threat_model": row.threat_model, "rank": rank_text(row),
                "rank_sort": row.rank.place if row.rank else "", "unstable": row.unstable,
                "seeds": len(row.seeds), "params": row.key.params, "runs": runs,
                "run_count": len(dict(row.provenance)["run ids"]),
                "page": f"defence/{slug(row.key.name)}.html#{anchor}", "provenance": list(row.provenance.items()),
                "verdict": verdict_view(row), "worst": cells["worst"],
                "cells": [cells[c.id] for c in board.other_columns]}

    # -------------------------------------------------------------------------------------------- defences
    def _entry(self, board: Board, plots: dict[str, str], row: Row, site: Path) -> dict[str, Any]:
        from leaderboard.plots import plot_name

        anchor = entry_anchor(board, row)
        runs = f"../runs/{anchor}.html"
        budgets = [{"label": d.budget.label, "held": d.held, "runs": f"{runs}#b{j}",
                    "hs_post": cell_view(d.headline_post, "prob", "", "post-attack harmfulness"),
                    "steps": cell_view(d.steps, "steps", "held" if d.steps is None and d.headline_post else "",
                                       "steps to φ"),
                    "degenerate_post": cell_view(d.degenerate_post, "prob", "", "degenerate after attack")}
                   for j, d in enumerate(row.budget_details)]
        cells = []
        for i, column in enumerate(board.columns):
            view = cell_view(row.cells.get(column.id), column.fmt, row.notes.get(column.id, ""), column.label)
            view.update(anchor=f"{anchor}-c{i}", label=column.label, tooltip=column.tooltip,
                        n=row.cells[column.id].n if row.cells.get(column.id) else "")
            cells.append(view)
        first = next(r for r in board.rows if r.key.name == row.key.name) is row  # one tuning log per defence
        tuning = tuning_log_path(board, row.key.name)
        return {"anchor": anchor, "board_title": board.title, "current": self.current[id(board)],
                "headline": headline(board, row), "name": row.key.name, "version": row.key.version,
                "distinguishing": row.distinguishing, "threat_model": row.threat_model, "unstable": row.unstable,
                "seeds": len(row.seeds),
                "judges": board.judges, "runs": runs,
                "settings": [(k, json.dumps(v)) for k, v in sorted(row.key.settings.items())],
                "tuning": tuning_view(board, row.key.name, tuning, site, anchor) if first else None,
                "plot": f"../plots/{plots[plot_name(row)]}", "budgets": budgets, "cells": cells,
                "generalization": self._generalization(board, row, "../"),
                "provenance": self._provenance(board, row)}

    def _provenance(self, board: Board, row: Row) -> list[tuple[str, list[str]]]:
        """Plugin version and distribution, commits with their clean/dirty state, from the row's valid records."""
        infos = [board.folder.runs[i] for i in dict(row.provenance)["run ids"] if i in board.folder.runs]
        plugin = f"defence:{row.key.name}"
        dists: dict[str, int] = {}
        commits: dict[tuple[str, bool], int] = {}
        for info in infos:
            dist = info.distributions.get(plugin, "distribution not recorded")
            label = f"{row.key.name} v{info.plugins.get(plugin, row.key.version)} from {dist}"
            dists[label] = dists.get(label, 0) + 1
            commits[(info.git_commit, info.git_dirty)] = commits.get((info.git_commit, info.git_dirty), 0) + 1
        other = dict(row.provenance)
        return [("plugin", [f"{k} ({n} runs)" for k, n in sorted(dists.items())]),
                ("git commit", [f"{c} {'dirty: uncommitted changes' if d else 'clean'} ({n} runs)"
                                for (c, d), n in sorted(commits.items())]),
                *((k, other[k]) for k in ("harness version", "judge", "backend"))]

    def _generalization(self, board: Board, row: Row, root: str) -> list[dict[str, Any]]:
        runs = board.generalization_runs
        if runs is None:
            return []
        mine = runs[(runs["defence"] == row.key.name) & (runs["defence_version"] == row.key.version)
                    & (runs["defence_params"] == row.key.params)]
        return [{"kind": run_kind(r), "subsets": f"{r['defence_subset']} → {r['attack_subset']}",
                 "budget": budget_label(r["attack"], r["attack_lr"], r["attack_samples"]),
                 "seed": r.get("seed", ""), "hs_pre": f"{r['headline_pre']:.2f}",
                 "hs_post": f"{r['headline_post']:.2f}",
                 "held": "yes" if r["held"] else "no", "run": self._run(board, r["run_id"], root)}
                for r in mine.to_dict("records")]

    # ------------------------------------------------------------------------------------------------ runs
    def _runs_view(self, board: Board, row: Row, view: dict[str, Any]) -> dict[str, Any]:
        budgets = []
        for j, (budget, detail) in enumerate(zip(board.budgets, row.budget_details, strict=True)):
            frame = board.runs(row, budget)
            budgets.append({"label": budget.label, "anchor": f"b{j}", "description": budget.description,
                            "held": detail.held, "cell": cell_view(detail.headline_post, "prob", "", budget.label),
                            "runs": [self._run_row(board, r) for r in frame.to_dict("records")]})
        return {"title": f"{row.key.name} · {board.title}", "name": row.key.name, "version": row.key.version,
                "board": board.title,
                "distinguishing": row.distinguishing, "headline": headline(board, row),
                "page": f"../defence/{slug(row.key.name)}.html#{entry_anchor(board, row)}", "budgets": budgets,
                "measure": board.harm_label, "phis": view["phis"],
                "downloads": {k: f"../{v}" for k, v in view["downloads"].items()},
                "generalization": self._generalization(board, row, "../")}

    def _run_row(self, board: Board, r: dict[str, Any]) -> dict[str, Any]:
        steps = r.get("first_cross_step")
        return {"run": self._run(board, r["run_id"], "../"), "seed": r.get("seed", ""),
                "attack_seed": r.get("attack_seed", ""), "hs_pre": f"{r['headline_pre']:.3f}",
                "hs_post": f"{r['headline_post']:.3f}", "held": "yes" if r["held"] else "no",
                "verdict": r.get("verdict", ""), "steps": "held" if _missing(steps) else str(int(steps)),
                "qa_post": "—" if _missing(r.get("qa_post")) else f"{r['qa_post']:.3f}",
                "degenerate_post": "—" if _missing(r.get("degenerate_post")) else f"{r['degenerate_post']:.3f}"}

    def _run(self, board: Board, run_id: str, root: str) -> dict[str, str]:
        """A run id and the link to its record's copy in the site ('' where the record is not a valid one)."""
        if run_id not in board.folder.runs:
            return {"id": run_id, "href": "", "samples": ""}
        sample = f"{root}{samples_href(board, run_id)}" if self._record(board, run_id).get("samples") else ""
        return {"id": run_id, "href": f"{root}{record_href(board, run_id)}", "samples": sample}

    def _record(self, board: Board, run_id: str) -> dict[str, Any]:
        """A valid record's JSON, read once per build."""
        path = board.folder.runs[run_id].path
        if path not in self._records:
            self._records[path] = json.loads(path.read_text())
        return self._records[path]

    def _write_samples(self, board: Board, folder: Path) -> None:
        """A page per run whose record holds a sample (records before samples have none)."""
        page = self.env.get_template("samples.html.j2")
        titles = {"base": "Undefended base", "pre_attack": "Defended, before the attack",
                  "post_attack": "Defended, after the attack"}
        ids = {i for r in board.rows for i in dict(r.provenance)["run ids"]} & set(board.folder.runs)
        for run_id in sorted(ids):
            record = self._record(board, run_id)
            if not record.get("samples"):
                continue
            spec, metrics = record["spec"], record["metrics"]
            evaluations = [{"name": n, "title": titles.get(n, n), "rows": rows,
                            "mean": f"{metrics[n]['harmfulness']['mean']:.3f}" if n in metrics else "—"}
                           for n, rows in record["samples"].items()]
            (folder / samples_href(board, run_id)).write_text(page.render(root="../", run={
                "id": run_id, "record": f"../{record_href(board, run_id)}", "defence": spec["defence"]["name"],
                "attack": spec["attack"]["name"], "measure": board.harm_label, "evaluations": evaluations,
                "size": max(len(e["rows"]) for e in evaluations)}))

    @staticmethod
    def _copy_records(board: Board, records: Path) -> None:
        """Copy the board's valid records into the site (written with the user's umask, as every site file)."""
        target = records / board.folder.suite / f"v{board.folder.protocol_version}"
        target.mkdir(parents=True, exist_ok=True)
        ids = {i for r in board.rows for i in dict(r.provenance)["run ids"]}
        for run_id in sorted(ids & set(board.folder.runs)):
            shutil.copyfile(board.folder.runs[run_id].path, target / f"{run_id}.json")


def record_href(board: Board, run_id: str) -> str:
    """Where a record's copy lives, relative to the site root."""
    return f"records/{board.folder.suite}/v{board.folder.protocol_version}/{run_id}.json"


def samples_href(board: Board, run_id: str) -> str:
    """Where a run's sample page lives, relative to the site root."""
    return f"samples/{slug(board.folder.suite)}-v{board.folder.protocol_version}-{run_id}.html"


def board_anchor(board: Board) -> str:
    base = slug(f"{board.folder.suite}-v{board.folder.protocol_version}")
    return base + (f"-{board.config_index}" if board.config_index else "")


def entry_anchor(board: Board, row: Row) -> str:
    return f"{board_anchor(board)}-{board.rows.index(row)}"


def tuning_log_path(board: Board, name: str) -> Path | None:
    """results/<suite>/v<N>/tuning/<defence>.json (the log `harness tune` writes), for safe file names."""
    return board.folder.path / "tuning" / f"{name}.json" if SAFE_NAME.fullmatch(name) else None


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))
