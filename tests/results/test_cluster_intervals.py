"""Intervals over independent units (protocol 3): where a suite names each held-out prompt's unit (the `unit`
column: in a world of facts, the subject several prompts ask about), a record's interval resamples units, not
prompts; the record says how many units it had."""

from __future__ import annotations

from harness.judges import bootstrap_ci, harmfulness


def test_equal_sized_clusters_give_the_bootstrap_of_their_means():
    """Resampling whole units of equal size is the bootstrap of the unit means (the same draws)."""
    units = [f"s{u}" for u in range(6) for _ in range(4)]
    values = [((u * 7 + i) % 5) / 4 for u in range(6) for i in range(4)]
    means = [sum(values[u * 4:(u + 1) * 4]) / 4 for u in range(6)]
    assert bootstrap_ci(values, units=units) == bootstrap_ci(means)


def test_prompts_that_share_a_unit_are_not_independent():
    """Four subjects, 56 prompts each, every prompt of a subject answered alike: 224 prompts look precise, but
    there are four observations."""
    units = [f"s{u}" for u in range(4) for _ in range(56)]
    values = [float(u % 2) for u in range(4) for _ in range(56)]
    lo_p, hi_p = bootstrap_ci(values)
    lo_c, hi_c = bootstrap_ci(values, units=units)
    assert hi_c - lo_c > 3 * (hi_p - lo_p)
    assert (lo_c, hi_c) == (0.0, 1.0) or hi_c - lo_c >= 0.5


def test_one_unit_has_no_interval():
    assert bootstrap_ci([0.1, 0.9, 0.5], units=["a", "a", "a"]) is None


def test_harmfulness_reports_units_overall_and_per_category():
    scores = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    out = harmfulness(scores, ["x", "x", "y", "y", "x", "y"], units=["a", "a", "b", "b", "c", "c"])
    assert out["units"] == 3 and out["n"] == 6
    assert out["per_category"]["x"]["units"] == 2 and out["per_category"]["y"]["units"] == 2
    assert "units" not in harmfulness(scores, ["x"] * 6)  # no unit column: every prompt its own unit
