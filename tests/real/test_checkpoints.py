"""Locating and validating checkpoints: local folders (content fingerprint), hub ids resolved offline from a
temporary Hugging Face cache (commit hash), every bad model one clear error; `--model` and the dtype reach
the run spec and the loader."""

import shutil

import pytest

from harness.errors import HarnessError
from harness.models.checkpoints import check_causal_lm, check_classifier, folder_fingerprint, locate
from tests.real.conftest import HUB_ID, suite_sets


@pytest.fixture
def offline_hub(hf_home, monkeypatch):
    home, commit = hf_home
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return commit


def test_local_folder_revision_is_a_content_fingerprint(ckpts, tmp_path):
    ckpt = locate(str(ckpts["llama"]))
    assert ckpt.source == "local" and ckpt.path == ckpts["llama"] and ckpt.revision.startswith("local-")
    assert locate(str(ckpts["llama"])).revision == ckpt.revision  # stable
    copy = shutil.copytree(ckpts["llama"], tmp_path / "copy")
    assert folder_fingerprint(copy) == folder_fingerprint(ckpts["llama"])  # content, not location
    (copy / "config.json").write_text((copy / "config.json").read_text().replace('"hidden_act"', '"hidden_act" '))
    assert folder_fingerprint(copy) != folder_fingerprint(ckpts["llama"])
    with pytest.raises(HarnessError, match="not the pinned revision local-0000"):
        locate(str(ckpts["llama"]), revision="local-0000")


def test_hub_id_resolves_offline_to_the_cached_commit(offline_hub, ckpts):
    ckpt = locate(HUB_ID)
    assert ckpt.source == "hub" and ckpt.revision == offline_hub and ckpt.path.name == offline_hub
    assert (ckpt.path / "model.safetensors").is_file()
    assert locate(HUB_ID, revision=offline_hub).path == ckpt.path  # a commit pin resolves the same snapshot
    check_causal_lm(ckpt, remote_code=False)


def test_missing_hub_id_offline_is_one_line(offline_hub):
    with pytest.raises(HarnessError, match="model 'tiny-org/absent' not found in the local Hugging Face cache") as exc:
        locate("tiny-org/absent")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("case, message", [
    ("missing", "model folder not found"),
    ("no_config", "no config.json"),
    ("classifier", "is not a causal LM: its config is 'deberta-v2'"),
    ("bin_only", "has no safetensors weights (found: pytorch_model.bin)"),
    ("no_tokenizer", "has no tokenizer files"),
])
def test_bad_model_folders_are_named(ckpts, judge_ckpt, tmp_path, case, message):
    folder = tmp_path / case
    if case == "no_config":
        folder.mkdir()
    elif case == "classifier":
        folder = judge_ckpt
    elif case in ("bin_only", "no_tokenizer"):
        shutil.copytree(ckpts["gpt2"], folder)
        if case == "bin_only":
            (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
        else:
            for f in folder.glob("tokenizer*"):
                f.unlink()
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        check_causal_lm(locate(str(folder)), remote_code=False)
    assert "\n" not in str(exc.value)


def test_a_causal_lm_is_not_a_classifier(ckpts):
    with pytest.raises(HarnessError, match="is not a sequence classifier"):
        check_classifier(locate(str(ckpts["llama"])))


def test_model_option_changes_the_spec_and_the_run_id(ckpts, judge_ckpt, files):
    from harness.resolve import resolve

    sets = suite_sets(files, judge_ckpt)
    a, _, over = resolve("beavertails-llama2", "none", "sft-1k", sets=sets, model=str(ckpts["llama"]))
    b, _, _ = resolve("beavertails-llama2", "none", "sft-1k", sets=sets, model=str(ckpts["gpt2"]))
    assert a.model.id == str(ckpts["llama"]) and a.model.revision == locate(str(ckpts["llama"])).revision
    assert a.run_id != b.run_id and over["user"]["model"] == {"id": str(ckpts["llama"])}
    tiny, _, _ = resolve("tiny", "none", "sft-1k", sets=["suite.size=smoke"])
    assert tiny.model.id.startswith("store:suites/")  # no --model: the suite's own model


def test_suite_default_model_is_located_too(offline_hub, judge_ckpt, files):
    from harness.resolve import resolve

    with pytest.raises(HarnessError, match="meta-llama/Llama-2-7b-chat-hf' revision main not found"):
        resolve("beavertails-llama2", "none", "sft-1k", sets=suite_sets(files, judge_ckpt))
    spec, _, _ = resolve("beavertails-qwen-0.5b", "none", "sft-1k", sets=suite_sets(files, judge_ckpt),
                         model=HUB_ID)
    assert spec.model.id == HUB_ID and spec.model.revision == offline_hub


def test_dtype_of_the_spec_is_the_dtype_loaded(ckpts, judge_ckpt, files):
    import torch

    from harness.resolve import resolve
    from harness.stages import Loading, Stages
    from harness.store.artifacts import Store

    spec, suite, _ = resolve("beavertails-llama2", "none", "sft-1k", model=str(ckpts["qwen2"]),
                             sets=[*suite_sets(files, judge_ckpt), "suite.dtype=bfloat16"])
    assert spec.model.dtype == "bfloat16"
    auto, _, _ = resolve("beavertails-llama2", "none", "sft-1k", model=str(ckpts["qwen2"]),
                         sets=suite_sets(files, judge_ckpt))
    assert auto.model.dtype == ("bfloat16" if torch.cuda.is_available() else "float32")  # 'auto'
    stages = Stages(Store(ckpts["qwen2"].parent / "store"), loading=Loading(spec.model.dtype, suite.trust_remote_code))
    model, _ = stages.load(str(ckpts["qwen2"]))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
