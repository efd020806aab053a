"""The parts of `harness plugins check` that need no model: split guards, Config rules, the budget info line."""

import contextlib
import math

import pytest
from pydantic import BaseModel, ConfigDict, Field

from harness import registry
from harness.conformance import config_checks, info
from harness.data.views import SplitAccessError, Withheld, view
from harness.plugins import DefenceTrainingFields, TrainingFields
from harness.resolve import load_suite
from harness.suite import SuiteData


def test_forbidden_splits_raise_by_name_and_are_logged_even_if_caught():
    """The check's guard is the defence stage's view (harness.data.views), the one a real run hands over."""
    log = []
    data = view(SuiteData(defence=[1], attack=[2], eval=[3], retain=[4], harmless_eval=[5],
                          trainability_train=[6], trainability_test=[7]), "defence", log)
    assert data.defence == [1] and data.retain == [4]
    for use in (len, iter, bool, lambda s: s[0], lambda s: s.select, lambda s: 0 in s):
        with pytest.raises(SplitAccessError, match="read the 'attack' split"):
            use(data.attack)
    with contextlib.suppress(Exception):
        data.trainability_test.to_list()
    assert set(log) == {"attack", "trainability_test"}
    assert isinstance(data.eval, Withheld) and "eval" in repr(data.eval)


def _plugin(config, version="1"):
    def defend(model, cfg, ctx): ...
    return registry.Plugin("defence", "probe", defend, config, version, "")


class Good(TrainingFields):
    strength: float = Field(0.5, description="documented")


class Full(DefenceTrainingFields):
    strength: float = Field(0.5, description="documented")


class Loose(BaseModel):  # extra fields allowed, not frozen, one field undocumented
    strength: float = 0.5


class NaNDefault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    strength: float = Field(math.nan, description="NaN has no canonical JSON")


def _verdicts(results):
    return {r.check: r.ok for r in results}


def test_a_good_config_passes_every_static_check():
    assert set(_verdicts(config_checks(_plugin(Good), {"lr": 1e-3})).values()) == {True}


def test_a_loose_config_fails_valid_documented_and_hashable():
    results = config_checks(_plugin(Loose, version=""), {})
    verdicts = _verdicts(results)
    assert verdicts == {"config valid": False, "config documented": False, "config hashable": None,
                        "version declared": False}
    assert "extra='forbid'" in results[0].detail and "strength" in results[1].detail


def test_a_config_that_is_not_canonical_json_is_not_hashable():
    results = config_checks(_plugin(NaNDefault), {})
    assert _verdicts(results)["config hashable"] is False


def test_info_says_when_a_config_gets_no_suite_budget():
    _, suite = load_suite("tiny", {"size": "smoke"})
    lines = [r.line() for r in info(_plugin(Loose), suite)]
    assert ("INFO does not declare the suite's training fields lr, epochs, batch_size, retain_harmless: gets no "
            "suite budget") in " ".join(lines)
    partial = " ".join(r.line() for r in info(_plugin(Good), suite))  # TrainingFields: no retain_harmless field
    assert "does not declare the suite's training field(s) retain_harmless: gets only part" in partial
    assert any("gets the suite's training budget lr=0.001, epochs=1, batch_size=8, retain_harmless=1.0" in x
               for x in (r.line() for r in info(_plugin(Full), suite)))


def test_same_seed_same_weights_covers_a_kept_back_service_adapter(tmp_path):
    """The determinism check compares every tensor a defence saves, a service adapter's beside the model too."""
    from types import SimpleNamespace

    import torch
    from safetensors.torch import save_file

    from harness.conformance import Attempt, deterministic
    from harness.sandbox.worker import Response

    def attempt(name, value):
        out = tmp_path / name / "out"
        (out / "service_adapter").mkdir(parents=True)
        save_file({"w": torch.full((2,), value)}, str(out / "service_adapter" / "adapter_model.safetensors"))
        return Attempt(SimpleNamespace(response=Response(result="unchanged", service_adapter=True)), out)

    assert deterministic(attempt("a", 1.0), attempt("b", 1.0)).ok
    differ = deterministic(attempt("c", 1.0), attempt("d", 2.0))
    assert not differ.ok and "w" in differ.detail
