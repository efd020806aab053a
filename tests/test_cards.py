"""Fidelity cards (`harness.cards`, `harness cards check`): a card beside a defence's module passes only if it is
complete, each switch names Config fields, validates and changes the run id, and the Config with every switch applied
trains at smoke size to finite weights; every built-in defence has a card that passes.

The defences under test are written to a temporary folder as real modules (a card is found beside the file of the
module that registers the defence) and unregistered afterwards."""

from __future__ import annotations

import importlib
import sys
import uuid

import pytest
import yaml

from harness import cards, registry
from tests.store.test_store_safety import cli, one_error_line

MODULE = '''
from pydantic import Field, StrictBool

from harness.plugins import DefenceTrainingFields, fit
from harness.registry import register_defence
from harness.training.collate import SFTCollator
from harness.training.loop import lm_loss


class Config(DefenceTrainingFields):
    strength: float = Field(1.0, gt=0, description="a weight the defence declares")
    poison: StrictBool = Field(False, description="fill every weight with NaN after training (a broken setting)")


@register_defence("{name}", config=Config, version="1")
def defend(model, cfg, ctx):
    """A test defence: SFT on refusals."""
    collate = SFTCollator(ctx.tokenizer, ctx.max_length, loss_on="answer", target="refusal", template=ctx.template)
    model = fit(model, ctx, split="defence", cfg=cfg, collate=collate, loss_fn=lm_loss)
    if cfg.poison:
        for p in model.parameters():
            p.data.fill_(float("nan"))
    return model
'''


def rows(**how) -> list[dict]:
    """A complete set of rows (every required aspect once), each `same: true` unless `how` gives its how."""
    out = []
    for aspect in cards.REQUIRED_ASPECTS:
        row = {"aspect": aspect, "paper": f"the paper's {aspect}", "code": f"the code's {aspect}", "ours": "ours"}
        row.update(how.get(aspect.replace(" ", "_"), {"same": True}))
        out.append(row)
    return out


def card(name: str, settings: list[dict], **top) -> dict:
    return {"defence": name, "title": "A test defence", "paper": "Someone 2026. A paper.", "code": "", **top,
            "settings": settings}


@pytest.fixture
def defence(tmp_path, monkeypatch):
    """make(card) -> the name of a new defence registered from a module in tmp_path, with `card(name)` beside it (a
    dict, dumped as YAML, or text written as is; card None: no card)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made: list[tuple[str, str]] = []

    def make(content=None, *, suffix: str = ".card.yaml") -> str:
        module = f"cardtest_{uuid.uuid4().hex[:8]}"
        name = module.replace("_", "-")
        (tmp_path / f"{module}.py").write_text(MODULE.format(name=name))
        if content is not None:
            made_card = content(name)
            text = made_card if isinstance(made_card, str) else yaml.safe_dump(made_card, sort_keys=False)
            (tmp_path / f"{module}{suffix.format(name=name)}").write_text(text)
        importlib.import_module(module)
        made.append((module, name))
        return name

    yield make
    for module, name in made:
        registry._registry["defence"].pop(name, None)
        sys.modules.pop(module, None)


def only(problems: list[str], *parts: str) -> None:
    assert len(problems) == 1, problems
    for part in parts:
        assert part in problems[0], problems[0]


def test_a_good_card_passes_with_its_replay(defence):
    name = defence(lambda n: card(n, rows(lr={"switch": {"lr": 2e-5}}, loss_terms={"switch": {"strength": 2.0}},
                                          model={"reason": "each suite's own model"})))
    assert cards.check(name) == []


def test_a_card_may_be_named_after_its_defence(defence):
    name = defence(lambda n: card(n, rows()), suffix=".{name}.card.yaml")
    assert cards.check(name, replay=False) == []


def test_no_card(defence):
    name = defence(None)
    only(cards.check(name), "no fidelity card", f"{name.replace('-', '_')}.card.yaml")


def test_a_switch_naming_a_missing_field_fails(defence):
    name = defence(lambda n: card(n, rows(lr={"switch": {"strenght": 2.0}})))
    only(cards.check(name), "row 'lr'", "strenght, not a field of the Config", "strength")


def test_a_switch_that_does_not_validate_fails(defence):
    name = defence(lambda n: card(n, rows(lr={"switch": {"strength": -1.0}})))
    only(cards.check(name), "row 'lr'", "does not validate", "defence.strength")


@pytest.mark.parametrize("switch", [{"precision": "model"}, {"strength": 1.0}],
                         ids=["left-out-of-key-at-its-default", "the-config-default"])
def test_a_switch_that_does_not_change_the_run_id_fails(defence, switch):
    """precision is a shared option left out of run ids at its default; strength 1.0 is the Config's default. Either
    way the run is the one made without the switch: it restores nothing."""
    name = defence(lambda n: card(n, rows(precision={"switch": switch})))
    only(cards.check(name), "row 'precision'", "does not change the run id")


def test_a_missing_required_aspect_fails(defence):
    name = defence(lambda n: card(n, [r for r in rows() if r["aspect"] != "clipping"]))
    only(cards.check(name), "missing required aspect(s) clipping")


@pytest.mark.parametrize(("how", "message"), [
    ({"same": True, "reason": "both"}, "exactly one of `same: true`, `switch` or `reason` (it has same and reason)"),
    ({"paper": "x"}, "(it has none of them)"),
    ({"same": False}, "settings[3] 'lr'.same: Input should be True"),
    ({"switch": {}}, "settings[3] 'lr'.switch"),
    ({"reason": ""}, "settings[3] 'lr'.reason"),
])
def test_a_row_needs_exactly_one_how(defence, how, message):
    name = defence(lambda n: card(n, rows(lr=how)))  # {"paper": "x"}: a row with no how at all
    only(cards.check(name), "invalid card", message)


@pytest.mark.parametrize(("text", "message"), [
    ("defence: {name}\nextra: 1\n", "extra: unknown key"),
    ("defence: &a {name}\n", "anchors and aliases"),
    ("defence: {name}\ndefence: {name}\n", "duplicate key 'defence'"),
    ("- just\n- a list\n", "(card): Input should be a valid dictionary"),
])
def test_a_card_is_strict_yaml_matching_the_schema(defence, text, message):
    name = defence(lambda n: text.format(name=n))
    only(cards.check(name), message)


def test_a_card_naming_another_defence_fails(defence):
    name = defence(lambda n: card("someone-else", rows()))
    only(cards.check(name), "is the card of 'someone-else'")


def test_conflicting_switches_fail(defence):
    name = defence(lambda n: card(n, rows(lr={"switch": {"lr": 2e-5}}, steps={"switch": {"lr": 1e-5}})))
    only(cards.check(name), "rows 'steps' and 'lr' switch lr to different values (1e-05, 2e-05)")


def test_the_replay_catches_a_switch_that_breaks_training(defence):
    name = defence(lambda n: card(n, rows(precision={"switch": {"poison": True}})))
    assert cards.check(name, replay=False) == []
    only(cards.check(name), "replay with every switch applied", "non-finite weights")


def builtins() -> list[str]:
    found = [n for n in registry.names("defence") if cards._builtin(registry.get("defence", n))]
    assert {"none", "repnoise", "adversarial-loss", "gradient-ascent", "safety-training", "random-init",
            "vaccine"} <= set(found)
    return found


def test_every_builtin_defence_has_a_card_that_passes():
    """Everything but the replay (`make test` runs `harness cards check`, replays included, and the slow test below)."""
    names = builtins()
    assert [r.line() for r in cards.check_many(names, replay=False)] == [f"ok {n}" for n in names]


@pytest.mark.slow
def test_every_builtin_card_replays():
    """Two outer steps of each built-in at its reference settings (~30 s: TAR's restored 64-step inner attack)."""
    names = builtins()
    assert [r.line() for r in cards.check_many(names)] == [f"ok {n}" for n in names]


def test_check_many_skips_outside_defences_without_a_card_and_flags_stray_cards(defence, tmp_path):
    name = defence(None)
    (tmp_path / "stray.card.yaml").write_text(yaml.safe_dump(card("not-registered", rows())))
    lines = [r.line() for r in cards.check_many(replay=False)]
    assert f"skip {name}: no card (required of the built-in defences only)" in lines
    assert any(line.startswith("FAIL stray.card.yaml: card ") and "the card of no registered defence" in line
               for line in lines), lines
    assert "ok repnoise" in lines


def test_cli_exit_codes(defence, capfd):
    good = defence(lambda n: card(n, rows()))
    bad = defence(lambda n: card(n, rows(lr={"switch": {"strength": 1.0}})))
    code, out, err = cli(capfd, "cards", "check", good)
    assert (code, out, err) == (0, f"ok {good}\n", "")
    code, out, err = cli(capfd, "cards", "check", good, bad)
    assert code == 1 and err == "", err
    assert out.splitlines()[0] == f"ok {good}" and out.splitlines()[1].startswith(f"FAIL {bad}: row 'lr': switch")
    code, out, err = cli(capfd, "cards", "check", good, "repnose")
    assert code == 2 and out == ""
    one_error_line(err, "Unknown defence 'repnose'", "Did you mean: repnoise?")
