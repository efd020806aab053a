"""The leaderboard's plots: axes say what the primary judge measures, scatter labels never overlap, legends never
cover an axis label, and axes fit the data instead of a fixed, mostly empty range."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.results.tables import build
from leaderboard import plots
from leaderboard.board import build_boards
from leaderboard.load import ResultFolder
from tests.leaderboard.conftest import fixture_records


@pytest.fixture(scope="module")
def board():
    plots.configure()
    boards = build_boards(ResultFolder("tiny", 1, Path("results/tiny/v1"), tables=build(fixture_records())))
    return boards[0]


def boxes(fig, artists):
    """Text boxes (an annotation's text alone, without its leader line)."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    for a in artists:
        if hasattr(a, "update_positions"):
            a.update_positions(renderer)
    return [Text.get_window_extent(a, renderer) for a in artists if a.get_visible() and a.get_text()]


def test_the_harmfulness_axis_says_what_the_judge_measures(board):
    assert board.measure == "revealed fact slots (fraction of the asked fact)"  # the tiny-content registration
    fig = plots.curves_figure(board)
    assert fig.axes[0].get_ylabel().replace("\n", " ") == board.measure
    assert "judge tiny-content" in fig._suptitle.get_text() and "P(harmful)" not in fig.axes[0].get_ylabel()
    board_without = type(board)(**{**board.__dict__, "measure": ""})
    assert board_without.harm_label == "harmfulness score of judge tiny-content"


@pytest.mark.parametrize("figure", ["curves", "defence"])
def test_the_legend_covers_no_axis_label(board, figure):
    fig = plots.curves_figure(board) if figure == "curves" else plots.defence_figure(board, board.rows[0])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = [legend.get_window_extent(renderer) for legend in fig.legends]
    assert len(legend) == 1
    labels = []
    for ax in fig.axes:
        labels += [ax.xaxis.label, ax.yaxis.label, ax.title, *ax.get_xticklabels(), *ax.get_yticklabels()]
    assert not [b for b in boxes(fig, labels) if b.overlaps(legend[0])]


def test_scatter_labels_never_overlap_and_stay_inside_the_axes():
    import matplotlib.pyplot as plt

    plots.configure()
    fig, ax = plt.subplots(figsize=(7, 4.4))
    points = [(0.0, 0.0)] * 5 + [(0.01, 0.0), (-1.0, 0.0), (-0.83, 0.0), (0.0, 0.17)]
    ax.set_xlim(-1.2, 0.2)
    ax.set_ylim(-0.05, 0.25)
    plots.place_labels(ax, points, [f"defence number {i}" for i in range(len(points))], ["k"] * len(points))
    texts = boxes(fig, ax.texts)
    assert len(texts) == len(points)
    assert not [(a, b) for i, a in enumerate(texts) for b in texts[i + 1:] if a.overlaps(b)]
    frame = ax.get_window_extent(fig.canvas.get_renderer())
    assert all(frame.x0 <= t.x0 and t.x1 <= frame.x1 and frame.y0 <= t.y0 and t.y1 <= frame.y1 for t in texts)
    plt.close(fig)


def test_axes_fit_the_data(board):
    """Resistance of 0 to 0.17 and stability of -1 to 0 (the committed tiny board) fill their axes."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plots._tight_limits(ax, [(-1.0, 0.0, 0, 0), (0.0, 0.0, 0.02, 0), (0.0, 0.17, 0, 0.01)], floor=(0.3, 0.2))
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x1 - x0 < 1.02 / 0.7 and y1 - y0 < 0.2 / 0.6  # the data spans most of each axis
    assert x0 < -1.0 and x1 > 0.02 and y0 < 0.0 and y1 > 0.18
    plt.close(fig)
    fig = plots.scatter_figure(board)
    (y0, y1) = fig.axes[0].get_ylim()
    resisted = [r.cells["resisted"].mean for r in board.rows if r.cells.get("resisted")]
    assert y1 - y0 < 1.5 * max(0.2, max(resisted) - min(resisted))
    plt.close(fig)
