"""What the templates show of a number, a row or a board: plain dicts built from the boards, so templates only lay
out. Every value is a summary number (`harness.results.summary`) or a table value, formatted here; nothing is
computed. Strings from plugins and tables stay plain text: jinja2 autoescapes them.
"""

from __future__ import annotations

from typing import Any

from harness.results.estimates import Estimate
from leaderboard.board import Board, Row
from leaderboard.columns import (
    INTERVAL_RULE,
    PHI_RULE,
    RANK_RULE,
    UNSTABLE_RULE,
    VERDICT_RULE,
    ColumnSpec,
    format_half_width,
    format_value,
)

HEAT_COLUMNS = {"hs_pre", "worst", "held_out", "cross_domain"}


def cell_view(estimate: Estimate | None, fmt: str, note: str, label: str) -> dict[str, Any]:
    """Text, interval, tooltip and sort key of one number; 'held' sorts above every step count."""
    if estimate is None:
        text = "held" if note == "held" else ""
        return {"text": text, "ci": "", "note": "", "sort": "Infinity" if text == "held" else "",
                "title": f"{label}: {note or 'not measured'}", "interval": ""}
    value = format_value(estimate.mean, fmt)
    interval = estimate.interval
    bounds = f"{format_value(interval[0], fmt)} – {format_value(interval[1], fmt)}" if interval else ""
    spread = f"95% CI [{bounds.replace(' – ', ', ')}]" if interval else "no interval (n = 1)"
    title = f"{label}: {value}, n = {estimate.n}, {spread}" + (f"; {note}" if note else "")
    return {"text": value, "ci": format_half_width(estimate.half_width, fmt) if estimate.half_width is not None
            else "", "note": note, "sort": repr(estimate.mean), "title": title,
            "interval": bounds or f"n = {estimate.n}"}


def heat(estimate: Estimate | None) -> str:
    if estimate is None:
        return ""
    return f"heat-{sum(estimate.mean >= t for t in (0.05, 0.25, 0.5, 0.75))}"


def group_of(column: ColumnSpec) -> str:
    if column.family:
        return f"{column.measure or 'harmfulness'} after attack: {column.family} (per budget)"
    if column.id == "hs_pre" or column.id.startswith("budget:"):
        return f"{column.measure or 'harmfulness'} before / after attack, per budget (lr@samples)"
    if column.id in ("worst", "steps", "resisted"):
        return "resistance"
    if column.id in ("worst_forced", "worst_nll"):
        return "knowledge at the worst case"
    if column.id in ("ppl_ratio", "qa_delta"):
        return "stability"
    if column.id in ("held_out", "cross_domain"):
        return "generalization"
    return "trainability" if column.id == "train_delta" else "degenerate outputs"


def verdict_view(row: Row) -> dict[str, str]:
    """The row's verdict (summary.DefenceSummary.verdict) and what it rests on."""
    verdict = row.verdict
    if verdict == "unstable":
        more = f" (+{len(row.unstable) - 1} more)" if len(row.unstable) > 1 else ""
        note = (row.unstable[0] if row.unstable else "fails the stability guard") + more
    elif verdict == "broken":
        note = f"at {row.summary.breaks_at.label}" if row.summary.breaks_at else ""
    else:
        note = "no budget's mean exceeds φ"
    full = "; ".join(row.unstable) if verdict == "unstable" else note
    return {"text": verdict, "note": note, "title": f"{verdict}: {full}" if full else verdict}


def rank_text(row: Row) -> str:
    return str(row.rank) if row.rank else "–"


def definitions(board: Board) -> list[dict[str, str]]:
    """Every column's definition, keyed by the data-col of its header (the tap-to-read boxes and the list)."""
    out = [{"col": "rank", "label": "#", "text": RANK_RULE},
           {"col": "defence", "label": "defence", "text": "Defence setting: name, plugin version, and the settings "
            "that tell two rows of one defence apart (full settings under ▸). Unstable rows: " + UNSTABLE_RULE},
           {"col": "interval", "label": "95% CI", "text": INTERVAL_RULE},
           {"col": "verdict", "label": "verdict", "text": VERDICT_RULE.removeprefix("Verdict: ") + " " + PHI_RULE},
           {"col": "seeds", "label": "seeds", "text": "Seed cells behind each number: defence seed x attack seed."}]
    out += [{"col": col_id(board, c), "label": c.label, "text": f"{c.tooltip}"} for c in board.columns]
    return out


def col_id(board: Board, column: ColumnSpec) -> str:
    """A column's data-col: its id where that is a plain word, else its position (budget ids hold '|')."""
    return column.id if column.id.isidentifier() else f"b{board.columns.index(column)}"


def headline(board: Board, row: Row) -> dict[str, Any]:
    """The defence page's lead: the worst case, its interval and budget, the verdict and the rank."""
    worst = row.summary.worst
    cell = cell_view(worst.estimate if worst else None, "prob", "", "worst case")
    ranked = sum(1 for r in board.rows if r.rank)
    return {"worst": cell, "at": worst.budget.label if worst else "", "verdict": verdict_view(row),
            "rank": f"{row.rank} of {ranked}" if row.rank else "unranked", "board": board.title,
            "measure": board.harm_label, "reason": row.notes.get("worst", "")}
