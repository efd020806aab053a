"""A judge that is a PEFT LoRA adapter on a base causal LM (StrongREJECT's fine-tuned evaluator is one on
google/gemma-2b): where the adapter lives, its revision, and the merged model.

The adapter is named like any checkpoint (hub id, local folder, `store:` path); it must hold
`adapter_config.json` and safetensors weights. A folder's revision is `local-` + the hash of its adapter config
and the names and sizes of its safetensors files, as a model folder's is. The base is located and checked as a
causal LM on its own (`base_model`, pinned by `base_revision`): the adapter's config names its base by hub id
only, unpinned, so the judge's settings name it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.models.checkpoints import Checkpoint, hub_snapshot, is_local_name
from harness.store.artifacts import STORE_SCHEME, Store, resolve_ref
from harness.training.lora import ADAPTER_CONFIG, require_peft


def locate_adapter(name: str, *, revision: str | None, store: Store) -> Checkpoint:
    """The adapter's folder and revision (hub: the snapshot's commit; folder: its fingerprint, which a given
    `revision` must equal)."""
    require_peft()
    if name.startswith(STORE_SCHEME) or is_local_name(name):
        path = Path(resolve_ref(name, store)) if name.startswith(STORE_SCHEME) else Path(name).expanduser()
        _require_adapter(path, name)
        found = fingerprint(path)
        if revision is not None and revision != found:
            raise HarnessError(f"adapter {path} has revision {found}, not the pinned revision {revision}")
        return Checkpoint(str(path), path, found, "store" if name.startswith(STORE_SCHEME) else "local")
    path = hub_snapshot(name, revision)
    _require_adapter(path, name)
    return Checkpoint(name, path, path.name, "hub")


def _require_adapter(path: Path, name: str) -> None:
    if not (path / ADAPTER_CONFIG).is_file():
        raise HarnessError(f"{name} is not a PEFT adapter: no {ADAPTER_CONFIG} in {path}")
    if not any(path.glob("*.safetensors")):
        raise HarnessError(f"adapter {name} has no safetensors weights; only safetensors adapters are loaded")


def fingerprint(path: Path) -> str:
    h = hashlib.sha256((path / ADAPTER_CONFIG).read_bytes())
    for weights in sorted(path.glob("*.safetensors")):
        h.update(f"{weights.name}\0{weights.stat().st_size}\n".encode())
    return "local-" + h.hexdigest()[:16]


def has_tokenizer(path: Path) -> bool:
    return any((path / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def merged_model(base: Checkpoint, adapter: Checkpoint, dtype: Any) -> Any:
    """The base with the adapter merged in (inference only: merging changes no score), in eval mode."""
    from transformers import AutoModelForCausalLM

    from harness.training.lora import load_adapter_model

    model = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=dtype, trust_remote_code=False,
                                                 use_safetensors=True)
    return load_adapter_model(model, adapter.path, merge=True)
