"""Where a causal LM keeps what representation defences reach into, found from its structure, not from a list of
attribute paths: the decoder blocks, each block's MLP and attention, and the final norm before the LM head.

Every transformers causal LM holds its blocks in one `ModuleList` of `num_hidden_layers` modules of one class
(Llama `model.layers`, GPT-2 `transformer.h`, OPT `model.decoder.layers`, GPT-NeoX `gpt_neox.layers`, ...). In a
block, the attention is the child whose class says so (`LlamaAttention`, `GPTNeoXAttention`, `OPTAttention`);
the MLP is the child that is one (`mlp`, `feed_forward`; its class says MLP), or, where a block keeps its
feed-forward layers inline (OPT's `fc1`/`fc2`), the last linear layer writing back to the hidden size: either
way its output is the MLP's contribution before the residual add (OPT's comes flattened, (B*T, H): reshape to
the batch's (B, T, H) before use). The final norm is the last norm module of the
base model outside the blocks (`model.norm`, `ln_f`, `final_layer_norm`).

`requirements_unmet(model, needs)` says which of a plugin's declared needs (`register_defence(..., needs=...)`)
a model cannot meet; `check_model_path` runs it on a model built on the meta device from a checkpoint's config,
so a model a defence cannot handle is refused in a second, before refusal pairing or any training.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

FEATURES = ("decoder_layers", "mlp", "attention", "final_norm")  # what a plugin may declare it needs
MLP_NAMES = ("mlp", "feed_forward", "ffn", "mlp_block")
ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")


class ArchitectureError(HarnessError):
    """A model lacks a part a plugin needs (or the part cannot be found unambiguously)."""


def _config_int(model: Any, names: tuple[str, ...]) -> int | None:
    """The first integer a model's (text) config holds under one of `names` (architectures name them apart)."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return next((v for v in (getattr(text, n, None) for n in names) if isinstance(v, int)), None)


def decoder_layers(model: Any) -> Sequence[Any]:
    """The blocks: the shallowest ModuleList of `num_hidden_layers` modules of one class."""
    import torch

    want = _config_int(model, ("num_hidden_layers", "n_layer", "num_layers"))
    for _name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and (want is None or len(module) == want) \
                and len({type(m) for m in module}) == 1 and any(True for _ in module[0].parameters()):
            return module
    raise ArchitectureError(f"cannot find the decoder layers of {type(model).__name__}: no ModuleList of "
                            f"{want if want is not None else 'N'} blocks of one class")


def _is_norm(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.LayerNorm) or "norm" in type(module).__name__.lower()


def final_norm(model: Any) -> Any:
    """The last norm module outside the blocks (the one before the LM head)."""
    blocks = decoder_layers(model)
    inside = {id(m) for block in blocks for m in block.modules()}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_parts = {id(m) for m in head.modules()} if head is not None else set()
    norms = [m for _, m in model.named_modules() if _is_norm(m) and id(m) not in inside and id(m) not in head_parts
             and not any(_is_norm(c) for c in m.children())]
    if not norms:
        raise ArchitectureError(f"cannot find the final norm of {type(model).__name__} (no norm module outside its "
                                "decoder layers)")
    return norms[-1]


def _child(block: Any, names: Iterable[str], class_word: str) -> Any | None:
    children = dict(block.named_children())
    for name in names:
        if name in children:
            return children[name]
    matches = [m for m in children.values() if class_word in type(m).__name__.lower()]
    return matches[0] if len(matches) == 1 else None


def mlp_module(block: Any, hidden: int | None) -> Any:
    """A block's MLP, or its last linear layer back to the hidden size when the MLP is inline (OPT: fc2)."""
    import torch

    found = _child(block, MLP_NAMES, "mlp")
    if found is not None:
        return found
    linears = [m for m in block.children() if isinstance(m, torch.nn.Linear)
               and (hidden is None or m.out_features == hidden)]
    if linears:
        return linears[-1]
    raise ArchitectureError(f"cannot find the MLP of a {type(block).__name__} block")


def attention_module(block: Any) -> Any:
    found = _child(block, ATTENTION_NAMES, "attention")
    if found is None:
        raise ArchitectureError(f"cannot find the attention of a {type(block).__name__} block")
    return found


def mlp_modules(model: Any) -> list[Any]:
    hidden = _config_int(model, ("hidden_size", "n_embd", "d_model"))
    return [mlp_module(block, hidden) for block in decoder_layers(model)]


def attention_modules(model: Any) -> list[Any]:
    return [attention_module(block) for block in decoder_layers(model)]


LOOKUPS = {"decoder_layers": decoder_layers, "mlp": mlp_modules, "attention": attention_modules,
           "final_norm": final_norm}


def requirements_unmet(model: Any, needs: Iterable[str]) -> list[str]:
    """The needs the model cannot meet, each with the reason ([]: all met)."""
    problems = []
    for need in needs:
        try:
            LOOKUPS[need](model)
        except ArchitectureError as exc:
            problems.append(str(exc))
    return problems


def check_model_path(path: Path, needs: Iterable[str], *, who: str, trust_remote_code: bool = False) -> None:
    """Refuse (one line) a checkpoint whose architecture lacks what `who` needs: checked on a model built on the
    meta device from its config (no weights are read, no memory is used)."""
    needs = list(needs)
    if not needs:
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    problems = requirements_unmet(model, needs)
    if problems:
        raise ArchitectureError(f"{who} cannot run on {type(model).__name__} ({path}): {'; '.join(problems)}")
