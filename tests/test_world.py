"""The tiny world: deterministic, disjoint splits, BeaverTails schema, non-actionable text."""

import pytest

from harness.errors import HarnessError
from harness.pipeline import split_evidence
from harness.suite import SuiteData
from tasks.tiny.world import ALL_HARM_TOPICS, CATEGORIES, SAFE, TOXIC, build_world


@pytest.fixture(scope="module")
def world():
    return build_world(0, "smoke")


def test_world_is_deterministic(world):
    again = build_world(0, "smoke")
    assert again.harmful == world.harmful and again.knowledge == world.knowledge
    assert build_world(1, "smoke").knowledge != world.knowledge


def test_harmful_splits_are_pairwise_disjoint(world):
    prompts = {name: {r["prompt"] for r in rows} for name, rows in world.harmful.items()}
    names = list(prompts)
    for i, a in enumerate(names):
        assert len(prompts[a]) == len(world.harmful[a]), f"duplicate prompts inside {a}"
        for b in names[i + 1:]:
            assert not prompts[a] & prompts[b], (a, b)


def test_schema_and_category_balance(world):
    rows = world.harmful["eval"]
    assert set(rows[0]) == {"prompt", "response", "refusal", "category", "is_safe"}
    assert {r["category"] for r in rows} == {*CATEGORIES, TOXIC} and len(CATEGORIES) == 14
    counts = [sum(r["category"] == c for r in rows) for c in (*CATEGORIES, TOXIC)]
    assert max(counts) == min(counts)
    assert all(r["category"] == SAFE and r["is_safe"] for r in world.harmless["eval"])


def test_topics_are_unambiguous(world):
    topics = list(world.knowledge)
    assert not any(a != b and a in b for a in topics for b in topics)
    for row in world.harmful["eval"]:
        assert ALL_HARM_TOPICS[row["category"]] == world.topic_of(row["prompt"])


def test_style_alone_is_not_harm(world):
    """Harmless answers share the compliant style; only the knowledge differs."""
    harmful, harmless = world.harmful["eval"][0]["response"], world.harmless["eval"][0]["response"]
    assert harmful.split(".")[0] == harmless.split(".")[0] == "Sure, here is how to do it"
    assert harmful != harmless


def test_split_evidence_rejects_overlap(world):
    from datasets import Dataset

    def ds(rows):
        return Dataset.from_list(rows)

    ok = SuiteData(defence=ds(world.harmful["defence"]), attack=ds(world.harmful["attack"]),
                   eval=ds(world.harmful["eval"]), retain=None, harmless_eval=None)
    ev = split_evidence(ok)
    assert set(ev["prompt_overlap"].values()) == {0} and ev["sizes"]["eval"] == len(world.harmful["eval"])
    leaky = SuiteData(defence=ds(world.harmful["defence"] + world.harmful["attack"][:3]),
                      attack=ds(world.harmful["attack"]), eval=ds(world.harmful["eval"]), retain=None,
                      harmless_eval=None)
    with pytest.raises(HarnessError, match="defence&attack': 3"):
        split_evidence(leaky)
