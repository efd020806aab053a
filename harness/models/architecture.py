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

The residual writers are the modules whose outputs are summed into the residual stream: the embeddings that feed
the first block (token embeddings, and learned position embeddings where a model has them: GPT-2 `wpe`, OPT
`embed_positions`), and in each block the output projection of its attention and of its MLP (the last linear layer
inside each that writes the hidden size: `o_proj`, `down_proj`, GPT-2's `c_proj` Conv1D, OPT's `out_proj` and
inline `fc2`, GPT-NeoX's `dense`/`dense_4h_to_h`). `output_axis` says which axis of such a module's weight holds its
outputs (an `nn.Linear` stores (out, in); an embedding and GPT-2's Conv1D store (in, out)). A model that normalises
what a writer produces before adding it (Gemma-2's post-attention and post-feed-forward norms, a norm after the
embeddings) has no writer whose weights alone decide the residual stream: it is refused.

`requirements_unmet(model, needs)` says which of a plugin's declared needs (`register_defence(..., needs=...)`)
a model cannot meet; `check_model_path` runs it on a model built on the meta device from a checkpoint's config,
so a model a defence cannot handle is refused in a second, before refusal pairing or any training.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

# What a plugin may declare it needs.
FEATURES = ("decoder_layers", "mlp", "attention", "final_norm", "residual_writers")
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


def output_axis(module: Any) -> int:
    """The axis of `module.weight` that indexes the module's outputs: 0 for `nn.Linear` (out, in); 1 for an
    embedding (num, dim) and for transformers' `Conv1D` (GPT-2: (in, out), the transpose of a Linear)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, torch.nn.Linear):
        return 0
    if isinstance(module, torch.nn.Embedding | Conv1D):
        return 1
    raise ArchitectureError(f"{type(module).__name__} is not a linear layer, a Conv1D or an embedding: which axis of "
                            "its weight holds its outputs is unknown")


def _width(module: Any) -> int | None:
    """How many features a linear layer, Conv1D or embedding writes (None: not one of those)."""
    try:
        axis = output_axis(module)
    except ArchitectureError:
        return None
    return int(module.weight.shape[axis])


def _output_projection(part: Any, hidden: int | None, what: str, block: Any) -> Any:
    """The last linear layer (Linear or Conv1D, not an embedding) in `part` (itself included) writing `hidden`."""
    import torch

    found = [m for m in part.modules() if not isinstance(m, torch.nn.Embedding) and _width(m) is not None
             and (hidden is None or _width(m) == hidden)]
    if not found:
        raise ArchitectureError(f"cannot find the output projection of the {what} of a {type(block).__name__} block "
                                f"(no linear layer writing the hidden size {hidden})")
    return found[-1]


def _leaf_norms(modules: Iterable[Any]) -> list[Any]:
    return [m for m in modules if _is_norm(m) and not any(_is_norm(c) for c in m.children())]


def _input_embeddings(model: Any, blocks: Sequence[Any], hidden: int | None) -> list[Any]:
    """The embeddings outside the blocks and the LM head that write the hidden size, the token embeddings first."""
    import torch

    token = model.get_input_embeddings()
    if not isinstance(token, torch.nn.Embedding) or (hidden is not None and token.embedding_dim != hidden):
        raise ArchitectureError(f"the token embeddings of {type(model).__name__} do not write the residual stream "
                                f"directly ({type(token).__name__} of width {_width(token)}, hidden size {hidden})")
    inside = {id(m) for block in blocks for m in block.modules()}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    inside |= {id(m) for m in head.modules()} if head is not None else set()
    outside = [m for m in model.modules() if id(m) not in inside]
    if len(_leaf_norms(outside)) > 1:
        raise ArchitectureError(f"{type(model).__name__} normalises its embeddings before the first block: no weight "
                                "edit of the embeddings decides the residual stream")
    return [token, *(m for m in outside if isinstance(m, torch.nn.Embedding) and m is not token
                     and m.embedding_dim == (hidden or token.embedding_dim))]


def _block_writers(block: Any, hidden: int | None) -> list[Any]:
    """A block's attention output projection and MLP output projection; refused where the block holds more norms
    than sublayers (a norm after a sublayer, before the residual add: Gemma-2's post-norms)."""
    if len(_leaf_norms(block.children())) > 2:
        raise ArchitectureError(f"a {type(block).__name__} block normalises its sublayers' outputs before adding "
                                "them to the residual stream: no weight edit of its projections decides the stream")
    return [_output_projection(attention_module(block), hidden, "attention", block),
            _output_projection(mlp_module(block, hidden), hidden, "MLP", block)]


def residual_writers(model: Any) -> list[Any]:
    """Every module whose output is added into the residual stream, in the order they write: the embeddings that
    feed the first block, then each block's attention and MLP output projections."""
    hidden = _config_int(model, ("hidden_size", "n_embd", "d_model"))
    blocks = decoder_layers(model)
    return [*_input_embeddings(model, blocks, hidden), *(w for block in blocks for w in _block_writers(block, hidden))]


def attention_input_projections(model: Any) -> list[str]:
    """The qualified names of each attention block's linear layers (Linear or Conv1D) but its output projection:
    the query, key and value projections, or the fused one. (peft's default LoRA targets on the architectures it
    names are some of these: queries and values, or the fused projection.)"""
    import torch

    hidden = _config_int(model, ("hidden_size", "n_embd", "d_model"))
    names = {id(m): n for n, m in model.named_modules()}
    found = []
    for block in decoder_layers(model):
        attention = attention_module(block)
        writer = _output_projection(attention, hidden, "attention", block)
        found += [names[id(m)] for m in attention.modules() if m is not writer
                  and not isinstance(m, torch.nn.Embedding) and _width(m) is not None]
    if not found:
        raise ArchitectureError(f"the attention blocks of {type(model).__name__} hold no linear layer besides their "
                                "output projection")
    return found


LOOKUPS = {"decoder_layers": decoder_layers, "mlp": mlp_modules, "attention": attention_modules,
           "final_norm": final_norm, "residual_writers": residual_writers}


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
