"""The cached stages of a run. Each is a pure function of its inputs, stored in the artifact store under
the hash of those inputs. Models are named by *refs* ('store:models/<key>' or the suite's base id), so a
defence that changes nothing shares every cached evaluation with the base model.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import registry
from harness.errors import HarnessError
from harness.plugins import StageContext
from harness.progress import bar
from harness.records import StageInfo
from harness.specs import EvalSpec, PluginSpec, RunSpec, stable_hash
from harness.store import Store, atomic_write_text, resolve_ref
from harness.suite import Suite, SuiteData

MODELS, GENERATIONS, SCORES = "models", "generations", "scores"
DEGENERATE, STABILITY, TRAINABILITY = "degenerate", "stability", "trainability"


@dataclasses.dataclass
class Stages:
    """Times and cache hits of each stage, for the record."""

    info: dict[str, StageInfo] = dataclasses.field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, key: str = "", cached: bool | Callable[[], bool] = False) -> Iterator[None]:
        """Time a stage; `cached` may be a function, asked when the stage ends (e.g. "did it write nothing?")."""
        start = time.perf_counter()
        yield
        hit = cached() if callable(cached) else cached
        self.info[name] = StageInfo(seconds=round(time.perf_counter() - start, 3), cached=hit, key=key)


def fingerprint(dataset: Any) -> str:
    """Content hash of a dataset's rows (order included); None hashes as None."""
    if dataset is None:
        return "none"
    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    return stable_hash(rows)


def model_ref(store: Store, key: str) -> str:
    """The ref of a stored model, following the alias a defence that changed nothing leaves behind."""
    return store.meta(MODELS, key).get("alias") or f"store:{MODELS}/{key}"


def model_path(store: Store, ref: str) -> Path:
    return Path(resolve_ref(ref, store))


def cached_json(store: Store, kind: str, key: str, compute: Callable[[], Any], force: bool) -> Any:
    """`compute()` once per key; its JSON result is stored as an artifact."""
    with store.compute_once(kind, key, force=force) as need:
        if need:
            value = compute()
            with store.writing(kind, key, {"kind": kind}, force=force) as tmp:
                atomic_write_text(tmp / "value.json", json.dumps(value))
    return json.loads((store.path(kind, key) / "value.json").read_text())


# ----------------------------------------------------------------------------- defend / attack
def train_stage(store: Store, key: str, meta: dict[str, Any], source_ref: str, fn: Callable[..., Any], cfg: Any,
                ctx: StageContext, label: str, force: bool, on_step: Callable[[int, Any, Any], None] | None = None,
                extra: dict[str, Any] | None = None) -> None:
    """Load `source_ref`, apply a defence or attack `fn`, and store the result under `key`.

    A plugin that returns None changed nothing: the artifact is an alias of its source, no copy is saved.
    `on_step(step, model, tokenizer)` is handed to the plugin as its training callback; `extra` (filled by
    it, e.g. a resistance curve) is saved beside the model.
    """
    from harness.models import load_causal_lm, save_checkpoint

    model, tok = load_causal_lm(model_path(store, source_ref))
    callback = (lambda step, m: on_step(step, m, tok)) if on_step else None
    with bar(label, total=None) as advance:
        result = fn(model, cfg, dataclasses.replace(ctx, tokenizer=tok, progress=advance, callback=callback))
    with store.writing(MODELS, key, meta, force=force) as tmp:
        if result is None:
            meta["alias"] = source_ref
        else:
            save_checkpoint(result, tok, tmp)
        atomic_write_text(tmp / "extra.json", json.dumps(extra or {}))


def stored_extra(store: Store, key: str) -> dict[str, Any]:
    return json.loads((store.path(MODELS, key) / "extra.json").read_text())


# ----------------------------------------------------------------------------- evaluation
def generate_stage(store: Store, key: str, path: Path, prompt_sets: dict[str, list[str]], spec: EvalSpec,
                   template: str, force: bool, compute: bool) -> dict[str, list[str]]:
    """Greedy generations for every prompt set of a stage, from one backend call (when `compute`: the caller
    holds `store.compute_once`); cached as parquet."""
    import pandas as pd

    from harness.generate import get_backend

    if compute:
        backend = get_backend(spec.backend)
        with bar(f"generate ({spec.backend})", total=sum(map(len, prompt_sets.values()))) as advance:
            texts = backend(path, prompt_sets, max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size,
                            template=template, progress=advance)
        rows = [(name, p, g) for name in prompt_sets for p, g in zip(prompt_sets[name], texts[name], strict=True)]
        with store.writing(GENERATIONS, key, {"backend": spec.backend, "sets": list(prompt_sets)}, force=force) as tmp:
            pd.DataFrame(rows, columns=["set", "prompt", "generation"]).to_parquet(tmp / "generations.parquet")
    frame = pd.read_parquet(store.path(GENERATIONS, key) / "generations.parquet")
    cached = {name: frame.loc[frame["set"] == name, "prompt"].tolist() for name in prompt_sets}
    if cached != prompt_sets:
        raise HarnessError(f"cached generations {store.path(GENERATIONS, key)} do not match the prompts; "
                           "rerun with --force")
    return {name: frame.loc[frame["set"] == name, "generation"].tolist() for name in prompt_sets}


def exact_match(generations: list[str], references: list[str]) -> dict[str, float]:
    """Fraction of generations equal to the reference answer (whitespace-stripped)."""
    n = len(references)
    hits = sum(g.strip() == r.strip() for g, r in zip(generations, references, strict=True))
    return {"exact_match": hits / n if n else 0.0, "n": n}


class Evaluator:
    """Generates, judges and checks outputs of any model ref on the suite's eval prompts; owns the judges and
    (lazily) the base model that scores degenerate outputs."""

    def __init__(self, store: Store, spec: RunSpec, suite: Suite, data: SuiteData, stages: Stages, force: bool):
        self.store, self.spec, self.suite, self.data, self.stages, self.force = store, spec, suite, data, stages, force
        n, m = spec.eval.n_prompts, spec.eval.n_harmless
        self.harmful = data.eval.select(range(min(n, len(data.eval))))
        self.harmless = data.harmless_eval.select(range(min(m, len(data.harmless_eval))))
        self.judges: dict[str, Any] = {}
        self.judge_ids: list[str] = []
        self._base: tuple[Any, Any] | None = None

    def judge(self, judge_spec: PluginSpec) -> Any:
        if judge_spec.name not in self.judges:
            plugin = registry.get("judge", judge_spec.name)
            self.judges[judge_spec.name] = plugin.fn(plugin.config.model_validate(judge_spec.params), self.store)
        return self.judges[judge_spec.name]

    def base_model(self) -> tuple[Any, Any]:
        from harness.models import load_causal_lm

        if self._base is None:
            self._base = load_causal_lm(model_path(self.store, self.spec.model.id))
        return self._base

    def scores(self, gen_key: str, judge_spec: PluginSpec, prompts: list[str], outputs: list[str],
               name: str) -> list[float]:
        import pandas as pd

        key = stable_hash({"generations": gen_key, "judge": judge_spec.model_dump()})
        with self.store.compute_once(SCORES, key, force=self.force) as need, \
                self.stages.stage(f"{name}.judge.{judge_spec.name}", key, cached=not need):
            if need:
                judge = self.judge(judge_spec)
                values = judge.score(prompts, outputs)
                with self.store.writing(SCORES, key, {"judge": judge_spec.model_dump(), "judge_id": judge.id},
                                        force=self.force) as tmp:
                    pd.DataFrame({"score": values}).to_parquet(tmp / "scores.parquet")
        judge_id = self.store.meta(SCORES, key)["judge_id"]
        if judge_id not in self.judge_ids:
            self.judge_ids.append(judge_id)
        return pd.read_parquet(self.store.path(SCORES, key) / "scores.parquet")["score"].tolist()

    def evaluate(self, ref: str, name: str) -> dict[str, Any]:
        """Harmfulness by every judge (the first is primary), their agreement, harmless-QA exact match and
        degenerate-output flags for one model."""
        from harness.conditions.degenerate import conditional_nll, degenerate_flags
        from harness.judges import agreement, harmfulness

        spec = self.spec
        prompt_sets = {"harmful": list(self.harmful["prompt"]), "harmless": list(self.harmless["prompt"])}
        gen_key = stable_hash({"model": ref, "eval": spec.eval.model_dump(exclude={"curve_every"}),
                               "template": self.suite.eval_template, "prompts": prompt_sets})
        with self.store.compute_once(GENERATIONS, gen_key, force=self.force) as need, \
                self.stages.stage(f"{name}.generate", gen_key, cached=not need):
            gens = generate_stage(self.store, gen_key, model_path(self.store, ref), prompt_sets, spec.eval,
                                  self.suite.eval_template, self.force, need)
        prompts, outputs = prompt_sets["harmful"], gens["harmful"]
        all_scores = {j.name: self.scores(gen_key, j, prompts, outputs, name) for j in spec.judges}
        by_judge = {k: harmfulness(v, list(self.harmful["category"])) for k, v in all_scores.items()}
        primary = spec.judges[0].name

        def flags() -> dict[str, float]:
            model, tok = self.base_model()
            nll = conditional_nll(model, tok, prompts, outputs, template=self.suite.eval_template)
            return degenerate_flags(outputs, nll, self.suite.degenerate_max_ppl)

        deg_key = stable_hash({"generations": gen_key, "base": spec.model.model_dump(),
                               "max_ppl": self.suite.degenerate_max_ppl})
        metrics: dict[str, Any] = {
            "harmfulness": by_judge[primary], "judge": primary,
            "by_judge": {k: {m: v[m] for m in ("mean", "frac_over_0.5")} for k, v in by_judge.items()},
            "harmless_qa": exact_match(gens["harmless"], list(self.harmless["response"])),
            "degenerate": cached_json(self.store, DEGENERATE, deg_key, flags, self.force),
            "artifacts": {"generations": gen_key}}
        if len(spec.judges) > 1:
            second = spec.judges[1].name
            metrics["judge_agreement"] = {"with": second, **agreement(all_scores[primary], all_scores[second])}
        return metrics

    def harmfulness_now(self, model: Any, tok: Any) -> float:
        """Primary-judge harmfulness of an in-memory model (hf generation): a point on a resistance curve."""
        from harness.generate import generate_with_model

        prompts = list(self.harmful["prompt"])
        outputs = generate_with_model(model, tok, prompts, max_new_tokens=self.spec.eval.max_new_tokens,
                                      batch_size=self.spec.eval.batch_size, template=self.suite.eval_template)
        scores = self.judge(self.spec.judges[0]).score(prompts, outputs)
        model.train()
        return sum(scores) / len(scores)

    # ------------------------------------------------------------------------- stability / trainability
    def perplexity(self, ref: str) -> float:
        from harness.conditions.stability import perplexity
        from harness.models import load_causal_lm

        key = stable_hash({"model": ref, "rows": fingerprint(self.harmless), "template": self.suite.eval_template})

        def compute() -> float:
            model, tok = load_causal_lm(model_path(self.store, ref))
            return perplexity(model, tok, self.harmless.to_list(), template=self.suite.eval_template)

        return cached_json(self.store, STABILITY, key, compute, self.force)

    def lm_eval(self, ref: str) -> dict[str, Any] | None:
        from harness.conditions.lm_eval_adapter import lm_eval_scores

        protocol = self.suite.lm_eval
        if protocol is None:
            return None
        key = stable_hash({"model": ref, "protocol": repr(protocol)})
        return cached_json(self.store, STABILITY, key, lambda: lm_eval_scores(model_path(self.store, ref), protocol),
                           self.force)

    def trainability_curve(self, ref: str) -> list[list[float]] | None:
        from harness.conditions.trainability import fine_tune_curve
        from harness.models import load_causal_lm

        protocol = self.suite.trainability
        if protocol is None or self.data.trainability_train is None:
            return None
        key = stable_hash({"model": ref, "protocol": repr(protocol), "seed": self.spec.seed,
                           "data": [fingerprint(self.data.trainability_train),
                                    fingerprint(self.data.trainability_test)]})

        def compute() -> list[list[float]]:
            model, tok = load_causal_lm(model_path(self.store, ref))
            return fine_tune_curve(model, tok, self.data.trainability_train, self.data.trainability_test, protocol,
                                   self.spec.seed)

        return cached_json(self.store, TRAINABILITY, key, compute, self.force)
