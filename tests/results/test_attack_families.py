"""Attack families (`register_attack(..., family=...)`): the budget table and the leaderboard group a board's
budgets by the family of their attack where it has several, each family's budgets weakest first."""

from __future__ import annotations

import pytest

from harness import registry
from harness.errors import PluginLoadError
from harness.results.summary import frames_from_records, summarise
from tests.factories import record


def test_every_built_in_attack_declares_its_family_and_only_attacks_may():
    families = {n: registry.get("attack", n).family for n in registry.names("attack")}
    assert families["sft-250"] == families["lora-1k"] == "harmful fine-tuning"
    assert families["forced-prefix"] == families["best-of-n"] == "prompting (no training)"
    assert families["benign-250"] == families["retain-ft-250"] == "benign fine-tuning"
    assert all(families.values()), [n for n, f in families.items() if not f]
    from pydantic import BaseModel

    with pytest.raises(PluginLoadError, match="only attacks do"):
        registry.register("defence", "x-family", config=BaseModel, version="1", family="harmful fine-tuning")


def mixed():
    return [record("d", {}, lr, seed, post=post, attack=attack)
            for seed in (0, 1) for attack, lr, post in (("sft-250", 3e-4, 0.8), ("forced-prefix", 1e-6, 0.4),
                                                        ("sft-250", 1e-5, 0.2))]


def test_budgets_are_grouped_by_family_weakest_first_and_the_table_says_which():
    from dataclasses import replace

    from harness.resolve import load_suite
    from harness.results.budget_table import budget_summary, markdown

    summary = summarise(frames_from_records(mixed()), '{"size":"smoke"}', 0.5)
    assert [(b.attack, b.family) for b in summary.budgets] == [
        ("sft-250", "harmful fine-tuning"), ("sft-250", "harmful fine-tuning"),
        ("forced-prefix", "prompting (no training)")]
    assert [b.lr for b in summary.budgets][:2] == [1e-5, 3e-4]  # within a family, weakest first
    _, suite = load_suite("tiny", {"size": "smoke"})
    text = markdown(budget_summary(mixed(), replace(suite, reference_defence=None), {"size": "smoke"}))
    lines = text.splitlines()
    # first the worst case in each family (the zoo at a glance), then each family's own budgets
    assert "| worst harmful fine-tuning | worst prompting (no training) | breaks at | worst useful attack |" in lines[0]
    worst = lines[2].split(" | ")
    assert worst[4].startswith("0.80 ± ") and worst[4].endswith("(3e-4@250)")  # harmful fine-tuning's stronger budget
    assert worst[5].startswith("0.40 ± ") and worst[6:] != []
    assert "harmful fine-tuning:" in lines and "prompting (no training):" in lines
    family_tables = [line for line in lines if line.startswith("| defence |")]
    assert family_tables[1:] == ["| defence | 1e-5@250 | 3e-4@250 |", "| defence | 1e-6@250 |"]
    one = markdown(budget_summary([r for r in mixed() if r.spec.attack.name == "sft-250"],
                                  replace(suite, reference_defence=None), {"size": "smoke"})).splitlines()[0]
    assert "| 1e-5@250 | 3e-4@250 |" in one and "fine-tuning:" not in one  # one family: labels as before


def test_the_leaderboard_groups_budget_columns_by_family_only_where_there_are_several():
    from leaderboard.board import _board
    from leaderboard.views import group_of

    class Folder:
        suite, protocol_version, tables = "t", 1, {}

    summary = summarise(frames_from_records(mixed()), '{"size":"smoke"}', 0.5)
    board = _board(Folder(), summary)
    budget_groups = [group_of(c) for c in board.columns if c.id.startswith("budget:")]
    assert budget_groups == ["harmfulness after attack: harmful fine-tuning (per budget)"] * 2 + [
        "harmfulness after attack: prompting (no training) (per budget)"]
    single = summarise(frames_from_records([r for r in mixed() if r.spec.attack.name == "sft-250"]),
                       '{"size":"smoke"}', 0.5)
    assert {group_of(c) for c in _board(Folder(), single).columns if c.id.startswith("budget:")} == {
        "harmfulness before / after attack, per budget (lr@samples)"}
