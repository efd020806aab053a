"""Several worlds of one suite config (`harness.results.worlds`): the numbered worlds are one board whose worlds are
independent units (summary, paired comparison, report, publish, tuned settings, grid); a world named otherwise (a
private world) stands alone."""

from __future__ import annotations

import json

import pytest

from harness.results.summary import frames_from_records, summarise
from harness.results.worlds import board_key, board_of, boards, same_board, world_label
from tests.factories import record

SEED = ("seed",)


def cfg(**params) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def test_numbered_worlds_of_one_config_are_one_board_and_a_private_world_stands_alone():
    worlds = [cfg(seed=s, size="default") for s in (2, 0, 1)]
    private = cfg(seed="private:ab12", size="default")
    smoke = cfg(seed=0, size="smoke")
    grouped = boards([*worlds, private, smoke], SEED)
    assert [cfg(seed=0, size="default"), cfg(seed=1, size="default"), cfg(seed=2, size="default")] in grouped
    assert [private] in grouped and [smoke] in grouped and len(grouped) == 3
    assert board_key(worlds[0], SEED) == board_key(worlds[1], SEED) != board_key(private, SEED)
    assert world_label(worlds[0], SEED) == "2" and world_label(worlds[0], ()) == ""
    assert board_of(cfg(seed=0, size="default"), [*worlds, smoke], SEED) == sorted(worlds)
    assert board_of(cfg(seed=7, size="default"), [smoke], SEED) == [cfg(seed=7, size="default")]
    assert same_board({"seed": 0, "size": "default"}, {"seed": 3, "size": "default"}, SEED)
    assert not same_board({"seed": 0, "size": "default"}, {"seed": "private:ab12", "size": "default"}, SEED)
    assert not same_board({"seed": True, "size": "default"}, {"seed": 0, "size": "default"}, SEED)  # not a number
    assert not same_board({"seed": 0, "size": "default"}, {"seed": 1, "size": "smoke"}, SEED)
    assert boards([worlds[0]], ()) == [[worlds[0]]]  # a suite without world params: every config its own board


def in_world(r, world, attack_seed=0):
    """A record moved to world `world` (suite param seed) with an attack seed."""
    suite = r.spec.suite.model_copy(update={"params": {**r.spec.suite.params, "seed": world}})
    spec = r.spec.model_copy(update={"suite": suite, "attack_seed": attack_seed})
    return r.model_copy(update={"spec": spec, "run_id": spec.run_id})


def pooled_runs():
    """Three worlds; `seeded-x` at defence seeds 0-1 and `none` (one model per world) at defence seeds 0-1, both
    attacked at attack seeds 0-1. Access after the attack depends on the world only (0.3, 0.5, 0.7) for the
    defence, and is 0.2 higher for none."""
    out = []
    for world in (0, 1, 2):
        for name, extra in (("seeded-x", 0.0), ("none", 0.2)):
            for seed in (0, 1):
                for attack_seed in (0, 1):
                    r = record(name, {}, 1e-4, seed, pre=0.0, post=0.3 + 0.2 * world + extra, phi=0.9)
                    out.append(in_world(r, world, attack_seed))
    return out


def test_a_pooled_summary_counts_worlds_as_units_and_pairs_by_world():
    runs = pooled_runs()
    frames = frames_from_records(runs)
    configs = sorted({json.dumps(r.spec.suite.params, sort_keys=True, separators=(",", ":")) for r in runs})
    summary = summarise(frames, configs, 0.5, reference="none", world_params=SEED)
    rows = {r.key.name: r for r in summary.rows}
    seeded, none = rows["seeded-x"], rows["none"]
    assert summary.worlds == ("0", "1", "2") and summary.unit == "world x defence seed x attack seed"
    (cell,) = seeded.budgets
    assert cell.headline_post.n == 12 and cell.headline_post.mean == pytest.approx(0.5)  # 3 worlds x 2 x 2
    assert seeded.headline_pre.n == 6 and len(seeded.defence_seeds) == 6  # defended models: world x defence seed
    assert none.headline_pre.n == 3 and none.budgets[0].headline_post.n == 6  # one model per world, 2 attack draws
    assert none.defence_seeds == ("0/0", "1/0", "2/0")
    paired = summary.paired[seeded.key]
    assert paired.n == 6 and paired.mean_difference == pytest.approx(-0.2)  # world x attack seed
    one = summarise(frames, configs[0], 0.5, reference="none", world_params=SEED)  # one world: as before
    assert one.worlds == () and one.unit == "defence seed x attack seed"
    assert {r.key.name: r for r in one.rows}["seeded-x"].budgets[0].headline_post.n == 4
    assert one.paired[seeded.key].n == 2 and one.paired[seeded.key].p is None  # too few pairs for a test


def test_the_report_pools_the_worlds_unless_one_is_named():
    """`budget_summary` (harness report): the worlds' records pooled, the legend names the unit."""
    from dataclasses import replace

    from harness.resolve import load_suite
    from harness.results.budget_table import budget_summary, markdown

    runs = pooled_runs()
    _, suite = load_suite("tiny", {"size": "smoke"})
    suite = replace(suite, reference_defence="none")
    pooled = markdown(budget_summary(runs, suite, {"seed": 1, "size": "smoke"}))
    assert "worlds 0, 1, 2 pooled" in pooled and "a unit: world x defence seed x attack seed" in pooled
    assert "| seeded-x | 3x2x2 |" in pooled and "| none | 3x1x2 |" in pooled
    alone = markdown(budget_summary(runs, suite, {"seed": 1, "size": "smoke"}, pool_worlds=False))
    assert "worlds 0, 1, 2" not in alone and "| seeded-x | 2x2 | 0.00 ± 0.00 | 1.00 ± 0.00 | 0.50 ± 0.00 |" in alone


def test_publish_takes_a_record_of_another_world_but_not_of_another_config():
    from harness.results.publish import settings_problem

    world = {"seed": 2, "size": "default", "split": "test"}
    assert settings_problem("tiny", world, any_world=True) is None
    assert settings_problem("tiny", world) is not None  # a tuning log: the default world only
    assert "size" in settings_problem("tiny", {**world, "size": "smoke"}, any_world=True)
    assert settings_problem("tiny", {**world, "seed": "private:00"}, any_world=True) is not None
    from harness.resolve import load_suite

    own, default = (load_suite("tiny", params)[1].model.id for params in (world, {**world, "seed": 0}))
    assert own != default  # each world builds its own base model
    assert settings_problem("tiny", world, own, any_world=True) is None
    assert "not the 'tiny' suite's" in settings_problem("tiny", world, default, any_world=True)


def test_a_tuning_log_of_the_default_world_serves_every_numbered_world(tmp_path):
    from harness import registry
    from harness.resolve import resolve
    from harness.tuning.logs import TuningLog, log_path, tuned_settings, write_log

    name, chosen = "safety-training", {"lr": 3e-5}
    defaults = {"seed": 0, "size": "default", "split": "test"}
    log = TuningLog(suite="tiny", protocol_version=3, suite_params=defaults, validation={"split": "validation"},
                    defence=name, defence_version=registry.get("defence", name).version, space={}, trials_budget=1,
                    attack="sft-250", attack_params={}, trials=[], chosen=chosen, passed_guard=True)
    write_log(log_path(tmp_path, "tiny", 3, name), log)
    assert tuned_settings(tmp_path, "tiny", 3, {**defaults, "seed": 2}, name, SEED) == chosen
    assert tuned_settings(tmp_path, "tiny", 3, {**defaults, "seed": 2}, name) == {}  # a suite without worlds
    assert tuned_settings(tmp_path, "tiny", 3, {**defaults, "size": "smoke"}, name, SEED) == {}
    assert tuned_settings(tmp_path, "tiny", 3, {**defaults, "seed": "private:00"}, name, SEED) == {}
    spec, _, overrides = resolve("tiny", name, "sft-250", tuned_from=tmp_path, sets=["suite.seed=2"], locate=False)
    assert overrides["tuned"] == chosen and spec.defence.params["lr"] == 3e-5 and spec.suite.params["seed"] == 2


def test_a_grid_runs_every_cell_in_each_world_and_refuses_a_repeated_world(tmp_path):
    from harness.errors import ConfigError
    from harness.sweep.grid import load_grid, plan

    head = "suite: tiny\nsuite_settings: {size: smoke}\ndefences: [{name: none}]\n" \
           "attacks: {budgets: [{attack: sft-250, settings: {lr: 1.0e-4}}], seeds: [0, 1]}\n"
    path = tmp_path / "g.yaml"
    path.write_text(head + "worlds: [{seed: 0}, {seed: 1}, {seed: 2}]\n")
    the_plan = plan(load_grid(path), results_dir=tmp_path, locate=False)
    assert len(the_plan.cells) == 6 and len(the_plan.nodes) == 3
    assert sorted({c.spec.suite.params["seed"] for c in the_plan.cells}) == [0, 1, 2]
    assert {c.group for c in the_plan.cells} == {f"none [world seed={s}]" for s in (0, 1, 2)}
    path.write_text(head + "worlds: [{seed: 1}, {seed: 1}]\n")
    with pytest.raises(ConfigError, match="worlds repeats a world"):
        plan(load_grid(path), results_dir=tmp_path, locate=False)
