"""Run ids survive added options by mechanism: a field marked KEY_OMIT_DEFAULT where it is declared is left out of
the key at its default, every committed record keeps its run id, and a new field without the marker fails here
(schemas/run-id-fields.json) instead of re-keying every run."""

import json
from typing import Annotated

import pytest
from pydantic import BaseModel, ConfigDict, Field, create_model

from harness import registry
from harness.errors import PluginLoadError
from harness.keying import KEY_OMIT_DEFAULT, key_models, omitted_defaults, read_snapshot, snapshot_problems
from harness.specs import TRAINING_PARAMS, EvalSpec, RunSpec, key_view, run_id_models, spec_id, stable_hash
from harness.training.fields import DefenceTrainingFields, TrainingFields
from harness.training.lora import LoraFields
from tests.conftest import REPO


def committed_records() -> list[tuple[str, dict]]:
    """(file, record) of every run record under results/: the grids and the tuning trials' runs."""
    out = []
    for path in sorted((REPO / "results").rglob("*.json")):
        raw = json.loads(path.read_text())
        if isinstance(raw, dict) and "spec" in raw and "run_id" in raw:
            assert raw["run_id"] == path.stem, path
            out.append((str(path.relative_to(REPO)), raw))
    return out


RECORDS = committed_records()


def extend(model: type[BaseModel], **fields) -> type[BaseModel]:
    """`model` with extra fields, under the same name (the snapshot lists models by name)."""
    return create_model(model.__name__, __base__=model, **fields)


def test_every_committed_record_keeps_its_run_id():
    assert len(RECORDS) >= 670  # tiny v1 and v2 grids (508) and the tuning trials' runs (170)
    stale = [f for f, raw in RECORDS if spec_id(raw["spec"]) != raw["run_id"]]
    assert not stale, f"{len(stale)} committed records no longer hash to their run id, e.g. {stale[:3]}"
    # today's models fill in every field added since (v1 specs lack curve_points, attack_seed, ...): same ids
    redone = [f for f, raw in RECORDS if RunSpec.model_validate(raw["spec"]).run_id != raw["run_id"]]
    assert not redone, f"{len(redone)} committed specs re-key when read by today's models, e.g. {redone[:3]}"


def test_tuning_trials_are_among_the_checked_records():
    ids = {raw["run_id"] for _, raw in RECORDS}
    trials = [t["run_id"] for log in (REPO / "results").rglob("tuning/*.json")
              for t in json.loads(log.read_text()).get("trials", [])]
    assert len(trials) >= 150 and set(trials) <= ids


def test_the_models_hash_what_the_committed_snapshot_says():
    problems = snapshot_problems(run_id_models(), read_snapshot())
    assert not problems, "\n".join(problems)


# Options a later change might add: to the spec, to the evaluation, and to every training plugin (also nested); a
# name no plugin has yet (booster has its own `weight_decay`, unmarked: a shared field of that name would re-key it).
MARKED = Annotated[float, KEY_OMIT_DEFAULT]
LORA = extend(LoraFields, use_dora=(Annotated[bool, KEY_OMIT_DEFAULT], False))
SHARED = {"later_option": (MARKED, 0.0), "lora": (Annotated[LORA | None, KEY_OMIT_DEFAULT], None)}
TRAINING = (extend(TrainingFields, **SHARED), extend(DefenceTrainingFields, **SHARED))
RUN = extend(RunSpec, eval=(extend(EvalSpec, temperature=(MARKED, 0.0)), ...),
             note=(Annotated[str | None, KEY_OMIT_DEFAULT], None))


def as_written_today(spec: dict, run: type[BaseModel] = RUN, **params) -> dict:
    """A committed spec as a harness with the new options would write it: every new field at its default."""
    data = run.model_validate(spec).model_dump(mode="json")
    for kind in ("defence", "attack"):
        data[kind]["params"] = {**data[kind]["params"], "later_option": 0.0, **params}
    return data


def test_a_new_marked_field_keeps_every_committed_run_id():
    assert snapshot_problems(key_models(RUN, *TRAINING), read_snapshot()) == []  # no snapshot edit needed
    changed = [f for f, raw in RECORDS
               if stable_hash(key_view(as_written_today(raw["spec"]), RUN, TRAINING)) != raw["run_id"]]
    assert not changed, f"{len(changed)} committed run ids change, e.g. {changed[:3]}"
    # away from its default the new option is a new run
    spec = RECORDS[0][1]["spec"]
    assert stable_hash(key_view(as_written_today(spec, later_option=0.1), RUN, TRAINING)) != RECORDS[0][1]["run_id"]
    moved = {**as_written_today(spec), "eval": {**as_written_today(spec)["eval"], "temperature": 0.7}}
    assert stable_hash(key_view(moved, RUN, TRAINING)) != RECORDS[0][1]["run_id"]


def test_a_marked_field_inside_a_nested_shared_option_is_left_out_too():
    spec = RECORDS[0][1]["spec"]
    lora = LoraFields().model_dump(mode="json")
    before = key_view(as_written_today(spec, lora=lora), RUN, TRAINING)
    after = key_view(as_written_today(spec, lora={**lora, "use_dora": False}), RUN, TRAINING)
    assert stable_hash(before) == stable_hash(after)
    assert before["attack"]["params"]["lora"] == lora  # a LoRA run is keyed by its adapter, as before
    dora = key_view(as_written_today(spec, lora={**lora, "use_dora": True}), RUN, TRAINING)
    assert stable_hash(dora) != stable_hash(before)


@pytest.mark.parametrize("change, expected, rekeys", [
    ({"eval": extend(EvalSpec, temperature=(float, 0.0))}, "EvalSpec.temperature is a new field without KEY_OMIT",
     "all"),
    ({"training": extend(TrainingFields, later_option=(float, 0.0))}, "TrainingFields.later_option is a new field",
     "all"),
    ({"eval": extend(EvalSpec, curve_points=(int, Field(0, ge=0)))}, "EvalSpec.curve_points was left out of run ids",
     "v1"),  # the records from before curve_points existed
    # these would give new runs of other behaviour the ids of committed ones
    ({"eval": extend(EvalSpec, curve_prompts=(Annotated[int, KEY_OMIT_DEFAULT], 1))}, "now at 1", None),
    ({"eval": extend(EvalSpec, n_harmless=(Annotated[int, KEY_OMIT_DEFAULT], 0))}, "EvalSpec.n_harmless entered the",
     None),
])
def test_forgetting_the_marker_fails_instead_of_re_keying(change, expected, rekeys):
    run = extend(RunSpec, eval=(change.get("eval", EvalSpec), ...))
    training = (change.get("training", TrainingFields), DefenceTrainingFields)
    problems = snapshot_problems(key_models(run, *training), read_snapshot())
    assert len(problems) == 1 and expected in problems[0], problems
    if rekeys:  # what the check guards against: committed run ids would change
        changed = set()
        for file, raw in RECORDS:
            data = run.model_validate(raw["spec"]).model_dump(mode="json")
            if "training" in change:
                data["attack"]["params"] = {**data["attack"]["params"], "later_option": 0.0}
            if stable_hash(key_view(data, run, training)) != raw["run_id"]:
                changed.add(file)
        assert changed == {f for f, _ in RECORDS if rekeys == "all" or f"/{rekeys}/" in f}


def test_a_new_model_in_the_spec_must_be_listed_or_marked():
    extra = create_model("Sampling", __config__=ConfigDict(extra="forbid"), top_p=(float, 1.0))
    problems = snapshot_problems(key_models(extend(RunSpec, sampling=(Annotated[extra, KEY_OMIT_DEFAULT], extra())),
                                            *TRAINING_PARAMS), read_snapshot())
    assert problems == ["Sampling.top_p is a new field without KEY_OMIT_DEFAULT: it would enter every run id and "
                        "re-key every committed run. Declare it `Annotated[..., KEY_OMIT_DEFAULT]` with the default "
                        "that behaves as before; only to re-key on purpose (a new protocol version) add it to "
                        "schemas/run-id-fields.json"]


def test_a_marker_needs_a_plain_default():
    model = create_model("NoDefault", needed=(Annotated[int, KEY_OMIT_DEFAULT], ...))
    with pytest.raises(TypeError, match=r"NoDefault\.needed is marked KEY_OMIT_DEFAULT but has no plain default"):
        omitted_defaults(model)


def test_a_malformed_spec_still_hashes():
    """validate recomputes the id of any record's spec to report a mismatch: odd shapes must not crash it."""
    assert len(spec_id({"eval": "x", "defence": 3, "attack": {"params": [1]}, "judges": [1, {"name": "j"}]})) == 16


def test_a_plugin_cannot_mark_its_own_field():
    """Keys honour only the shared training options' markers (a record is keyed without importing its plugin):
    a plugin's own marker is refused when it registers, not silently ignored."""
    class Own(DefenceTrainingFields):
        strength: Annotated[float, KEY_OMIT_DEFAULT] = 0.0

    class Moved(TrainingFields):
        grad_accum: Annotated[int, KEY_OMIT_DEFAULT] = 2

    for kind, config, stray in [("defence", Own, "Own.strength"), ("attack", Moved, "Moved.grad_accum"),
                                ("judge", TrainingFields, "TrainingFields.grad_accum")]:
        with pytest.raises(PluginLoadError, match=f"{kind} 'marks-test' marks {stray}.* KEY_OMIT_DEFAULT"):
            registry.register(kind, "marks-test", config=config, version="1")
    assert "marks-test" not in registry._registry["defence"]


def test_a_training_plugin_inherits_the_shared_markers(monkeypatch):
    class Config(DefenceTrainingFields):
        strength: float = 0.0

    monkeypatch.setitem(registry._registry["defence"], "inherits-test", None)
    registry.register("defence", "inherits-test", config=Config, version="1")(lambda m, c, x: m)
    assert omitted_defaults(Config) == omitted_defaults(TrainingFields)
    assert [m.__name__ for m in TRAINING_PARAMS] == ["TrainingFields", "DefenceTrainingFields", "DrawFields"]
