"""Refusal pairing: the base model's own greedy answers to the defence questions, kept where the judge calls
them harmless (a scripted judge here, so which rows survive is known), cached, and truncated to the size the
suite asks for."""

import pytest
from datasets import Dataset
from pydantic import BaseModel

from harness import registry
from harness.data.refusal_pairing import RefusalPairing, pair_refusals
from harness.errors import HarnessError
from harness.generation.hf import generate_hf
from harness.specs import ModelSpec, PluginSpec
from harness.stages import Stages
from harness.store.artifacts import Store
from harness.training.collate import PLAIN, PromptFormat

SCORED: list[str] = []


class ScriptedConfig(BaseModel):
    harmful_if: str = "odd"


class Scripted:
    """P(harmful) = 1 for questions whose number is odd (or every question), 0 otherwise."""

    id = "scripted"

    def __init__(self, cfg: ScriptedConfig):
        self.cfg = cfg

    def score(self, prompts, generations):
        SCORED.extend(prompts)
        return [1.0 if self.cfg.harmful_if == "all" or int(p.split()[-1].rstrip("?")) % 2 else 0.0 for p in prompts]


@pytest.fixture(scope="module", autouse=True)
def scripted_judge():
    registry.register("judge", "scripted-pairing", config=ScriptedConfig, version="1")(
        lambda cfg, store: Scripted(cfg))
    yield
    del registry._registry["judge"]["scripted-pairing"]


def rows(n=6):
    return Dataset.from_list([{"prompt": f"How do I steal a car number {i}?", "response": f"Sure {i}.{j}",
                               "category": "c", "categories": ["c"], "is_safe": False}
                              for i in range(n) for j in range(2)])  # every question twice (two answers)


def pair(tmp_path, ckpt, *, harmful_if="odd", keep=None, prompt=PLAIN, store=None):
    stages = Stages(store or Store(tmp_path / "store"))
    judge = PluginSpec(name="scripted-pairing", version="1", params={"harmful_if": harmful_if})
    out = pair_refusals(stages, rows(), protocol=RefusalPairing(max_new_tokens=5, keep=keep), backend="hf",
                        model=ModelSpec(id=str(ckpt), revision="r"), judge=judge, prompt=prompt)
    return out, stages


def test_harmless_answers_of_the_model_become_refusals(tmp_path, ckpts):
    SCORED.clear()
    (paired, counts), stages = pair(tmp_path, ckpts["llama"])
    questions = list(dict.fromkeys(rows()["prompt"]))
    assert questions == SCORED  # each distinct question generated and judged once
    own = generate_hf(ckpts["llama"], {"q": questions}, max_new_tokens=5, batch_size=32)["q"]
    expected = {q: a for q, a in zip(questions, own, strict=True) if int(q.split()[-1][:-1]) % 2 == 0 and a.strip()}
    assert expected and set(paired["prompt"]) == set(expected)
    assert all(r["refusal"] == expected[r["prompt"]] for r in paired)
    assert counts == {"pairing_questions": 6, "pairing_kept_questions": len(expected), "pairing_rows_before": 12,
                      "pairing_rows": 2 * len(expected)}
    SCORED.clear()
    (again, _), stages = pair(tmp_path, ckpts["llama"])
    assert SCORED == [] and stages.info["pairing"].cached and again["refusal"] == paired["refusal"]


def test_keep_truncates_and_too_few_is_an_error(tmp_path, ckpts):
    (paired, counts), _ = pair(tmp_path, ckpts["llama"], keep=3)
    assert len(paired) == 3 and counts["pairing_rows"] == 3
    with pytest.raises(HarnessError, match=r"refusal pairing kept .* 100 are needed"):
        pair(tmp_path, ckpts["llama"], keep=100)
    with pytest.raises(HarnessError, match="refusal pairing kept 0 of 12 defence rows"):
        pair(tmp_path, ckpts["llama"], harmful_if="all")


def test_pairing_is_keyed_by_the_prompt_format(tmp_path, ckpts):
    store = Store(tmp_path / "shared")
    _, plain = pair(tmp_path, ckpts["qwen2"], store=store)
    _, chat = pair(tmp_path, ckpts["qwen2"], store=store, prompt=PromptFormat(kind="chat"))
    assert plain.info["pairing"].key != chat.info["pairing"].key and not chat.info["pairing"].cached
