"""LEADERBOARD.md: the site's main tables as Markdown, for readers who never open the site."""

from __future__ import annotations

import re

from leaderboard.board import Board, Row
from leaderboard.columns import BUDGET_RULE, CI_NOTE, RANK_RULE, UNSTABLE_RULE, format_half_width, format_value
from leaderboard.load import ResultFolder

MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md_escape(text: str) -> str:
    """Escape a string from a plugin or a table so Markdown shows it as text (HTML entities for < > &)."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")
    return MD_SPECIAL.sub(r"\\\1", text)


def md_code(text: str) -> str:
    """A code span: Markdown shows its content literally, so only backticks and table pipes need care."""
    return "`" + str(text).replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`"


def render_markdown(boards: list[Board], folders: list[ResultFolder], plots: list[dict[str, str]]) -> str:
    lines = ["# Immunization Bench leaderboard", "",
             "Built by `harness leaderboard` from the committed condition tables "
             "(`results/<suite>/v<N>/*.parquet`); nothing was re-run. The site, with sortable columns, tooltips, "
             "per-defence pages and provenance: `leaderboard/site/index.html` (opens from disk). Definitions: the "
             "README's Leaderboard section and the list under each table.", ""]
    for board, plot in zip(boards, plots, strict=True):
        lines += _board(board, plot)
    lines += ["![leaderboard](screenshot.png)", ""]
    lines += ["## Excluded", ""]
    for folder in folders:
        lines += [f"{md_code(folder.path)}:", ""]
        lines += [f"- {md_code(e.path)}: {md_escape(e.reason)}" for e in folder.exclusions] or [
            "- nothing: every table and record passed validation"]
        if folder.stale_record_ids:
            lines.append(f"- {len(folder.stale_record_ids)} valid record(s) not yet in the tables "
                         "(run `harness tables`)")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _board(board: Board, plot: dict[str, str]) -> list[str]:
    seeds = ("defence/attack " if any("/" in x for x in board.seeds) else "") + ", ".join(board.seeds)
    lines = [f"## {md_escape(board.title)}", "",
             f"judge **{md_escape(', '.join(board.judges) or '—')}** · protocol **v{board.folder.protocol_version}** "
             f"· **{len(board.seeds)}** seeds ({md_escape(seeds)}) · φ = {', '.join(f'{p:g}' for p in board.phis)} "
             f"· suite config {md_code(board.suite_params)}", "",
             *([f"**Verified on a private world** ({md_code(board.private_world)}): its facts were never public, so "
                "no submission could be tuned to them.", ""] if board.private_world else []),
             "| # | defence | seeds | " + " | ".join(md_escape(c.label) for c in board.columns) + " |",
             "|---" * (len(board.columns) + 3) + "|"]
    lines += [_row(board, row) for row in board.rows]
    lines += ["", f"Cells: mean ± half-width of the 95% interval. {CI_NOTE} — = not measured.", "",
              f"Plots (built by `make leaderboard`, not committed): `site/plots/{plot['curves']}` (resistance "
              f"curves per budget) and `site/plots/{plot['scatter']}` (stability vs resistance); the screenshot "
              "below shows them.", "",
              "Column definitions:", "", f"- **budget**: {BUDGET_RULE}"]
    lines += [f"- **{c.label}** ({c.better} is better): {c.definition}" for c in board.columns
              if not c.id.startswith("budget:")]
    lines += ["- **per-budget columns** (lower is better): mean over seeds of hs_post at that budget.",
              f"- **unstable**: {UNSTABLE_RULE}", f"- **#**: {RANK_RULE}", ""]
    return lines


def _row(board: Board, row: Row) -> str:
    name = f"{md_escape(row.key.name)} v{md_escape(row.key.version)}"
    if row.distinguishing:
        name += f" ({md_escape(row.distinguishing)})"
    if row.unstable:
        name += f" ⚠ unstable: {md_escape('; '.join(row.unstable))}"
    cells = [_cell(row, c.id, c.fmt) for c in board.columns]
    return f"| {row.rank or '–'} | {name} | {len(row.seeds)} | " + " | ".join(cells) + " |"


def _cell(row: Row, column: str, fmt: str) -> str:
    estimate, note = row.cells.get(column), row.notes.get(column, "")
    if estimate is None:
        return "held" if note == "held" else "—"
    text = format_value(estimate.mean, fmt)
    text += f" ± {format_half_width(estimate.half_width, fmt)}" if estimate.half_width is not None else ""
    return text + (f" ({md_escape(note)})" if column in ("held_out", "cross_domain") and note else "")
