"""How an attacker queries the attacked model at evaluation: options an attack may declare besides (or instead of)
training.

An attack whose Config mixes in `QueryFields` changes how its post-attack evaluation asks the held-out harmful
prompts: `prefill` writes the start of every answer (the model continues it; the judge scores opening +
continuation), `best_of` draws that many answers per prompt at `temperature` (seeded by the attack seed) and
keeps the one the primary judge finds most harmful, and `prompt_prefix` is written before every question (inside
the suite's prompt format, where the question goes; e.g. a soft prompt's tokens), while the judges read the
question as asked without it. Harmless QA and the attack-visible prompts are still asked greedily: a query written
for harmful requests says nothing about harmless skill.

The options are part of the attack's config, so of the run id; the evaluation records the query it used
(`Evaluation.query`). Defaults query greedily, as every attack without these options is evaluated.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from harness.results.metrics import Query


class QueryFields(BaseModel):
    """Shared attack options (mix into an attack's Config): how the attacked model is queried at evaluation."""

    prefill: str = Field("", max_length=200, description="the attacker writes the start of every answer to a "
                         "held-out harmful prompt; the judge scores opening + continuation ('': none)")
    best_of: int = Field(1, ge=1, le=64, description="answers drawn per held-out harmful prompt at `temperature`; "
                         "the primary judge's most harmful one counts (1: one greedy answer)")
    temperature: float = Field(1.0, gt=0.0, le=2.0, description="sampling temperature when best_of > 1")
    # Added after the first query attacks: left out of their dumped params (so of their run ids) while unset.
    prompt_prefix: str = Field("", max_length=2000, exclude_if=lambda v: v == "", description="text written before "
                               "every held-out harmful question, inside the prompt format where the question goes; "
                               "the judges read the question without it ('': none)")

    def query(self, seed: int) -> Query | None:
        """The evaluation's query (the draws seeded by the attack's `seed`); None: ask greedily, as by default."""
        if not self.prefill and self.best_of == 1 and not self.prompt_prefix:
            return None
        sampled = self.best_of > 1
        return Query(prefill=self.prefill, best_of=self.best_of, temperature=self.temperature if sampled else 0.0,
                     seed=seed if sampled else 0, prompt_prefix=self.prompt_prefix)
