"""Rank-one edits of the weights that write the residual stream (the refusal-direction attack's edit).

An `Edit` makes the stream hold `value` along a unit direction r at every position and layer: every residual
writer (`harness.models.architecture.residual_writers`: embeddings, attention and MLP output projections) is
orthogonalised to r on its output side, then every token embedding is shifted by `shift` along r (0 for a plain
ablation). `edited` gives the same forward passes with hooks on the same writers, without touching a weight (the
one difference: a head tied to the embeddings changes with the weight edit, not with the hooks), so a search over
candidate edits needs no weight copies; `check` measures every layer's stream after the edit.

Batches are dicts of `input_ids` and `attention_mask` (padding masked out).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from harness.models.architecture import ArchitectureError, decoder_layers, output_axis, residual_writers
from harness.training.hooks import add_to_outputs, capture_outputs, project_out


class Edit(NamedTuple):
    r: Any               # the unit direction (hidden,), float32
    value: float         # the stream's component along r after the edit (0: a plain ablation)
    shift: float         # what each token embedding's row gains along r to put `value` in the stream
    output_shift: float  # what that adds to the embedding module's output (rows x its scale: Gemma's sqrt(hidden))


def apply_edit(model: Any, edit: Edit) -> None:
    """Orthogonalise every residual writer to r, then shift every token embedding by `edit.shift` along r (with
    tied embeddings the head's rows shift alike, which moves every logit by the same amount)."""
    import torch

    orthogonalize(residual_writers(model), edit.r)
    if edit.shift:
        weight = model.get_input_embeddings().weight
        full = weight.detach().float() + edit.shift * edit.r.to(device=weight.device, dtype=torch.float32)
        weight.data.copy_(full.to(weight.dtype))


def orthogonalize(writers: Sequence[Any], r: Any) -> None:
    """Project the unit vector `r` out of every writer's output side, in place (float32 arithmetic, stored back
    in the weight's dtype); a weight shared by two writers (tied embeddings) is edited once."""
    import torch

    seen: set[int] = set()
    for module in writers:
        w = module.weight
        if id(w) in seen:
            continue
        seen.add(id(w))
        r32 = r.to(device=w.device, dtype=torch.float32)
        full = w.detach().float()
        if output_axis(module) == 0:  # (out, in): W - r (r^T W)
            full -= torch.outer(r32, r32 @ full)
        else:                         # (in, out): W - (W r) r^T
            full -= torch.outer(full @ r32, r32)
        w.data.copy_(full.to(w.dtype))
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            b = bias.detach().float()
            bias.data.copy_((b - (b @ r32) * r32).to(bias.dtype))


@contextmanager
def edited(model: Any, edit: Edit) -> Iterator[None]:
    """Forward passes inside the block see the model as `apply_edit` would leave it (but for a tied head)."""
    embeddings = model.get_input_embeddings()
    shift = (edit.r * edit.output_shift).to(device=embeddings.weight.device, dtype=embeddings.weight.dtype)
    with project_out(residual_writers(model), edit.r), add_to_outputs([embeddings], [shift]):
        yield


def embedding_scales(model: Any, batch: dict[str, Any], r: Any) -> tuple[float, float]:
    """(row, stream): what the embedding module's output holds per unit of a weight row (scaled embeddings:
    Gemma's sqrt(hidden)), and what the first block's input holds along r per unit of that output along r, with
    every writer's r-component removed (1 where the model rescales nothing on the way). `batch`: one prompt."""
    embeddings = model.get_input_embeddings()
    token = batch["input_ids"][:1, -1:]  # (1, 1)
    row = embeddings.weight[token[0, 0]].float()
    row_scale = float(embeddings(token)[0, 0].float() @ row / (row @ row).clamp_min(1e-12))
    with edited(model, Edit(r.float(), 1.0, 0.0, 1.0)):
        first = model(**batch, output_hidden_states=True).hidden_states[0]  # (B, T, H)
    stream_scale = float((first[batch["attention_mask"].bool()].float() @ r.float().to(first.device)).mean())
    if not (abs(row_scale) > 1e-6 and abs(stream_scale) > 1e-6):
        raise ArchitectureError(f"a shift of {type(model).__name__}'s token embeddings does not reach its first block")
    return row_scale, stream_scale


def residual_component(model: Any, batches: Iterable[dict[str, Any]], r: Any, value: float = 0.0) -> list[float]:
    """Per residual stream (the input of each block, then the last block's output), the largest
    |h . r - value| / |h| over the batches' real tokens."""
    import torch

    worst = None
    for batch in batches:
        with capture_outputs(model, [decoder_layers(model)[-1]]) as last:
            states = model(**batch, output_hidden_states=True).hidden_states  # [l]: block l's input
        mask = batch["attention_mask"].bool()
        found = []
        for h in [*states[:-1], last[0]]:
            h = h.float()[mask]  # (N, H)
            found.append(((h @ r.to(h) - value).abs() / h.norm(dim=-1).clamp_min(1e-12)).max())
        worst = torch.stack(found) if worst is None else torch.maximum(worst, torch.stack(found))
    return [] if worst is None else worst.tolist()


def check(model: Any, batches: Iterable[dict[str, Any]], edit: Edit) -> None:
    """Raise unless every residual stream holds `edit.value` along r, up to the weights' rounding: a model whose
    blocks write the stream through something besides the writers found (a post-norm block) fails here."""
    import torch

    dtype = next(model.parameters()).dtype
    tolerance = 1e-3 if dtype in (torch.float32, torch.float64) else 3e-2
    component = residual_component(model, batches, edit.r, edit.value)
    leaks = [f"stream {i}: {c:.2g}" for i, c in enumerate(component) if not c <= tolerance]
    if leaks:
        raise ArchitectureError(f"the edit of {type(model).__name__}'s residual writers left the stream off its value "
                                f"along the direction ({', '.join(leaks)}; tolerance {tolerance}): its blocks write "
                                "the stream through something besides their output projections")
