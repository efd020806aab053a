"""Generation backends. A backend turns (checkpoint, prompts) into greedy continuations.

`hf`: transformers `generate`, batched and left-padded, prompts sorted by length so batches pad little.
`vllm`: offline vLLM in a child process, one engine per model per evaluation (`harness/generation/vllm_engine.py`).
`auto` is not a backend but a choice, made by `resolve_backend` before the run spec is hashed: vllm where a
GPU build of vLLM and a CUDA GPU are present, hf otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import UnknownNameError
from harness.generation.vllm_engine import generate_vllm, gpu_vllm_available, require_vllm
from harness.training.collate import PROMPT_TEMPLATE, PromptFormat, as_format

# backend(model_path, {set name: prompts}, *, max_new_tokens, batch_size, template, set_templates, ...)
#   -> {set name: generations}
Backend = Callable[..., dict[str, list[str]]]


def generate_hf(model_path: Path, prompt_sets: Mapping[str, Sequence[str]], *, max_new_tokens: int,
                batch_size: int, template: str | PromptFormat = PROMPT_TEMPLATE,
                set_templates: Mapping[str, PromptFormat] | None = None,
                progress: Callable[..., None] | None = None, dtype: str = "float32",
                trust_remote_code: bool = False, temperature: float = 0.0, seed: int = 0) -> dict[str, list[str]]:
    """Continuations of every prompt set (raw questions, formatted with `template` or the set's own entry in
    `set_templates`), in input order: greedy, or sampled at `temperature` > 0 from `seed`. The model is loaded
    once for all sets, in `dtype`."""
    from harness.models.loading import load_causal_lm

    model, tok = load_causal_lm(model_path, dtype, trust_remote_code=trust_remote_code)
    own = set_templates or {}
    return {name: generate_with_model(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                      template=own.get(name, template), progress=progress, temperature=temperature,
                                      seed=seed)
            for name, prompts in prompt_sets.items()}


def generate_with_model(model: Any, tok: Any, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int,
                        template: str | PromptFormat = PROMPT_TEMPLATE,
                        progress: Callable[..., None] | None = None, temperature: float = 0.0,
                        seed: int = 0) -> list[str]:
    """Continuations of `prompts` for a model already in memory, in input order: greedy, or sampled at
    `temperature` > 0 (the whole distribution: no top-k or top-p) from torch's RNG seeded with `seed`."""
    import torch

    fmt = as_format(template)
    encoded = [fmt.prompt_ids(tok, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    model.eval()
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else \
        {"do_sample": False}
    if temperature > 0:
        torch.manual_seed(seed)
    for first in range(0, len(order), batch_size):
        idx = order[first:first + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.tensor([[tok.pad_token_id] * (width - len(encoded[i])) + encoded[i] for i in idx], device=device)
        mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in idx], device=device)
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, **sampling,
                                 pad_token_id=tok.pad_token_id, eos_token_id=stop_ids(model, tok))
        for row, i in enumerate(idx):
            out[i] = tok.decode(gen[row, width:], skip_special_tokens=True).strip()
        if progress:
            progress(len(idx))
    return out


def stop_ids(model: Any, tok: Any) -> list[int]:
    """Tokens that end a generation: the tokenizer's EOS and every EOS the model's generation config names
    (chat models often stop on an end-of-turn token as well)."""
    config = getattr(model, "generation_config", None)
    named = getattr(config, "eos_token_id", None) if config is not None else None
    ids = [named] if isinstance(named, int) else list(named or [])
    return sorted({tok.eos_token_id, *ids} - {None})


BACKENDS: dict[str, Backend] = {"hf": generate_hf, "vllm": generate_vllm}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise UnknownNameError("generation backend", name, BACKENDS)
    return BACKENDS[name]


def resolve_backend(name: str) -> str:
    """The concrete backend a run uses: `auto` becomes vllm (GPU build installed and a CUDA GPU present) or
    hf; a backend whose optional dependency is missing fails here, before any model loads."""
    if name == "auto":
        return "vllm" if gpu_vllm_available() else "hf"
    get_backend(name)
    if name == "vllm":
        require_vllm()
    return name
