"""Scoped forward hooks (the modules to hook are found by `harness.models.architecture`).

    with capture_outputs(model, mlp_modules(model)) as acts:
        model(**batch)
    acts[i]  # output of the i-th module, graph attached

Handles are always removed in `finally`: hooks never pile up across steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


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


@contextmanager
def project_out(modules: Sequence[Any], direction: Any) -> Iterator[None]:
    """Remove the component along `direction` (a unit vector of the modules' output width) from each module's
    (first) output during forward passes inside the block: the same outputs as if each module's weight (and bias)
    had been orthogonalised to the direction on its output side."""
    handles = []

    def hook(_module: Any, _inputs: Any, output: Any) -> Any:
        out = _first(output)
        r = direction.to(dtype=out.dtype, device=out.device)
        out = out - (out @ r).unsqueeze(-1) * r  # (..., H)
        return (out, *output[1:]) if isinstance(output, tuple) else out

    try:
        handles = [m.register_forward_hook(hook) for m in modules]
        yield
    finally:
        for h in handles:
            h.remove()


def hook_count(model: Any) -> int:
    """Forward hooks currently registered anywhere in `model` (tests assert this is 0 after a defence)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
