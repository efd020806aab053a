"""Embedding-space attack: a universal soft prompt, optimised on the input embeddings, before every harmful question.

Open weights let an attacker feed the model vectors no text produces (Schwinn et al. 2024, "Soft Prompt Threats:
Attacking Safety Alignment and Unlearning in Open-Source LLMs through the Embedding Space"; the universal setting
of Zou et al. 2023: one prompt for every question). Here the soft prompt is `tokens` new tokens whose input
embeddings are the only weights that train: with them written before each question of the attack split (inside
the suite's prompt format, where the question goes), Adam lowers the model's cross-entropy on the harmful
`response` (the answer tokens only). The attacked model is an ordinary checkpoint that carries them: its tokenizer
holds `<|soft_0|>` ... (special tokens, never printed), its embedding matrix their trained rows, and the
post-attack evaluation asks every held-out harmful question after their text (`QueryFields.prompt_prefix`, set
from `tokens`), on any backend (hf, vLLM), while the judges read the question alone.

Output rows. The new tokens must never be generated, and the model must answer a prompt without them exactly as
before. Their rows of the output matrix (and bias, where the head has one) are the mean of the existing rows, so
a new token's logit is the mean of the existing logits: never above the largest (never a greedy choice unless
every logit ties), and its probability at temperature 1 is at most 1/V (Jensen: exp(mean) <= mean of exp). A row
of zeros would give logit 0, above every real token wherever they are all negative; a bias is not on every
architecture (Llama, Qwen2 and GPT-2 heads have none). A tied model (GPT-2; Qwen2-0.5B) is untied first: its
output matrix becomes a copy of the input one, so the trained input rows do not also become output rows.

Reference defaults (the source's universal attack): 20 soft tokens started from the embedding of "!", 100
iterations of size 1e-3 (signed gradient steps there; Adam's first steps move each coordinate by about lr, as a
signed step does), batches of 16 questions. The source places its tokens after the instruction; here they go
before it (`prompt_prefix`), so that one shared query option serves every prompt format. The source's target is
an affirmative opening; here it is the attack split's harmful answer, as for the SFT attacks. `step_size` and
`batch` are named apart from the SFT attacks' `lr` and `batch_size` on purpose: a suite's shared attack defaults
budget weight updates, not a soft prompt.

No resistance curve: the harness measures points along an attack by asking the plain questions, which this attack
leaves answered exactly as before; its curve is before and after, as a query attack's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from harness.errors import HarnessError
from harness.generation.query import QueryFields
from harness.plugins import DrawFields, StageContext, draw_rows
from harness.registry import register_attack

BUDGET = {"samples": "samples", "steps": "steps"}
SOFT_TOKEN = "<|soft_{}|>"
MAX_TOKENS = 100


def soft_tokens(k: int) -> list[str]:
    """The names of a k-token soft prompt, in order."""
    return [SOFT_TOKEN.format(i) for i in range(k)]


def soft_text(k: int) -> str:
    """The text of a k-token soft prompt: what the evaluation writes before every question."""
    return "".join(soft_tokens(k))


class Config(QueryFields, DrawFields):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: int = Field(20, ge=1, le=MAX_TOKENS, description="soft-prompt length k (new tokens; reference: 20)",
                        json_schema_extra={"search": [5, 10, 20]})
    steps: int = Field(100, ge=1, description="Adam steps on the soft prompt (reference: 100 iterations)",
                       json_schema_extra={"search": [50, 100, 200]})
    step_size: float = Field(1e-3, gt=0, description="Adam learning rate of the soft prompt, constant (reference: "
                             "signed steps of 1e-3)", json_schema_extra={"search": [3e-4, 1e-3, 3e-3, 1e-2]})
    batch: int = Field(16, ge=1, description="harmful questions per step (cycling through the samples)")
    samples: int = Field(250, gt=0, description="harmful examples (first N of the attack split)")
    init: str = Field("!", min_length=1, max_length=200, description="text whose tokens' embeddings start the soft "
                      "prompt, repeated to its length (reference: '!')")
    prompt_prefix: str = Field("", max_length=2000, description="the soft prompt's text, written before every "
                               "held-out harmful question at evaluation: set from `tokens` (another value is refused)")

    @model_validator(mode="before")
    @classmethod
    def _derive_prefix(cls, data: Any) -> Any:
        """Fill `prompt_prefix` from `tokens` when not given (a valid `tokens` only: a bad one fails on its own)."""
        if isinstance(data, Mapping) and not data.get("prompt_prefix"):
            k = data.get("tokens", cls.model_fields["tokens"].default)
            if isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= MAX_TOKENS:
                return {**data, "prompt_prefix": soft_text(k)}
        return data

    @model_validator(mode="after")
    def _prefix_is_the_soft_prompt(self) -> Config:
        if self.prompt_prefix != soft_text(self.tokens):
            raise ValueError(f"prompt_prefix is the text of the {self.tokens} soft tokens ({soft_text(self.tokens)!r}),"
                             " set from `tokens`: leave it out")
        return self


@register_attack("soft-prompt", config=Config, version="1", budget=BUDGET, family="embedding")
def attack(model: Any, cfg: Config, ctx: StageContext) -> Any:
    """A universal soft prompt of `tokens` new tokens, trained so the model answers the attack split's harmful
    questions; the model and tokenizer carry the tokens, and the evaluation asks after them."""
    from harness.training.collate import SFTCollator
    from harness.training.loop import TrainConfig, train

    tok = ctx.tokenizer
    start = init_rows(model, tok, cfg.init, cfg.tokens)
    ids = add_soft_tokens(model, tok, cfg.tokens)
    rows = PrefixedRows(draw_rows(ctx.data.attack, cfg.samples, "attack", draw=cfg.draw, seed=ctx.seed),
                        cfg.prompt_prefix, cfg.steps * cfg.batch)
    collate = SFTCollator(tok, ctx.max_length, loss_on="answer", template=ctx.template)
    prompted = SoftPrompted(model, ids, start)
    config = TrainConfig(lr=cfg.step_size, epochs=1, batch_size=cfg.batch, optimizer="adam", warmup_ratio=0.0,
                         schedule="constant", max_grad_norm=None)
    with prompted.frozen_model():
        train(prompted, rows, collate, soft_prompt_loss, config, seed=ctx.seed, progress=ctx.progress)
    prompted.write()
    return model


def init_rows(model: Any, tok: Any, text: str, k: int) -> Any:
    """(k, H) float32 starting vectors: the input embeddings of `text`'s tokens, repeated to k rows."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise HarnessError(f"soft-prompt init {text!r} has no tokens")
    weight = model.get_input_embeddings().weight
    return weight.detach()[[ids[i % len(ids)] for i in range(k)]].float().clone()  # (k, H)


def add_soft_tokens(model: Any, tok: Any, k: int) -> list[int]:
    """Add the k soft tokens to `tok` (special: never printed) and give the model rows for them: input rows to be
    trained, output rows (and bias) at the mean of the existing ones. A tied model is untied first. Returns their
    ids."""
    import torch

    names = soft_tokens(k)
    taken = [n for n in names if n in tok.get_vocab()]
    if taken:
        raise HarnessError(f"the tokenizer already has {taken[0]}: this model carries a soft prompt already")
    tok.add_tokens(names, special_tokens=True)
    ids = tok.convert_tokens_to_ids(names)
    untie(model)
    rows = model.get_input_embeddings().weight.shape[0]
    if max(ids) >= rows:  # a checkpoint may have spare rows already (vocab padded past the tokenizer's length)
        model.resize_token_embeddings(max(ids) + 1, mean_resizing=False)
    head = model.get_output_embeddings()
    keep = torch.ones(head.weight.shape[0], dtype=torch.bool, device=head.weight.device)
    keep[ids] = False
    with torch.no_grad():
        head.weight[ids] = head.weight[keep].mean(0)  # (H,): each new logit is the mean of the existing ones
        if getattr(head, "bias", None) is not None:
            head.bias[ids] = head.bias[keep].mean()
    return list(ids)


def untie(model: Any) -> None:
    """Give a model whose output matrix is its input embedding matrix a separate copy of it (config says so)."""
    import torch

    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None:
        raise HarnessError(f"soft-prompt needs a causal LM with an output embedding; {type(model).__name__} has none")
    if head.weight is not embed.weight:
        return
    head.weight = torch.nn.Parameter(embed.weight.detach().clone(), requires_grad=embed.weight.requires_grad)
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.tie_word_embeddings = False


class PrefixedRows(Sequence[dict[str, str]]):
    """`length` rows cycling through `rows`, each question written after `prefix`: the training loop's one pass
    over them is `length / batch` optimizer steps."""

    def __init__(self, rows: Any, prefix: str, length: int):
        self.rows, self.prefix, self.length = rows, prefix, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: Any) -> Any:
        if not isinstance(i, int):
            raise TypeError("PrefixedRows takes one integer index")
        if not 0 <= i < self.length:
            raise IndexError(i)
        row = self.rows[i % len(self.rows)]
        return {"prompt": self.prefix + row["prompt"], "response": row["response"]}


def soft_prompt_loss(prompted: Any, batch: dict[str, Any]) -> Any:
    """Cross-entropy of the answer tokens given the prompt with the soft prompt in it (a token mean)."""
    from harness.training.loop import LossOut, label_tokens

    out = prompted(batch["input_ids"], batch["attention_mask"], batch["labels"])
    return LossOut(out.loss, {"loss": float(out.loss.detach())}, label_tokens(batch["labels"]))


class SoftPrompted:
    """The frozen model and its soft prompt, the one trainable tensor (float32, the optimizer's), as the training
    loop sees a model: `parameters()` is the soft prompt alone, and the model stays in eval mode (no dropout, as
    in the reference). Every forward splices the soft prompt into the embedding matrix and embeds through the
    model's own embedding module, so what trains is exactly what the saved rows give (an embedding module that
    scales its rows, as Gemma's does, included)."""

    def __init__(self, model: Any, ids: list[int], start: Any):
        import torch

        device = model.get_input_embeddings().weight.device
        self.model = model
        self.soft = torch.nn.Parameter(start.to(device))  # (k, H)
        self.ids = torch.tensor(ids, device=device)

    def parameters(self) -> Iterator[Any]:
        yield self.soft

    def train(self, mode: bool = True) -> SoftPrompted:
        self.model.eval()
        return self

    def eval(self) -> SoftPrompted:
        return self.train(False)

    def __call__(self, input_ids: Any, attention_mask: Any, labels: Any) -> Any:
        from torch.func import functional_call

        embed = self.model.get_input_embeddings()
        weight = embed.weight.detach().index_copy(0, self.ids, self.soft.to(embed.weight.dtype))  # (V, H)
        embeds = functional_call(embed, {"weight": weight}, (input_ids,))  # (B, T, H)
        return self.model(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels)

    @contextlib.contextmanager
    def frozen_model(self) -> Iterator[None]:
        """Only the soft prompt has gradients inside; the model's flags are restored after."""
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)

    def write(self) -> None:
        """Store the trained soft prompt in the model's input embedding rows."""
        import torch

        weight = self.model.get_input_embeddings().weight
        with torch.no_grad():
            weight[self.ids] = self.soft.detach().to(weight.dtype)
