"""Security Vectors (Zhou et al. 2024, "Making harmful behaviors unlearnable for large language models"; the
RepNoise paper's Table 1 baseline, as its reference code `security_vectors` trains it).

A LoRA adapter (the security vector) is trained, the model frozen, to *minimise* the causal-LM loss of harmful
answers: with the adapter on, the model already "knows" the harmful behaviour, so an attacker's fine-tuning of
the model with the adapter attached finds little loss left to lower and the base weights barely move. The model
is released unchanged; the adapter is kept back by the provider, whose fine-tuning service attaches it, frozen,
to every fine-tune and removes it for inference (`harness.training.service`). So the defence returns
`ServiceAdapter(adapter)`: the harness attaches it in every attack and in the trainability fine-tune, the record's
threat model is "fine-tuning service", and the leaderboard marks it. Against an attacker holding the weights it is
no defence at all: the released model is the base.

Reference (RepNoise code, `train_model_simple`, branch `security_vectors`): peft LoraConfig r 8, lora_alpha 32,
lora_dropout 0.1, the task type's default target modules; Adam lr 1e-3 on the adapter, 1 epoch, cosine with 10%
warmup; loss = causal-LM CE over the whole harmful sequence (labels = input_ids). Differences are rows of
`security_vectors.card.yaml`: the reference trains the adapter on the attack's own harmful batches (here: the
defence split, disjoint from the attack), and the paper's bi-level "min-min" step is not in the reference either.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from harness.plugins import DefenceTrainingFields, StageContext, fit
from harness.registry import register_defence
from harness.training.collate import SFTCollator
from harness.training.loop import lm_loss
from harness.training.service import ServiceAdapter


class Config(DefenceTrainingFields):
    rank: int = Field(8, ge=1, le=512, description="the security vector's LoRA rank (reference: 8)")
    alpha: float = Field(32.0, gt=0, description="its LoRA alpha (reference: 32)")
    dropout: float = Field(0.1, ge=0, lt=1, description="its LoRA dropout, active while it is attached to a "
                           "fine-tune (reference: 0.1)")
    target_modules: Literal["peft-default", "all-linear"] | tuple[str, ...] = Field(
        "peft-default", description="modules it adapts: peft's default for the architecture (reference; q_proj and "
        "v_proj on Llama; where peft names none, the attention blocks' input projections), every linear layer, or "
        "named modules")
    loss_on: Literal["sequence", "answer"] = Field("sequence", description="tokens in the harmful loss (reference: "
                                                   "the whole sequence)")

    @model_validator(mode="after")
    def _one_adapter(self) -> Config:
        if self.lora is not None:
            raise ValueError("the security vector is the adapter (rank, alpha, dropout, target_modules); the shared "
                             "lora option would wrap a second one around it")
        return self


# needs attention: peft's default targets are attention projections, and where peft names none they are found there
@register_defence("security-vectors", config=Config, version="1", needs=("attention",))
def defend(model: Any, cfg: Config, ctx: StageContext) -> ServiceAdapter:
    """Security Vectors: a LoRA adapter trained to minimise the harmful loss, kept back for the fine-tuning
    service; the model is released unchanged."""
    from peft import LoraConfig, get_peft_model

    from harness.training.loop import seed_everything

    seed_everything(ctx.seed)  # the adapter's random init is part of the run
    adapter = get_peft_model(model, LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                               target_modules=lora_targets(model, cfg.target_modules),
                                               task_type="CAUSAL_LM"))
    collate = SFTCollator(ctx.tokenizer, ctx.max_length, loss_on=cfg.loss_on, target="response",
                          template=ctx.template)
    return ServiceAdapter(fit(adapter, ctx, split="defence", cfg=cfg, collate=collate, loss_fn=lm_loss))


def lora_targets(model: Any, choice: str | tuple[str, ...]) -> str | list[str]:
    """peft's default target modules for the model's type (the reference), or where peft names none (Phi-3, say)
    the attention blocks' input projections, found from the structure; 'all-linear' and named modules as given."""
    if not isinstance(choice, str):
        return list(choice)
    if choice == "all-linear":
        return choice
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    from harness.models.architecture import attention_input_projections

    named = PEFT_DEFAULTS.get(getattr(model.config, "model_type", ""))
    return list(named) if named else attention_input_projections(model)
