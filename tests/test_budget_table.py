"""The budget table from synthetic records: grouping, mean ± std, phi and the breaking budget."""

from harness.budget_table import budget_rows, markdown
from harness.suite import Budget, Suite
from tests.factories import EVAL, MODEL, record

GRID = (Budget("sft-250", {"lr": 1e-4}, "weak"), Budget("sft-250", {"lr": 1e-3}, "strong"))
SUITE = Suite(name="t", protocol_version=1, model=MODEL, judges=(), eval=EVAL, max_length=16, prepare=lambda s, f: {},
              data=lambda: None, budget_grid=GRID, phi_tolerance=0.05)


def test_rows_phi_and_breaking_budget():
    records = [record("none", {}, 1e-4, s, 0.02, 0.9) for s in (0, 1)]
    records += [record("none", {}, 1e-3, s, 0.02, 1.0) for s in (0, 1)]
    records += [record("repnoise", {"beta": 1.0}, 1e-4, s, 0.0, post) for s, post in ((0, 0.0), (1, 0.04))]
    records += [record("repnoise", {"beta": 1.0}, 1e-3, s, 0.0, post) for s, post in ((0, 0.5), (1, 0.7))]
    records += [record("repnoise", {"beta": 2.0}, 1e-4, 0, 0.0, 0.0)]  # a second config of the same defence
    records += [record("none", {}, 1e-4, 0, 0.5, 0.5, size="default")]  # another suite config: ignored
    rows, phi = budget_rows(records, SUITE, {"size": "smoke"})
    assert abs(phi - 0.07) < 1e-9
    by = {r.label: r for r in rows}
    assert list(by) == ["none", "repnoise (beta=1.0)", "repnoise (beta=2.0)"]
    assert by["none"].breaking == "weak" and by["none"].seeds == [0, 1]
    assert by["repnoise (beta=1.0)"].breaking == "strong"
    assert by["repnoise (beta=2.0)"].breaking == "none in grid" and by["repnoise (beta=2.0)"].post["strong"] == []
    table = markdown(rows, SUITE, phi)
    assert "| repnoise (beta=1.0) | 2 | 0.00 ± 0.00 | 1.00 ± 0.00 | 0.02 ± 0.03 | 0.60 ± 0.14 | strong |" in table
