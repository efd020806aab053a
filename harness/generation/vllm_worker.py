"""The vLLM engine's own process: `python -m harness.generation.vllm_worker REQUEST.json`.

The harness starts it once per model per stage (`vllm_engine.run_engine`), so the engine's memory is
freed when it exits. It reads a `Request`, writes JSON-lines events (`ready`, `progress`) to the events file
and the `Response` to the response file; everything vLLM logs goes to its stdout/stderr (a log file).

Prompts are tokenized and outputs decoded here with the checkpoint's own tokenizer, exactly as the `hf`
backend does, so both backends see and return the same tokens: raw questions with the request's
`prompt_format` (the suite's; special tokens as that format places them), or already formatted texts
without special tokens; outputs with special tokens skipped, stripped.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.results.metrics import Canary
from harness.training.collate import PromptFormat

# vLLM accepts only these LoRA ranks as the engine's maximum.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
LORA_ID = 1


class LoraRequestSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("adapter", description="the adapter's name in a multi-adapter request's response")
    path: str = Field(description="a PEFT LoRA adapter folder (adapter_config.json + weights)")
    rank: int = Field(gt=0, description="the adapter's rank r")
    canary: list[str] = Field(min_length=1, description="prompts (as `prompt_sets`): outputs must differ from the "
                              "base")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    prompt_sets: dict[str, list[str]] = Field(description="set name -> raw questions (with prompt_format) or "
                                              "formatted prompts")
    prompt_format: PromptFormat | None = Field(None, description="format raw questions with it (None: the prompts "
                                               "are formatted texts)")
    set_formats: dict[str, PromptFormat] = Field({}, description="set name -> its own format (e.g. a forced "
                                                 "opening), instead of prompt_format")
    max_new_tokens: int = Field(gt=0)
    temperature: float = Field(0.0, ge=0.0, description="0 is greedy")
    seed: int = 0
    dtype: str = "float32"
    trust_remote_code: bool = Field(False, description="only where the suite opts in")
    cpu_memory_utilization: float = Field(gt=0, le=1, description="engine memory share on vLLM's CPU platform")
    gpu_memory_utilization: float = Field(gt=0, le=1, description="engine memory share on a GPU")
    lora: LoraRequestSpec | None = None
    loras: list[LoraRequestSpec] = Field([], description="several adapters of this base, served on this one engine: "
                                         "every prompt set for each (Response.adapters)")
    timed_sets: bool = Field(False, description="generate set by set and time each (benchmarks); else all at once")
    events: str = Field(description="JSON-lines file the worker appends its events to")
    response: str = Field(description="JSON file the worker writes its Response to")

    def format_of(self, name: str) -> PromptFormat | None:
        """How the prompts of set `name` are formatted: its own format, else the request's."""
        return self.set_formats.get(name, self.prompt_format)


class AdapterOutput(BaseModel):
    """One adapter's generations in a multi-adapter request ('ignored': none, the caller merges it)."""

    model_config = ConfigDict(extra="forbid")

    outputs: dict[str, list[str]] = Field(description="set name -> generations, in input order")
    tokens: dict[str, list[int]] = Field(description="set name -> generated token counts")
    lora: Literal["served", "ignored"]
    canary: Canary


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outputs: dict[str, list[str]] = Field(description="set name -> generations, in input order")
    tokens: dict[str, list[int]] = Field(description="set name -> generated token counts")
    engine_start_s: float
    generate_s: float
    set_seconds: dict[str, float] = Field(default_factory=dict, description="per set, with timed_sets")
    vllm_version: str
    platform: str
    lora: Literal["off", "served", "ignored"] = "off"
    canary: Canary | None = None
    adapters: dict[str, AdapterOutput] = Field({}, description="with `loras`: adapter name -> its generations")


def main(request_path: str) -> None:
    req = Request.model_validate_json(Path(request_path).read_text())
    emit = _emitter(Path(req.events))
    start = time.perf_counter()
    llm, tok, sampling, platform = _engine(req)
    engine_start_s = time.perf_counter() - start
    emit(event="ready", seconds=round(engine_start_s, 3), platform=platform)
    if req.loras:
        return _write(req, _serve_many(llm, tok, sampling, req, emit, engine_start_s, platform))
    lora_request, canary, lora = None, None, "off"
    if req.lora is not None:
        from vllm.lora.request import LoRARequest

        lora_request = LoRARequest("adapter", LORA_ID, req.lora.path)
        canary = _canary(llm, tok, req, lora_request)
        lora = "served" if canary.changed else "ignored"
    results: dict[str, list[tuple[str, int]]] = {}
    set_seconds: dict[str, float] = {}
    start = time.perf_counter()
    if lora == "ignored":  # the caller merges an ignored adapter instead: nothing to generate here
        pass
    elif req.timed_sets:
        for name, texts in req.prompt_sets.items():
            t0 = time.perf_counter()
            results[name] = _generate(llm, tok, texts, sampling, lora_request=lora_request, progress=emit,
                                      fmts=[req.format_of(name)] * len(texts))
            set_seconds[name] = round(time.perf_counter() - t0, 4)
    else:  # every set in one call: vLLM batches across sets
        texts = [t for ps in req.prompt_sets.values() for t in ps]
        fmts = [req.format_of(name) for name, ps in req.prompt_sets.items() for _ in ps]
        flat = iter(_generate(llm, tok, texts, sampling, lora_request=lora_request, progress=emit, fmts=fmts))
        results = {name: [next(flat) for _ in ps] for name, ps in req.prompt_sets.items()}
    import vllm

    resp = Response(outputs={n: [text for text, _ in r] for n, r in results.items()},
                    tokens={n: [k for _, k in r] for n, r in results.items()}, engine_start_s=round(engine_start_s, 3),
                    generate_s=round(time.perf_counter() - start, 3), set_seconds=set_seconds,
                    vllm_version=vllm.__version__, platform=platform, lora=lora, canary=canary)
    _write(req, resp)


def _write(req: Request, resp: Response) -> None:
    tmp = Path(req.response + ".tmp")
    tmp.write_text(resp.model_dump_json())
    tmp.replace(req.response)


def _serve_many(llm: Any, tok: Any, sampling: Any, req: Request, emit: Any, engine_start_s: float,
                platform: str) -> Response:
    """Every prompt set for each of `req.loras` on this one engine: each adapter's canary first, then one
    `generate` call over (adapter, prompt) pairs, each prompt with its adapter's LoRARequest."""
    import vllm
    from vllm.lora.request import LoRARequest

    start = time.perf_counter()
    requests = {spec.name: LoRARequest(spec.name, i, spec.path) for i, spec in enumerate(req.loras, LORA_ID)}
    canaries = {spec.name: _canary(llm, tok, req, requests[spec.name], spec) for spec in req.loras}
    served = [name for name, c in canaries.items() if c.changed]
    texts = [(t, req.format_of(n)) for n, ps in req.prompt_sets.items() for t in ps]
    prompts = [{"prompt_token_ids": _ids(tok, t, f)} for _ in served for t, f in texts]
    per_prompt = [requests[name] for name in served for _ in texts]
    results = llm.generate(prompts, sampling, lora_request=per_prompt, use_tqdm=_progress_bar(emit)) if prompts else []
    flat = iter([(tok.decode(r.outputs[0].token_ids, skip_special_tokens=True).strip(), len(r.outputs[0].token_ids))
                 for r in results])
    adapters = {}
    for name in requests:
        done = {n: [next(flat) for _ in ps] for n, ps in req.prompt_sets.items()} if name in served else {}
        adapters[name] = AdapterOutput(outputs={n: [t for t, _ in r] for n, r in done.items()},
                                       tokens={n: [k for _, k in r] for n, r in done.items()},
                                       lora="served" if name in served else "ignored", canary=canaries[name])
    return Response(outputs={}, tokens={}, engine_start_s=round(engine_start_s, 3),
                    generate_s=round(time.perf_counter() - start, 3), vllm_version=vllm.__version__,
                    platform=platform, lora="served" if served else "ignored", adapters=adapters)


def _emitter(path: Path) -> Any:
    handle = path.open("a", buffering=1)

    def emit(**event: Any) -> None:
        handle.write(json.dumps(event) + "\n")

    return emit


def _engine(req: Request) -> tuple[Any, Any, Any, str]:
    """(LLM, tokenizer, SamplingParams, platform name). The context holds the longest prompt plus the
    generation, as `hf` generate does, even past the checkpoint's max_position_embeddings."""
    import os

    os.environ.setdefault("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
    from vllm import LLM, SamplingParams

    from harness.models.loading import load_tokenizer

    tok = load_tokenizer(req.model, trust_remote_code=req.trust_remote_code)
    longest = max((len(_ids(tok, t, req.format_of(n))) for n, ps in req.prompt_sets.items() for t in ps), default=1)
    for spec in [*([req.lora] if req.lora else []), *req.loras]:
        longest = max(longest, *(len(_ids(tok, t, req.prompt_format)) for t in spec.canary))
    from vllm.platforms import current_platform

    on_cpu = current_platform.is_cpu()
    kwargs: dict[str, Any] = {}
    if on_cpu:  # engine core and model worker in this process: each extra process re-imports vLLM (~12 s on CPU)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        kwargs["distributed_executor_backend"] = "uni"
    adapters = [*([req.lora] if req.lora else []), *req.loras]
    if adapters:  # every adapter of a grid at once on GPU batches; the rest wait in the CPU LoRA cache
        kwargs |= {"enable_lora": True, "max_loras": min(len(adapters), 4), "max_cpu_loras": len(adapters),
                  "max_lora_rank": next(r for r in LORA_RANKS if r >= max(a.rank for a in adapters))}
    # On CPU: eager mode (no torch.compile warm-up, which costs more than it saves on short evals).
    llm = LLM(model=req.model, tokenizer=req.model, dtype=req.dtype, seed=req.seed,
              gpu_memory_utilization=req.cpu_memory_utilization if on_cpu else req.gpu_memory_utilization,
              enforce_eager=on_cpu, max_model_len=longest + req.max_new_tokens,
              trust_remote_code=req.trust_remote_code, **kwargs)
    # A seed per request makes sampled outputs reproducible; greedy decoding needs none.
    sampling = SamplingParams(temperature=req.temperature, max_tokens=req.max_new_tokens,
                              seed=req.seed if req.temperature > 0 else None)
    return llm, tok, sampling, str(current_platform.device_type)


def _ids(tok: Any, prompt: str, fmt: PromptFormat | None) -> list[int]:
    """A prompt's token ids: a raw question formatted by `fmt`, or a formatted text without special tokens."""
    return fmt.prompt_ids(tok, prompt) if fmt is not None else tok(prompt, add_special_tokens=False)["input_ids"]


def _generate(llm: Any, tok: Any, texts: list[str], sampling: Any, *, lora_request: Any,
              progress: Any = None, fmts: list[PromptFormat | None] | None = None) -> list[tuple[str, int]]:
    """(decoded text, generated token count) per prompt (formatted by its entry of `fmts`; None: already
    formatted), in input order."""
    prompts = [{"prompt_token_ids": _ids(tok, t, f)} for t, f in zip(texts, fmts or [None] * len(texts), strict=True)]
    if not prompts:
        return []
    results = llm.generate(prompts, sampling, lora_request=lora_request,
                           use_tqdm=_progress_bar(progress) if progress else False)
    return [(tok.decode(r.outputs[0].token_ids, skip_special_tokens=True).strip(), len(r.outputs[0].token_ids))
            for r in results]


def _canary(llm: Any, tok: Any, req: Request, lora_request: Any, spec: LoraRequestSpec | None = None) -> Canary:
    """Generate the canary prompts without and with the adapter. A served adapter changes the generated
    tokens or at least their logprobs; identical outputs mean the adapter was silently ignored."""
    spec = spec or req.lora
    assert spec is not None
    prompts = [{"prompt_token_ids": _ids(tok, t, req.prompt_format)} for t in spec.canary]
    from vllm import SamplingParams

    greedy = SamplingParams(temperature=0.0, max_tokens=req.max_new_tokens, logprobs=0)
    base = llm.generate(prompts, greedy, use_tqdm=False)
    adapted = llm.generate(prompts, greedy, lora_request=lora_request, use_tqdm=False)
    changed, delta = 0, 0.0
    for b, a in zip(base, adapted, strict=True):
        b_out, a_out = b.outputs[0], a.outputs[0]
        if list(b_out.token_ids) != list(a_out.token_ids):
            changed += 1
            continue
        diffs = [abs(_chosen_logprob(lb, t) - _chosen_logprob(la, t))
                 for t, lb, la in zip(b_out.token_ids, b_out.logprobs or [], a_out.logprobs or [], strict=True)]
        worst = max(diffs, default=0.0)
        delta = max(delta, worst)
        changed += worst > 1e-4
    return Canary(n=len(prompts), changed=changed, max_logprob_delta=delta)


def _chosen_logprob(step: Any, token: int) -> float:
    return float(step[token].logprob)


def _progress_bar(emit: Any) -> Any:
    """A tqdm factory for `LLM.generate` that reports finished prompts as `progress` events, silently."""
    import os

    from tqdm import tqdm

    class EventBar(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # vLLM also wraps iterables (rendering, adding requests) in bars of this factory: only the bar it
            # updates by hand, "Processed prompts", counts finished prompts.
            self.reports = (args[0] if args else kwargs.get("iterable")) is None
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 (closed with the bar)
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            out = super().update(n)
            if self.reports:
                emit(event="progress", n=n)
            return out

        def close(self) -> None:
            super().close()
            self.fp.close()

    return EventBar


if __name__ == "__main__":
    main(sys.argv[1])
