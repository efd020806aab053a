"""Plugins cannot reach what they must not (harness.sandbox): a defence or an attack runs in its own process with
only its stage's splits, its model and its config, behind a guard that refuses the suite's data builders, the
store, programs and the network. Its outputs are those of the same plugin run in-process, bit for bit. The
cheating defences of tests/fixtures/cheating_defences.py each fail their run or `plugins check`, and a plugin
may register a built-in function under a name of its own.

The fast tier runs plugins on a tiny random Llama saved to a folder; the slow tier runs `harness run` and
`harness plugins check` on the smoke world."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from harness import registry
from harness.data.views import SplitAccessError, call_plugin
from harness.plugins import StageContext
from harness.sandbox.guard import SandboxError
from harness.sandbox.launch import PluginFailed, load_snapshot, policy, run_plugin
from harness.sandbox.worker import ModelPlan
from harness.suite import SuiteData
from tests.conftest import REPO, messages
from tests.defences.conftest import WORDS, harmless_rows, make_model, paired_rows
from tests.outside import harness_with, make_distribution, sections

CHEATS = ["loads-suite", "loads-suite-quietly", "hash-seeded", "swaps-hook", "patches-forward", "patches-class"]


@pytest.fixture(scope="module")
def cheats(tmp_path_factory):
    """A distribution declaring the defences of tests/fixtures/cheating_defences.py (and a peeking one)."""
    points = {**dict.fromkeys(CHEATS, "tests.fixtures.cheating_defences"),
              "peeks-other": "tests.fixtures.peeking_defences"}
    return make_distribution(tmp_path_factory.mktemp("cheats"), "cheating-defences", "0.1", modules={},
                             entry_points={"harness.defences": points})


@pytest.fixture
def installed(cheats, monkeypatch):
    """The cheating distribution visible here and in every plugin process; the registry restored after."""
    monkeypatch.syspath_prepend(str(cheats))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(cheats), str(REPO)]))
    monkeypatch.setitem(registry._registry, "defence", dict(registry._registry["defence"]))
    for module in ("tests.fixtures.cheating_defences", "tests.fixtures.peeking_defences"):
        monkeypatch.delitem(sys.modules, module, raising=False)  # imported afresh: it registers into this registry
    return cheats


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny random Llama and its word-level tokenizer, saved as a checkpoint folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    folder = tmp_path_factory.mktemp("tiny-model")
    make_model(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _data() -> SuiteData:
    from datasets import Dataset

    return SuiteData(defence=Dataset.from_list(paired_rows()), attack=Dataset.from_list(paired_rows(8)),
                     eval=Dataset.from_list(paired_rows(4)), retain=Dataset.from_list(harmless_rows()),
                     harmless_eval=Dataset.from_list(harmless_rows(4)), evidence={"rows_read": 7})


def _ctx(**kw: Any) -> StageContext:
    return StageContext(tokenizer=None, data=_data(), max_length=48, seed=0, **kw)


def _run(tmp_path: Path, tiny: Path, kind: str, name: str, params: dict | None = None, *, store: Path | None = None,
         **kw: Any):
    out = tmp_path / f"out-{name}-{kw.get('hash_seed', 0)}"
    out.mkdir()
    ctx = kw.pop("ctx", None) or _ctx()
    return out, run_plugin(kind, name, params or {}, ModelPlan(path=str(tiny)), ctx, out=out, store_root=store, **kw)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# ----------------------------------------------------------------------------- the guard
def test_policy_closes_the_suite_builders_the_store_and_the_suite_loader(tmp_path):
    got = policy(registry.get("defence", "none"), store_root=tmp_path / "store", allow=[tmp_path / "store" / "in"])
    assert {"tasks", "harness.resolve"} <= set(got.modules)
    assert str(tmp_path / "store") in got.paths and str(REPO / "tasks") in got.paths
    assert any(p.endswith("harness/resolve.py") for p in got.paths) and got.allow == [str(tmp_path / "store" / "in")]


GUARDED = """
import json, os, subprocess, sys
from harness.sandbox.guard import Policy, SandboxError, VIOLATIONS, install
install(Policy.model_validate_json(sys.argv[1]))
def attempt(f):
    try:
        f()
        return "allowed"
    except SandboxError:
        return "refused"
def spawn():
    import multiprocessing
    multiprocessing.get_context("spawn").Process(target=print).start()
print(json.dumps({
    "import suite": attempt(lambda: __import__("tasks.tiny.suite")),
    "import loader": attempt(lambda: __import__("harness.resolve")),
    "import json": attempt(lambda: __import__("json.tool")),
    "read builder source": attempt(lambda: open(sys.argv[2] + "/tasks/tiny/world.py").read()),
    "list store": attempt(lambda: os.listdir(sys.argv[3])),
    "read store": attempt(lambda: open(sys.argv[3] + "/secret.json").read()),
    "write own output": attempt(lambda: open(sys.argv[3] + "/out/model.bin", "w").write("x")),
    "parent's environment": attempt(lambda: open(f"/proc/{os.getppid()}/environ").read()),
    "own status": attempt(lambda: open("/proc/self/status").read()),
    "program": attempt(lambda: subprocess.run(["true"])),
    "spawned interpreter": attempt(spawn),
    "network": attempt(lambda: __import__("socket").create_connection(("127.0.0.1", 9))),
    "logged": len(VIOLATIONS)}))
"""


def test_a_plugin_process_is_told_no_store_and_no_zygote(tmp_path, monkeypatch):
    """Its environment names an empty store and not the folder of shared zygotes, whose sockets fork any module
    with any environment (the tests' own run has one: tests/conftest.py)."""
    from harness.processes.zygote import SHARED
    from harness.sandbox.launch import worker_env

    monkeypatch.setenv(SHARED, str(tmp_path / "zygotes"))
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "store"))
    env = worker_env(tmp_path / "work" / "home", 7)
    assert SHARED not in env and env["HARNESS_HOME"] == str(tmp_path / "work" / "home")
    assert env["PYTHONHASHSEED"] == "7" and env["HF_HUB_OFFLINE"] == "1"


def test_guard_refuses_every_door_and_logs_each(tmp_path):
    """In a process of its own (an audit hook is for life): every way to the suite's data is refused, what the
    plugin owns is not."""
    store = tmp_path / "store"
    (store / "out").mkdir(parents=True)
    (store / "secret.json").write_text("{}")
    rules = policy(registry.get("defence", "none"), store_root=store, allow=[store / "out"])
    proc = subprocess.run([sys.executable, "-c", GUARDED, rules.model_dump_json(), str(REPO), str(store)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    got = json.loads(proc.stdout)
    allowed = {"import json", "write own output", "own status"}
    assert {k for k, v in got.items() if v == "allowed"} == allowed, got
    assert got["logged"] == len(got) - 1 - len(allowed)


# ----------------------------------------------------------------------------- the same outputs as in-process
@pytest.mark.slow  # starts the plugin in its own process (torch imports, ~10 s)
@pytest.mark.parametrize(("name", "params"), [("none", {}), ("gradient-ascent", {"samples": 16, "lr": 1e-3}),
                                              ("repnoise", {"samples": 16, "lr": 1e-3, "batch_size": 8})])
def test_a_defence_in_its_process_saves_the_weights_it_gives_in_process(name, params, tiny, tmp_path):
    from harness.models.loading import load_causal_lm

    plugin = registry.get("defence", name)
    cfg = plugin.config.model_validate(params)
    model, tok = load_causal_lm(tiny)
    result = call_plugin("defence", plugin, model, cfg, dataclasses.replace(_ctx(), tokenizer=tok))
    out, outcome = _run(tmp_path, tiny, "defence", name, cfg.model_dump(mode="json"))
    response = outcome.raise_for_failure()
    assert response.result == ("unchanged" if result is None else "model")
    if result is not None:
        saved = _weights(out)
        assert saved.keys() and all(torch.equal(saved[k], v) for k, v in result.state_dict().items() if k in saved)
    outcome.cleanup()
    assert not outcome.work.exists()


@pytest.mark.slow  # starts the plugin in its own process (torch imports, ~10 s)
@pytest.mark.parametrize("name", ["sft-250", "lora-1k"])
def test_an_attack_in_its_process_gives_the_same_model_and_curve_snapshots(name, tiny, tmp_path):
    """The attack's training callback: in-process it saw the model at steps 1, 2; the process saves each (a
    LoRA attack: its adapter), and the stage loads them back equal (the resistance curve is scored on them)."""
    from harness.models.loading import load_causal_lm
    from harness.stages import Loading

    plugin = registry.get("attack", name)
    cfg = plugin.config.model_validate({"samples": 8, "lr": 1e-3, "batch_size": 4})
    model, tok = load_causal_lm(tiny)
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def record(step: int, m: Any) -> None:
        if step > 0:
            seen[step] = {k: v.clone() for k, v in m.state_dict().items()}

    result = call_plugin("attack", plugin, model, cfg, dataclasses.replace(_ctx(), tokenizer=tok, callback=record,
                                                                           every=1))
    out, outcome = _run(tmp_path, tiny, "attack", name, cfg.model_dump(mode="json"), ctx=_ctx(every=1), curve=True)
    response = outcome.raise_for_failure()
    assert [s.step for s in response.snapshots] == sorted(seen) == [1, 2]
    stages = type("Stages", (), {"loading": Loading(), "load": lambda self, ref, dtype=None: load_causal_lm(tiny)})()
    for snap in response.snapshots:
        loaded = load_snapshot(stages, "the attack's input", snap).state_dict()
        assert loaded.keys() == seen[snap.step].keys()
        assert all(torch.equal(loaded[k], v) for k, v in seen[snap.step].items())
    file = "adapter_model.safetensors" if response.result == "adapter" else "model.safetensors"
    assert response.result == ("adapter" if name == "lora-1k" else "model")
    from safetensors.torch import load_file

    saved, state = load_file(str(out / file)), result.state_dict()
    assert saved and all(torch.equal(v, state[k] if k in state else state[k.replace(".weight", ".default.weight")])
                         for k, v in saved.items())
    outcome.cleanup()


@pytest.mark.slow  # starts the plugin in its own process (torch imports, ~10 s)
def test_the_check_hands_the_plugin_what_a_run_hands_it(tiny, tmp_path):
    """The sentinels cannot be told from a run's: a run's plugin gets the very same objects (a view rebuilt around
    the stage's saved splits, `Withheld` for the rest). The requests differ only in what the check measures
    afterwards and in the seeds of what the plugin must not depend on."""
    from harness.sandbox.worker import Request

    requests = []
    for check, hash_seed in ((False, 0), (True, 1)):
        (tmp_path / str(check)).mkdir()
        _, outcome = _run(tmp_path / str(check), tiny, "defence", "none", check=check, hash_seed=hash_seed)
        outcome.raise_for_failure()
        requests.append(Request.model_validate_json((outcome.work / "request.json").read_text()).model_dump())
        outcome.cleanup()
    differ = {k for k in requests[0] if requests[0][k] != requests[1][k]}
    assert differ == {"check", "rng_seed", "splits", "out", "work", "policy"}  # paths of each process's own folders
    assert requests[0]["splits"].keys() == requests[1]["splits"].keys() == {"defence", "retain"}
    assert requests[0]["policy"]["modules"] == requests[1]["policy"]["modules"]


# ----------------------------------------------------------------------------- cheats, in their process
@pytest.mark.slow  # starts the plugin in its own process (torch imports, ~10 s)
def test_a_defence_calling_the_suite_loader_fails_with_one_line(installed, tiny, tmp_path):
    for name, what in (("loads-suite", "imported 'harness.resolve'"), ("loads-suite-quietly", "reached '")):
        _, outcome = _run(tmp_path, tiny, "defence", name, store=tmp_path)
        with pytest.raises(SandboxError) as exc:
            outcome.raise_for_failure()
        assert str(exc.value).startswith(f"defence '{name}' {what}") and "\n" not in str(exc.value)
        assert "the suite's data" in str(exc.value)
        outcome.cleanup()


@pytest.mark.slow  # starts the plugin in its own process (torch imports, ~10 s)
def test_a_defence_reading_a_withheld_split_fails_in_its_process(installed, tiny, tmp_path):
    """Only the stage's splits were saved for the process; the others are stand-ins there that log and raise,
    so a defence that swallows the error still fails its stage."""
    from harness.sandbox.worker import Request

    _, outcome = _run(tmp_path, tiny, "defence", "peeks-other")
    assert set(Request.model_validate_json((outcome.work / "request.json").read_text()).splits) == {"defence",
                                                                                                    "retain"}
    with pytest.raises(SplitAccessError, match=r"^defence 'peeks-other' read the 'other' split; the defence stage "
                                               r"may read only defence and retain$"):
        outcome.raise_for_failure()
    outcome.cleanup()


@pytest.mark.slow  # starts the plugin in its own process (torch imports, ~10 s)
def test_a_hash_seeded_defence_differs_across_hash_seeds_but_not_across_runs(installed, tiny, tmp_path):
    outs = []
    for i, hash_seed in enumerate((1, 2, 0, 0)):
        (tmp_path / str(i)).mkdir()
        out, outcome = _run(tmp_path / str(i), tiny, "defence", "hash-seeded", hash_seed=hash_seed)
        outcome.raise_for_failure()
        outs.append(_weights(out))
        outcome.cleanup()
    assert any(not torch.equal(outs[0][k], outs[1][k]) for k in outs[0])  # what `plugins check` compares
    assert all(torch.equal(outs[2][k], outs[3][k]) for k in outs[2])  # a run's hash seed is fixed


@pytest.mark.slow  # starts the plugin in its own process (torch imports, ~10 s)
@pytest.mark.parametrize(("name", "found"), [("swaps-hook", "forward hook #"), ("patches-forward", "forward set on "
                                             "the instance"), ("patches-class", "LlamaMLP: forward is")])
def test_hook_swaps_and_patched_forwards_are_found(name, found, installed, tiny, tmp_path):
    _, outcome = _run(tmp_path, tiny, "defence", name, check=True)
    response = outcome.raise_for_failure()
    assert response.changes and any(found in c for c in response.changes), response.changes
    outcome.cleanup()


@pytest.mark.slow  # starts the plugin in its own process (torch imports, ~10 s)
def test_an_honest_defence_changes_nothing_but_weights(tiny, tmp_path):
    _, outcome = _run(tmp_path, tiny, "defence", "gradient-ascent", {"samples": 16, "lr": 1e-3}, check=True)
    response = outcome.raise_for_failure()
    assert response.changes == [] and response.architecture == "" and response.digests
    assert (outcome.work / "probe.pt").exists()
    outcome.cleanup()


# ----------------------------------------------------------------------------- ownership
def test_a_builtin_function_under_a_new_name_from_another_distribution_registers(tmp_path):
    source = ("from attacks import sft\nfrom harness.registry import register_attack\n"
              "register_attack('my-sft', config=sft.Config, version='1', budget=sft.BUDGET)(sft.attack)\n")
    pkg = make_distribution(tmp_path / "reuse", "reuse-sft", "0.1", modules={"reuse_sft": source},
                            entry_points={"harness.attacks": {"my-sft": "reuse_sft"}})
    run = harness_with([pkg], "plugins", "--kind", "attack")
    assert run.returncode == 0, run.stderr
    (line,) = [x for x in run.stdout.splitlines() if x.split()[:2] == ["attack", "my-sft"]]
    assert "reuse-sft 0.1" in line and line.rstrip().endswith("reuse_sft.py") and "BROKEN" not in run.stdout


# ----------------------------------------------------------------------------- end to end, on the smoke world
def _results(stdout: str) -> dict[str, tuple[str, str]]:
    out = {}
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASS", "FAIL", "SKIP"):
            check, _, detail = rest.partition(": ")
            out[check] = (word, detail)
    return out


@pytest.mark.slow
def test_real_run_of_a_suite_loading_defence_fails_with_one_line(cheats, smoke_base, home, tmp_path):
    run = harness_with([cheats, REPO], "run", "--defence", "loads-suite", "--attack", "sft-250", "--set",
                       "suite.size=smoke", "--results-dir", str(tmp_path), home=home)
    assert run.returncode == 2, run.stderr[-3000:]
    said = messages(run.stderr)  # progress lines of the stage it stopped, then one line
    assert run.stdout == "" and len(said) == 1 and said == [run.stderr.splitlines()[-1]], run.stderr[-3000:]
    assert said[0].startswith("error: defence 'loads-suite' imported 'harness.resolve'")
    assert not list(tmp_path.rglob("*.json"))


CHEATING = {
    "loads-suite": {"stays in its sandbox", "runs"},
    "loads-suite-quietly": {"stays in its sandbox"},
    "hash-seeded": {"same seed, same weights"},
    "swaps-hook": {"no hooks or patches left"},
    "patches-forward": {"no hooks or patches left", "behaviour is its weights"},
}


@pytest.fixture(scope="module")
def cheats_checked(cheats, smoke_base, home):
    """One `plugins check` of every cheat (one process, as a reviewer checks a batch): each one's section."""
    run = harness_with([cheats, REPO], "plugins", "check", *CHEATING, home=home)
    assert run.returncode == 1, run.stdout + run.stderr
    return sections(run.stdout)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "failing"), list(CHEATING.items()))
def test_plugins_check_fails_each_cheat(name, failing, cheats_checked):
    assert list(cheats_checked) == list(CHEATING)
    results = _results(cheats_checked[name])
    assert {n for n, (word, _) in results.items() if word == "FAIL"} == failing, cheats_checked[name]


@pytest.mark.slow  # starts a plugin process
def test_a_plugin_process_that_cannot_reach_the_runs_device_fails_in_one_line(tmp_path, tiny, monkeypatch):
    """A run on a GPU whose plugin process finds none (a process forked after CUDA was initialised sees no device)
    fails at once, saying so, instead of training on the CPU for hours."""
    import harness.models.loading

    monkeypatch.setattr(harness.models.loading, "torch_device", lambda: "cuda")  # the parent's device, as sent
    out, outcome = _run(tmp_path, tiny, "defence", "safety-training", {"samples": 4, "batch_size": 2})
    with pytest.raises(PluginFailed, match="loaded its model on cpu, but the run's device is cuda"):
        outcome.raise_for_failure()
    assert not any(out.iterdir())  # nothing was trained or saved


def test_a_worker_stuck_after_its_response_does_not_hold_the_stage(tmp_path):
    """Once a plugin process has written its response, the stage waits `grace` seconds for it to exit, no longer."""
    import time

    from harness.sandbox.launch import _follow

    class Stuck:  # a process that never exits
        def poll(self):
            return None

    response = tmp_path / "response.json"
    response.write_text("{}")
    start = time.monotonic()
    _follow(Stuck(), tmp_path / "events.jsonl", None, response, grace=0.5)
    assert 0.5 <= time.monotonic() - start < 5
