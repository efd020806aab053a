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


def load_tokenizer(path: str | Path, padding_side: str = "right") -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_causal_lm(path: str | Path, dtype: str = "float32") -> tuple[Any, Any]:
    """Load (model, tokenizer) from a checkpoint folder or hub id, in eval mode on the default device."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_hf()
    if isinstance(path, Path) and not path.exists():
        raise HarnessError(f"model checkpoint not found: {path}")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype), trust_remote_code=False,
                                                 use_safetensors=True)
    model.to(torch_device()).eval()
    return model, load_tokenizer(path)


def save_checkpoint(model: Any, tokenizer: Any, path: Path) -> None:
    """Save model (safetensors) and tokenizer into `path`."""
    quiet_hf()
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
