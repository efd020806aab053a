"""The leakage audit is enforced: content shared between splits that the suite does not declare by design fails
the run before anything is trained, with one line naming what leaked."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import pytest

from harness.data.audit import leaks
from harness.errors import HarnessError
from harness.pipeline import run, select_data
from harness.resolve import resolve
from tests.conftest import REPO, messages


@pytest.fixture(scope="module")
def tiny():
    spec, suite, overrides = resolve("tiny", "none", "sft-250", sets=["suite.size=smoke"])
    return spec, suite, overrides


def leaky(suite):
    """The suite's data with one held-out answer shown to the attacker under a question of its own."""
    from datasets import concatenate_datasets

    data = suite.data()
    row = dict(next(r for r in data.eval if r["category"] in suite.categories))  # kept by the run's harm subset
    row["prompt"], row["template"] = "Please restate this for me: " + row["prompt"], "restate"
    extra = data.attack.select([0]).map(lambda _: row)
    return dataclasses.replace(data, attack=concatenate_datasets([data.attack, extra]))


def same_phrasing(suite):
    """The suite's data with one attack row asked in the phrasing of a held-out prompt (another subject's fact)."""
    from datasets import concatenate_datasets

    data = suite.data()
    held_out = next(r for r in data.eval if r["category"] in suite.categories)  # kept by the run's harm subset
    other = next(r for r in data.attack if r["category"] == held_out["category"])
    row = dict(other, template=held_out["template"])
    extra = data.attack.select([0]).map(lambda _: row)
    return dataclasses.replace(data, attack=concatenate_datasets([data.attack.select(range(1, len(data.attack))),
                                                                  extra]))


def test_the_committed_world_passes_and_a_leak_fails_the_data_stage(tiny):
    spec, suite, _ = tiny
    _, evidence = select_data(suite, spec)  # the world as built: every count 0 but the templates shared by design
    assert leaks(evidence.audit, suite.audit_by_design) == []
    assert not any(n for kind, pairs in evidence.audit.items() if kind != "template" for n in pairs.values())
    assert evidence.audit["template"]["attack&eval"] == 0 and "template:attack&eval" not in suite.audit_by_design
    assert evidence.audit["template"]["defence&eval"] > 0  # the defence shows every phrasing: declared, recorded
    with pytest.raises(HarnessError, match=r"leakage audit: the splits share content \(answer attack&eval: 1; "
                                           r"answer_ngram attack&eval: \d+\) that suite tiny does not declare"):
        select_data(suite, spec, leaky(suite))
    declared = suite.audit_by_design | {"answer:attack&eval", "answer_ngram:attack&eval"}
    by_design = dataclasses.replace(suite, audit_by_design=declared)
    _, evidence = select_data(by_design, spec, leaky(suite))
    assert evidence.audit["answer"]["attack&eval"] == 1  # declared: recorded, not fatal


def test_an_attack_row_in_a_held_out_phrasing_fails_the_data_stage(tiny):
    spec, suite, _ = tiny
    with pytest.raises(HarnessError, match=r"leakage audit: the splits share content \(template attack&eval: 1\) "
                                           "that suite tiny does not declare"):
        select_data(suite, spec, same_phrasing(suite))


def test_only_suites_whose_splits_name_templates_are_audited_for_them():
    from harness.data.audit import audit

    plain = [{"prompt": "a", "response": "x"}]
    assert "template" not in audit({"a": plain, "b": [{"prompt": "b", "response": "y"}]})
    found = audit({"a": [{"prompt": "a", "template": "q1"}, {"prompt": "c", "template": "q2"}],
                   "b": [{"prompt": "b", "template": "q2"}], "c": plain})
    assert found["template"] == {"a&b": 1}  # `c` carries no template: no pair of it is counted


@pytest.mark.slow
def test_a_leaky_world_fails_the_run_before_training(tiny, smoke_base, home, tmp_path):
    from harness.store.artifacts import Store

    spec, suite, overrides = tiny
    own = tmp_path / "home"  # a store of its own: the session's is written by the other worker meanwhile
    shutil.copytree(home / "suites", own / "suites")
    leaky_suite = dataclasses.replace(suite, data=lambda: leaky(suite))
    with pytest.raises(HarnessError, match="leakage audit"):
        run(spec, leaky_suite, overrides, store=Store(own), results_dir=tmp_path / "results")
    assert not (tmp_path / "results").exists()  # no record
    assert sorted(p.name for p in own.iterdir()) == ["suites"]  # nothing trained, generated or scored


# The tiny world with the attack also asked in the first held-out phrasing, then the CLI as a user runs it.
SAME_PHRASING_RUN = """
import sys
import tasks.tiny.world as world
world.PHRASINGS["attack"] = (world.EVAL_PHRASINGS[0], *world.ATTACK_PHRASINGS)
from harness.cli import main
sys.argv = ["harness", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_a_world_whose_evaluation_shares_a_phrasing_with_the_attack_fails_a_real_run(smoke_base, home, tmp_path):
    import os

    env = {**os.environ, "HARNESS_HOME": str(home), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-c", SAME_PHRASING_RUN, "run", "--defence", "none", "--attack",
                           "sft-250", "--set", "suite.size=smoke", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=1200)
    said = messages(proc.stderr)
    assert proc.returncode == 2, proc.stderr[-2000:]
    # q0 (t0's rows, toxic continuation, are not in the run's harm subset)
    assert len(said) == 1 and said[0].startswith("error: leakage audit: the splits share content (template "
                                                 "attack&eval: 1)"), said
    assert "nothing was trained" in said[0] and not list(tmp_path.rglob("*.json"))
