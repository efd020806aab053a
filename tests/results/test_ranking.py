"""The ranking rule (`harness.results.estimates.shared_ranks`, applied by the summary to the worst case): a row's
place is one more than the number of rows clearly better (whose 95% interval lies entirely below its own), so rows
the intervals cannot separate share a place."""

from __future__ import annotations

from pathlib import Path

from harness.results.estimates import Estimate, Rank, shared_ranks

REPO = Path(__file__).resolve().parents[2]


def interval(low: float, high: float) -> Estimate:
    return Estimate((low + high) / 2, (high - low) / 2, 3)


def test_overlapping_intervals_share_a_place_and_separated_ones_do_not():
    assert shared_ranks([interval(0.1, 0.2), interval(0.3, 0.4)]) == [Rank(1), Rank(2)]
    assert shared_ranks([interval(0.1, 0.3), interval(0.2, 0.4)]) == [Rank(1, True), Rank(1, True)]
    assert [str(r) for r in shared_ranks([interval(0.1, 0.3), interval(0.2, 0.4)])] == ["=1", "=1"]


def test_a_chain_of_overlaps_is_decided_by_who_is_clearly_better():
    """A overlaps B, B overlaps C, A does not overlap C: C has one row clearly better (A), so place 2."""
    a, b, c = interval(0.70, 0.72), interval(0.71, 0.75), interval(0.73, 0.76)
    assert shared_ranks([c, a, b]) == [Rank(2), Rank(1, True), Rank(1, True)]


def test_points_and_missing_headlines():
    """One seed: no interval, the point itself; no headline: after every row with one, sharing that place."""
    point = Estimate(0.5, None, 1)
    assert shared_ranks([point, interval(0.55, 0.6), None, None]) == [Rank(1), Rank(2), Rank(3, True), Rank(3, True)]
    assert shared_ranks([interval(0.4, 0.6), point]) == [Rank(1, True), Rank(1, True)]  # touching counts as overlap


def test_the_committed_tiny_board_shares_its_first_place():
    """The issue's case: 0.75, 0.76, 0.77 (each ± 0.01) were a strict order 1-3 though their intervals overlap."""
    from leaderboard.board import build_boards
    from leaderboard.load import load_folder

    board = build_boards(load_folder(REPO / "results" / "tiny" / "v2"))[0]
    ranks = {r.key.name: str(r.rank) if r.rank else None for r in board.rows}
    # none is one defended model (seeded=False): 3 units per budget, not 9, and its wider interval separates it
    assert ranks == {"vaccine": "=1", "repnoise": "=1", "adversarial-loss": "=1", "none": "3",
                     "safety-training": "4", "random-init": None, "gradient-ascent": None}
    assert {r.key.name: r.verdict for r in board.rows}["random-init"] == "unstable"
