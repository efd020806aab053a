"""Fault injection on the smoke suite, through the CLI in subprocesses (slow, kept in CI).

- A run killed (SIGINT first, then SIGKILL) mid-stage and at stage boundaries, resumed each time, ends with
  the metrics of an uninterrupted run; what the kills left is cleaned at the next start.
- Damaged or tampered artifacts of every kind are detected (one warning line each), recomputed, and the
  record equals the undamaged one.
- Two identical runs started together compute each artifact once (the store's journal counts every commit)
  and write the record once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import INTERRUPTED
from harness.store.artifacts import JOURNAL, Store
from harness.store.locks import try_lock
from tasks.tiny.suite import PROTOCOL, Config, build_key
from tests import process
from tests.conftest import REPO, messages

pytestmark = pytest.mark.slow
SUITE_KEY = build_key(Config(size="smoke"))
ARGS = ["run", "--defence", "safety-training", "--attack", "sft-250", "--set", "suite.size=smoke", "--set",
        "defence.samples=48", "--set", "attack.samples=48", "--set", "eval.n_prompts=24", "--set",
        "eval.n_harmless=24", "--json"]


def start(home: Path, results: Path) -> process.CLI:
    env = {**os.environ, "HARNESS_HOME": str(home), "COLUMNS": "200"}
    # (Ctrl-C as in a terminal even when the tests run in the background, SIGINT ignored: the child's handlers
    # are the defaults)
    return process.start([*ARGS, "--results-dir", str(results)], env=env, cwd=REPO)


def finish(proc: process.CLI) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out), err


def journal(home: Path) -> list[dict]:
    path = home / JOURNAL
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def prepared(smoke_base, home, tmp_path_factory) -> Path:
    """A store holding only the prepared smoke suite (the session's store may hold other tests' stages)."""
    fresh = tmp_path_factory.mktemp("prepared")
    shutil.copytree(home / "suites", fresh / "suites")
    return fresh


@pytest.fixture(scope="module")
def pair(prepared, tmp_path_factory) -> dict:
    """Two identical runs started together on one store and one results dir: the uninterrupted baseline."""
    home, results = tmp_path_factory.mktemp("complete"), tmp_path_factory.mktemp("results")
    shutil.copytree(prepared, home, dirs_exist_ok=True)
    procs = [start(home, results) for _ in range(2)]
    stats = []
    while len(stats) < 2:  # the record file's identity when the first and when the second process exit
        if sum(p.poll() is not None for p in procs) > len(stats):
            stats.append([(p.stat().st_ino, p.stat().st_mtime_ns) for p in results.glob("*/*/*.json")])
        time.sleep(0.05)
    outs = [finish(p)[0] for p in procs]
    return {"records": outs, "stats": stats, "home": home, "results": results}


def test_identical_concurrent_runs_compute_each_stage_once_and_write_one_record(pair):
    files = list(pair["results"].glob("*/*/*.json"))
    assert len(files) == 1 and pair["stats"][0] == pair["stats"][1] != []  # written once, never rewritten
    on_disk = json.loads(files[0].read_text())
    assert pair["records"][0] == pair["records"][1] == on_disk
    events = journal(pair["home"])
    keys = [(e["kind"], e["key"]) for e in events]
    assert {e["event"] for e in events} == {"written"} and len(keys) == len(set(keys))  # each computed once
    assert set(keys) == {(k, a) for k, a in Store(pair["home"]).artifacts() if k != "suites"}


def _computing(home: Path, kind: str) -> str | None:
    """The artifact of `kind` whose lock another process holds (it is computing or writing it), if any."""
    for lock in (home / ".locks" / kind).glob("*.lock"):
        with try_lock(lock) as free:
            if not free:
                return f"{kind}/{lock.stem}"
    return None


def _boundaries(home: Path) -> set[str]:
    """Finished stages: artifacts of the kinds that close a pipeline stage (defend, attack, each evaluation's
    generations, the conditions' trainability)."""
    return {f"{p.parent.parent.name}/{p.parent.name}" for kind in ("models", "generations", "trainability")
            for p in (home / kind).glob("*/meta.json")}


def kill_when(proc: process.CLI, home: Path, trigger: str, sig: int) -> tuple[str | None, str]:
    """Send `sig` once `trigger` happens ("boundary": a stage just finished; a kind: an artifact of that kind is
    being computed, i.e. mid-stage). Returns what fired (None if the run finished first) and its stderr."""
    seen = _boundaries(home)
    while proc.poll() is None:
        fired = (next(iter(sorted(_boundaries(home) - seen)), None) if trigger == "boundary"
                 else _computing(home, trigger))
        if fired is not None:
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=120)
            return f"{'boundary' if trigger == 'boundary' else 'computing'} {fired}", err
        time.sleep(0.05)
    return None, ""


# Mid-stage targets in pipeline order: defend, the base's evaluation, attack, post-attack evaluation,
# then the conditions (stability's perplexity, trainability's fine-tune); a boundary kill after each.
MID_STAGE = ("models", "generations", "models", "generations", "stability", "trainability")


def test_killed_anywhere_resumes_to_identical_metrics(prepared, pair, tmp_path):
    home, results = tmp_path / "home", tmp_path / "results"
    shutil.copytree(prepared, home)
    stale = [home / "models" / ".0badc0de.x1.tmp", results / "tiny" / f"v{PROTOCOL}" / ".0badc0de.json.x2.tmp"]
    for path in stale:  # what a kill mid-write leaves behind
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    kills = []
    for attempt in range(2 * len(MID_STAGE)):  # each mid-stage kill, then a boundary kill; then a clean finish
        proc = start(home, results)
        trigger = MID_STAGE[attempt // 2] if attempt % 2 == 0 and attempt // 2 < len(MID_STAGE) else "boundary"
        fired, err = kill_when(proc, home, trigger, signal.SIGINT if attempt == 0 else signal.SIGKILL)
        if fired is None:
            break
        if attempt == 0:  # Ctrl-C: exit 130 and one line saying how to resume
            assert proc.returncode == 130 and messages(err) == [INTERRUPTED], err[-2000:]
        else:
            assert proc.returncode == -signal.SIGKILL
        kills.append(fired)
    else:  # every kill fired: one more start, left to finish
        proc = start(home, results)
    record, _ = finish(proc)
    print(f"{len(kills)} interruptions, then a clean finish: {kills}")
    assert record["metrics"] == pair["records"][0]["metrics"]
    mid = [k.split()[1] for k in kills if k.startswith("computing")]
    assert [m.split("/")[0] for m in mid] == list(MID_STAGE) and len(set(mid)) == len(mid), kills  # both models
    assert sum(k.startswith("boundary") for k in kills) >= len(MID_STAGE), kills
    assert not any(p.exists() for p in stale)
    leftovers = [p for p in home.glob("*/.*") if p.parent.name != ".locks"] + list(results.glob("*/*/.*"))
    assert leftovers == []


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _tamper_scores(value: float):
    def tamper(path: Path) -> None:  # a valid parquet file with other numbers: only the hash can tell
        frame = pd.read_parquet(path)
        frame["score"] = value
        frame.to_parquet(path)
    return tamper


def _plant(path: Path) -> None:
    path.write_bytes(b"a pickled checkpoint someone dropped in")


DAMAGE = {"truncate": _truncate, "delete": Path.unlink, "tear": _truncate, "random bytes":
          lambda p: p.write_bytes(os.urandom(p.stat().st_size)), "scores 0.75": _tamper_scores(0.75),
          "scores 0.0": _tamper_scores(0.0), "plant": _plant}
# Groups of independent damages (no artifact twice in a group), one run each: (artifact, file, damage).
GROUPS = {
    "truncated": [("defend", "model.safetensors", "truncate"), ("post_attack.generate", "generations.parquet",
                  "truncate"), ("stability", "value.json", "tear"), ("pre_attack.judge.tiny-content",
                  "scores.parquet", "scores 0.75"), ("attack", "model.safetensors", "truncate"),
                  ("degenerate", "value.json", "random bytes"), ("post_attack.judge.tiny-content", "scores.parquet",
                                                                 "scores 0.0")],
    "deleted": [("defend", "model.safetensors", "delete"), ("pre_attack.generate", "generations.parquet", "delete"),
                ("attack", "extra.json", "delete"), ("trainability", "meta.json", "tear")],
    "attacked-deleted": [("attack", "model.safetensors", "delete"), ("defend", "pytorch_model.bin", "plant"),
                         ("post_attack.judge.hf-classifier", "scores.parquet", "scores 0.75")],
}


def _artifact(record: dict, home: Path, name: str) -> tuple[str, str]:
    stages = record["provenance"]["stages"]
    if name in stages:
        return ("scores" if ".judge." in name else "generations" if name.endswith(".generate") else "models",
                stages[name]["key"])
    return name, sorted(p.name for p in (home / name).iterdir() if not p.name.startswith("."))[0]


@pytest.mark.parametrize("group", list(GROUPS))
def test_damaged_or_tampered_artifacts_are_recomputed(pair, tmp_path, group):
    baseline = pair["records"][0]
    home = tmp_path / "home"
    shutil.copytree(pair["home"], home)
    done = len(journal(home))
    damaged = set()
    for name, rel, how in GROUPS[group]:
        kind, key = _artifact(baseline, home, name)
        DAMAGE[how](home / kind / key / rel)
        damaged.add(f"{kind}/{key}")
    record, err = finish(start(home, tmp_path / "results"))
    assert record["metrics"] == baseline["metrics"]
    warned = {line.split()[2] for line in err.splitlines() if line.startswith("warning: artifact ")}
    assert warned == damaged, err[-3000:]
    assert {(f"{e['kind']}/{e['key']}", e["event"]) for e in journal(home)[done:]} == {(d, "replaced")
                                                                                      for d in damaged}


def test_damaged_suite_artifacts_are_detected_and_verify_names_them(pair, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(pair["home"], home)
    suite = home / "suites" / SUITE_KEY
    weights = suite / "base" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit, same size
    weights.write_bytes(bytes(data))
    assert "base/model.safetensors does not match its sha256" in Store(home).problem("suites", SUITE_KEY)
    for rel, damage in (("judge/model.safetensors", _truncate), ("report.json", Path.unlink)):
        copy = tmp_path / rel.replace("/", "_")
        shutil.copytree(pair["home"] / "suites", copy / "suites")
        damage(copy / "suites" / SUITE_KEY / rel)
        assert Store(copy).problem("suites", SUITE_KEY).startswith(rel)
    env = {**os.environ, "COLUMNS": "200"}
    verify = ["store", "verify", "--home", str(home)]
    proc = process.run(verify, env=env, cwd=REPO)
    assert proc.returncode == 1 and f"damaged suites/{SUITE_KEY}: base/model.safetensors" in proc.stdout
    proc = process.run([*verify, "--delete"], env=env, cwd=REPO)
    assert proc.returncode == 0 and not (home / "suites" / SUITE_KEY).exists()
    assert "1 deleted" in proc.stdout and " 0 damaged" in proc.stdout
