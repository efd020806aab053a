import subprocess
import sys
import tomllib
from importlib import metadata

import pytest
from pydantic import BaseModel

from harness import registry
from harness.errors import PluginLoadError, UnknownNameError
from tests.conftest import REPO

BENCH = metadata.version("immunization-bench")


def test_unknown_name_suggests_and_lists():
    with pytest.raises(UnknownNameError) as exc:
        registry.get("attack", "sft-1K")
    msg = str(exc.value)
    assert "Unknown attack 'sft-1K'" in msg and "Did you mean: sft-1k" in msg and "Available:" in msg


def _builtin_names(kind):
    """Names the installed immunization-bench distribution declares (outside plugins may be installed too)."""
    return {n for n, decls in registry._declarations(kind).items() if decls[0].distribution == "immunization-bench"}


def test_entry_points_equal_decorated_plugins():
    """pyproject's entry points and the decorators are one source of truth: every name loads and registers."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    total = 0
    for kind in registry.KINDS:
        names = set(declared[registry.group(kind)])
        assert names == _builtin_names(kind), kind  # installed metadata is current
        for name in names:
            plugin = registry.get(kind, name)
            assert plugin.name == name and registry.distribution_of(plugin)[0] == "immunization-bench"
        builtin = {n for n, p in registry._registry[kind].items() if p.module.split(".")[0] in
                   ("defences", "attacks", "tasks", "harness")}
        assert builtin == names, f"decorated {kind}s differ from entry points"
        total += len(names)
    assert total >= 7


def test_broken_plugin_fails_only_its_lookup(monkeypatch):
    fake = registry.Declaration("broken", "tests.fixtures.broken_plugin", "broken-dist", "1")
    real = registry._declarations
    monkeypatch.setattr(registry, "_declarations",
                        lambda kind: {**real(kind), "broken": [fake]} if kind == "defence" else real(kind))
    with pytest.raises(PluginLoadError, match=r"defence 'broken' failed to load.*RuntimeError: boom"):
        registry.get("defence", "broken")
    assert registry.get("defence", "none").name == "none"
    rows = dict(registry.describe("defence"))
    assert rows["broken"].startswith("BROKEN:") and "v1" in rows["none"]


def _register_from(module, kind, name, qualname="defend", fn_module=None):
    """Register a plugin function as module `module` would: the decorator called from that module's code (its
    globals' __name__), the function defined there unless `fn_module` says it was imported from elsewhere."""
    from pydantic import BaseModel

    def fn(): ...
    fn.__module__, fn.__qualname__ = fn_module or module, qualname
    scope = {"__name__": module, "register": registry.register, "BaseModel": BaseModel, "fn": fn}
    exec(f"register({kind!r}, {name!r}, config=BaseModel, version='1')(fn)", scope)
    return fn


def test_same_name_from_another_module_is_an_error():
    """The old check compared only __qualname__, so an outside `defend` silently replaced a built-in's."""
    _register_from("pkg_one.plugin", "judge", "dup-test")
    try:
        _register_from("pkg_one.plugin", "judge", "dup-test")  # a reload
        with pytest.raises(PluginLoadError, match=r"registered twice: by module 'pkg_one.plugin'.*'pkg_two.plugin'"):
            _register_from("pkg_two.plugin", "judge", "dup-test")
        with pytest.raises(PluginLoadError, match="registered twice"):
            _register_from("pkg_one.plugin", "judge", "dup-test", qualname="other")
        with pytest.raises(PluginLoadError, match=r"registered twice: by module 'pkg_one.plugin'.*'pkg_two.plugin'"):
            _register_from("pkg_two.plugin", "judge", "dup-test", fn_module="pkg_one.plugin")  # its function, reused
        assert registry._registry["judge"]["dup-test"].module == "pkg_one.plugin"
    finally:
        del registry._registry["judge"]["dup-test"]


def test_a_module_cannot_register_a_name_another_package_declares():
    """Even before the built-in is imported: the entry point says who owns 'repnoise'; registering the built-in's
    own function from outside does not make the outside module its owner."""
    for fn_module in (None, "defences.repnoise"):
        with pytest.raises(PluginLoadError) as exc:
            _register_from("outside_pkg.defence", "defence", "repnoise", fn_module=fn_module)
        msg = str(exc.value)
        assert "module 'outside_pkg.defence'" in msg and f"immunization-bench {BENCH} (module defences.repnoise)" in msg
    assert registry.get("defence", "repnoise").module == "defences.repnoise"


def test_a_builtin_function_registered_under_a_new_name_belongs_to_the_registering_module():
    """Ownership is the registering module's (and its distribution's), not the function's `__module__`: the
    built-in SFT function under a name of its own is no replacement of 'sft-1k'."""
    from attacks import sft

    scope = {"__name__": "my_attacks.reuse", "register_attack": registry.register_attack, "sft": sft}
    try:
        exec("register_attack('reused-sft-test', config=sft.Config, version='1', budget=sft.BUDGET)(sft.attack)", scope)
        plugin = registry._registry["attack"]["reused-sft-test"]
        assert plugin.fn is sft.attack and plugin.module == "my_attacks.reuse"
        assert registry.get("attack", "sft-1k").module == "attacks.sft"
    finally:
        registry._registry["attack"].pop("reused-sft-test", None)


def test_two_distributions_declaring_one_name_fail_its_lookup_only(monkeypatch):
    real = registry._declarations
    twins = [registry.Declaration("twin", "dist_a_mod", "dist-a", "1.0"),
             registry.Declaration("twin", "dist_b_mod", "dist-b", "2.0")]
    monkeypatch.setattr(registry, "_declarations",
                        lambda kind: {**real(kind), "twin": twins} if kind == "defence" else real(kind))
    with pytest.raises(PluginLoadError, match=r"declared by 2 distributions: dist-a 1.0 .*and dist-b 2.0"):
        registry.get("defence", "twin")
    rows = dict(registry.describe("defence"))
    assert rows["twin"].startswith("BROKEN:") and "dist-a" in rows["twin"] and "dist-b" in rows["twin"]
    assert rows["none"].endswith("[v1]  (seed-independent: one defended model whatever the seed)")
    assert rows["repnoise"].endswith("]")


def test_a_seed_independent_defence_says_so_at_registration():
    """`none` returns its input: every defence seed gives one model, declared where it registers."""
    assert registry.get("defence", "none").seeded is False
    assert registry.get("defence", "repnoise").seeded is True and registry.get("defence", "random-init").seeded
    with pytest.raises(PluginLoadError, match="attack 'unseeded-test' declares seeded=False; only defences do"):
        registry.register("attack", "unseeded-test", config=BaseModel, version="1", seeded=False)


def test_plugin_inventory_names_distribution_and_source():
    rows = {(r[0], r[1]): r for r in registry.inventory()}
    _, _, version, dist, source, problem = rows[("defence", "repnoise")]
    assert problem == ""
    assert version == registry.get("defence", "repnoise").version and dist == f"immunization-bench {BENCH}"
    assert source.endswith("defences/repnoise.py")
    assert rows[("attack", "sft-1k")][4].endswith("attacks/sft.py")


@pytest.mark.parametrize("args", [["list"], ["--help"], ["run", "--help"], ["plugins"], ["plugins", "check", "--help"],
                                  ["validate", "--help"]])
def test_cli_help_and_list_do_not_import_torch(args):
    code = ("import sys\nfrom harness.cli import main\ntry:\n    main(" + repr(args) + ")\nexcept SystemExit:\n"
            "    pass\nassert 'torch' not in sys.modules, 'torch was imported'\nprint('OK')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr


def test_attack_budget_is_read_through_the_declaration(monkeypatch):
    """An attack whose fields have other names still fills the budget columns of the tables."""
    from pydantic import BaseModel

    from harness.results.tables import build
    from harness.specs import PluginSpec
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


def test_only_judges_declare_what_they_measure():
    """A judge's `measures` is what its score means on an axis (the leaderboard reads it); other kinds have none."""
    from pydantic import BaseModel

    class Config(BaseModel):
        n: int = 1

    with pytest.raises(PluginLoadError, match="declares what it measures; only judges do"):
        registry.register("defence", "measuring-defence", config=Config, version="1", measures="x")(lambda m, c: m)
    assert registry.get("judge", "tiny-content").measures == "revealed fact slots (fraction of the asked fact)"


def test_default_suite_comes_from_metadata_not_the_core():
    assert registry.default_name("suite") in registry.names("suite")
