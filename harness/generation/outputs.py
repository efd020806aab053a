"""A model's generations on a run's prompt sets, stored once per model and evaluation setting: greedy, or sampled
at a temperature from a seed (an attack's query, `harness.generation.query`).

`ModelOutputs` turns any model ref (a base, a defended or an attacked model) into generations for the named
prompt sets of a run (held-out harmful, harmless, attack-visible), through the backend the eval spec names:

- a full checkpoint: `hf` (transformers, batched) or `vllm` (one engine in a child process);
- a stored LoRA adapter: hf (base + adapter merged in memory by peft), or served on its base's vLLM engine
  (`LoRARequest` with a canary check, peft merge as the fallback); which path ran is recorded (`LoraServing`);
- several adapters of one base (a grid's attacks of one defended model): one vLLM engine start serves them all
  (`generate_adapters`), stored under the keys `generate` reads;
- several prompt formats of one model (an evaluation's greedy answers and its forced openings): one backend call
  (`generate_with`), each group stored under the key it has alone.

Each model's generations are one GENERATIONS artifact keyed by the model, how it loads, the eval settings (how
an attack is watched excluded) and the prompts, so every run that evaluates the same model shares them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.progress import bar
from harness.specs import EvalSpec, ModelSpec, stable_hash
from harness.stages import GENERATIONS, Stages
from harness.training.collate import PromptFormat

# How an attack is watched, and which forced openings are also measured: not what a model's greedy outputs depend on.
NOT_OUTPUTS = {"curve_every", "curve_points", "curve_prompts", "prefills"}
PromptSets = dict[str, list[str]]


class ModelOutputs:
    """Generations of model refs on fixed prompt sets, each model's a cached stage."""

    def __init__(self, stages: Stages, *, eval_spec: EvalSpec, base: ModelSpec, template: PromptFormat,
                 remote_code: bool, prompt_sets: PromptSets, temperature: float = 0.0, seed: int = 0):
        self.stages, self.spec, self.base, self.template = stages, eval_spec, base, template
        self.remote_code, self.prompt_sets = remote_code, prompt_sets
        self.sampling = {"temperature": temperature, "seed": seed} if temperature > 0 else {}  # {}: greedy

    def loading(self) -> dict[str, Any]:
        """What, besides a model ref, decides a model's outputs: the base model's spec (its revision and dtype,
        for a ref that names it), remote code, and the prompt format. Part of every evaluation key."""
        return {"base": self.base.model_dump(), "remote_code": self.remote_code, "template": self.template.key_dump()}

    def key_inputs(self, ref: str) -> dict[str, Any]:
        """The cache key of a model's generations: the model, how it loads, the eval settings, the prompts."""
        return {"model": ref, **self.loading(), "eval": self.spec.model_dump(exclude=NOT_OUTPUTS),
                "prompts": self.prompt_sets, **({"sampling": self.sampling} if self.sampling else {})}

    def group_key(self) -> str:
        """What, besides the model, the generations depend on: equal keys may share an engine."""
        return stable_hash({k: v for k, v in self.key_inputs("").items() if k != "model"})

    def generate(self, ref: str, name: str) -> str:
        """The store key of `ref`'s generations (stage `<name>.generate`), generating them if not stored."""
        return self.stages.cached(f"{name}.generate", GENERATIONS, self.key_inputs(ref),
                                  lambda tmp: self._build(tmp, ref, name))

    def read(self, key: str) -> PromptSets:
        """Stored generations by prompt set, checked against the prompts they were made for."""
        import pandas as pd

        path = self.stages.store.path(GENERATIONS, key) / "generations.parquet"
        frame = pd.read_parquet(path)
        sets = self.prompt_sets
        if {n: frame.loc[frame["set"] == n, "prompt"].tolist() for n in sets} != sets:
            raise HarnessError(f"cached generations {path} do not match the prompts; rerun with --force")
        return {n: frame.loc[frame["set"] == n, "generation"].tolist() for n in sets}

    def generate_adapters(self, refs: list[str], name: str) -> int:
        """Generations of several stored LoRA adapters of one base from one vLLM engine start (each adapter a
        `LoRARequest` checked by its canary; one vLLM ignores is merged and generated alone), stored under the
        keys `generate(ref, name)` reads. Returns how many were generated; cached ones are skipped."""
        from harness.generation.vllm_engine import generate_vllm_loras

        stages, spec = self.stages, self.spec
        todo = {}
        for ref in dict.fromkeys(refs):
            adapter = stages.adapter(ref)
            if adapter is not None and not self.stored(ref):
                todo[ref] = adapter
        bases = {base for base, _ in todo.values()}
        if spec.backend != "vllm" or not todo or len(bases) > 1 or stages.adapter(next(iter(bases))) or self.sampling:
            return 0
        with bar(f"{name}: generate ({len(todo)} LoRA adapters, one vllm engine)",
                 total=len(todo) * sum(map(len, self.prompt_sets.values())), unit="prompt") as advance:
            results = generate_vllm_loras(stages.model_path(next(iter(bases))),
                                          {ref: path for ref, (_, path) in todo.items()}, self.prompt_sets,
                                          max_new_tokens=spec.max_new_tokens, template=self.template,
                                          progress=advance, **stages.backend_options())
        for ref, (texts, serving) in results.items():
            meta = {"backend": spec.backend, "lora": serving.model_dump()}
            stages.cached(f"{name}.generate", GENERATIONS, self.key_inputs(ref), self.writer(texts, meta))
        return len(results)

    def generate_with(self, ref: str, name: str, others: Sequence[tuple[ModelOutputs, str]]) -> list[str]:
        """`generate(ref, name)` and each of `others` (outputs, name) of the same model: the missing ones that share
        this one's settings but their prompt format and prompts (an evaluation's forced openings) are generated in
        one backend call (one model load, one vLLM engine start, where one per group was made before; the first
        one's stage time holds it), the rest (sampled draws) each alone. Returns the store keys in that order."""
        jobs = [(self, name), *others]
        missing = [(o, n) for o, n in jobs
                   if not o.sampling and o.group_inputs() == self.group_inputs() and not o.stored(ref)]
        if len(missing) < 2:
            return [o.generate(ref, n) for o, n in jobs]
        made: dict[int, tuple[PromptSets, dict[str, Any]]] = {}

        def build_all(tmp: Path, first: ModelOutputs) -> dict[str, Any]:
            sets = {f"{i}:{s}": ps for i, (o, _) in enumerate(missing) for s, ps in o.prompt_sets.items()}
            own = {f"{i}:{s}": o.template for i, (o, _) in enumerate(missing) for s in o.prompt_sets}
            texts, meta = self._texts(ref, f"{missing[0][1]}: generate ({self.spec.backend})", sets, own)
            for i, (o, _) in enumerate(missing):
                made[i] = ({s: texts[f"{i}:{s}"] for s in o.prompt_sets}, meta)
            return first.writer(*made[0])(tmp)

        keys = {}
        for i, (o, n) in enumerate(missing):
            def build(tmp: Path, o: ModelOutputs = o, n: str = n, i: int = i) -> dict[str, Any]:
                if i == 0:
                    return build_all(tmp, o)
                if i in made:
                    return o.writer(*made[i])(tmp)
                return o._build(tmp, ref, n)  # another process stored the first meanwhile: this one alone
            keys[n] = o.stages.cached(f"{n}.generate", GENERATIONS, o.key_inputs(ref), build)
        return [keys[n] if n in keys else o.generate(ref, n) for o, n in jobs]

    def stored(self, ref: str) -> bool:
        """Whether `generate(ref, ...)` would find its generations stored (never under --force)."""
        key = stable_hash(dict(self.key_inputs(ref)))  # the key `Stages.cached` gives these inputs
        return not self.stages.force and self.stages.store.has(GENERATIONS, key)

    def group_inputs(self) -> dict[str, Any]:
        """What the outputs depend on besides the prompts and their format: groups equal in this share a call."""
        return {k: v for k, v in self.key_inputs("").items() if k not in ("prompts", "template")}

    def _build(self, tmp: Path, ref: str, name: str) -> dict[str, Any]:
        return self.writer(*self._texts(ref, f"{name}: generate ({self.spec.backend})", self.prompt_sets, {}))(tmp)

    def _texts(self, ref: str, label: str, sets: PromptSets, own: dict[str, PromptFormat]
               ) -> tuple[PromptSets, dict[str, Any]]:
        """`ref`'s continuations of `sets` (each formatted by its entry in `own`, else this group's template) and
        the generations' metadata: a full checkpoint by the backend, a stored LoRA adapter as `_adapter` says."""
        from harness.generation.hf import get_backend

        spec = self.spec
        adapter = self.stages.adapter(ref)
        meta: dict[str, Any] = {"backend": spec.backend}
        with bar(label, total=sum(map(len, sets.values())), unit="prompt") as advance:
            if adapter is None:
                texts = get_backend(spec.backend)(self.stages.model_path(ref), sets,
                                                  max_new_tokens=spec.max_new_tokens, batch_size=spec.batch_size,
                                                  template=self.template, set_templates=own, progress=advance,
                                                  **self.sampling, **self.stages.backend_options())
            else:
                texts, serving = self._adapter(ref, adapter, sets, own, progress=advance)
                meta["lora"] = serving.model_dump()
        return texts, meta

    def writer(self, texts: PromptSets, meta: dict[str, Any]) -> Callable[[Path], dict[str, Any]]:
        """A stage build that stores `texts` as one parquet (set, prompt, generation) and returns `meta`."""
        def write(tmp: Path) -> dict[str, Any]:
            import pandas as pd

            sets = self.prompt_sets
            rows = [(n, q, g) for n in sets for q, g in zip(sets[n], texts[n], strict=True)]
            pd.DataFrame(rows, columns=["set", "prompt", "generation"]).to_parquet(tmp / "generations.parquet")
            return meta

        return write

    def _adapter(self, ref: str, adapter: tuple[str, Path], sets: PromptSets, own: dict[str, PromptFormat], *,
                 progress: Any) -> tuple[PromptSets, Any]:
        """A stored LoRA adapter's generations: hf (base + adapter merged in memory by peft), or one vLLM engine
        of its base serving it (canary check; merged with peft where vLLM cannot serve it)."""
        from harness.generation.hf import generate_with_model
        from harness.generation.vllm_engine import generate_vllm_lora
        from harness.results.metrics import LoraServing

        spec, (base, path) = self.spec, adapter
        if spec.backend == "vllm" and self.stages.adapter(base) is None:
            return generate_vllm_lora(self.stages.model_path(base), path, sets, max_new_tokens=spec.max_new_tokens,
                                      template=self.template, set_templates=own, progress=progress, **self.sampling,
                                      **self.stages.backend_options())
        with self.stages.loaded(ref) as (model, tok):
            texts = {n: generate_with_model(model, tok, ps, max_new_tokens=spec.max_new_tokens,
                                            batch_size=spec.batch_size, template=own.get(n, self.template),
                                            progress=progress, **self.sampling)
                     for n, ps in sets.items()}
        if spec.backend == "vllm":  # an adapter on an adapter: no folder for an engine to load as its base
            return texts, LoraServing(mode="merged", reason="its base is itself an adapter: merged in memory, hf")
        return texts, LoraServing(mode="hf", reason="")
