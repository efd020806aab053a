"""A released defended model as a defence: benchmark a published checkpoint against the base it was made from.

Teams release their defended models (TAR, circuit breakers, LAT, RepNoise checkpoints); this defence returns one
as the defended model, so it is attacked and measured on the same terms as a defence trained here:

    harness run --suite beavertails-llama3 --model ORG/BASE --defence checkpoint \\
        --set defence.model=ORG/RELEASED@COMMIT --set defence.base=ORG/BASE --attack sft-1k

`model` is the released checkpoint (hub id or folder, optionally `@revision`) and `base` the model it was made
from, which must be the run's `--model`. The harness locates both before any work, checks the checkpoint is a
causal LM, and pins the revision it found into the run spec (`harness.models.plugin_inputs`): the record names
both revisions. The released model must share the base's vocabulary (it is evaluated with the base's
tokenizer and prompt format), checked when it loads. Nothing is trained, so the defence seed changes nothing.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.errors import HarnessError
from harness.plugins import CheckpointRef, RunModelRef, StageContext
from harness.registry import register_defence


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: CheckpointRef = Field(description="the released defended model: hub id or folder, optionally @revision")
    base: RunModelRef = Field(description="the model it was made from: the run's --model")


@register_defence("checkpoint", config=Config, version="1", seeded=False)
def defend(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """A released defended model (hub id or folder), measured against the base it was made from."""
    from harness.models.loading import load_causal_lm

    dtype = next(model.parameters()).dtype
    released, tok = load_causal_lm(ctx.checkpoints["model"], str(dtype).removeprefix("torch."))
    if tok.get_vocab() != ctx.tokenizer.get_vocab():
        raise HarnessError(f"defence 'checkpoint': {cfg.model.id} has another vocabulary than its base {cfg.base.id} "
                           f"({len(tok)} vs {len(ctx.tokenizer)} tokens): a released model is evaluated with its "
                           "base's tokenizer")
    return released.to(next(model.parameters()).device)
