"""Gradient ascent on harmful answers (RepNoise baseline, eq. 3; reference `max_harmful_loss`).

    plain     : L = -CE(harmful sequence)   (reference: every token, question included; `loss_on="answer"`
                                             ascends only on the answer tokens)
    layerwise : L = CE(refusal answer) - alpha * log(mean over the final logits and every hidden state's
                logit lens of CE(harmful answer))      (reference `ascent_loss`: / (L+1), no +1)

Answer tokens are those where the harmful answer differs from the paired refusal.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictBool

from harness.models.architecture import final_norm
from harness.plugins import DefenceTrainingFields, StageContext, fit
from harness.registry import register_defence
from harness.training.loop import LossOut
from harness.training.paired_batches import PairedCollator, masked_ce


class Config(DefenceTrainingFields):
    layerwise: StrictBool = Field(False, description="retain CE minus alpha*log(mean layer-wise harmful CE)")
    alpha: float = Field(1.0, ge=0, description="weight of the log ascent term (layerwise only)")
    loss_on: Literal["sequence", "answer"] = Field("sequence", description="tokens the plain ascent covers "
                                                   "(reference: the whole sequence)")


@register_defence("gradient-ascent", config=Config, version="2", needs=("final_norm",))
def defend(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """Gradient ascent: maximise the harmful answers' cross-entropy (optionally layer-wise)."""
    collate = PairedCollator(ctx.tokenizer, ctx.max_length, template=ctx.template)

    def loss_fn(m: Any, b: dict[str, Any]) -> LossOut:
        ids, mask = b["harmful"]["input_ids"], b["harmful_mask"]
        out = m(**b["harmful"], output_hidden_states=cfg.layerwise)
        if not cfg.layerwise:
            whole = b["harmful"]["attention_mask"].bool()
            harm = masked_ce(out.logits, ids, whole if cfg.loss_on == "sequence" else mask)
            return LossOut(-harm, {"loss": float(-harm.detach()), "harmful_ce": float(harm.detach())})
        head, norm = m.get_output_embeddings(), final_norm(m)
        terms = [masked_ce(out.logits, ids, mask)] + [masked_ce(head(norm(s)), ids, mask)
                                                      for s in out.hidden_states[:-1]]
        harm = sum(terms) / len(terms)
        keep = masked_ce(m(**b["refusal"]).logits, b["refusal"]["input_ids"], b["refusal_mask"])
        loss = keep - cfg.alpha * harm.log()
        return LossOut(loss, {"loss": float(loss.detach()), "harmful_ce": float(harm.detach())})

    return fit(model, ctx, split="defence", cfg=cfg, collate=collate, loss_fn=loss_fn)
