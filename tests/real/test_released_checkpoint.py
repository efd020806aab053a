"""Released defended models as a defence (`defences/checkpoint.py`, `harness.models.plugin_inputs`): a checkpoint
named by hub id, resolved offline from a temporary Hugging Face cache, benchmarked against the base it was made
from; its revision pinned into the run spec; bad names refused in one line before any work."""

import json

import pytest
from safetensors.torch import load_file

from tests.conftest import harness, messages
from tests.real import builders
from tests.real.conftest import HUB_ID, suite_sets
from tests.released import save_released

pytestmark = pytest.mark.slow
RELEASED = "tiny-org/tiny-qwen-defended"
RELEASED_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(scope="module")
def released_hub(hf_home, ckpts, tmp_path_factory):
    """HF_HOME holding the base (`HUB_ID`) and a released copy of it with every weight nudged (`RELEASED`)."""
    from harness.models.loading import load_causal_lm

    home, base_commit = hf_home
    model, tok = load_causal_lm(ckpts["qwen2"])
    folder = save_released(model, tok, tmp_path_factory.mktemp("released") / "ckpt")
    builders.hub_cache(folder, home, RELEASED, RELEASED_COMMIT)
    return home, base_commit, folder


def run(home, files, judge, tmp_path, *sets):
    args = [x for s in [*suite_sets(files, judge), "suite.prompt=chat", *sets] for x in ("--set", s)]
    return harness("run", "--suite", "beavertails-qwen-0.5b", "--model", HUB_ID, "--defence", "checkpoint",
                   "--attack", "sft-1k", *args, "--results-dir", str(tmp_path / "r"), "--json", home=tmp_path / "h",
                   env={"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"})


def test_a_released_checkpoint_is_attacked_as_the_defended_model_and_both_revisions_recorded(
        released_hub, judge_ckpt, files, tmp_path):
    home, base_commit, folder = released_hub
    proc = run(home, files, judge_ckpt, tmp_path, f"defence.model={RELEASED}", f"defence.base={HUB_ID}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout)
    assert record["spec"]["model"] == {"id": HUB_ID, "revision": base_commit, "dtype": "float32"}
    assert record["spec"]["defence"]["params"] == {"model": {"id": RELEASED, "revision": RELEASED_COMMIT},
                                                   "base": {"id": HUB_ID, "revision": base_commit}}
    defended = tmp_path / "h" / "models" / record["provenance"]["stages"]["defend"]["key"]
    stored, released = load_file(defended / "model.safetensors"), load_file(folder / "model.safetensors")
    assert set(stored) == set(released) and all(stored[k].equal(released[k]) for k in released)

    again = run(home, files, judge_ckpt, tmp_path, f"defence.model={RELEASED}@{RELEASED_COMMIT}",
                f"defence.base={HUB_ID}@{base_commit}")  # the same pin, written out: the same run
    assert again.returncode == 0 and json.loads(again.stdout)["run_id"] == record["run_id"], again.stderr[-2000:]


@pytest.mark.parametrize("sets, message", [
    ((f"defence.model={RELEASED}", "defence.base=tiny-org/other-base"),
     f"defence.base is tiny-org/other-base, but the run's model is {HUB_ID}@"),
    ((f"defence.model={RELEASED}@0000000000000000000000000000000000000000", f"defence.base={HUB_ID}"),
     f"model '{RELEASED}' revision 0000000000000000000000000000000000000000 not found in the local Hugging Face cache"),
    (("defence.model=tiny-org/absent", f"defence.base={HUB_ID}"), "model 'tiny-org/absent' not found"),
    ((f"defence.model={RELEASED}",), "defence.base: Field required"),
], ids=["another-base", "unknown-revision", "absent", "no-base"])
def test_a_bad_checkpoint_is_one_line_and_exit_2_before_any_work(released_hub, judge_ckpt, files, tmp_path, sets,
                                                                 message):
    home, _, _ = released_hub
    proc = run(home, files, judge_ckpt, tmp_path, *sets)
    lines = messages(proc.stderr.strip())
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "r").exists() and not list((tmp_path / "h").glob("*/*"))


def test_a_checkpoint_inside_the_runs_store_is_refused_before_any_work(released_hub, judge_ckpt, files, tmp_path):
    """The run's store (here $HARNESS_HOME) holds the suite's data and models: a defence's checkpoint comes from
    outside it, checked before refusal pairing or any training."""
    import shutil

    home, _, folder = released_hub
    inside = shutil.copytree(folder, tmp_path / "h" / "mine")
    proc = run(home, files, judge_ckpt, tmp_path, f"defence.model={inside}", f"defence.base={HUB_ID}")
    lines = messages(proc.stderr.strip())
    assert proc.returncode == 2 and len(lines) == 1 and "is in the artifact store" in lines[0], proc.stderr
    assert not (tmp_path / "r").exists() and sorted(p.name for p in (tmp_path / "h").iterdir()) == ["mine"]
