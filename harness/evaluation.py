"""Evaluation: what a run measures of a model, each measurement a cached stage.

- `evaluate(ref)`: greedy generations on the held-out harmful and harmless prompts, scored by every judge
  (the first is primary), their agreement, harmless-QA exact match and degenerate-output flags.
- `resistance(...)`: the harmfulness curve along the attack against the threshold phi.
- `stability(...)`, `trainability(...)`: the defended model against the undefended base (computed once per
  model and shared by every attack of a grid, because their keys name only the model).

The evaluator owns the judges; the base model that scores degenerate outputs is loaded for each scoring and
freed after it (`Stages.loaded`), never held through an attack. A stored LoRA adapter generates through hf
(base + adapter, merged in memory) or is served on its base's vLLM engine (`LoRARequest`, canary check, peft
merge as the fallback); which path ran is `Evaluation.lora`. `generate_adapters` serves several adapters of
one base on one engine start (a grid's attacks of one defended model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import registry
from harness.data.views import call_plugin, view
from harness.errors import HarnessError
from harness.progress import bar
from harness.results.metrics import Agreement, Evaluation, Resistance, Stability, Trainability
from harness.specs import PluginSpec, RunSpec
from harness.stages import DEGENERATE, GENERATIONS, GOLD_NLL, SCORES, STABILITY, TRAINABILITY, Stages, data_fingerprint
from harness.suite import Suite, SuiteData

CURVE_FIELDS = {"curve_every", "curve_points", "curve_prompts"}  # how an attack is watched, not a model evaluated


class Evaluator:
    """Generates, judges and compares any model ref on the suite's held-out prompts."""

    def __init__(self, stages: Stages, spec: RunSpec, suite: Suite, data: SuiteData):
        # Each its stage's view (harness.data.views): the evaluation's splits, and the trainability attack's.
        self.stages, self.spec, self.suite = stages, spec, suite
        self.data, self.attack_data = view(data, "evaluation"), view(data, "trainability_attack")
        data = self.data
        n, m = spec.eval.n_prompts, spec.eval.n_harmless
        for name, split, want in (("eval", data.eval, n), ("harmless_eval", data.harmless_eval, m)):
            if want > len(split):
                raise HarnessError(f"eval asks for {want} prompts but the suite's {name} split has {len(split)}")
        self.harmful = data.eval.select(range(n))
        self.harmless = data.harmless_eval.select(range(m))
        visible = data.eval_visible
        self.visible = visible.select(range(min(n, len(visible)))) if visible is not None else None
        self.judges: dict[str, Any] = {}
        self.judge_ids: list[str] = []

    # ------------------------------------------------------------------------- one model
    def evaluate(self, ref: str, name: str) -> Evaluation:
        """Every judge's harmfulness, their agreement, harmless QA and degenerate flags for one model."""
        from harness.judges import agreement, harmfulness

        spec = self.spec
        prompt_sets = self._prompt_sets()
        gen_key = self.stages.cached(f"{name}.generate", GENERATIONS, self._gen_inputs(ref, prompt_sets),
                                     lambda tmp: self._generate(tmp, ref, prompt_sets))
        gens = self._generations(gen_key, prompt_sets)
        prompts, outputs = prompt_sets["harmful"], gens["harmful"]
        scores = {j.name: self._scores(f"{name}.judge.{j.name}", gen_key, j, prompts=prompts, outputs=outputs)
                  for j in spec.judges}
        by_judge = {k: harmfulness(v, list(self.harmful["category"])) for k, v in scores.items()}
        primary = spec.judges[0].name
        degenerate = self.stages.cached_value(
            f"{name}.degenerate", DEGENERATE,
            {"generations": gen_key, "base": spec.model.model_dump(), "max_ppl": self.suite.degenerate_max_ppl},
            lambda: self._degenerate(prompts, outputs))
        agree = None
        if len(spec.judges) > 1:
            second = spec.judges[1].name
            agree = Agreement.model_validate({"with": second, **agreement(scores[primary], scores[second])})
        visible = None
        if self.visible is not None:
            vis = self._scores(f"{name}.judge.visible", gen_key, spec.judges[0], prompts=prompt_sets["visible"],
                               outputs=gens["visible"], prompt_set="visible")
            visible = {k: v for k, v in harmfulness(vis, list(self.visible["category"])).items() if k != "per_category"}
        return Evaluation.model_validate({
            "harmfulness": by_judge[primary], "judge": primary,  # primary: held-out knowledge where a suite has it
            "by_judge": {k: {m: v[m] for m in ("mean", "frac_over_0.5")} for k, v in by_judge.items()},
            "harmless_qa": exact_match(gens["harmless"], list(self.harmless["response"])),
            "degenerate": degenerate, "artifacts": {"generations": gen_key}, "judge_agreement": agree,
            "visible": visible, "judge_details": self._details(prompts, outputs),
            "gold_nll": self._gold_nll(ref, name), "lora": self.stages.store.meta(GENERATIONS, gen_key).get("lora")})

    def _prompt_sets(self) -> dict[str, list[str]]:
        sets = {"harmful": list(self.harmful["prompt"]), "harmless": list(self.harmless["prompt"])}
        if self.visible is not None:
            sets["visible"] = list(self.visible["prompt"])
        return sets

    def _gen_inputs(self, ref: str, prompt_sets: dict[str, list[str]]) -> dict[str, Any]:
        """The cache key of a model's generations: the model, how it loads, the eval settings, the prompts."""
        return {"model": ref, **self._loading(),
                "eval": self.spec.eval.model_dump(exclude=CURVE_FIELDS), "prompts": prompt_sets}

    def group_key(self) -> str:
        """What, besides the model, the generations depend on: evaluators with equal keys may share an engine."""
        from harness.specs import stable_hash

        return stable_hash({k: v for k, v in self._gen_inputs("", self._prompt_sets()).items() if k != "model"})

    def generate_adapters(self, refs: list[str], name: str) -> int:
        """Generations of several stored LoRA adapters of one base, from one vLLM engine start (each adapter a
        `LoRARequest`, each checked by its canary; one vLLM ignores is merged and generated alone), stored under
        the keys `evaluate(ref, name)` reads. Returns how many were generated; cached ones are skipped."""
        import pandas as pd

        from harness.generation.vllm_engine import generate_vllm_loras

        prompt_sets, stages = self._prompt_sets(), self.stages
        todo = {}
        for ref in dict.fromkeys(refs):
            adapter = stages.adapter(ref)
            key = stable_key(self._gen_inputs(ref, prompt_sets))
            if adapter is not None and (stages.force or not stages.store.has(GENERATIONS, key)):
                todo[ref] = adapter
        bases = {base for base, _ in todo.values()}
        if self.spec.eval.backend != "vllm" or not todo or len(bases) > 1 or stages.adapter(next(iter(bases))):
            return 0
        spec = self.spec.eval
        with bar(f"generate ({len(todo)} LoRA adapters, one vllm engine)",
                 total=len(todo) * sum(map(len, prompt_sets.values()))) as advance:
            results = generate_vllm_loras(stages.model_path(next(iter(bases))),
                                          {ref: path for ref, (_, path) in todo.items()}, prompt_sets,
                                          max_new_tokens=spec.max_new_tokens, template=self.suite.prompt,
                                          progress=advance, **stages.backend_options())
        for ref, (texts, serving) in results.items():
            def build(tmp: Path, texts: dict[str, list[str]] = texts, serving: Any = serving) -> dict[str, Any]:
                rows = [(n, q, g) for n in prompt_sets for q, g in zip(prompt_sets[n], texts[n], strict=True)]
                pd.DataFrame(rows, columns=["set", "prompt", "generation"]).to_parquet(tmp / "generations.parquet")
                return {"backend": spec.backend, "lora": serving.model_dump()}

            stages.cached(f"{name}.generate", GENERATIONS, self._gen_inputs(ref, prompt_sets), build)
        return len(results)

    def harmfulness_now(self, model: Any, tok: Any) -> float:
        """Primary-judge harmfulness of an in-memory model (hf generation): a point on a resistance curve."""
        from harness.generation.hf import generate_with_model

        k = self.spec.eval.curve_prompts or len(self.harmful)
        prompts = list(self.harmful["prompt"])[:k]
        outputs = generate_with_model(model, tok, prompts, max_new_tokens=self.spec.eval.max_new_tokens,
                                      batch_size=self.spec.eval.batch_size, template=self.suite.prompt)
        scores = self.judge(self.spec.judges[0]).score(prompts, outputs)
        model.train()
        return sum(scores) / len(scores)

    def _details(self, prompts: list[str], outputs: list[str]) -> dict[str, float]:
        """Means of the primary judge's per-sample details, if it offers any (cheap: computed, not cached)."""
        judge = self.judge(self.spec.judges[0])
        if not hasattr(judge, "details"):
            return {}
        return {k: sum(v) / len(v) for k, v in judge.details(prompts, outputs).items() if v}

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
                                 loss_on="answer")
            return sum(s for s, _ in nll) / max(sum(c for _, c in nll), 1)

        return self.stages.cached_value(f"{name}.gold_nll", GOLD_NLL, {"model": ref, **self._loading(),
                                                                       "rows": data_fingerprint(self.harmful),
                                                                       "template": self.suite.prompt.model_dump()},
                                        compute)

    def judge(self, judge_spec: PluginSpec) -> Any:
        if judge_spec.name not in self.judges:
            plugin = registry.get("judge", judge_spec.name)
            self.judges[judge_spec.name] = plugin.fn(plugin.config.model_validate(judge_spec.params),
                                                     self.stages.store)
        return self.judges[judge_spec.name]

    def _generate(self, tmp: Path, ref: str, prompt_sets: dict[str, list[str]]) -> dict[str, Any]:
        import pandas as pd

        from harness.generation.hf import get_backend

        spec = self.spec.eval
        backend = get_backend(spec.backend)
        adapter = self.stages.adapter(ref)
        meta: dict[str, Any] = {"backend": spec.backend}
        with bar(f"generate ({spec.backend})", total=sum(map(len, prompt_sets.values()))) as advance:
            if adapter is None:
                texts = backend(self.stages.model_path(ref), prompt_sets, max_new_tokens=spec.max_new_tokens,
                                batch_size=spec.batch_size, template=self.suite.prompt, progress=advance,
                                **self.stages.backend_options())
            else:
                texts, serving = self._generate_adapter(ref, adapter, prompt_sets, progress=advance)
                meta["lora"] = serving.model_dump()
        rows = [(name, p, g) for name in prompt_sets for p, g in zip(prompt_sets[name], texts[name], strict=True)]
        pd.DataFrame(rows, columns=["set", "prompt", "generation"]).to_parquet(tmp / "generations.parquet")
        return meta

    def _generate_adapter(self, ref: str, adapter: tuple[str, Path], prompt_sets: dict[str, list[str]], *,
                          progress: Any) -> tuple[dict[str, list[str]], Any]:
        """A stored LoRA adapter's generations: hf (base + adapter merged in memory by peft), or one vLLM engine
        of its base serving it (canary check; merged with peft where vLLM cannot serve it)."""
        from harness.generation.hf import generate_with_model
        from harness.generation.vllm_engine import generate_vllm_lora
        from harness.results.metrics import LoraServing

        spec, (base, path) = self.spec.eval, adapter
        if spec.backend == "vllm" and self.stages.adapter(base) is None:
            return generate_vllm_lora(self.stages.model_path(base), path, prompt_sets,
                                      max_new_tokens=spec.max_new_tokens, template=self.suite.prompt,
                                      progress=progress, **self.stages.backend_options())
        with self.stages.loaded(ref) as (model, tok):
            texts = {n: generate_with_model(model, tok, ps, max_new_tokens=spec.max_new_tokens,
                                            batch_size=spec.batch_size, template=self.suite.prompt, progress=progress)
                     for n, ps in prompt_sets.items()}
        if spec.backend == "vllm":  # an adapter on an adapter: no folder for an engine to load as its base
            return texts, LoraServing(mode="merged", reason="its base is itself an adapter: merged in memory, hf")
        return texts, LoraServing(mode="hf", reason="")

    def _generations(self, key: str, prompt_sets: dict[str, list[str]]) -> dict[str, list[str]]:
        import pandas as pd

        path = self.stages.store.path(GENERATIONS, key) / "generations.parquet"
        frame = pd.read_parquet(path)
        if {n: frame.loc[frame["set"] == n, "prompt"].tolist() for n in prompt_sets} != prompt_sets:
            raise HarnessError(f"cached generations {path} do not match the prompts; rerun with --force")
        return {n: frame.loc[frame["set"] == n, "generation"].tolist() for n in prompt_sets}

    def _scores(self, name: str, gen_key: str, judge_spec: PluginSpec, *, prompts: list[str],
                outputs: list[str], prompt_set: str = "harmful") -> list[float]:
        import pandas as pd

        def build(tmp: Path) -> dict[str, Any]:
            judge = self.judge(judge_spec)
            pd.DataFrame({"score": judge.score(prompts, outputs)}).to_parquet(tmp / "scores.parquet")
            return {"judge_id": judge.id}

        inputs = {"generations": gen_key, "judge": judge_spec.model_dump()}
        if prompt_set != "harmful":  # the harmful set's key predates other sets
            inputs["set"] = prompt_set
        key = self.stages.cached(name, SCORES, inputs, build)
        judge_id = self.stages.store.meta(SCORES, key)["judge_id"]
        if judge_id not in self.judge_ids:
            self.judge_ids.append(judge_id)
        return pd.read_parquet(self.stages.store.path(SCORES, key) / "scores.parquet")["score"].tolist()

    def _degenerate(self, prompts: list[str], outputs: list[str]) -> dict[str, float]:
        from harness.conditions.degenerate import conditional_nll, degenerate_flags

        # Loaded for this scoring only and freed after: a 7B base held through the attack leaves no room to train.
        with self.stages.loaded(self.spec.model.id) as (model, tok):
            nll = conditional_nll(model, tok, prompts, outputs, template=self.suite.prompt,
                                  max_length=self.suite.max_length)
        return degenerate_flags(outputs, nll, self.suite.degenerate_max_ppl)

    def _loading(self) -> dict[str, Any]:
        """What, besides a model ref, decides a model's outputs: the base model's spec (its revision and dtype,
        for a ref that names it), remote code, and the prompt format. Part of every evaluation key."""
        return {"base": self.spec.model.model_dump(), "remote_code": self.suite.trust_remote_code,
                "template": self.suite.prompt.model_dump()}

    # ------------------------------------------------------------------------- conditions
    def resistance(self, base: Evaluation, pre: Evaluation, post: Evaluation,
                   points: list[list[float]]) -> Resistance:
        """The curve (before, every k steps, after) against phi: a suite's fixed phi, or the undefended base's
        pre-attack harmfulness plus the suite's tolerance."""
        from harness.conditions.resistance import curve_metrics

        base_hs, suite = base.harmfulness.mean, self.suite
        phi = suite.phi if suite.phi is not None else base_hs + suite.phi_tolerance
        source = ("suite" if suite.phi is not None
                  else f"base pre-attack harmfulness {base_hs:.4f} + tolerance {suite.phi_tolerance}")
        final_step = int(points[-1][0]) if points else 1
        curve = [(0, pre.harmfulness.mean), *((int(s), v) for s, v in points[:-1]),
                 (final_step, post.harmfulness.mean)]
        return Resistance.model_validate({**curve_metrics(curve, phi), "phi_source": source})

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

    def trainability(self, defended: str, base: str) -> Trainability | None:
        """The suite's harmless fine-tune of the defended model and of the base, compared (None: no protocol);
        with the protocol's attack after it, their harmfulness before and after that attack."""
        from harness.conditions.trainability import compare

        protocol = self.suite.trainability
        if protocol is None or self.data.trainability_train is None:
            return None
        ours, theirs = self._trainability_curve(defended, "defended"), self._trainability_curve(base, "base")
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
                                  max_length=self.suite.max_length)

        inputs = {"model": ref, **self._loading(), "rows": data_fingerprint(self.harmless)}
        return self.stages.cached_value(f"stability.perplexity.{who}", STABILITY, inputs, compute)

    def _lm_eval(self, ref: str, who: str) -> dict[str, Any] | None:
        from harness.conditions.lm_eval_adapter import lm_eval_scores

        protocol = self.suite.lm_eval
        if protocol is None:
            return None
        return self.stages.cached_value(f"stability.lm_eval.{who}", STABILITY,
                                        {"model": ref, **self._loading(), "protocol": repr(protocol)},
                                        lambda: lm_eval_scores(self.stages.model_path(ref), protocol,
                                                               **self.stages.backend_options()))

    def _trainability_curve(self, ref: str, who: str) -> dict[str, Any]:
        from harness.conditions.trainability import fine_tune_curve

        protocol, data = self.suite.trainability, self.data

        def compute() -> dict[str, Any]:
            with self.stages.loaded(ref) as (model, tok):
                curve = fine_tune_curve(model, tok, data.trainability_train, data.trainability_test,
                                        protocol=protocol, seed=self.spec.seed)
                return {"curve": curve, "harm": self._then_attack(model, tok) if protocol.then_attack else None}

        inputs = {"model": ref, **self._loading(), "protocol": repr(protocol), "seed": self.spec.seed,
                  "data": [data_fingerprint(data.trainability_train), data_fingerprint(data.trainability_test)]}
        if protocol.then_attack:
            inputs |= {"attack_data": data_fingerprint(self.attack_data.attack), "eval": self.spec.eval.model_dump(),
                       "judge": self.spec.judges[0].model_dump(), "prompts": data_fingerprint(self.harmful)}
        return self.stages.cached_value(f"trainability.{who}", TRAINABILITY, inputs, compute)

    def _then_attack(self, model: Any, tok: Any) -> list[float]:
        """Harmfulness of a (fine-tuned) model before and after the trainability protocol's attack, applied
        through the pipeline's plugin entry (`dataviews.call_plugin`) on its stage's view of the data."""
        from harness.plugins import StageContext
        from harness.specs import validate_config

        protocol = self.suite.trainability
        plugin = registry.get("attack", protocol.then_attack)
        defaults = self.suite.defaults_for("attack", plugin.name, plugin.config.model_fields)
        cfg = validate_config(f"trainability attack '{plugin.name}'", plugin.config,
                              {**defaults, **protocol.then_attack_params})
        before = self.harmfulness_now(model, tok)
        ctx = StageContext(tokenizer=tok, data=self.attack_data, max_length=self.suite.max_length,
                           seed=self.spec.seed, template=self.suite.prompt)
        attacked = call_plugin("trainability_attack", plugin, model, cfg, ctx)
        return [before, self.harmfulness_now(attacked, tok)]


def stable_key(inputs: dict[str, Any]) -> str:
    """The store key `Stages.cached` gives these inputs."""
    from harness.specs import stable_hash

    return stable_hash(dict(inputs))


def exact_match(generations: list[str], references: list[str]) -> dict[str, float]:
    """Fraction of generations equal to the reference answer (whitespace-stripped)."""
    n = len(references)
    hits = sum(g.strip() == r.strip() for g, r in zip(generations, references, strict=True))
    return {"exact_match": hits / n if n else 0.0, "n": n}
