"""Stability and trainability: a defended model against the undefended base, each measurement a cached stage.

Their keys name only the model (and the data and protocol), so every attack of a grid shares one defended
model's stability and trainability, computed once by the sweep's defend job.

- stability: perplexity on held-out harmless text, harmless-QA exact match (from the pre-attack evaluation),
  and the suite's lm-eval tasks where it declares them;
- trainability: the suite's harmless fine-tune of each model, compared; with the protocol's attack after it,
  each model's harmfulness before and after that attack, the attack applied through the pipeline's plugin entry
  (`harness.data.views.call_plugin`) on its stage's view of the data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import registry
from harness.data.views import call_plugin
from harness.progress import bar
from harness.results.metrics import Evaluation, Stability, Trainability
from harness.specs import RunSpec
from harness.stages import STABILITY, TRAINABILITY, Stages, data_fingerprint
from harness.suite import Suite, SuiteData

HarmNow = Callable[[Any, Any], float]  # (model, tokenizer) -> primary-judge harmfulness of an in-memory model


class VersusBase:
    """Compares a defended model with the base on the suite's harmless data and trainability protocol."""

    def __init__(self, stages: Stages, spec: RunSpec, suite: Suite, *, loading: dict[str, Any], data: SuiteData,
                 attack_data: SuiteData, harmless: Any, harmful: Any, harm_now: HarmNow):
        self.stages, self.spec, self.suite, self.loading = stages, spec, suite, loading
        # The evaluation's view, and the suite's data that `call_plugin` gives the trainability attack its view of
        self.data, self.attack_data = data, attack_data
        self.harmless, self.harmful, self.harm_now = harmless, harmful, harm_now

    def stability(self, defended: str, base: str, pre: Evaluation, base_eval: Evaluation) -> Stability:
        """Perplexity on held-out harmless text and harmless QA (and lm-eval tasks), defended vs base."""
        from harness.conditions.stability import compare

        out = compare(
            {"perplexity": self._perplexity(defended, "defended"), "harmless_qa": pre.harmless_qa.exact_match},
            {"perplexity": self._perplexity(base, "base"), "harmless_qa": base_eval.harmless_qa.exact_match})
        lm = self._lm_eval(defended, "defended"), self._lm_eval(base, "base")
        if lm[0] is not None and lm[1] is not None:
            out["lm_eval"] = {task: {m: {"defended": v, "base": lm[1]["scores"][task][m],
                                         "delta": v - lm[1]["scores"][task][m]} for m, v in scores.items()}
                              for task, scores in lm[0]["scores"].items()}
            out["lm_eval_versions"] = lm[0]["versions"]
        return Stability.model_validate(out)

    def trainability(self, defended: str, base: str, *, service: Path | None = None) -> Trainability | None:
        """The suite's harmless fine-tune of the defended model and of the base, compared (None: no protocol);
        with the protocol's attack after it, their harmfulness before and after that attack. `service`: the
        defence's service adapter, attached while the defended model fine-tunes (`harness.training.service`)."""
        from harness.conditions.trainability import compare

        protocol = self.suite.trainability
        if protocol is None or self.data.trainability_train is None:
            return None
        ours, theirs = self._curve(defended, "defended", service), self._curve(base, "base")
        out = {"task": protocol.task, **compare(ours["curve"], theirs["curve"])}
        if protocol.then_attack is not None:
            out["then_attack"] = {"attack": protocol.then_attack, "before": ours["harm"][0], "after": ours["harm"][1],
                                  "base_before": theirs["harm"][0], "base_after": theirs["harm"][1]}
        return Trainability.model_validate(out)

    def _perplexity(self, ref: str, who: str) -> float:
        from harness.conditions.stability import perplexity

        def compute() -> float:
            with self.stages.loaded(ref) as (model, tok):
                return perplexity(model, tok, self.harmless.to_list(), template=self.suite.prompt,
                                  max_length=self.suite.max_length, label=f"stability: perplexity of {who}")

        inputs = {"model": ref, **self.loading, "rows": data_fingerprint(self.harmless)}
        return self.stages.cached_value(f"stability.perplexity.{who}", STABILITY, inputs, compute)

    def _lm_eval(self, ref: str, who: str) -> dict[str, Any] | None:
        from harness.conditions.lm_eval_adapter import lm_eval_scores

        protocol = self.suite.lm_eval
        if protocol is None:
            return None
        return self.stages.cached_value(f"stability.lm_eval.{who}", STABILITY,
                                        {"model": ref, **self.loading, "protocol": repr(protocol)},
                                        lambda: lm_eval_scores(self.stages.model_path(ref), protocol,
                                                               **self.stages.backend_options()))

    def _curve(self, ref: str, who: str, service: Path | None = None) -> dict[str, Any]:
        from harness.conditions.trainability import fine_tune_curve

        protocol, data = self.suite.trainability, self.data

        def compute() -> dict[str, Any]:
            with self.stages.loaded(ref) as (model, tok):
                if service is not None:  # training passes see it, scoring does not; the model is dropped after
                    from harness.training.service import attach

                    attach(model, service)
                curve = fine_tune_curve(model, tok, data.trainability_train, data.trainability_test,
                                        protocol=protocol, seed=self.spec.seed, label=f"trainability: {who}")
                return {"curve": curve, "harm": self.then_attack(model, tok) if protocol.then_attack else None}

        inputs = {"model": ref, **self.loading, "protocol": repr(protocol), "seed": self.spec.seed,
                  "data": [data_fingerprint(data.trainability_train), data_fingerprint(data.trainability_test)]}
        if service is not None:  # its artifact's folder: the defended model's store key names it
            inputs["service_adapter"] = service.parent.name
        if protocol.then_attack:
            inputs |= {"attack_data": data_fingerprint(self.attack_data.attack), "eval": self.spec.eval.model_dump(),
                       "judge": self.spec.judges[0].model_dump(), "prompts": data_fingerprint(self.harmful)}
            reads = registry.get("attack", protocol.then_attack).reads
            if reads:
                inputs["attack_reads"] = {r: data_fingerprint(getattr(self.attack_data, r)) for r in reads}
        return self.stages.cached_value(f"trainability.{who}", TRAINABILITY, inputs, compute)

    def then_attack(self, model: Any, tok: Any) -> list[float]:
        """Harmfulness of a (fine-tuned) model before and after the trainability protocol's attack."""
        from harness.plugins import StageContext
        from harness.specs import validate_config

        protocol = self.suite.trainability
        plugin = registry.get("attack", protocol.then_attack)
        defaults = self.suite.defaults_for("attack", plugin.name, plugin.config.model_fields)
        cfg = validate_config(f"trainability attack '{plugin.name}'", plugin.config,
                              {**defaults, **protocol.then_attack_params})
        before = self.harm_now(model, tok)
        with bar(f"trainability: attack {plugin.name}", None) as advance:  # its training loop gives the total
            ctx = StageContext(tokenizer=tok, data=self.attack_data, max_length=self.suite.max_length,
                               seed=self.spec.seed, template=self.suite.prompt, progress=advance)
            attacked = call_plugin("trainability_attack", plugin, model, cfg, ctx)
        return [before, self.harm_now(model if attacked is None else attacked, tok)]
