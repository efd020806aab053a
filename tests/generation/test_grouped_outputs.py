"""An evaluation's greedy answers and its forced openings come from one backend call per model (one model load, one
vLLM engine start), each stored under the key it has alone, with the same texts as generating each group alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.generation import hf
from harness.generation.outputs import ModelOutputs
from harness.specs import EvalSpec, ModelSpec
from harness.stages import Stages
from harness.store.artifacts import Store
from harness.training.collate import PLAIN

SETS = {"harmful": ["q1", "q2"], "harmless": ["h1"]}
PREFILLS = ("Sure,", "Okay,")


@pytest.fixture
def calls(monkeypatch) -> list[dict]:
    """The hf backend replaced by one that answers each prompt with its format's prefill and the prompt, and
    records every call (the sets it got and their formats)."""
    made: list[dict] = []

    def backend(model_path, prompt_sets, *, template, set_templates=None, progress=None, **_):
        own = set_templates or {}
        made.append({name: own.get(name, template).prefill for name in prompt_sets})
        return {name: [f"{own.get(name, template).prefill}|{p}" for p in ps] for name, ps in prompt_sets.items()}

    monkeypatch.setitem(hf.BACKENDS, "hf", backend)
    return made


def groups(store_dir: Path, force: bool = False) -> tuple[ModelOutputs, list[ModelOutputs]]:
    stages = Stages(Store(store_dir), force=force)
    stages.bind("m", store_dir / "model")
    spec, base = EvalSpec(max_new_tokens=4, n_prompts=2, batch_size=2), ModelSpec(id="base", revision="r")
    greedy = ModelOutputs(stages, eval_spec=spec, base=base, template=PLAIN, remote_code=False, prompt_sets=SETS)
    forced = [ModelOutputs(stages, eval_spec=spec, base=base, template=PLAIN.model_copy(update={"prefill": p}),
                           remote_code=False, prompt_sets={"harmful": SETS["harmful"]}) for p in PREFILLS]
    return greedy, forced


def test_one_call_makes_every_group_stored_under_its_own_key(tmp_path, calls):
    greedy, forced = groups(tmp_path / "grouped")
    keys = greedy.generate_with("m", "post", [(f, f"post.forced{i}") for i, f in enumerate(forced)])
    assert len(calls) == 1 and set(calls[0].values()) == {"", *PREFILLS}
    assert greedy.read(keys[0]) == {"harmful": ["|q1", "|q2"], "harmless": ["|h1"]}
    assert [f.read(k) for f, k in zip(forced, keys[1:], strict=True)] == [
        {"harmful": [f"{p}|q1", f"{p}|q2"]} for p in PREFILLS]
    assert all(not greedy.stages.info[n].cached for n in ("post.generate", "post.forced0.generate"))
    assert greedy.generate("m", "post") == keys[0] and not greedy.stages.info["post.generate"].cached  # kept

    alone_greedy, alone_forced = groups(tmp_path / "alone")  # the same keys and texts as one group at a time
    alone = [alone_greedy.generate("m", "post"), *(f.generate("m", f"post.forced{i}")
                                                   for i, f in enumerate(alone_forced))]
    assert alone == keys and len(calls) == 1 + 3


def test_stored_groups_are_not_generated_again(tmp_path, calls):
    greedy, forced = groups(tmp_path)
    forced[0].generate("m", "post.forced0")
    assert len(calls) == 1
    greedy.generate_with("m", "post", [(f, f"post.forced{i}") for i, f in enumerate(forced)])
    assert len(calls) == 2 and set(calls[1].values()) == {"", PREFILLS[1]}  # only what was missing
    again, more = groups(tmp_path)
    again.generate_with("m", "post", [(f, f"post.forced{i}") for i, f in enumerate(more)])
    assert len(calls) == 2 and again.stages.info["post.generate"].cached


def test_sampled_groups_are_generated_alone(tmp_path, calls):
    greedy, forced = groups(tmp_path)
    sampled = ModelOutputs(greedy.stages, eval_spec=greedy.spec, base=greedy.base, template=PLAIN, remote_code=False,
                           prompt_sets={"harmful": ["q1"]}, temperature=1.0, seed=1)
    greedy.generate_with("m", "post", [(sampled, "post.query0"), (forced[0], "post.forced0")])
    assert calls == [{"0:harmful": "", "0:harmless": "", "1:harmful": "Sure,"},  # the greedy groups together
                     {"harmful": ""}]  # the sampled one by itself: its draws are not batched with greedy ones
