"""Scoped forward hooks and the few architecture lookups defences need (decoder layers, final norm).

    with capture_outputs(model, mlp_modules(model)) as acts:
        model(**batch)
    acts[i]  # output of the i-th module, graph attached

Handles are always removed in `finally`: hooks never pile up across steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def _first_attr(model: Any, paths: Sequence[str], what: str) -> Any:
    for path in paths:
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise TypeError(f"cannot find the {what} of {type(model).__name__} (looked for {', '.join(paths)})")


def decoder_layers(model: Any) -> Sequence[Any]:
    """The transformer blocks of a causal LM (Llama/Qwen2/Mistral: model.layers; GPT-2: transformer.h)."""
    return _first_attr(model, ("model.layers", "transformer.h", "gpt_neox.layers"), "decoder layers")


def final_norm(model: Any) -> Any:
    """The norm applied before the LM head (model.norm / transformer.ln_f / gpt_neox.final_layer_norm)."""
    return _first_attr(model, ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm"), "final norm")


def mlp_modules(model: Any) -> list[Any]:
    """Each block's MLP: its output is the post-MLP, pre-residual activation."""
    return [layer.mlp for layer in decoder_layers(model)]


def attention_modules(model: Any) -> list[Any]:
    """Each block's attention module (Llama: self_attn; GPT-2: attn)."""
    return [getattr(layer, "self_attn", None) or layer.attn for layer in decoder_layers(model)]


def _first(output: Any) -> Any:
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def capture_outputs(model: Any, modules: Sequence[Any]) -> Iterator[list[Any]]:
    """Record each module's (first) output during forward passes inside the block."""
    outputs: list[Any] = [None] * len(modules)
    handles = []

    def hook_for(i: int) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            outputs[i] = _first(output)
        return hook

    try:
        handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(modules)]
        yield outputs
    finally:
        for h in handles:
            h.remove()


@contextmanager
def add_to_outputs(modules: Sequence[Any], deltas: Sequence[Any]) -> Iterator[None]:
    """Add `deltas[i]` to module i's (first) output during forward passes inside the block."""
    handles = []

    def hook_for(i: int) -> Callable[..., Any]:
        def hook(_module: Any, _inputs: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (output[0] + deltas[i], *output[1:])
            return output + deltas[i]
        return hook

    try:
        handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(modules)]
        yield
    finally:
        for h in handles:
            h.remove()


def hook_count(model: Any) -> int:
    """Forward hooks currently registered anywhere in `model` (tests assert this is 0 after a defence)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
