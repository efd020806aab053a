import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint

import pytest

from harness import registry
from harness.errors import PluginLoadError, UnknownNameError
from tests.conftest import REPO


def test_unknown_name_suggests_and_lists():
    with pytest.raises(UnknownNameError) as exc:
        registry.get("attack", "sft-1K")
    msg = str(exc.value)
    assert "Unknown attack 'sft-1K'" in msg and "Did you mean: sft-1k" in msg and "Available:" in msg


def test_entry_points_equal_decorated_plugins():
    """pyproject's entry points and the decorators are one source of truth: every name loads and registers."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    total = 0
    for kind in registry.KINDS:
        names = set(declared[registry.group(kind)])
        assert names == set(registry.names(kind)), kind  # installed metadata is current
        for name in names:
            assert registry.get(kind, name).name == name
        assert set(registry._registry[kind]) == names, f"decorated {kind}s differ from entry points"
        total += len(names)
    assert total >= 7


def test_broken_plugin_fails_only_its_lookup(monkeypatch):
    fake = EntryPoint(name="broken", value="tests.fixtures.broken_plugin", group="harness.defences")
    real = registry._entry_points
    monkeypatch.setattr(registry, "_entry_points",
                        lambda kind: {**real(kind), "broken": fake} if kind == "defence" else real(kind))
    with pytest.raises(PluginLoadError, match=r"defence 'broken' failed to load.*RuntimeError: boom"):
        registry.get("defence", "broken")
    assert registry.get("defence", "none").name == "none"
    rows = dict(registry.describe("defence"))
    assert rows["broken"].startswith("BROKEN:") and "v1" in rows["none"]


def test_duplicate_registration_is_an_error():
    from pydantic import BaseModel

    def a(): ...

    def b(): ...

    registry.register("judge", "dup-test", config=BaseModel, version="1")(a)
    with pytest.raises(PluginLoadError, match="registered twice"):
        registry.register("judge", "dup-test", config=BaseModel, version="1")(b)
    del registry._registry["judge"]["dup-test"]


@pytest.mark.parametrize("args", [["list"], ["--help"], ["run", "--help"]])
def test_cli_help_and_list_do_not_import_torch(args):
    code = ("import sys\nfrom harness.cli import main\ntry:\n    main(" + repr(args) + ")\nexcept SystemExit:\n"
            "    pass\nassert 'torch' not in sys.modules, 'torch was imported'\nprint('OK')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr


def test_attack_budget_is_read_through_the_declaration(monkeypatch):
    """An attack whose fields have other names still fills the budget columns of the tables."""
    from pydantic import BaseModel

    from harness.specs import PluginSpec
    from harness.tables import build
    from tests.factories import record

    class Config(BaseModel):
        n_examples: int = 10
        step_size: float = 1e-3

    monkeypatch.setitem(registry._registry["attack"], "odd-attack", None)
    registry.register("attack", "odd-attack", config=Config, version="1",
                      budget={"samples": "n_examples", "lr": "step_size"})(lambda m, c, x: m)
    spec = PluginSpec(name="odd-attack", version="1", params={"n_examples": 40, "step_size": 2e-4})
    budget = registry.attack_budget(spec)
    assert (budget.samples, budget.lr, budget.epochs) == (40, 2e-4, None)
    r = record()
    r = r.model_copy(update={"spec": r.spec.model_copy(update={"attack": spec}), "budget": budget})
    row = build([r])["resistance"].iloc[0]
    assert (row.attack_samples, row.attack_lr, row.attack) == (40, 2e-4, "odd-attack")


@pytest.mark.parametrize("budget", [{"samples": "nope"}, {"batch": "n"}])
def test_an_invalid_budget_declaration_is_refused(budget):
    from pydantic import BaseModel

    class Config(BaseModel):
        n: int = 1

    with pytest.raises(PluginLoadError, match="invalid budget"):
        registry.register("attack", "bad-budget", config=Config, version="1", budget=budget)(lambda m, c, x: m)


def test_default_suite_comes_from_metadata_not_the_core():
    assert registry.default_name("suite") in registry.names("suite")
