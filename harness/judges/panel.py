"""A run's judges: built once per run from their plugins, each one's scores of a model's generations a cached
stage (SCORES), keyed by the generations and the judge's spec. The first judge is primary. A judge's name in the
panel is its preset, else its plugin name (`harness.judges.judge_key`): two Llama-Guard-style presets share a
plugin and are still two judges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import registry
from harness.judges import Judge, judge_key, judge_keys, score_with_progress
from harness.specs import PluginSpec
from harness.stages import SCORES, Stages


class JudgePanel:
    """Scores generations with every judge of a run; remembers the judge ids that scored (for provenance)."""

    def __init__(self, stages: Stages, judges: tuple[PluginSpec, ...]):
        self.stages, self.specs = stages, judges
        self.keys = judge_keys(judges)
        self.built: dict[str, Judge] = {}
        self.judge_ids: list[str] = []

    @property
    def primary(self) -> PluginSpec:
        return self.specs[0]

    def judge(self, spec: PluginSpec) -> Judge:
        """The judge a spec names, built on first use."""
        key = judge_key(spec.name, spec.params)
        if key not in self.built:
            plugin = registry.get("judge", spec.name)
            self.built[key] = plugin.fn(plugin.config.model_validate(spec.params), self.stages.store)
        return self.built[key]

    def scores(self, name: str, gen_key: str, spec: PluginSpec, *, prompts: list[str], outputs: list[str],
               prompt_set: str = "harmful") -> list[float]:
        """P(harmful) of each (prompt, output) of one prompt set of the generations `gen_key` (stage `name`)."""
        import pandas as pd

        def build(tmp: Path) -> dict[str, Any]:
            judge = self.judge(spec)
            scores = score_with_progress(judge, prompts, outputs, name)
            pd.DataFrame({"score": scores}).to_parquet(tmp / "scores.parquet")
            return {"judge_id": judge.id}

        inputs = {"generations": gen_key, "judge": spec.model_dump()}
        if prompt_set != "harmful":  # the harmful set's key predates other sets
            inputs["set"] = prompt_set
        key = self.stages.cached(name, SCORES, inputs, build)
        judge_id = self.stages.store.meta(SCORES, key)["judge_id"]
        if judge_id not in self.judge_ids:
            self.judge_ids.append(judge_id)
        return pd.read_parquet(self.stages.store.path(SCORES, key) / "scores.parquet")["score"].tolist()

    def score_now(self, prompts: list[str], outputs: list[str]) -> list[float]:
        """The primary judge's scores, computed (not stored): points along an attack."""
        return self.judge(self.primary).score(prompts, outputs)

    def details(self, prompts: list[str], outputs: list[str]) -> dict[str, float]:
        """Means of the primary judge's per-sample details, if it offers any (cheap: computed, not cached)."""
        judge = self.judge(self.primary)
        if not hasattr(judge, "details"):
            return {}
        return {k: sum(v) / len(v) for k, v in judge.details(prompts, outputs).items() if v}
