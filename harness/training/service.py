"""Service adapters: the fine-tuning-service threat model (Security Vectors, Zhou et al. 2024).

A defence under this threat model releases a model for inference and keeps a LoRA adapter back: the provider's
fine-tuning service attaches that adapter, frozen, to the model whenever anyone fine-tunes it, and removes it for
inference. A defence says so by returning `ServiceAdapter(adapter, model)`; the defend stage stores the adapter
(`harness.training.lora.save_adapter`) in its artifact (`FOLDER`) beside the released model (or an alias of its
input where `model` is None).

`attach(model, folder)` adds the adapter's LoRA update to the output of each module it targets through forward
hooks, so the model's structure and weights stay as they are: an attack that wraps the model in its own LoRA
still trains through it (peft keeps the original module as `base_layer`, hooks and all), and what is saved after
training is the fine-tuned model without the adapter. The update applies only while the module is in training
mode: every training forward pass of a fine-tune sees the adapter (with its dropout, as peft applies it), while
generation, scoring and any computation an attack runs in eval mode see the released model alone, which is what
the service serves. The harness attaches it in the attack stage's process (before the plugin runs and before its
guard is installed) and around the trainability fine-tune; an attack never reads the adapter's folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

FOLDER = "service_adapter"  # in a defended model's artifact


@dataclass(frozen=True)
class ServiceAdapter:
    """What a defence returns under the fine-tuning-service threat model: `adapter`, a peft LoRA model (plain
    LoRA: no DoRA), kept attached and frozen in every fine-tune; `model`, the model released for inference (None:
    the defence's input, unchanged)."""

    adapter: Any
    model: Any = None


def _config(folder: Path) -> dict[str, Any]:
    config = json.loads((folder / "adapter_config.json").read_text())
    kind = config.get("peft_type")
    if kind != "LORA" or config.get("use_dora"):
        raise HarnessError(f"a service adapter must be a plain LoRA adapter; {folder} is "
                           f"{'a DoRA adapter' if config.get('use_dora') else kind}")
    odd = [k for k in ("rank_pattern", "alpha_pattern", "modules_to_save") if config.get(k)]
    if odd or config.get("bias") in ("all", "lora_only"):  # peft's biases that train (its default trains none)
        raise HarnessError(f"a service adapter must be a plain LoRA adapter (one rank and alpha, no bias, no module "
                           f"saved whole); {folder} has {', '.join(odd) or 'bias ' + str(config['bias'])}")
    return config


def attach(model: Any, folder: Path) -> Callable[[], None]:
    """Hook the service adapter in `folder` onto `model` (its update active in training mode only, frozen);
    returns the function that removes every hook. A module the adapter names that the model lacks is one line."""
    import torch
    from safetensors.torch import load_file

    config = _config(folder)
    rank = int(config["r"])
    scale = float(config["lora_alpha"]) / (math.sqrt(rank) if config.get("use_rslora") else rank)
    dropout = float(config.get("lora_dropout") or 0.0)
    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in load_file(str(folder / "adapter_model.safetensors")).items():
        name, sep, part = key.removeprefix("base_model.model.").rpartition(".lora_")
        if not sep or part not in ("A.weight", "B.weight"):
            raise HarnessError(f"a service adapter holds LoRA A and B weights only; {folder} has {key}")
        pairs.setdefault(name, {})[part[0]] = tensor
    modules = dict(model.named_modules())
    missing = sorted(set(pairs) - set(modules))
    if missing:
        raise HarnessError(f"the service adapter in {folder} targets {missing[0]}, which the model does not have")
    handles = []
    for name, weights in pairs.items():
        module = modules[name]
        anchor = next(module.parameters())
        a, b = (weights[x].to(device=anchor.device, dtype=anchor.dtype) for x in ("A", "B"))

        def hook(mod: Any, args: tuple[Any, ...], out: Any, a: Any = a, b: Any = b) -> Any:
            if not mod.training:  # inference: the service serves the released model alone
                return out
            x = torch.nn.functional.dropout(args[0].to(a.dtype), dropout, training=True)
            return out + (scale * torch.nn.functional.linear(torch.nn.functional.linear(x, a), b)).to(out.dtype)

        handles.append(module.register_forward_hook(hook))

    def remove() -> None:
        for handle in handles:
            handle.remove()

    return remove
