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
