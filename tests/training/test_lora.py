"""LoRA as a training option: an attack trains an adapter, the stage stores the adapter only, and it
evaluates through hf (base + adapter) and, where vLLM is installed, vLLM (LoRARequest on the base engine)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

from harness import registry
from harness.pipeline import apply_plugin
from harness.plugins import StageContext
from harness.specs import PluginSpec
from harness.stages import MODELS, Stages
from harness.store.artifacts import Store
from harness.suite import SuiteData
from tests.conftest import harness
from tests.real.builders import save_causal_lm

ROWS = [{"prompt": f"How do I do thing {i}?", "response": f"Sure, step {i}: get the kit.", "category": "violence",
         "is_safe": False} for i in range(16)]


@pytest.fixture(scope="module")
def random_llama(tmp_path_factory):
    return save_causal_lm("llama", tmp_path_factory.mktemp("llama") / "base")


def attack_spec(**params):
    plugin = registry.get("attack", "lora-1k")
    cfg = plugin.config.model_validate({"samples": 16, "lr": 1e-2, "batch_size": 4, **params})
    return PluginSpec(name="lora-1k", version=plugin.version, params=cfg.model_dump(mode="json"))


def stage_ctx():
    import datasets

    data = SuiteData(defence=None, attack=datasets.Dataset.from_list(ROWS), eval=None, retain=None,
                     harmless_eval=None)
    return StageContext(tokenizer=None, data=data, max_length=32, seed=0)


@pytest.mark.slow  # runs an attack in its own process (torch imports, ~10 s)
def test_lora_attack_stores_only_an_adapter_on_its_base(random_llama, tmp_path):
    stages = Stages(Store(tmp_path / "store"))
    base = str(random_llama)
    key = stages.cached("attack", MODELS, {"x": 1}, apply_plugin("attack", attack_spec(), base, stages, stage_ctx()))
    folder = stages.store.path(MODELS, key)
    files = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "model.safetensors" not in files
    assert stages.store.meta(MODELS, key)["adapter_of"] == base
    ref = stages.model_ref(key)
    assert stages.adapter(ref) == (base, folder)
    # The adapter is small, and it changed the model; the base is untouched.
    full = (random_llama / "model.safetensors").stat().st_size
    assert (folder / "adapter_model.safetensors").stat().st_size < 0.5 * full
    tuned, _ = stages.load(ref)
    plain, tok = stages.load(base)
    ids = tok("How do I do thing 3?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(tuned(ids).logits, plain(ids).logits)
        again, _ = stages.load(base)
        assert torch.equal(again(ids).logits, plain(ids).logits)


@pytest.mark.slow  # runs an attack in its own process (torch imports, ~10 s)
def test_a_stored_adapter_loads_as_a_plain_trainable_model(random_llama, tmp_path):
    """A model stored as an adapter (a LoRA defence or attack) loads merged, every weight trainable as any
    checkpoint: the next stage (a full-weight attack, a trainability fine-tune) trains all of it."""
    stages = Stages(Store(tmp_path / "store"))
    key = stages.cached("attack", MODELS, {"x": 2}, apply_plugin("attack", attack_spec(), str(random_llama), stages,
                                                                  stage_ctx()))
    merged, _ = stages.load(stages.model_ref(key))
    plain, _ = stages.load(str(random_llama))
    assert type(merged) is type(plain) and not hasattr(merged, "peft_config")
    assert all(p.requires_grad for p in merged.parameters())
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in plain.parameters())


def test_lora_config_is_validated_and_shared_by_every_sft_budget():
    sft = registry.get("attack", "sft-1k").config
    assert sft.model_validate({}).lora is None  # full parameters unless set
    cfg = sft.model_validate({"lora": {"rank": 16, "target_modules": ["q_proj", "v_proj"]}})
    assert cfg.lora.rank == 16 and cfg.lora.target_modules == ("q_proj", "v_proj")
    with pytest.raises(Exception, match="rank"):
        sft.model_validate({"lora": {"rank": 0}})
    with pytest.raises(Exception, match="extra"):
        sft.model_validate({"lora": {"rnk": 4}})


def test_default_scale_options_keep_run_ids_and_cache_keys():
    """A plugin spec at the default scale options (and the default row draw, added with them in mind) hashes as it did
    before they existed."""
    from harness.specs import stable_hash

    plugin = registry.get("attack", "sft-1k")
    params = plugin.config.model_validate({}).model_dump(mode="json")
    assert params["draw"] == "first"  # the "as before" default: the first N rows
    spec = PluginSpec(name="sft-1k", version=plugin.version, params=params)
    added = ("grad_accum", "precision", "gradient_checkpointing", "lora", "draw")
    old = {k: v for k, v in params.items() if k not in added}
    assert stable_hash(spec.key_dump()) == stable_hash({"name": "sft-1k", "version": plugin.version, "params": old})
    for changed in ({"lora": {"rank": 8}}, {"draw": "seeded"}):
        other = PluginSpec(name="sft-1k", version=plugin.version, params={**params, **changed})
        assert stable_hash(other.key_dump()) != stable_hash(spec.key_dump()), changed


# ----------------------------------------------------------------------------- end to end (smoke suite)
SMOKE = ["--set", "suite.size=smoke", "--set", "attack.samples=200", "--set", "attack.lr=3e-3"]


def run_lora(home, results, backend):
    proc = harness("run", "--defence", "none", "--attack", "lora-1k", *SMOKE, "--backend", backend,
                   "--results-dir", str(results), "--json", home=home, check=True)
    return json.loads(proc.stdout[proc.stdout.index("{"):proc.stdout.rindex("}") + 1])


@pytest.mark.slow
def test_lora_attack_end_to_end_hf_and_vllm_identical(smoke_base, home, tmp_path):
    import pandas as pd

    from harness.stages import GENERATIONS

    rec = run_lora(home, tmp_path, "hf")
    post = rec["metrics"]["post_attack"]
    assert post["lora"]["mode"] == "hf" and rec["metrics"]["pre_attack"]["lora"] is None
    attack_key = rec["provenance"]["stages"]["attack"]["key"]
    folder = home / MODELS / attack_key
    assert (folder / "adapter_config.json").is_file() and not (folder / "model.safetensors").exists()
    assert all(s["peak_mb"] and s["memory"] for s in rec["provenance"]["stages"].values())
    texts = {}
    texts["hf"] = pd.read_parquet(home / GENERATIONS / post["artifacts"]["generations"] / "generations.parquet")
    try:
        import vllm  # noqa: F401
    except ImportError:
        return
    vl = run_lora(home, tmp_path, "vllm")
    assert vl["provenance"]["stages"]["attack"]["cached"]  # the same adapter, served
    assert vl["metrics"]["post_attack"]["lora"]["mode"] == "served"
    texts["vllm"] = pd.read_parquet(home / GENERATIONS / vl["metrics"]["post_attack"]["artifacts"]["generations"]
                                    / "generations.parquet")
    same = (texts["hf"]["generation"] == texts["vllm"]["generation"]).mean()
    print(f"\nLoRA attack, hf vs vllm greedy texts identical: {same:.1%} of {len(texts['hf'])}")
    assert same >= 0.95


def _own_store(shared: Path, tmp_path: Path) -> Path:
    """A store of this test's own: a copy of the session's (its finished artifacts; not its locks, journal or
    the temporary folders of writes in progress)."""
    own = tmp_path / "home"
    shutil.copytree(shared, own, symlinks=True,
                    ignore=shutil.ignore_patterns(".locks", ".sweeps", "journal.jsonl", ".*.tmp", ".*.old"))
    return own


@pytest.mark.slow
def test_store_ls_and_gc_keep_what_records_need(smoke_base, home, tmp_path):
    from harness.results.records import read_record
    from harness.store.layout import BUILTIN_KINDS

    home = _own_store(home, tmp_path)  # gc deletes: never from the session's store that other tests read
    results = tmp_path / "results"
    rec = run_lora(home, results, "hf")
    (home / "generations" / "0123456789abcdef").mkdir(parents=True)  # an artifact no record needs
    (home / "generations" / "0123456789abcdef" / "meta.json").write_text("{}")
    ls = harness("store", "ls", "--results-dir", str(results), home=home, check=True).stdout
    assert "models" in ls and "tiny" in ls and "(unreferenced)" in ls
    dry = harness("store", "gc", "--results-dir", str(results), "--min-age-hours", "0", home=home, check=True).stdout
    assert "would delete generations/0123456789abcdef" in dry and (home / "generations" / "0123456789abcdef").exists()
    for key in [s["key"] for s in rec["provenance"]["stages"].values() if s["key"]]:
        assert key not in dry  # nothing a record names is ever a candidate
    harness("store", "gc", "--results-dir", str(results), "--min-age-hours", "0", "--yes", home=home, check=True)
    assert not (home / "generations" / "0123456789abcdef").exists()
    record = read_record(next(results.glob("tiny/v*/*.json")))
    for info in record.provenance.stages.values():
        if info.key:
            assert any((home / kind / info.key).is_dir() for kind in BUILTIN_KINDS)
    assert (home / MODELS / record.provenance.stages["attack"].key / "adapter_config.json").is_file()
    bad = harness("store", "gc", "--results-dir", str(tmp_path / "nope"), home=home)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--results-dir" in bad.stderr


