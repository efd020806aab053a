"""Plots rendered at build time with matplotlib (Agg) to SVG files the pages show as images.

SVG loaded through <img> cannot run script, so names from plugins cannot inject anything; matplotlib's math
parsing is off so a '$' in a name stays a '$'. Output is deterministic (fixed hash salt, no date), so an
unchanged table rebuilds a byte-identical plot.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from harness.results.estimates import t_estimate
from harness.results.summary import DefenceKey
from harness.results.summary_budgets import Budget
from leaderboard.board import Board, Row

RC = {"svg.fonttype": "none", "svg.hashsalt": "immunization-bench", "text.parse_math": False,
      "font.size": 10, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
      "grid.alpha": 0.3, "legend.frameon": False}


def plot_files(board: Board, prefix: str) -> dict[str, str]:
    """File names of a board's plots: 'curves', 'scatter' and one per row (keyed by `plot_name`)."""
    names = {"curves": f"{prefix}-curves.svg", "scatter": f"{prefix}-stability-resistance.svg"}
    names.update({plot_name(row): f"{prefix}-defence-{i}.svg" for i, row in enumerate(board.rows)})
    return names


def render_all(board: Board, folder: Path, prefix: str) -> dict[str, str]:
    """Write the board's plots under folder; returns plot_files(board, prefix)."""
    names = plot_files(board, prefix)
    _save(curves_figure(board), folder / names["curves"])
    _save(scatter_figure(board), folder / names["scatter"])
    for row in board.rows:
        _save(defence_figure(board, row), folder / names[plot_name(row)])
    return names


def plot_name(row: Row) -> str:
    """The key of a row's own curves plot in plot_files()."""
    return f"defence:{row.key.name}|{row.key.version}|{row.key.params}"


def curves_figure(board: Board) -> Any:
    """Harmfulness vs attack step per budget: one line per defence setting, 95% CI band over seeds."""
    fig, axes = _grid(board.budgets)
    for ax, budget in zip(axes, board.budgets, strict=False):
        for i, row in enumerate(board.rows):
            steps, mean, low, high = _mean_curve(board.curves, row.key, budget)
            if not steps:
                continue
            style = {"linestyle": "--", "alpha": 0.6} if row.unstable else {"linewidth": 2}
            ax.plot(steps, mean, marker="o", markersize=3, color=_color(i), label=_legend(row), **style)
            ax.fill_between(steps, low, high, color=_color(i), alpha=0.12, linewidth=0)
        _decorate(ax, board, budget)
    handles, labels = axes[0].get_legend_handles_labels() if len(axes) else ([], [])
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=9)
    fig.subplots_adjust(bottom=0.08 + 0.035 * ((len(labels) + 3) // 4), hspace=0.45, wspace=0.25)
    return fig


def defence_figure(board: Board, row: Row) -> Any:
    """One defence setting per budget: each seed thin, the mean bold with its band, `none` dashed for reference."""
    fig, axes = _grid(board.budgets, height=2.6)
    baseline = next((r for r in board.rows if r.key.name == "none" and r is not row), None)
    index = board.rows.index(row)
    for ax, budget in zip(axes, board.budgets, strict=False):
        seeds = board.curves[(board.curves["key"] == row.key) & (board.curves["budget"] == budget.id)]
        for _, curve in seeds.groupby("seed"):
            ax.plot(curve["step"], curve["hs"], color=_color(index), alpha=0.35, linewidth=1)
        steps, mean, low, high = _mean_curve(board.curves, row.key, budget)
        if steps:
            ax.plot(steps, mean, color=_color(index), linewidth=2, marker="o", markersize=3, label="mean over seeds")
            ax.fill_between(steps, low, high, color=_color(index), alpha=0.15, linewidth=0, label="95% CI")
        if baseline is not None:
            b_steps, b_mean, _, _ = _mean_curve(board.curves, baseline.key, budget)
            ax.plot(b_steps, b_mean, color="0.4", linestyle="--", linewidth=1, label="none (undefended)")
        _decorate(ax, board, budget)
    handles, labels = axes[0].get_legend_handles_labels() if len(axes) else ([], [])
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9)
    fig.subplots_adjust(bottom=0.16 if len(board.budgets) > 3 else 0.25, hspace=0.5, wspace=0.25)
    return fig


def scatter_figure(board: Board) -> Any:
    """Stability (harmless-QA delta) against resistance (fraction of cells held), one point per setting."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.6))
    placed: dict[tuple[float, float], list[str]] = {}
    for i, row in enumerate(board.rows):
        x, y = row.cells.get("qa_delta"), row.cells.get("resisted")
        if x is None or y is None:
            continue
        ax.errorbar(x.mean, y.mean, xerr=x.half_width or 0, yerr=y.half_width or 0, fmt="o", markersize=8,
                    color=_color(i), mfc="white" if row.unstable else _color(i), capsize=3, label=_legend(row))
        placed.setdefault((round(x.mean, 2), round(y.mean, 2)), []).append(_legend(row))
    for (x, y), labels in placed.items():
        ax.annotate("\n".join(labels), (x, y), xytext=(8, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel("stability: harmless-QA Δ vs base (higher is better)")
    ax.set_ylabel("resistance: fraction of cells held (higher is better)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(min([-1.05, *ax.get_xlim()]), max([0.35, *ax.get_xlim()]))
    ax.set_title(f"{board.title}: stability vs resistance (hollow = unstable)", fontsize=10)
    fig.tight_layout()
    return fig


def _mean_curve(curves: Any, key: DefenceKey, budget: Budget) -> tuple[list[int], list[float], list[float],
                                                                         list[float]]:
    """Mean harmfulness over seeds at each checkpoint, with the 95% t-interval (the mean itself when n = 1)."""
    points = curves[(curves["key"] == key) & (curves["budget"] == budget.id)]
    steps, mean, low, high = [], [], [], []
    for step, group in points.groupby("step"):
        estimate = t_estimate(group["hs"])
        if estimate is None:
            continue
        interval = estimate.interval or (estimate.mean, estimate.mean)
        steps.append(int(step))
        mean.append(estimate.mean)
        low.append(max(0.0, interval[0]))
        high.append(min(1.0, interval[1]))
    return steps, mean, low, high


def _grid(budgets: list[Budget], height: float = 2.9) -> tuple[Any, list[Any]]:
    import matplotlib.pyplot as plt

    ncols = max(1, min(3, len(budgets)))
    nrows = max(1, (len(budgets) + ncols - 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, height * nrows + 0.9), squeeze=False,
                             sharey=True)
    flat = [ax for line in axes for ax in line]
    for ax in flat[len(budgets):]:
        ax.set_visible(False)
    return fig, flat[:len(budgets)] if budgets else flat


def _decorate(ax: Any, board: Board, budget: Budget) -> None:
    for phi in board.phis:
        ax.axhline(phi, color="crimson", linestyle=":", linewidth=1, label=f"φ = {phi:g}")
    ax.set_title(f"{budget.label}  ({budget.attack})", fontsize=10)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("attack step")
    if ax.get_subplotspec().is_first_col():
        ax.set_ylabel("harmfulness P(harmful)")


def _legend(row: Row) -> str:
    label = row.key.name + (f" ({row.distinguishing})" if row.distinguishing else "")
    return label + (" [unstable]" if row.unstable else "")


def _color(i: int) -> Any:
    import matplotlib

    return matplotlib.colormaps["tab10" if i < 10 else "tab20"](i % 20)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    path.write_text(buffer.getvalue())


def configure() -> None:
    """Agg backend and the fixed style; called once before any figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update(RC)
