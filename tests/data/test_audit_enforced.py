"""The leakage audit is enforced: content shared between splits that the suite does not declare by design fails
the run before anything is trained, with one line naming what leaked."""

from __future__ import annotations

import dataclasses

import pytest

from harness.errors import HarnessError
from harness.pipeline import run, select_data
from harness.resolve import resolve


@pytest.fixture(scope="module")
def tiny():
    spec, suite, overrides = resolve("tiny", "none", "sft-250", sets=["suite.size=smoke"])
    return spec, suite, overrides


def leaky(suite):
    """The suite's data with one held-out answer shown to the attacker under a question of its own."""
    from datasets import concatenate_datasets

    data = suite.data()
    row = dict(data.eval[0])
    row["prompt"] = "Please restate this for me: " + row["prompt"]
    extra = data.attack.select([0]).map(lambda _: row)
    return dataclasses.replace(data, attack=concatenate_datasets([data.attack, extra]))


def test_the_committed_world_passes_and_a_leak_fails_the_data_stage(tiny):
    spec, suite, _ = tiny
    _, evidence = select_data(suite, spec)  # the world as built: every count 0
    assert not any(n for pairs in evidence.audit.values() for n in pairs.values())
    with pytest.raises(HarnessError, match=r"leakage audit: the splits share content \(answer attack&eval: 1; "
                                           r"answer_ngram attack&eval: \d+\) that suite tiny does not declare"):
        select_data(suite, spec, leaky(suite))
    declared = frozenset({"answer:attack&eval", "answer_ngram:attack&eval"})
    by_design = dataclasses.replace(suite, audit_by_design=declared)
    _, evidence = select_data(by_design, spec, leaky(suite))
    assert evidence.audit["answer"]["attack&eval"] == 1  # declared: recorded, not fatal


@pytest.mark.slow
def test_a_leaky_world_fails_the_run_before_training(tiny, smoke_base, home, tmp_path):
    from harness.store.artifacts import Store

    spec, suite, overrides = tiny
    store = Store(home)
    models_before = set((home / "models").glob("*")) if (home / "models").is_dir() else set()
    leaky_suite = dataclasses.replace(suite, data=lambda: leaky(suite))
    with pytest.raises(HarnessError, match="leakage audit"):
        run(spec, leaky_suite, overrides, store=store, results_dir=tmp_path)
    assert not list(tmp_path.rglob("*.json"))  # no record
    after = set((home / "models").glob("*")) if (home / "models").is_dir() else set()
    assert after == models_before  # nothing trained
