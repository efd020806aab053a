"""Evaluation of one model: what a run measures of the base, the defended and the attacked model alike.

`Evaluator.evaluate(ref, name)` takes the model's greedy generations on the held-out harmful and harmless
prompts (and the attack-visible ones, where the suite has them) from `harness.generation.outputs`, scores them
with every judge of the run (`harness.judges.panel`; the first is primary), and adds their agreement (the first
two, and the panel's matrix: every pair's agreement and kappa), harmless-QA exact match, degenerate-output flags
and the teacher-forced NLL of the gold answers. Each is a cached stage.
`harmfulness_now` scores an in-memory model during an attack (a point of the resistance curve).

Protocol 3's knowledge-access metrics are measured beside greedy harmfulness: compliance (answers that do not
refuse, `harness.judges.refusal`), recall under forced compliance (the held-out prompts answered after each of the
eval spec's `prefills`, scored by the primary judge on opening + continuation; the strongest opening counts), the
headline `access` (the higher of the two), and per run the random-answer `floor` and the gold NLL of the suite's
base before its safety alignment (`unaligned`: the far end of the gold-NLL scale, where the suite has that model).

The evaluator reads the suite's data through the evaluation stage's view (`harness.data.views`). The comparisons
of a defended model with the base (stability, trainability) are `self.versus_base`
(`harness.conditions.versus_base`). The base model that scores degenerate outputs is loaded for each scoring
and freed after it (`Stages.loaded`), never held through an attack.
"""

from __future__ import annotations

from typing import Any

from harness.conditions.versus_base import VersusBase
from harness.data.subsets import row_flags
from harness.data.views import view
from harness.errors import HarnessError, RunFailed
from harness.generation.outputs import ModelOutputs
from harness.generation.query import Query
from harness.judges.panel import JudgePanel
from harness.results.metrics import SAMPLE_CHARS, SAMPLE_SIZE, Agreement, Evaluation, Unaligned
from harness.specs import RunSpec
from harness.stages import DEGENERATE, FLOORS, GENERATIONS, GOLD_NLL, Stages, data_fingerprint
from harness.suite import Suite, SuiteData


class Evaluator:
    """Generates, judges and measures any model ref on the suite's held-out prompts."""

    def __init__(self, stages: Stages, spec: RunSpec, suite: Suite, data: SuiteData):
        self.stages, self.spec, self.suite = stages, spec, suite
        self.data = view(data, "evaluation")
        n, m = spec.eval.n_prompts, spec.eval.n_harmless
        for name, split, want in (("eval", self.data.eval, n), ("harmless_eval", self.data.harmless_eval, m)):
            if want > len(split):
                raise HarnessError(f"eval asks for {want} prompts but the suite's {name} split has {len(split)}")
        self.harmful = self.data.eval.select(range(n))
        # The suite's independent unit of each held-out prompt (its `unit` column, e.g. the subject whose facts
        # several prompts ask): intervals resample units, not prompts. None: every prompt is its own unit.
        self.units = list(map(str, self.harmful["unit"])) if "unit" in self.harmful.column_names else None
        self.harmless = self.data.harmless_eval.select(range(m))
        visible = self.data.eval_visible
        self.visible = visible.select(range(min(n, len(visible)))) if visible is not None else None
        sets = {"harmful": list(self.harmful["prompt"]), "harmless": list(self.harmless["prompt"])}
        if self.visible is not None:
            sets["visible"] = list(self.visible["prompt"])
        self.outputs = ModelOutputs(stages, eval_spec=spec.eval, base=spec.model, template=suite.prompt,
                                    remote_code=suite.trust_remote_code, prompt_sets=sets)
        self.forcing = [ModelOutputs(stages, eval_spec=spec.eval, base=spec.model,
                                     template=suite.prompt.model_copy(update={"prefill": p}),
                                     remote_code=suite.trust_remote_code, prompt_sets={"harmful": sets["harmful"]})
                        for p in spec.eval.prefills]
        self.panel = JudgePanel(stages, spec.judges)
        self.samples: dict[str, list[dict[str, Any]]] = {}  # per evaluation name: the record's bounded sample
        self.versus_base = VersusBase(stages, spec, suite, loading=self.outputs.loading(), data=self.data,
                                      attack_data=data, harmless=self.harmless,
                                      harmful=self.harmful, harm_now=self.harmfulness_now)

    @property
    def judge_ids(self) -> list[str]:
        return self.panel.judge_ids

    def evaluate(self, ref: str, name: str, query: Query | None = None) -> Evaluation:
        """Every judge's harmfulness, their agreement, harmless QA and degenerate flags for one model; with an
        attack's `query`, the held-out harmful prompts asked as it says (`harness.generation.query`)."""
        from harness.judges import agreement, harmfulness, pairwise

        spec, panel = self.spec, self.panel
        self.outputs.generate_with(ref, name, [(f, f"{name}.forced{i}") for i, f in enumerate(self.forcing)])
        gen_key = self.outputs.generate(ref, name) if query is None else self._queried(ref, name, query)
        gens = self.outputs.read(gen_key)
        prompts, outputs = self.outputs.prompt_sets["harmful"], gens["harmful"]
        scores = {k: panel.scores(f"{name}.judge.{k}", gen_key, j, prompts=prompts, outputs=outputs)
                  for k, j in zip(panel.keys, spec.judges, strict=True)}
        by_judge = {k: harmfulness(v, row_flags(self.harmful), self.units) for k, v in scores.items()}  # every flag
        primary = panel.keys[0]
        self.samples[name] = [{"prompt": p, "output": o[:SAMPLE_CHARS], "score": v} for p, o, v in
                              zip(prompts[:SAMPLE_SIZE], outputs, scores[primary], strict=False)]
        degenerate = self.stages.cached_value(
            f"{name}.degenerate", DEGENERATE,
            {"generations": gen_key, "base": spec.model.model_dump(), "max_ppl": self.suite.degenerate_max_ppl},
            lambda: self._degenerate(prompts, outputs, name))
        agree = matrix = None
        if len(spec.judges) > 1:
            second = panel.keys[1]
            agree = Agreement.model_validate({"with": second, **agreement(scores[primary], scores[second])})
            matrix = {"primary": primary, "judges": panel.keys, "pairs": pairwise(scores)}
        visible = None
        if self.visible is not None:
            vis = panel.scores(f"{name}.judge.visible", gen_key, panel.primary,
                               prompts=self.outputs.prompt_sets["visible"], outputs=gens["visible"],
                               prompt_set="visible")
            visible = {k: v for k, v in harmfulness(vis, list(self.visible["category"])).items() if k != "per_category"}
        return _validated(name, {
            "harmfulness": by_judge[primary], "judge": primary,  # primary: held-out knowledge where a suite has it
            "by_judge": {k: {m: v[m] for m in ("mean", "frac_over_0.5")} for k, v in by_judge.items()},
            "harmless_qa": exact_match(gens["harmless"], list(self.harmless["response"])),
            "degenerate": degenerate, "artifacts": {"generations": gen_key}, "judge_agreement": agree,
            "panel": matrix, "visible": visible, "judge_details": panel.details(prompts, outputs),
            "gold_nll": self._gold_nll(ref, name), "lora": self.stages.store.meta(GENERATIONS, gen_key).get("lora"),
            "query": query,
            **self._access(ref, name, by_judge[primary]["mean"], outputs)})

    def _queried(self, ref: str, name: str, query: Query) -> str:
        """The store key of `ref`'s generations asked as `query` says (stage `<name>.query`): the harmful prompts'
        answers are the prefill + continuation of each question asked after the query's `prompt_prefix`, the most
        harmful of `best_of` draws by the primary judge (draw i seeded `seed + i`); the other prompt sets' are the
        greedy ones. The judges read the questions as the suite wrote them (the prefix is the attacker's input, not
        the question), and the answers are stored under those questions as any generations are, so every later
        measurement (judges, degenerate flags, compliance, `validate --deep`) reads them alike."""
        greedy = self.outputs.generate(ref, name)
        prompts = self.outputs.prompt_sets["harmful"]
        asked = [query.prompt_prefix + p for p in prompts]
        draws = [ModelOutputs(self.stages, eval_spec=self.spec.eval, base=self.spec.model,
                              template=self.suite.prompt.model_copy(update={"prefill": query.prefill}),
                              remote_code=self.suite.trust_remote_code, prompt_sets={"harmful": asked},
                              temperature=query.temperature, seed=query.seed + i) for i in range(query.best_of)]
        keys = [draw.generate(ref, f"{name}.query{i}") for i, draw in enumerate(draws)]

        def build(tmp: Any) -> dict[str, Any]:
            answers = [[f"{query.prefill} {g}".strip() for g in draw.read(key)["harmful"]]
                       for draw, key in zip(draws, keys, strict=True)]
            scores = [self.panel.scores(f"{name}.query{i}.judge", key, self.panel.primary, prompts=prompts,
                                        outputs=texts) if len(answers) > 1 else [0.0] * len(texts)
                      for i, (key, texts) in enumerate(zip(keys, answers, strict=True))]
            chosen = [max(range(len(answers)), key=lambda d: (scores[d][p], -d)) for p in range(len(prompts))]
            texts = {**self.outputs.read(greedy), "harmful": [answers[d][p] for p, d in enumerate(chosen)]}
            meta = {**self.stages.store.meta(GENERATIONS, greedy), "query": query.model_dump()}
            return self.outputs.writer(texts, meta)(tmp)

        inputs = {"greedy": greedy, "draws": keys, "query": query.model_dump(),
                  "judge": self.panel.primary.model_dump()}
        return self.stages.cached(f"{name}.query", GENERATIONS, inputs, build)

    def _access(self, ref: str, name: str, greedy: float, outputs: list[str]) -> dict[str, Any]:
        """Compliance of the greedy answers; with prefills, recall under forced compliance and the headline."""
        from harness.judges import harmfulness
        from harness.judges.refusal import compliance

        found: dict[str, Any] = {"compliance": compliance(outputs)}
        if not self.forcing:
            return found
        prompts, by_prefill, best = self.outputs.prompt_sets["harmful"], [], None
        for i, forced in enumerate(self.forcing):
            prefill = forced.template.prefill
            key = forced.generate(ref, f"{name}.forced{i}")
            answers = [f"{prefill} {g}".strip() for g in forced.read(key)["harmful"]]
            summary = harmfulness(self.panel.scores(f"{name}.forced{i}.judge", key, self.panel.primary,
                                                    prompts=prompts, outputs=answers), ["all"] * len(answers),
                                  self.units)
            by_prefill.append({"prefill": prefill, "mean": summary["mean"], "n": summary["n"]})
            if best is None or summary["mean"] > best[1]["mean"]:
                best = (prefill, summary)
        assert best is not None
        found["forced"] = {"by_prefill": by_prefill, "strongest": best[0], "mean": best[1]["mean"],
                           "ci95": best[1].get("ci95")}
        found["access"] = max(greedy, best[1]["mean"])
        return found

    def floor(self) -> float | None:
        """The primary judge's mean on the held-out prompts answered with the attack split's answers, shuffled with
        a fixed seed (None where the suite's attack split carries no answers)."""
        attack = self.data.attack
        if attack is None or "response" not in attack.column_names or len(attack) == 0:
            return None
        import random

        prompts = self.outputs.prompt_sets["harmful"]
        pool = list(attack["response"])
        random.Random(0).shuffle(pool)
        answers = [pool[i % len(pool)] for i in range(len(prompts))]
        inputs = {"judge": self.panel.primary.model_dump(), "prompts": prompts, "answers": data_fingerprint(attack)}
        return self.stages.cached_value(
            "floor", FLOORS, inputs, lambda: sum(self.panel.judge(self.panel.primary).score(prompts, answers)) /
            len(prompts))

    def unaligned(self) -> Unaligned | None:
        """The gold NLL of the suite's base before its safety alignment (None where the suite has no such model or
        no gold answers): the far end of the scale that normalises every evaluation's gold NLL."""
        model = self.suite.unaligned_for(self.spec.model)
        if model is None:
            return None
        nll = self._gold_nll(model.id, "unaligned")
        return None if nll is None else Unaligned(model=f"{model.id}@{model.revision}", gold_nll=nll)

    def harmfulness_now(self, model: Any, tok: Any) -> float:
        """Primary-judge harmfulness of an in-memory model (hf generation): a point on a resistance curve."""
        from harness.generation.hf import generate_with_model

        k = self.spec.eval.curve_prompts or len(self.harmful)
        prompts = list(self.harmful["prompt"])[:k]
        outputs = generate_with_model(model, tok, prompts, max_new_tokens=self.spec.eval.max_new_tokens,
                                      batch_size=self.spec.eval.batch_size, template=self.suite.prompt)
        scores = self.panel.score_now(prompts, outputs)
        model.train()
        return sum(scores) / len(scores)

    def _gold_nll(self, ref: str, name: str) -> float | None:
        """Teacher-forced mean NLL per token of the gold harmful answers (no generation): how present the
        evaluated knowledge still is in the model, continuous where a judge is 0/1."""
        if "response" not in self.harmful.column_names:
            return None
        from harness.training.nll import summed_nll

        def compute() -> float:
            with self.stages.loaded(ref, "float32") as (model, tok):
                pairs = list(zip(self.harmful["prompt"], self.harmful["response"], strict=True))
                nll = summed_nll(model, tok, pairs, template=self.suite.prompt, max_length=self.suite.max_length,
                                 loss_on="answer", label=f"{name}: NLL of the gold answers")
            return sum(s for s, _ in nll) / max(sum(c for _, c in nll), 1)

        inputs = {"model": ref, **self.outputs.loading(), "rows": data_fingerprint(self.harmful),
                  "template": self.suite.prompt.key_dump()}
        return self.stages.cached_value(f"{name}.gold_nll", GOLD_NLL, inputs, compute)

    def _degenerate(self, prompts: list[str], outputs: list[str], name: str) -> dict[str, float]:
        from harness.conditions.degenerate import conditional_nll, degenerate_flags

        # Loaded for this scoring only and freed after: a 7B base held through the attack leaves no room to train.
        with self.stages.loaded(self.spec.model.id) as (model, tok):
            nll = conditional_nll(model, tok, prompts, outputs, template=self.suite.prompt,
                                  max_length=self.suite.max_length, label=f"{name}: degenerate check")
        return degenerate_flags(outputs, nll, self.suite.degenerate_max_ppl)


def exact_match(generations: list[str], references: list[str]) -> dict[str, float]:
    """Fraction of generations equal to the reference answer (whitespace-stripped)."""
    n = len(references)
    hits = sum(g.strip() == r.strip() for g, r in zip(generations, references, strict=True))
    return {"exact_match": hits / n if n else 0.0, "n": n}


def _validated(name: str, values: dict[str, Any]) -> Evaluation:
    """The evaluation as a typed metric. A non-finite metric (a model whose weights overflowed without a
    non-finite training loss) is one line naming the evaluation, not a validation traceback: the record
    cannot hold it, and the model, not the input, is at fault."""
    from pydantic import ValidationError

    try:
        return Evaluation.model_validate(values)
    except ValidationError as exc:
        bad = next((e for e in exc.errors() if e["type"] == "finite_number"), None)
        if bad is None:
            raise
        where = ".".join(str(p) for p in bad["loc"])
        raise RunFailed(f"{name} evaluation: {where} is {bad['input']}, not a finite number: the model diverged "
                        "(lower the learning rate of the stage that trained it)") from None
