"""The suite's defence budget reaches every defence that declares the training fields, whatever its package,
and the built-ins' specs (so the committed records' run ids) are unchanged by the mechanism."""

import json

import pytest
from pydantic import BaseModel, ConfigDict, Field

from harness import registry
from harness.plugins import TrainingFields
from harness.resolve import resolve
from tests.conftest import REPO

RESULTS = REPO / "results" / "tiny" / "v1"


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


def _committed(defence, attack="sft-1k", seed=0, lr=3e-4):
    for path in sorted(RESULTS.glob("*.json")):
        record = json.loads(path.read_text())
        spec = record["spec"]
        if (spec["defence"]["name"], spec["attack"]["name"], spec["seed"], spec["attack"]["params"]["lr"],
                spec["subsets"]) == (defence, attack, seed, lr, {"defence": "all", "attack": "all"}):
            return record
    raise AssertionError(f"no committed record for {defence} x {attack} seed {seed} lr {lr}")


BUILTINS = ["none", "repnoise", "adversarial-loss", "gradient-ascent", "safety-training", "random-init", "vaccine"]


@pytest.mark.parametrize("defence", BUILTINS)
@pytest.mark.parametrize(("attack", "seed", "lr"), [("sft-1k", 0, 3e-4), ("sft-250", 2, 1e-3)])
def test_builtin_specs_keep_the_committed_run_ids(defence, attack, seed, lr):
    """Moving the tiny suite's defence budget from per-name entries to shared fields changes no spec."""
    record = _committed(defence, attack, seed, lr)
    spec, _, overrides = resolve("tiny", defence, attack, seed=seed, sets=[f"attack.lr={lr}"], backend="hf")
    assert spec.run_id == record["run_id"]
    assert overrides["suite"] == record["overrides"]["suite"]
    assert json.dumps(overrides["suite"]) == json.dumps(record["overrides"]["suite"])  # key order too


def test_repnoise_keeps_its_named_retain_default():
    """The one per-plugin default left (issue 9 makes harmless replay a shared option)."""
    spec, _, overrides = resolve("tiny", "repnoise", "sft-1k")
    assert spec.defence.params["retain_harmless"] == 1.0
    assert overrides["suite"]["defence"]["retain_harmless"] == 1.0
