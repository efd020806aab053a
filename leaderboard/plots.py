"""Plots rendered at build time with matplotlib (Agg) to SVG files the pages show as images.

SVG loaded through <img> cannot run script, so names from plugins cannot inject anything; matplotlib's math
parsing is off so a '$' in a name stays a '$'. Output is deterministic (fixed hash salt, no date), so an
unchanged table rebuilds a byte-identical plot. Harmfulness axes say what the primary judge measures (its
registration's `measures`, `Board.harm_label`); legends sit outside the axes (constrained layout reserves their
room), and scatter labels are placed greedily where they overlap no other label, point or the axes' edge.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

from harness.results.estimates import t_estimate
from harness.results.summary import DefenceKey
from harness.results.summary_budgets import Budget
from leaderboard.board import Board, Row

RC = {"svg.fonttype": "none", "svg.hashsalt": "immunization-bench", "text.parse_math": False,
      "font.size": 10, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
      "grid.alpha": 0.3, "legend.frameon": False}
# Label offsets tried around a point, in points, nearest first (then the same directions farther out).
OFFSETS = [(7, 3), (7, -11), (-7, 3), (-7, -11), (0, 9), (0, -15), (12, 12), (-12, 12), (12, -18), (-12, -18)]


def plot_files(board: Board, prefix: str) -> dict[str, str]:
    """File names of a board's plots: 'curves', 'scatter' and one per row (keyed by `plot_name`)."""
    names = {"curves": f"{prefix}-curves.svg", "scatter": f"{prefix}-stability-resistance.svg"}
    names.update({plot_name(row): f"{prefix}-defence-{i}.svg" for i, row in enumerate(board.rows)})
    return names


def render_all(board: Board, folder: Path, prefix: str) -> dict[str, str]:
    """Write the board's plots under folder; returns plot_files(board, prefix)."""
    names = plot_files(board, prefix)
    save(curves_figure(board), folder / names["curves"])
    save(scatter_figure(board), folder / names["scatter"])
    for row in board.rows:
        save(defence_figure(board, row), folder / names[plot_name(row)])
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
    fig.suptitle(f"Harmfulness along the attack, per budget ({board.harm_label})", fontsize=10)
    _legend_below(fig, axes, columns=4, title=True)
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
    _legend_below(fig, axes, columns=4)
    return fig


def scatter_figure(board: Board) -> Any:
    """Stability (harmless-QA delta) against resistance (fraction of cells held), one point per setting."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.4), layout="constrained")
    points, labels, colors = [], [], []
    for i, row in enumerate(board.rows):
        x, y = row.cells.get("qa_delta"), row.cells.get("resisted")
        if x is None or y is None:
            continue
        ax.errorbar(x.mean, y.mean, xerr=x.half_width or 0, yerr=y.half_width or 0, fmt="o", markersize=7,
                    color=_color(i), mfc="white" if row.unstable else _color(i), capsize=3)
        points.append((x.mean, y.mean, x.half_width or 0, y.half_width or 0))
        labels.append(_legend(row))
        colors.append(_color(i))
    ax.set_xlabel("stability: harmless-QA Δ vs base (higher is better)")
    ax.set_ylabel("resistance: fraction of\n(budget, seed) cells held (higher is better)")
    _tight_limits(ax, points, floor=(0.3, 0.2))
    ax.set_title(f"{board.title}: stability vs resistance (hollow = unstable)", fontsize=10)
    place_labels(ax, [(x, y) for x, y, _, _ in points], labels, colors)
    return fig


def pareto_figure(views: list[Any], title: str, measure: str, headline: str = "harmfulness") -> Any:
    """A tuning log's trials: the validation headline (`headline`: harmfulness, or knowledge access) after the
    validation attack against the harmless-QA delta,
    filled when the trial passed the stability guard, the Pareto front joined, the chosen setting starred.
    `views`: `harness.tuning.trials.TrialView`s."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    search = [v for v in views if v.role == "search" and v.qa_delta is not None]
    for stable, style in ((True, {"color": _color(0)}), (False, {"mfc": "white", "color": "0.45"})):
        chosen = [v for v in search if v.trial.stable == stable]
        ax.plot([v.qa_delta for v in chosen], [v.trial.headline for v in chosen], "o", markersize=5, linestyle="none",
                label="trial, passes the stability guard" if stable else "trial, fails the guard", **style)
    front = sorted((v for v in search if v.pareto), key=lambda v: v.qa_delta)
    if front:
        ax.plot([v.qa_delta for v in front], [v.trial.headline for v in front], color="crimson", linewidth=1,
                drawstyle="steps-post", label="Pareto front")
    confirm = [v for v in views if v.role == "confirmation" and v.qa_delta is not None]
    if confirm:
        ax.plot([v.qa_delta for v in confirm], [v.trial.headline for v in confirm], "x", color="0.2", markersize=6,
                linestyle="none", label="confirmation (chosen setting, other seed)")
    reference = [v for v in views if v.role == "reference" and v.qa_delta is not None]
    if reference:
        ax.plot([v.qa_delta for v in reference], [v.trial.headline for v in reference], "D", color="0.5",
                markersize=6, linestyle="none", label="reference defence (same data, each seed)")
    best = [v for v in search if v.chosen]
    if best:
        ax.plot([v.qa_delta for v in best], [v.trial.headline for v in best], "*", color="gold", markersize=15,
                markeredgecolor="black", linestyle="none", label="chosen")
    ax.set_xlabel("stability: harmless-QA Δ vs base (higher is better)")
    ax.set_ylabel(f"validation {headline} after attack\n" + _wrap(f"{measure} (lower is better)", 40))
    _tight_limits(ax, [(v.qa_delta, v.trial.headline, 0, 0) for v in search + confirm + reference],
                  floor=(0.1, 0.1), clip=(-0.03, 1.03))
    ax.set_title(title, fontsize=10)
    fig.legend(loc="outside lower center", ncol=3, fontsize=8)
    return fig


def place_labels(ax: Any, points: list[tuple[float, float]], labels: list[str], colors: list[Any],
                 fontsize: float = 8) -> None:
    """Annotate each point with its label at the first offset (`_offsets`: near ones, then a widening spiral)
    whose text box overlaps no label placed before and no point and stays inside the axes; a label set away from
    its point gets a leader line; with no room anywhere, the nearest offset. Greedy and deterministic: points in
    order of position, left to right."""
    fig = ax.figure
    fig.canvas.draw()  # fix the layout (and so the data -> pixel transform) before measuring text
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = [_box(ax.transData.transform(p), 5) for p in points]

    def label(i: int, dx: float, dy: float) -> Any:
        far = dx * dx + dy * dy > 15 ** 2
        return ax.annotate(labels[i], points[i], xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                           color=colors[i], ha="left" if dx > 2 else "right" if dx < -2 else "center",
                           va="bottom" if dy >= 0 else "top",
                           arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6} if far else None)

    for i in sorted(range(len(points)), key=lambda k: (points[k][0], -points[k][1])):
        for dx, dy in _offsets():
            text = label(i, dx, dy)
            box = _text_box(text, renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(t) for t in taken):
                break
            text.remove()
        else:
            box = _text_box(label(i, *OFFSETS[0]), renderer)
        taken.append(box)


def _text_box(annotation: Any, renderer: Any) -> Any:
    """The box of an annotation's text alone (its leader line may cross other boxes, its text may not)."""
    from matplotlib.text import Text

    annotation.update_positions(renderer)  # what Annotation.get_window_extent does before adding the arrow
    return Text.get_window_extent(annotation, renderer)


def _offsets() -> list[tuple[float, float]]:
    """Candidate label offsets in points: the near ones, then rings of 16 directions 10 points apart."""
    import math

    rings = [(r * math.cos(2 * math.pi * k / 16), r * math.sin(2 * math.pi * k / 16))
             for r in range(18, 220, 10) for k in range(16)]
    return [*OFFSETS, *rings]


def _box(pixel: Any, radius: float) -> Any:
    from matplotlib.transforms import Bbox

    return Bbox([[pixel[0] - radius, pixel[1] - radius], [pixel[0] + radius, pixel[1] + radius]])


def _tight_limits(ax: Any, points: list[tuple[float, float, float, float]], floor: tuple[float, float],
                  clip: tuple[float, float] | None = None) -> None:
    """Limits around the points and their error bars, with room for labels: at least `floor` wide on each axis,
    never the mostly empty square a fixed range leaves; `clip` bounds the y axis (a probability's [0, 1])."""
    if not points:
        return
    for axis, (lo, hi), span, bounds in ((ax.set_xlim, _range([(p[0], p[2]) for p in points]), floor[0], None),
                                         (ax.set_ylim, _range([(p[1], p[3]) for p in points]), floor[1], clip)):
        pad = max(span, hi - lo) * 0.18
        middle, half = (lo + hi) / 2, max(span, hi - lo) / 2
        low, high = middle - half - pad, middle + half + pad
        axis(max(low, bounds[0]) if bounds else low, min(high, bounds[1]) if bounds else high)


def _range(values: list[tuple[float, float]]) -> tuple[float, float]:
    return min(v - e for v, e in values), max(v + e for v, e in values)


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


def _grid(budgets: list[Budget], height: float = 2.6) -> tuple[Any, list[Any]]:
    import matplotlib.pyplot as plt

    ncols = max(1, min(3, len(budgets)))
    nrows = max(1, (len(budgets) + ncols - 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, height * nrows + 0.9), squeeze=False,
                             sharey=True)
    flat = [ax for line in axes for ax in line]
    for ax in flat[len(budgets):]:
        ax.set_visible(False)
    return fig, flat[:len(budgets)] if budgets else flat


def _legend_below(fig: Any, axes: list[Any], columns: int, title: bool = False) -> None:
    """One legend for the figure, in a band below every axis that the layout keeps free (its height from the
    legend's rows, in inches), so it covers no axis label; then the axes are laid out above it."""
    handles, labels = axes[0].get_legend_handles_labels() if len(axes) else ([], [])
    rows = -(-len(labels) // columns)
    band = (0.08 + 0.24 * rows) / fig.get_figheight()
    if labels:
        fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=min(columns, len(labels)),
                   fontsize=9)
    top = 1 - 0.3 / fig.get_figheight() if title else 1
    fig.tight_layout(rect=(0, band, 1, top), h_pad=0.8, w_pad=0.6)


def _decorate(ax: Any, board: Board, budget: Budget) -> None:
    for phi in board.phis:
        ax.axhline(phi, color="crimson", linestyle=":", linewidth=1, label=f"φ = {phi:g}")
    ax.set_title(f"{budget.label}  ({budget.attack})", fontsize=10)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("attack step")
    if ax.get_subplotspec().is_first_col():
        ax.set_ylabel(_wrap(board.measure or "harmfulness score", 30))


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _legend(row: Row) -> str:
    label = row.key.name + (f" ({row.distinguishing})" if row.distinguishing else "")
    return label + (" [unstable]" if row.unstable else "")


def _color(i: int) -> Any:
    import matplotlib

    return matplotlib.colormaps["tab10" if i < 10 else "tab20"](i % 20)


def save(fig: Any, path: Path) -> None:
    """Write a figure as SVG (deterministic) and close it."""
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
