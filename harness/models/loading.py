"""Model and tokenizer I/O. Every model is an ordinary Hugging Face checkpoint (hub id or local folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import HarnessError


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"cpu:{torch.get_num_threads()}threads"


def quiet_hf() -> None:
    """Silence transformers' per-load progress bars; the harness shows its own progress."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def resolve_dtype(dtype: str) -> str:
    """'auto' is bfloat16 where a CUDA GPU supports it, float32 elsewhere; other names pass through."""
    if dtype != "auto":
        return dtype
    import torch

    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


def load_tokenizer(path: str | Path, padding_side: str = "right", *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_causal_lm(path: str | Path, dtype: str = "float32", *, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load (model, tokenizer) from a checkpoint folder, in `dtype`, in eval mode on the default device.
    Safetensors only; `trust_remote_code` only where a suite opts in."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_hf()
    if isinstance(path, Path) and not path.exists():
        raise HarnessError(f"model checkpoint not found: {path}")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype),
                                                 trust_remote_code=trust_remote_code, use_safetensors=True)
    model.to(torch_device()).eval()
    return model, load_tokenizer(path, trust_remote_code=trust_remote_code)


def save_checkpoint(model: Any, tokenizer: Any, path: Path) -> None:
    """Save model (safetensors) and tokenizer into `path`."""
    quiet_hf()
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
