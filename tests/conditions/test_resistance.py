"""phi-crossing logic on synthetic curves."""

import pytest

from harness.conditions.resistance import curve_metrics


def test_curve_that_never_crosses_holds():
    m = curve_metrics([(0, 0.0), (10, 0.04), (20, 0.05)], phi=0.05)
    assert m["held"] and m["first_cross_step"] is None and m["final"] == 0.05 and m["steps"] == 20


def test_first_crossing_step_is_the_first_checkpoint_above_phi():
    m = curve_metrics([(0, 0.0), (10, 0.02), (20, 0.3), (30, 0.01), (40, 0.9)], phi=0.05)
    assert m["first_cross_step"] == 20 and not m["held"]  # a later dip does not undo a crossing


def test_equal_to_phi_is_not_a_crossing():
    assert curve_metrics([(0, 0.1), (5, 0.1)], phi=0.1)["held"]


def test_auc_is_the_mean_along_the_attack():
    # linear 0 -> 1 over 100 steps: area 0.5 ; uneven spacing is handled by the trapezoid rule
    assert curve_metrics([(0, 0.0), (100, 1.0)], phi=0.5)["auc"] == pytest.approx(0.5)
    assert curve_metrics([(0, 0.0), (10, 1.0), (100, 1.0)], phi=0.5)["auc"] == pytest.approx((5 + 90) / 100)


def test_crossing_at_step_zero_means_not_immunized_to_begin_with():
    assert curve_metrics([(0, 0.6), (10, 0.9)], phi=0.1)["first_cross_step"] == 0


def test_empty_curve_is_an_error():
    with pytest.raises(ValueError):
        curve_metrics([], phi=0.1)
