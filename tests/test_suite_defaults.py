"""The suite's defence budget reaches every defence that declares the training fields, whatever its package:
every training defence competes with the same budget and the same data access."""

import pytest
from pydantic import BaseModel, ConfigDict, Field

from harness import registry
from harness.plugins import TrainingFields
from harness.resolve import resolve


class _Trains(TrainingFields):
    strength: float = Field(0.5, description="how hard it defends")


class _Static(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@pytest.fixture
def outside_defences():
    """Two defences registered as an outside package's module would (no per-name suite defaults exist)."""
    def defend(model, cfg, ctx): ...

    defend.__module__ = "outside_pkg.defence"
    registry.register("defence", "outside-trains", config=_Trains, version="1")(defend)
    registry.register("defence", "outside-static", config=_Static, version="1")(defend)
    yield
    for name in ("outside-trains", "outside-static"):
        del registry._registry["defence"][name]


def test_outside_training_defence_gets_the_suite_budget(outside_defences):
    spec, _, overrides = resolve("tiny", "outside-trains", "sft-1k", sets=["defence.strength=0.9"])
    params = spec.defence.params
    assert (params["lr"], params["epochs"], params["batch_size"]) == (1e-3, 1, 8)  # not TrainingFields' 2e-5
    assert params["strength"] == 0.9
    assert overrides["suite"]["defence"] == {"lr": 1e-3, "epochs": 1, "batch_size": 8}
    assert overrides["user"]["defence"] == {"strength": 0.9}


def test_user_set_beats_the_suite_budget(outside_defences):
    spec, _, _ = resolve("tiny", "outside-trains", "sft-1k", sets=["defence.lr=5e-4"])
    assert spec.defence.params["lr"] == 5e-4


def test_defence_without_training_fields_gets_nothing(outside_defences):
    spec, _, overrides = resolve("tiny", "outside-static", "sft-1k")
    assert spec.defence.params == {} and overrides["suite"]["defence"] == {}


TRAINING = ["repnoise", "adversarial-loss", "gradient-ascent", "safety-training", "vaccine", "security-vectors"]


@pytest.mark.parametrize("defence", TRAINING)
def test_every_training_defence_gets_the_same_budget_and_data_access(defence):
    """Equal terms: the same lr, epochs, batch and harmless retain term, from the shared defaults, recorded."""
    spec, _, overrides = resolve("tiny", defence, "sft-1k")
    budget = {"lr": 1e-3, "epochs": 1, "batch_size": 8, "retain_harmless": 1.0}
    assert {k: spec.defence.params[k] for k in budget} == budget
    assert overrides["suite"]["defence"] == budget


def test_outside_defence_with_the_defence_fields_gets_the_retain_term_too(outside_defences):
    from harness.plugins import DefenceTrainingFields

    def defend(model, cfg, ctx): ...

    defend.__module__ = "outside_pkg.defence2"
    registry.register("defence", "outside-retains", config=DefenceTrainingFields, version="1")(defend)
    try:
        spec, _, _ = resolve("tiny", "outside-retains", "sft-1k")
        assert spec.defence.params["retain_harmless"] == 1.0 and spec.defence.params["lr"] == 1e-3
    finally:
        del registry._registry["defence"]["outside-retains"]


def test_the_identity_shift_gets_a_persona_that_fits_the_tiny_context():
    """The reference persona alone overflows the tiny world's 128-token context; the suite's short form is recorded
    as the suite's, and a user's persona still wins."""
    from tasks.tiny.suite import AOA_SHORT

    spec, _, overrides = resolve("tiny", "none", "aoa")
    assert {k: spec.attack.params[k] for k in AOA_SHORT} == AOA_SHORT
    assert {k: overrides["suite"]["attack"][k] for k in AOA_SHORT} == AOA_SHORT
    spec, _, _ = resolve("tiny", "none", "aoa", sets=["attack.persona=Obey."])
    assert spec.attack.params["persona"] == "Obey."
