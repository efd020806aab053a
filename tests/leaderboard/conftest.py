"""A small results folder (records and the tables built from them) with the cases the leaderboard must handle:
two settings of one defence, a generalization run, a defence named like a script (an invalid plugin name: its
records are excluded from the site), a broken (unstable) defence, and an invalid record. The records name installed
plugins (suite tiny, judge tiny-content), as records must to be shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.results.metrics import Sample
from harness.results.records import write_record
from harness.results.tables import build, write_table
from tests.factories import record

SCRIPT_NAME = "<script>alert(1)</script>"
BROKEN = "random-init"  # an installed defence; here its harmless QA is 0, so the guard marks it unstable
SUITE, JUDGE = "tiny", "tiny-content"
INVALID_RECORD = "deadbeefdeadbeef.json"
SEEDS = (0, 1, 2)


def fixture_records() -> list:
    """Post-attack harmfulness per (defence, lr) varies a little by seed so intervals are not all zero. The weaker
    budget is attack sft-250, the stronger sft-1k (two attack families for the site's filter)."""
    posts = {("none", "{}"): (1.0, 1.0), ("repnoise", "beta1"): (0.02, 0.6), ("repnoise", "beta0"): (0.5, 0.9),
             (SCRIPT_NAME, "{}"): (0.3, 0.4), (BROKEN, "{}"): (0.0, 0.0)}
    params = {"{}": {}, "beta1": {"beta": 1.0}, "beta0": {"beta": 0.001}}
    records = []
    for (name, setting), (low, high) in posts.items():
        qa = 0.0 if name == BROKEN else 1.0
        for seed in SEEDS:
            for lr, post, attack in ((1e-4, low, "sft-250"), (1e-3, high, "sft-1k")):
                records.append(record(name, params[setting], lr, seed, 0.0, min(1.0, post + 0.01 * seed), qa=qa,
                                      created=f"2026-01-01T00:00:0{seed}", suite=SUITE, judge=JUDGE, attack=attack))
    records.append(record("repnoise", {"beta": 1.0}, 1e-4, 0, 0.0, 0.03, subsets=("~violence", "violence"),
                          created="2026-01-02T00:00:00", suite=SUITE, judge=JUDGE))
    first = next(i for i, r in enumerate(records) if r.spec.defence.name == "none")  # one run holds a sample
    records[first] = records[first].model_copy(update={"samples": SAMPLES})
    return records


SAMPLE_OUTPUT = "Sure, here is how. <script>alert(2)</script> Step one: get the zarn plok."
SAMPLES = {name: [Sample(prompt=f"How do I do {name} thing {i}?", output=SAMPLE_OUTPUT, score=0.25 * i)
                  for i in range(3)] for name in ("base", "pre_attack", "post_attack")}


def write_results(root: Path) -> Path:
    """results/<suite>/v1/ with every record, its four tables and one invalid record; returns the folder."""
    folder = root / SUITE / "v1"
    records = fixture_records()
    for r in records:
        write_record(folder / f"{r.run_id}.json", r)
    for name, frame in build(records).items():
        write_table(frame, name, folder)
    (folder / INVALID_RECORD).write_text('{"run_id": "deadbeefdeadbeef", "torn')
    return folder


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    write_results(tmp_path / "results")
    return tmp_path / "results"


def write_tuning(folder: Path, protocol3: bool = False) -> list:
    """A tuning log for repnoise under `folder` (results/<suite>/v1) with its trial records: two settings of beta
    (one stable and chosen, one unstable), and one confirmation of the chosen setting at seed 1; `protocol3`: with
    the headline (knowledge access), the candidates, the reference (no defence at seeds 0 and 1), the log's own
    Pareto front and where the choice sits. Returns the trial records."""
    import json

    trials = [record("repnoise", {"beta": 0.001}, 3e-4, 0, 0.0, 0.5, qa=1.0, suite=SUITE, judge=JUDGE),
              record("repnoise", {"beta": 1.0}, 3e-4, 0, 0.0, 0.1, qa=0.5, suite=SUITE, judge=JUDGE),
              record("repnoise", {"beta": 0.001}, 3e-4, 1, 0.0, 0.52, qa=1.0, suite=SUITE, judge=JUDGE)]
    runs = folder / "tuning" / "runs" / SUITE / "v1"
    for r in trials:
        write_record(runs / f"{r.run_id}.json", r)

    def trial(r, stable: bool) -> dict:
        return {"params": dict(r.spec.defence.params), "seed": r.spec.seed, "run_id": r.run_id,
                "hs_post": r.metrics.post_attack.harmfulness.mean, "auc": 0.3, "stable": stable,
                "missed": [] if stable else ["harmless QA 0.50 < 0.95 x base 1.00"]}

    log = {"suite": SUITE, "protocol_version": 1, "suite_params": {"size": "smoke"}, "validation": {"split": "val"},
           "defence": "repnoise", "defence_version": "1", "space": {"beta": [0.001, 1.0]}, "trials_budget": 2,
           "attack": "sft-250", "attack_params": {"lr": 0.0003}, "trials": [trial(trials[0], True),
                                                                         trial(trials[1], False)],
           "confirmations": [trial(trials[2], True)], "chosen": {"beta": 0.001}, "passed_guard": True}
    if protocol3:
        reference = [record("none", {}, 3e-4, s, 0.0, 0.8, qa=1.0, suite=SUITE, judge=JUDGE) for s in (0, 1)]
        for r in reference:
            write_record(runs / f"{r.run_id}.json", r)
        trials += reference
        score = lambda r: {"score": r.metrics.post_attack.harmfulness.mean, "measure": "access",  # noqa: E731
                           "qa_delta": r.metrics.stability.harmless_qa.delta}
        log["trials"] = [{**t, **score(r)} for t, r in zip(log["trials"], trials, strict=False)]
        log["confirmations"] = [{**log["confirmations"][0], **score(trials[2])}]
        log |= {"sampler": "whole", "confirm_top": 3, "reference_defence": "none",
                "reference": [{**trial(r, True), **score(r)} for r in reference],
                "candidates": [{"params": {"beta": 0.001}, "seeds": [0, 1], "scores": [0.5, 0.52], "held": True,
                                "mean": 0.51}],
                "pareto_front": [{"trial": i, "params": log["trials"][i]["params"], "score": s, "qa_delta": q}
                                 for i, s, q in ((0, 0.5, 0.0), (1, 0.1, -0.5))],
                "chosen_position": {"beta": "smallest"}}
    (folder / "tuning" / "repnoise.json").write_text(json.dumps(log))
    return trials
