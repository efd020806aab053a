"""`harness plugins check` for real, on the smoke-size tiny suite: the example package (installed with pip into a
temporary folder) passes every check and writes a record naming its distribution; defences that break one
rule each fail that check, by name. Slow (~2 min), kept in CI."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.outside import harness_with, make_distribution, sections

pytestmark = pytest.mark.slow
EXAMPLE = REPO / "examples" / "weight-noise"
LEAKY = ["reads-attack", "peeks-eval", "leaves-hook", "sloppy"]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """`pip install` of the example package (a copy: the build leaves nothing in the repo) into a folder."""
    tmp = tmp_path_factory.mktemp("example")
    src, target = tmp / "src", tmp / "site"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "-t", str(target), str(src)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    return target


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """A distribution declaring the rule-breaking defences of tests/fixtures/leaky_defences.py."""
    return make_distribution(tmp_path_factory.mktemp("leaky"), "leaky-defences", "0.1", modules={},
                             entry_points={"harness.defences": dict.fromkeys(LEAKY, "tests.fixtures.leaky_defences")})


def _results(stdout):
    """{check name: 'PASS'/'FAIL'/'SKIP' + detail} from the check's output."""
    out = {}
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASS", "FAIL", "SKIP"):
            name, _, detail = rest.partition(": ")
            out[name] = (word, detail)
    return out


def test_example_appears_in_harness_list(example):
    run = harness_with([example], "list", "defences")
    assert run.returncode == 0
    (line,) = [x for x in run.stdout.splitlines() if x.split()[:1] == ["weight-noise"]]
    assert line.endswith("[v2]") and "BROKEN" not in line


def test_example_passes_plugins_check(example, smoke_base, home):
    run = harness_with([example], "plugins", "check", "weight-noise", home=home)
    assert run.returncode == 0, run.stdout + run.stderr
    results = _results(run.stdout)
    assert len(results) == 14 and all(word == "PASS" for word, _ in results.values()), run.stdout
    assert "INFO defence 'weight-noise' v2 from distribution immunization-bench-weight-noise 0.1.0" in run.stdout
    assert "INFO gets the suite's training budget lr=0.001, epochs=1, batch_size=8, retain_harmless=1.0" in run.stdout


def test_example_own_tests_pass_when_installed(example):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(example), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and "4 passed" in proc.stdout, proc.stdout[-2000:]


def test_record_of_outside_defence_names_its_distribution(example, smoke_base, home, tmp_path):
    run = harness_with([example], "run", "--defence", "weight-noise", "--attack", "sft-250", "--set",
                       "suite.size=smoke", "--results-dir", str(tmp_path), "--json", home=home)
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads(run.stdout)
    prov = record["provenance"]
    assert prov["plugins"]["defence:weight-noise"] == "2"
    assert prov["plugin_distributions"]["defence:weight-noise"] == "immunization-bench-weight-noise==0.1.0"
    assert prov["plugin_distributions"]["attack:sft-250"].startswith("immunization-bench==")
    assert record["spec"]["defence"]["params"]["lr"] == 1e-3  # the suite's budget, as for the built-ins
    assert record["overrides"]["suite"]["defence"] == {"lr": 1e-3, "epochs": 1, "batch_size": 8, "retain_harmless": 1.0}


BROKEN = {
    "reads-attack": {"reads no forbidden split", "runs"},
    "peeks-eval": {"reads no forbidden split"},
    "leaves-hook": {"no hooks or patches left"},
    "sloppy": {"config documented", "version declared", "same seed, same weights"},
}


@pytest.fixture(scope="module")
def broken_checked(leaky, smoke_base, home):
    """One `plugins check` of every broken defence (one process: the suite and the time yardstick shared):
    {name: its section's output}."""
    run = harness_with([leaky], "plugins", "check", *BROKEN, home=home)
    assert run.returncode == 1, run.stdout + run.stderr
    return sections(run.stdout)


@pytest.mark.parametrize(("name", "failing"), list(BROKEN.items()))
def test_broken_defence_fails_the_check_it_breaks(name, failing, broken_checked):
    assert list(broken_checked) == list(BROKEN)
    results = _results(broken_checked[name])
    assert {n for n, (word, _) in results.items() if word == "FAIL"} == failing, broken_checked[name]
    if name == "reads-attack":
        assert "read the 'attack' split" in results["reads no forbidden split"][1]
        assert all(results[n][0] == "SKIP" for n in ("same architecture", "no hooks or patches left",
                                                    "within time budget"))
    if name == "peeks-eval":
        assert "read the 'eval' split" in results["reads no forbidden split"][1]
    if name == "leaves-hook":
        assert "model.layers.0.mlp" in results["no hooks or patches left"][1]
    if name == "sloppy":
        assert "scale" in results["config documented"][1]


@pytest.mark.parametrize("args", [["nope"], ["none", "nope"], ["none", "--set", "attack.lr=1"],
                                  ["none", "--set", "defence.x=1"],
                                  ["none", "--set", "garbage"]])
def test_bad_input_is_one_line_and_exit_2_before_any_work(args, tmp_path):
    run = harness_with([], "plugins", "check", *args, home=tmp_path / "never-built")
    assert run.returncode == 2 and run.stdout == "" and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert run.stderr.startswith("error: ") and not (tmp_path / "never-built").exists()
