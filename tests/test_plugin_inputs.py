"""Checkpoints a plugin's config names (`harness.models.plugin_inputs`): parsed from `ID@REVISION`, found on any
Config, pinned to the revision found, and a base that is not the run's refused. A local folder stands in for a
hub snapshot here (tests/real/test_released_checkpoint.py runs a hub id offline, end to end)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from harness.errors import ConfigError, HarnessError
from harness.models.checkpoints import folder_fingerprint
from harness.models.plugin_inputs import (
    CheckpointRef,
    RunModelRef,
    checkpoint_fields,
    declared_checkpoints,
    located,
    pin,
)
from harness.specs import ModelSpec
from harness.training import smoke


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: CheckpointRef
    base: RunModelRef
    optional: CheckpointRef | None = None
    lr: float = 1e-5


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from harness.models.loading import save_checkpoint

    tok = smoke.tokenizer()
    path = tmp_path_factory.mktemp("ckpt") / "released"
    save_checkpoint(smoke.llama(tok), tok, path)
    return path


RUN = ModelSpec(id="org/base", revision="c0ffee")


def test_a_reference_is_a_string_or_its_fields():
    assert CheckpointRef.model_validate("org/name@v1") == CheckpointRef(id="org/name", revision="v1")
    assert CheckpointRef.model_validate("org/name") == CheckpointRef(id="org/name")
    with pytest.raises(ValueError):
        CheckpointRef.model_validate({"id": "org/name", "branch": "main"})
    assert declared_checkpoints(Config) == {"model": CheckpointRef, "base": RunModelRef, "optional": CheckpointRef}
    cfg = Config(model="org/x", base="org/base")
    assert set(checkpoint_fields(cfg)) == {"model", "base"} and checkpoint_fields(None) == {}


def test_pinning_writes_the_revision_found_and_the_runs_base(folder):
    params = pin("defence 'd'", "defence.", Config(model=str(folder), base="org/base"), RUN)
    assert params == {"model": {"id": str(folder), "revision": folder_fingerprint(folder)},
                      "base": {"id": "org/base", "revision": "c0ffee"}, "optional": None, "lr": 1e-5}
    assert pin("defence 'd'", "defence.", Config(model="org/offline", base="org/base@c0ffee"), RUN,
               locate=False)["model"] == {"id": "org/offline", "revision": None}  # a dry run looks nothing up


@pytest.mark.parametrize("base, message", [
    ("org/other", "defence.base is org/other, but the run's model is org/base@c0ffee"),
    ("org/base@beef", "defence.base is org/base@beef, but the run's model is org/base@c0ffee"),
])
def test_a_base_that_is_not_the_runs_model_is_refused(folder, base, message):
    with pytest.raises(ConfigError, match=message):
        pin("defence 'd'", "defence.", Config(model=str(folder), base=base), RUN)


def test_a_local_folder_at_another_revision_or_not_a_model_is_refused(folder, tmp_path):
    with pytest.raises(HarnessError, match="not the pinned revision local-0"):
        pin("defence 'd'", "defence.", Config(model=f"{folder}@local-0", base="org/base"), RUN)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match=r"is not a Hugging Face checkpoint: no config\.json"):
        pin("defence 'd'", "defence.", Config(model=str(tmp_path / "empty"), base="org/base"), RUN)


def test_a_checkpoint_in_the_store_is_refused_and_the_runs_own_model_is_not(folder, tmp_path):
    """The store holds the suite's data, models and judges: a plugin's checkpoint comes from outside it; the run's
    own model (`RunModelRef`) is wherever the run has it (a suite may build its base into the store)."""
    import shutil

    from harness.store.artifacts import Store

    outside = shutil.copytree(folder, tmp_path / "outside")
    with pytest.raises(ConfigError, match=r"model .* is in the artifact store"):
        located(Config(model=str(folder), base=str(outside)), Store(folder.parent))
    assert located(Config(model=str(outside), base=str(folder)), Store(folder.parent)) == {
        "model": outside, "base": folder}


def test_only_defences_name_checkpoints():
    """An attack starts from the defended model alone: one naming the base could attack the undefended model."""
    from harness import registry
    from harness.errors import PluginLoadError

    with pytest.raises(PluginLoadError, match="only defences do"):
        registry.register("attack", "reads-a-model", config=Config, version="1")


def test_in_a_stage_the_runs_model_is_the_plugins_input_model_and_no_other_folder(folder, tmp_path):
    """A defence naming another `RunModelRef` than the run's (which `pin` refuses) could otherwise be opened a model
    of the store in `plugins check`, which does not resolve a run: the stage hands it its input model instead."""
    import shutil

    from harness.store.artifacts import Store

    outside = shutil.copytree(folder, tmp_path / "outside")
    cfg = Config(model=str(outside), base="store:suites/any/judge")
    assert located(cfg, Store(tmp_path / "store"), input_model=folder) == {"model": outside, "base": folder}
