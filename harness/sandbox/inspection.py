"""What `plugins check` measures of an in-memory model inside the plugin's process, before and after the plugin.

Only a checkpoint leaves a plugin's process, so a hook, a patched `forward` or a swapped class method cannot
change what a run evaluates: it dies with the process. The check still reports them, because a defence that
relies on one is not the model its author tested. `structure` names every module's class and `forward`, each
hook (on a module or global) and the forward-call machinery of `torch.nn.Module`; `changes` lists what a plugin
added or replaced. `probe_logits` (the returned model's logits on fixed tokens) lets the check compare the
in-memory model with its checkpoint loaded in a fresh process: equal logits mean the behaviour is the weights,
whatever mechanism might have changed it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_state_dict_hooks", "_load_state_dict_pre_hooks")
CALL_MACHINERY = ("__call__", "_call_impl", "_wrapped_call_impl", "forward")
PROBE_LENGTH = 8


def _name(fn: Any, with_id: bool = True) -> str:
    """A callable by its module, qualified name and (where it must be the same object) identity."""
    fn = getattr(fn, "__func__", fn)
    label = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    return f"{label} @{id(fn):x}" if with_id else label


def structure(model: Any, *, exact: bool = True) -> Counter[str]:
    """Every module's class, its instance-level `forward` (if patched onto the instance), its classes' call
    methods, its hooks, and the global hooks and `torch.nn.Module`'s call methods. Two structures differ where
    something was added or swapped. `exact`: each hook by its handle and the very function object (a hook
    swapped for a look-alike differs); else by the function's name only, as a multiset (to compare a model
    with another object, such as a fresh model a defence returns, whose handles are its own)."""
    import torch
    from torch.nn.modules import module as torch_module

    out: Counter[str] = Counter()
    classes: set[type] = set()
    for name, mod in model.named_modules():
        where = name or "(model)"
        out[f"{where}: class {type(mod).__module__}.{type(mod).__qualname__}"] += 1
        if "forward" in vars(mod):
            out[f"{where}: forward set on the instance to {_name(vars(mod)['forward'])}"] += 1
        for hooks in HOOK_DICTS:
            for handle, fn in dict(getattr(mod, hooks, {}) or {}).items():
                what = hooks.strip("_").replace("_", " ")[:-1]
                out[f"{where}: {what} #{handle} {_name(fn)}" if exact else f"{where}: {what} {_name(fn, False)}"] += 1
        classes.add(type(mod))
    for cls in sorted(classes | {torch.nn.Module}, key=lambda c: (c.__module__, c.__qualname__)):
        for method in CALL_MACHINERY:
            if hasattr(cls, method):
                out[f"class {cls.__module__}.{cls.__qualname__}: {method} is {_name(getattr(cls, method))}"] += 1
    for hooks in HOOK_DICTS[:4]:
        for handle, fn in dict(getattr(torch_module, f"_global{hooks}", {}) or {}).items():
            out[f"torch.nn.Module: global {hooks.strip('_').replace('_', ' ')[:-1]} #{handle} {_name(fn)}"] += 1
    return out


def changes(before: Counter[str], after: Counter[str]) -> list[str]:
    """What `after` has that `before` had not (a hook added, a method replaced); removals are no finding."""
    return sorted((after - before).elements())


def probe_logits(model: Any) -> Any:
    """The model's logits (float32, CPU) on PROBE_LENGTH fixed token ids, in eval mode, without gradients."""
    import torch

    vocab = model.get_input_embeddings().weight.shape[0]
    ids = (torch.arange(1, PROBE_LENGTH + 1) * 7919 % vocab).unsqueeze(0).to(next(model.parameters()).device)
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float().cpu()


def digests(model: Any) -> dict[str, str]:
    """Name -> sha256 of every tensor of the state dict (with its dtype and shape)."""
    import torch

    out = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h = hashlib.sha256(f"{t.dtype}{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
        out[name] = h.hexdigest()
    return out
