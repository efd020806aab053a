"""LEADERBOARD.md: the site's tables as Markdown that fits a GitHub page, for readers who never open the site.

One legend at the top (how rows are ranked, what ± and φ mean), then per board the key columns (rank, defence,
worst case, its interval, verdict) in one narrow table and the rest in three more, folded under <details>;
current protocols first, superseded ones after; column definitions once, at the end. Every table line stays
under `MAX_LINE` characters. Deterministic: no build date or commit (the newest record's date stands for "last
updated"), so `make leaderboard` on unchanged tables rewrites the same file.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from harness.results.judge_agreement import pooled
from harness.results.records import OPEN_WEIGHTS
from leaderboard.board import Board, Row
from leaderboard.columns import (
    BUDGET_RULE,
    CI_NOTE,
    INTERVAL_RULE,
    PHI_RULE,
    RANK_RULE,
    UNSTABLE_RULE,
    VERDICT_RULE,
    format_half_width,
    format_value,
)
from leaderboard.load import ResultFolder

MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
MAX_LINE = 160
SCREENSHOT = "../docs/screenshots/index-1280x900.png"  # relative to leaderboard/LEADERBOARD.md
# The columns after the key ones, in three tables narrow enough for a GitHub page.
PARTS = (("{measure} before and after attack, per budget", lambda c: c.id == "hs_pre" or c.id.startswith("budget:")),
         ("resistance, knowledge at the worst case, stability",
          lambda c: c.id in ("steps", "resisted", "worst_forced", "worst_nll", "ppl_ratio", "qa_delta")),
         ("generalization, trainability, degenerate outputs",
          lambda c: c.id in ("held_out", "cross_domain", "train_delta", "degenerate_post", "degenerate_pre")))


def md_escape(text: str) -> str:
    """Escape a string from a plugin or a table so Markdown shows it as text (HTML entities for < > &)."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")
    return MD_SPECIAL.sub(r"\\\1", text)


def md_code(text: str) -> str:
    """A code span: Markdown shows its content literally, so only backticks and table pipes need care."""
    return "`" + str(text).replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`"


def render_markdown(boards: list[Board], folders: list[ResultFolder], plots: list[dict[str, str]]) -> str:
    """The whole file. `plots` (file names per board) is accepted for the caller's symmetry with the site."""
    del plots  # the plots are the site's (not committed); the screenshot shows them
    newest = {b.folder.suite: max(x.folder.protocol_version for x in boards if x.folder.suite == b.folder.suite)
              for b in boards}
    current = [b for b in boards if b.folder.protocol_version == newest[b.folder.suite]]
    superseded = [b for b in boards if b not in current]
    last = max((f.last_run for f in folders), default="")[:10] or "unknown"
    lines = ["# Immunization Bench leaderboard", "",
             *_wrap("Built by `harness leaderboard` from the committed condition tables (`results/<suite>/v<N>/"
                    "*.parquet`); nothing was re-run. The site (`make leaderboard`, then open "
                    "`leaderboard/site/index.html` from disk) adds sortable and filterable columns, definitions, "
                    f"the runs behind every cell, plots and per-defence pages. Last updated: newest run {last}."), "",
             "**How to read it.**", "",
             *_wrap("- **Ranked by the worst case**: the highest harmfulness (knowledge access, where a board says "
                    "so) after attack over the budgets that still leave a useful model. Lower is better."),
             *_wrap("- **±** is the half-width of a 95% interval over seeds. Rows whose intervals overlap cannot "
                    "be told apart and share a place, shown **=2**."),
             *_wrap("- **φ** (phi) is the harm threshold: a run that stays at or below φ through its whole attack "
                    "resisted it. **Verdict**: broken (some budget's mean exceeds φ), resisted, or unstable "
                    "(broken before any attack: not ranked)."),
             "- Definitions of every column: [at the end](#column-definitions).", "",
             f"![the leaderboard's index page]({SCREENSHOT})", ""]
    for board in current:
        lines += _board(board, "##")
    if superseded:
        lines += ["## Superseded protocols", "",
                  *_wrap("Kept for reference: measured under an earlier protocol, not comparable with the tables "
                         "above."), ""]
        for board in superseded:
            lines += _board(board, "###")
    lines += _definitions(boards)
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


def _judges(board: Board) -> list[str]:
    """Each judge pair's agreement on the folder's post-attack generations (from the records)."""
    return [f"{p['a']} ~ {p['b']} agree on {p['agreement']:.1%} (Cohen's κ {p['kappa']:.2f}) of {p['n']} answers over "
            f"{p['evaluations']} evaluations" for p in pooled(board.folder.post_attack_pairs)]


def _board(board: Board, level: str) -> list[str]:
    seeds = board.seed_kind + ", ".join(board.seeds)
    worlds = f"worlds {', '.join(board.worlds)} pooled · " if board.worlds else ""
    lines = [f"{level} {md_escape(board.title)}", "",
             *_wrap(f"{board.headline_name} = {md_escape(board.harm_label)} · "
                    f"φ = {', '.join(f'{p:g}' for p in board.phis)} · "
                    f"{worlds}{len(board.seeds)} seed cells ({md_escape(seeds)}) · "
                    f"{len(board.rows)} defence settings · "
                    f"suite config {md_code(board.config_shown)}"), "",
             *[w for line in _judges(board) for w in _wrap(f"Judges on post-attack generations: {md_escape(line)}.")],
             *([""] if _judges(board) else []),
             *([f"**Verified on a private world** ({md_code(board.private_world)}): its facts were never public, so "
                "no submission could be tuned to them.", ""] if board.private_world else []),
             "| # | defence | worst case | 95% CI | verdict | seeds |", "|---:|---|---:|---:|---|---:|"]
    for row in board.rows:
        worst = row.cells.get("worst")
        note = f" ({md_escape(row.notes['worst'])})" if worst is not None and row.notes.get("worst") else ""
        verdict = row.verdict + (f" at {md_escape(row.summary.breaks_at.label)}"
                                 if row.verdict == "broken" and row.summary.breaks_at else "")
        lines.append(f"| {row.rank or '–'} | {_name(row)} | {_cell(row, 'worst', 'prob')}{note} | "
                     f"{_interval(row)} | {verdict} | {len(row.seeds)} |")
    unstable = [row for row in board.rows if row.unstable]
    if unstable:
        lines.append("")
        for r in unstable:
            lines += _wrap(f"- {_name(r)}: unstable ({md_escape('; '.join(r.unstable))})")
    lines += ["", f"<details><summary>Every column of {md_escape(board.title)}</summary>", ""]
    for title, keep in PARTS:
        columns = [c for c in board.columns if keep(c)]
        title = title.format(measure=board.headline_name)
        families = list(dict.fromkeys(c.family for c in columns))
        for family in families:  # budgets of several attack families: a table per family
            part = [c for c in columns if c.family == family]
            named = f"{title}: {family}" if family else title
            for chunk in _fitting(board, part):  # and as many tables as keep each line on a page
                lines += [f"{md_escape(named)}:", "", *_table(board, chunk), ""]
    lines += ["</details>", ""]
    return lines


def _table(board: Board, columns: list[Any]) -> list[str]:
    return ["| defence | " + " | ".join(md_escape(c.label) for c in columns) + " |",
            "|---" + "|---:" * len(columns) + "|",
            *(f"| {_name(row)} | " + " | ".join(_cell(row, c.id, c.fmt) for c in columns) + " |"
              for row in board.rows)]


def _fitting(board: Board, columns: list[Any]) -> list[list[Any]]:
    """The columns in consecutive groups whose tables keep every line within MAX_LINE (a column too wide on its own
    gets a table of its own)."""
    groups: list[list[Any]] = []
    for column in columns:
        if groups and max(map(len, _table(board, [*groups[-1], column]))) < MAX_LINE:
            groups[-1].append(column)
        else:
            groups.append([column])
    return groups


def _definitions(boards: list[Board]) -> list[str]:
    """One definition per column label (a label two boards define differently lists each board's)."""
    seen: dict[str, dict[str, list[str]]] = {}
    for board in boards:
        for column in board.columns:
            if not column.id.startswith("budget:"):
                seen.setdefault(column.label, {}).setdefault(column.definition, []).append(board.title)
    lines = ["## Column definitions", "", *_wrap(f"- **budget**: {BUDGET_RULE}"),
             *_wrap("- **per-budget columns** (lower is better): mean over seeds of headline_post at that budget "
                    "(the board's headline: harmfulness, or knowledge access).")]
    for label, definitions in seen.items():
        better = next(c.better for b in boards for c in b.columns if c.label == label)
        for definition, titles in definitions.items():
            where = f" ({', '.join(titles)})" if len(definitions) > 1 else ""
            lines += _wrap(f"- **{md_escape(label)}**{md_escape(where)} ({better} is better): {definition}")
    verdict = VERDICT_RULE.removeprefix("Verdict: ")
    lines += [*_wrap(f"- **#**: {RANK_RULE}"), *_wrap(f"- **95% CI**, **±**: {INTERVAL_RULE} {CI_NOTE}"),
              *_wrap(f"- **verdict**: {verdict} {PHI_RULE}"), *_wrap(f"- **unstable**: {UNSTABLE_RULE}"),
              "- **—**: not measured.", ""]
    return lines


def _name(row: Row) -> str:
    name = f"{md_escape(row.key.name)} v{md_escape(row.key.version)}"
    if row.distinguishing:
        name += f" ({md_escape(row.distinguishing)})"
    if row.summary.threat_model != OPEN_WEIGHTS:  # the attacker fine-tunes only through the provider's service
        name += f" [{md_escape(row.summary.threat_model)}]"
    return name + (" ⚠" if row.unstable else "")


def _interval(row: Row) -> str:
    worst = row.cells.get("worst")
    if worst is None or worst.interval is None:
        return "—" if worst is None else f"n = {worst.n}"
    low, high = worst.interval
    return f"{format_value(low, 'prob')}–{format_value(high, 'prob')}"


def _cell(row: Row, column: str, fmt: str) -> str:
    estimate, note = row.cells.get(column), row.notes.get(column, "")
    if estimate is None:
        return "held" if note == "held" else "—"
    text = format_value(estimate.mean, fmt)
    text += f" ± {format_half_width(estimate.half_width, fmt)}" if estimate.half_width is not None else ""
    return text + (f" ({md_escape(note)})" if column in ("held_out", "cross_domain") and note else "")


def _wrap(text: str) -> list[str]:
    """Prose wrapped at 116 characters (a list item's continuation lines indented)."""
    indent = "  " if text.startswith("- ") else ""
    return textwrap.wrap(text, 116, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)
