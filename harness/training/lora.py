"""LoRA as a training option of any plugin (`TrainingFields.lora`), with peft.

`build_lora(model, cfg)` wraps a model in a peft LoRA (rank, alpha, dropout, target modules from the
plugin's config); `fit` trains only the adapter. The stage that produced it stores the adapter, not the
merged model (`save_adapter`), with the ref of its base in the artifact's metadata: a 7B grid stores a few
MB per attacked model instead of 13 GB. Generation serves stored adapters on one vLLM engine per base
(`LoRARequest`), or loads base + adapter in transformers (`load_adapter_model`).

peft is optional: `pip install 'immunization-bench[lora]'`; a LoRA config without it fails before any work.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.errors import HarnessError

ADAPTER_CONFIG = "adapter_config.json"
INSTALL = "pip install 'immunization-bench[lora]'"


class LoraFields(BaseModel):
    """A LoRA adapter's shape (peft `LoraConfig`). Defaults: rank 8, alpha 16, no dropout, every linear layer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(8, ge=1, le=512, description="adapter rank r (vLLM serves ranks up to 512)")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha: the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: Literal["all-linear"] | tuple[str, ...] = Field(
        "all-linear", description="module names to adapt (e.g. [q_proj, v_proj]) or 'all-linear' (every linear "
        "layer but the LM head)")


def require_peft() -> None:
    if importlib.util.find_spec("peft") is None:
        raise HarnessError(f"a LoRA config needs peft: {INSTALL}; found: not installed")


def build_lora(model: Any, cfg: LoraFields) -> Any:
    """Wrap `model` in a trainable peft LoRA adapter; the base weights are frozen."""
    require_peft()
    from peft import LoraConfig, get_peft_model

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                        task_type="CAUSAL_LM")  # bias: peft default, no bias trained
    return get_peft_model(model, config)


def is_adapter_model(model: Any) -> bool:
    """A peft model (an adapter on a base) rather than a plain transformers model."""
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def is_adapter_folder(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_rank(path: Path) -> int:
    data = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    return int(data["r"])


def save_adapter(model: Any, tokenizer: Any, path: Path) -> None:
    """Save only the adapter (safetensors) and the tokenizer (None: none) into `path`."""
    from harness.models.loading import quiet_hf

    quiet_hf()
    model.save_pretrained(str(path), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))


def load_adapter_model(base: Any, adapter_path: Path, *, merge: bool) -> Any:
    """`base` with the adapter at `adapter_path` (merged into its weights when `merge`), in eval mode. Merged, it
    is a plain model as any checkpoint loads: every weight trainable again (peft froze the base's to load the
    adapter), so a later stage that trains it (an attack, a trainability fine-tune) trains every weight."""
    require_peft()
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, str(adapter_path))
    if not merge:
        return model.eval()
    merged = model.merge_and_unload()
    for param in merged.parameters():
        param.requires_grad_(True)
    return merged.eval()
