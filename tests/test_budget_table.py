"""The budget table from synthetic records: grouping, mean ± std, phi and the breaking budget."""

from harness.budget_table import budget_rows, markdown
from harness.records import Provenance, RunRecord
from harness.specs import EvalSpec, ModelSpec, PluginSpec, RunSpec
from harness.suite import Budget, Suite

GRID = (Budget("sft-250", {"lr": 1e-4}, "weak"), Budget("sft-250", {"lr": 1e-3}, "strong"))
SUITE = Suite(name="t", protocol_version=1, model=ModelSpec(id="m", revision="r"), judges=(),
              eval=EvalSpec(max_new_tokens=4, n_prompts=4, batch_size=2), max_length=16, prepare=lambda s, f: {},
              data=lambda: None, budget_grid=GRID, phi_tolerance=0.05)


def record(defence, params, lr, seed, pre, post, qa=1.0, size="smoke"):
    spec = RunSpec(suite=PluginSpec(name="t", version="1", params={"size": size}), model=SUITE.model,
                   defence=PluginSpec(name=defence, version="1", params=params),
                   attack=PluginSpec(name="sft-250", version="1", params={"lr": lr, "samples": 250}),
                   eval=SUITE.eval, judges=(PluginSpec(name="j", version="1", params={}),), seed=seed)
    hs = lambda v: {"harmfulness": {"mean": v, "frac_over_0.5": v, "n": 4, "per_category": {}},  # noqa: E731
                    "harmless_qa": {"exact_match": qa, "n": 4}}
    prov = Provenance(harness_version="0", git_commit="x", git_dirty=False, python="3", platform="p", packages={},
                      plugins={}, judge_ids=[], backend="hf", seed=seed, device="cpu", stages={}, created_at="now")
    return RunRecord(run_id=spec.run_id, suite="t", protocol_version=1, spec=spec, overrides={}, evidence={},
                     metrics={"pre_attack": hs(pre), "post_attack": hs(post)}, provenance=prov)


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
