"""Where a model or judge checkpoint lives, what revision it is, and whether it is what a run needs.

A checkpoint is named by a hub id (`org/name`), a local folder, or `store:<path>` (built by a suite into the
artifact store). `locate` turns the name into a local folder and a revision:

- hub id: the snapshot in the local Hugging Face cache (`HF_HUB_CACHE`, else `HF_HOME/hub`), fetched first
  unless `HF_HUB_OFFLINE=1`; the revision is the snapshot's commit hash (a branch or tag given by
  `revision` is resolved to it). Only safetensors weights, configs and tokenizer files are fetched.
- local folder or store path: the revision is a content fingerprint, `local-` + the hash of config.json,
  the safetensors index and the name and size of every safetensors file (cheap for 13 GB checkpoints, and
  any retrained checkpoint changes it). A `revision` given for a local folder must equal it (a pin).

`check_causal_lm` / `check_classifier` validate a located checkpoint before any work: its config loads,
its architecture is one the Auto class supports, safetensors weights and a tokenizer are present. Each
failure is one `HarnessError` line.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.errors import HarnessError
from harness.store.artifacts import STORE_SCHEME, Store, resolve_ref

FETCH = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]  # never *.bin / *.pt


@dataclass(frozen=True)
class Checkpoint:
    """A located checkpoint: the name it was given, its local folder and its revision."""

    id: str
    path: Path
    revision: str
    source: Literal["hub", "local", "store"]


def is_local_name(name: str) -> bool:
    """A path rather than a hub id: it exists, or it looks like a path (absolute, ./, ~, or 3+ parts)."""
    return (Path(name).expanduser().exists() or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1
            or "\\" in name)


def locate(name: str, *, revision: str | None = None, store: Store | None = None,
           remote_code: bool = False) -> Checkpoint:
    """The local folder and revision of a checkpoint name (see the module docstring)."""
    if name.startswith(STORE_SCHEME):
        path = Path(resolve_ref(name, store or Store()))
        _require_folder(path, name)
        return Checkpoint(name, path, revision or folder_fingerprint(path), "store")
    if is_local_name(name):
        path = Path(name).expanduser().resolve()
        _require_folder(path, name)
        found = folder_fingerprint(path)
        if revision is not None and revision != found:
            raise HarnessError(f"local model {path} has revision {found}, not the pinned revision {revision}")
        return Checkpoint(str(path), path, found, "local")
    path = hub_snapshot(name, revision, remote_code=remote_code)
    return Checkpoint(name, path, path.name, "hub")


def _require_folder(path: Path, name: str) -> None:
    if not path.is_dir():
        raise HarnessError(f"model folder not found: {name}" if not path.exists()
                           else f"model path {name} is a file, not a checkpoint folder")
    if not (path / "config.json").is_file():
        raise HarnessError(f"{name} is not a Hugging Face checkpoint: no config.json in it")


def folder_fingerprint(path: Path) -> str:
    """Content fingerprint of a local checkpoint folder (config, safetensors index, weight names and sizes)."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors.index.json"):
        if (path / name).is_file():
            h.update(name.encode() + b"\0" + (path / name).read_bytes())
    for weights in sorted(path.glob("*.safetensors")):
        h.update(f"{weights.name}\0{weights.stat().st_size}\n".encode())
    return "local-" + h.hexdigest()[:16]


def hub_cache() -> str | None:
    """The hub cache folder the environment names (read at call time, not at import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_snapshot(repo: str, revision: str | None, *, remote_code: bool = False) -> Path:
    """The local snapshot folder of a hub model (fetched unless offline); its name is the commit hash."""
    from huggingface_hub import snapshot_download

    patterns = [*FETCH, "*.py"] if remote_code else FETCH
    try:
        path = snapshot_download(repo, revision=revision, cache_dir=hub_cache(), allow_patterns=patterns,
                                 local_files_only=offline())
    except Exception as exc:  # huggingface_hub raises many types; all mean "not available"
        where = "in the local Hugging Face cache (HF_HUB_OFFLINE=1)" if offline() else "on the hub"
        detail = first_sentence(exc)
        raise HarnessError(f"model '{repo}'{f' revision {revision}' if revision else ''} not found {where} and "
                           f"no such local folder ({type(exc).__name__}{': ' + detail if detail else ''})") from None
    return Path(path)


def first_sentence(exc: BaseException) -> str:
    """The first sentence of an exception's message, on one line and whole (never cut mid-word: the part of a
    hub error that says what went wrong can come late in it)."""
    text = " ".join(str(exc).split())
    return text.split(". ")[0].removesuffix(".")


def load_config(ckpt: Checkpoint, *, remote_code: bool) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(ckpt.path), trust_remote_code=remote_code)
    except Exception as exc:  # a config transformers cannot read, or code it would need to run
        raise HarnessError(f"cannot read the config of {ckpt.id}: {type(exc).__name__}: "
                           f"{first_sentence(exc)}") from None


def _check_files(ckpt: Checkpoint) -> None:
    if not any(ckpt.path.glob("*.safetensors")):
        found = sorted(p.name for p in ckpt.path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise HarnessError(f"{ckpt.id} has no safetensors weights (found: {', '.join(found) or 'no weights'}); "
                           "only safetensors checkpoints are loaded (convert with save_pretrained)")
    names = {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spm.model"}
    if not any((ckpt.path / n).is_file() for n in names):
        raise HarnessError(f"{ckpt.id} has no tokenizer files (looked for {', '.join(sorted(names))})")


def _supported(config: Any, mapping_names: dict[str, Any], auto_class: str, *, remote_code: bool) -> bool:
    if config.model_type in mapping_names:
        return True
    return remote_code and auto_class in (getattr(config, "auto_map", None) or {})


def _heads(config: Any, suffixes: tuple[str, ...]) -> bool:
    """Whether the saved weights carry the head we load (an unlisted architecture gets the benefit of doubt)."""
    archs = getattr(config, "architectures", None) or []
    return not archs or any(a.endswith(suffixes) for a in archs)


def check_causal_lm(ckpt: Checkpoint, *, remote_code: bool) -> Any:
    """Validate a causal LM checkpoint; returns its config. One clear line per failure."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = load_config(ckpt, remote_code=remote_code)
    archs = ", ".join(getattr(config, "architectures", None) or []) or "no architectures listed"
    if not _supported(config, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, "AutoModelForCausalLM", remote_code=remote_code):
        raise HarnessError(f"{ckpt.id} is not a causal LM: its config is '{config.model_type}' ({archs}), which "
                           "AutoModelForCausalLM does not support")
    if not _heads(config, ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")):
        raise HarnessError(f"{ckpt.id} is not a causal LM: its weights are {archs} (no language-model head)")
    _check_files(ckpt)
    return config


def check_classifier(ckpt: Checkpoint, *, remote_code: bool = False) -> Any:
    """Validate a sequence-classification checkpoint; returns its config."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    config = load_config(ckpt, remote_code=remote_code)
    if not _supported(config, MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
                      "AutoModelForSequenceClassification", remote_code=remote_code):
        raise HarnessError(f"{ckpt.id} is not a sequence classifier: its config is '{config.model_type}'")
    if not _heads(config, ("ForSequenceClassification",)):
        archs = ", ".join(config.architectures)
        raise HarnessError(f"{ckpt.id} is not a sequence classifier: its weights are {archs} (no classification head)")
    _check_files(ckpt)
    return config


def label_index(config: Any, label: int | str, what: str) -> int:
    """The class index of a classifier's label, given as an index or as a name in its config's id2label."""
    labels = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    n = int(getattr(config, "num_labels", len(labels)) or len(labels))
    if isinstance(label, int):
        if not 0 <= label < n:
            raise HarnessError(f"{what} has no label {label}: it has {n} labels ({json.dumps(labels)})")
        return label
    matches = [i for i, name in labels.items() if name == label]
    if not matches:
        raise HarnessError(f"{what} has no label '{label}': its labels are {json.dumps(labels)}")
    return matches[0]
