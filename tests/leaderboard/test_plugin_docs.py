"""Defence descriptions on the site come from the plugin's source, never from importing it: a plugin whose
imports fail in the build environment reads the same, and no plugin code runs while the site is built."""

from __future__ import annotations

import sys

import pytest

from harness import registry
from leaderboard.plugin_docs import defence_info

PLUGIN = '''"""Outside defence: the paper, its settings.

Second paragraph."""

import a_module_this_environment_does_not_have  # would fail on import

RAN = open("{marker}", "w")  # would leave a file on import


@register_defence("outside", config=Config, version="3")
def defend(model, cfg, ctx):
    """Outside: one line the list shows.

    More detail."""


@register_defence("described", config=Config, version="1", description="Given in the decorator.")
def other(model, cfg, ctx):
    """Not this line."""


@register_judge("outside-judge", config=Config, version="1", measures="stars out of five")
def judge(cfg, store):
    """A judge."""
'''


@pytest.fixture
def outside(tmp_path, monkeypatch):
    package = tmp_path / "outside_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('the package must not be imported either')\n")
    (package / "plugin.py").write_text(PLUGIN.format(marker=tmp_path / "ran"))
    monkeypatch.syspath_prepend(str(tmp_path))
    declared = {"outside": ["outside_pkg.plugin"], "described": ["outside_pkg.plugin"], "twice": ["a", "b"],
                "outside-judge": ["outside_pkg.plugin"]}
    monkeypatch.setattr(registry, "declared_modules", lambda kind, name: declared.get(name, []))
    return tmp_path


def test_description_and_docstring_are_read_without_importing(outside):
    info = defence_info("outside")
    assert info.description == "Outside: one line the list shows."
    assert info.docstring == "Outside defence: the paper, its settings.\n\nSecond paragraph."
    assert defence_info("described").description == "Given in the decorator."
    assert "outside_pkg" not in sys.modules and not (outside / "ran").exists()


def test_what_a_judge_measures_is_read_without_importing(outside):
    from leaderboard.plugin_docs import judge_measures

    assert judge_measures("outside-judge") == "stars out of five"
    assert judge_measures("outside") == "" and judge_measures("missing") == ""  # not a judge / not installed
    assert "outside_pkg" not in sys.modules and not (outside / "ran").exists()


def test_builtin_judges_say_what_they_measure_as_the_registry_records_it():
    from leaderboard.plugin_docs import judge_measures

    for name in ("tiny-content", "hf-classifier", "generative-safety"):
        assert judge_measures(name) == registry.get("judge", name).measures != ""


def test_not_installed_and_conflicting_declarations_still_render(outside):
    assert defence_info("missing").description == "not installed"
    assert "declared by 2 installed packages" in defence_info("twice").description


def test_builtin_defences_read_as_the_registry_describes_them():
    declared = [n for n in registry.names("defence") if registry.declared_modules("defence", n)]
    assert len(declared) >= 7  # the built-ins (tests may register more in-process, without an entry point)
    for name in declared:
        plugin = registry.get("defence", name)
        info = defence_info(name)
        assert info.description == plugin.description
        assert info.docstring == (sys.modules[plugin.fn.__module__].__doc__ or "").strip()


CARD = """defence: outside
title: Outside's method
paper: "Someone 2026. Outside. arXiv:0000.00000"
code: ""
settings:
""" + "".join(f"  - {{aspect: {a}, paper: p, code: c, ours: o, same: true}}\n" for a in (
    "model", "data", "steps", "lr", "loss terms", "layers", "lora", "clipping", "precision"))


def test_the_fidelity_card_is_read_beside_the_registering_module_without_importing(outside):
    (outside / "outside_pkg" / "plugin.outside.card.yaml").write_text(CARD)
    broken = CARD.replace("defence: outside", "defence: described").replace("- {aspect: lora", "- {aspekt: lora")
    (outside / "outside_pkg" / "plugin.described.card.yaml").write_text(broken)
    info = defence_info("outside")
    assert info.card is not None and info.card.title == "Outside's method" and len(info.card.settings) == 9
    assert info.card_note == ""
    described = defence_info("described")
    assert described.card is None and described.card_note.startswith("Its fidelity card does not read: invalid card")
    assert "outside_pkg" not in sys.modules and not (outside / "ran").exists()


def test_a_defence_without_a_card_says_so(outside):
    info = defence_info("outside")
    assert info.card is None and info.card_note.startswith("No fidelity card")
    assert defence_info("missing").card_note == ""  # not installed: the description says so already
