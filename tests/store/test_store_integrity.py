"""The store verifies what it reads, computes each artifact once under a lock a killed holder cannot leave
stuck, and cleans what killed writers left. Fast: no models, plain files and subprocesses."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.store import manifest
from harness.store.artifacts import JOURNAL, Store, clean_results_temp, resolve_ref


def make(store: Store, kind: str = "scores", key: str = "k", files: dict[str, bytes] | None = None) -> Path:
    files = files or {"scores.parquet": b"PAR1" + bytes(range(200)) + b"PAR1", "sub/w.bin": b"w" * 1000}
    with store.writing(kind, key, {"judge": "j"}) as tmp:
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
    return store.path(kind, key)


def journal(store: Store) -> list[dict]:
    return [json.loads(line) for line in (store.root / JOURNAL).read_text().splitlines()]


def test_manifest_lists_every_file_and_meta_hides_it(tmp_path):
    store = Store(tmp_path)
    folder = make(store)
    raw = json.loads((folder / "meta.json").read_text())
    assert set(raw["_files"]) == {"scores.parquet", "sub/w.bin"}
    assert raw["_files"]["sub/w.bin"]["size"] == 1000
    assert store.meta("scores", "k") == {"judge": "j"} and store.has("scores", "k")


@pytest.mark.parametrize("damage, phrase", [
    (lambda f: (f / "scores.parquet").write_bytes(b"PAR1"), "scores.parquet has 4 bytes, expected 208"),  # truncated
    (lambda f: (f / "sub" / "w.bin").unlink(), "sub/w.bin is missing"),                              # deleted
    (lambda f: (f / "sub" / "w.bin").write_bytes(b"x" * 1000), "sub/w.bin does not match its sha256"),  # tampered
    (lambda f: (f / "meta.json").write_text('{"judge": '), "meta.json is unreadable"),               # torn meta
    (lambda f: (f / "meta.json").unlink(), "meta.json is missing"),
    (lambda f: (f / "extra.bin").write_bytes(b"x"), "extra.bin is not in its manifest"),              # planted
    (lambda f: (f / "meta.json").write_bytes(os.urandom(64) + b"\xff"), "meta.json is unreadable"),   # bytes
])
def test_damage_is_a_miss_with_one_warning_line(tmp_path, capfd, damage, phrase):
    store = Store(tmp_path)
    folder = make(store)
    damage(folder)
    fresh = Store(tmp_path)  # a new process: nothing verified yet
    assert not fresh.has("scores", "k") and not fresh.has("scores", "k")
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"warning: artifact scores/k is damaged ({phrase}); recomputing it"]


def test_damaged_artifact_is_replaced_and_journaled(tmp_path):
    store = Store(tmp_path)
    folder = make(store)
    (folder / "scores.parquet").write_bytes(b"tampered")
    with store.compute_once("scores", "k") as need:
        assert need
        make(store)
    assert store.has("scores", "k")
    assert [e["event"] for e in journal(store)] == ["written", "replaced"]


def test_large_files_are_size_checked_on_read_and_hashed_by_verify(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "HASH_ON_READ_MAX", 500)  # w.bin (1000 bytes) counts as large
    store = Store(tmp_path)
    folder = make(store)
    (folder / "sub" / "w.bin").write_bytes(b"y" * 1000)  # same size, other bytes
    assert Store(tmp_path).has("scores", "k")  # the cheap check cannot see it ...
    assert list(Store(tmp_path).audit()) == [("scores", "k", "sub/w.bin does not match its sha256")]  # ... verify can


def test_artifacts_written_before_manifests_are_used_unverified(tmp_path):
    folder = tmp_path / "models" / "old"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text('{"stage": "defend"}')
    store = Store(tmp_path)
    assert store.has("models", "old") and not store.verified("models", "old")
    assert list(store.audit()) == [("models", "old", None)]


def test_a_verified_artifact_is_kept_unless_forced(tmp_path):
    store = Store(tmp_path)
    make(store, files={"a": b"first"})
    make(store, files={"a": b"second"})
    assert (store.path("scores", "k") / "a").read_bytes() == b"first"
    with store.writing("scores", "k", {}, force=True) as tmp:
        (tmp / "a").write_bytes(b"forced")
    assert (store.path("scores", "k") / "a").read_bytes() == b"forced"
    assert [e["event"] for e in journal(store)] == ["written", "kept", "replaced"]


def _compute(root: str, barrier, counter) -> None:
    store = Store(Path(root))
    barrier.wait()
    with store.compute_once("models", "same") as need:
        if need:
            with counter.get_lock():
                counter.value += 1
            time.sleep(0.5)  # long enough that the other process must find the lock held
            with store.writing("models", "same", {}) as tmp:
                (tmp / "w").write_text(str(os.getpid()))


def test_concurrent_identical_computations_run_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, counter = ctx.Barrier(3), ctx.Value("i", 0)
    procs = [ctx.Process(target=_compute, args=(str(tmp_path), barrier, counter)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert counter.value == 1
    assert [e["event"] for e in journal(Store(tmp_path))] == ["written"]


HOLD = """
import sys, time
from pathlib import Path
from harness.store.artifacts import Store
store = Store(Path(sys.argv[1]))
with store.compute_once("models", "k") as need, store.writing("models", "k", {}) as tmp:
    (tmp / "half").write_text("x")
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_killed_holder_leaves_no_stuck_lock_and_its_temp_is_cleaned(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    store = Store(tmp_path)
    temps = [p.name for p in (tmp_path / "models").iterdir()]
    assert len(temps) == 1 and temps[0].startswith(".k.") and temps[0].endswith(".tmp")
    assert store.clean_temp() == 0  # its writer is alive and holds the lock: left alone
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    start = time.perf_counter()
    with store.compute_once("models", "k") as need:  # the kernel released the lock with the process
        assert need
    assert time.perf_counter() - start < 5
    assert store.clean_temp() == 1 and list((tmp_path / "models").iterdir()) == []


def test_results_temp_files_are_cleaned(tmp_path):
    (tmp_path / ".abc.json.x1.tmp").write_text("{")         # a record write that was killed
    fresh_table = tmp_path / ".resistance.x2.tmp"            # a table being written right now
    fresh_table.write_text("")
    old_table = tmp_path / ".stability.x3.tmp"
    old_table.write_text("")
    os.utime(old_table, (time.time() - 3600, time.time() - 3600))
    (tmp_path / "keep.json").write_text("{}")
    assert clean_results_temp(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".resistance.x2.tmp", "keep.json"]


def test_store_refs_stay_inside_the_store_and_name_damage(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(HarnessError, match="outside the store"):
        resolve_ref("store:../../etc/passwd", store)
    folder = make(store, kind="suites", key="s1", files={"judge/model.safetensors": b"w" * 100})
    assert resolve_ref("store:suites/s1/judge", store) == str(folder / "judge")
    (folder / "judge" / "model.safetensors").write_bytes(b"w")
    with pytest.raises(HarnessError, match=r"suites/s1 is damaged .*--force"):
        resolve_ref("store:suites/s1/judge", Store(tmp_path))


def test_a_damaged_suite_build_is_rebuilt_and_force_reaches_it(tmp_path, monkeypatch):
    from tasks.tiny import suite as tiny

    builds: list[bool] = []

    def fake_build(cfg, store, key, force):  # the real one trains for a minute; the wiring is what is tested
        builds.append(force)
        with store.writing(tiny.KIND, key, {}, force=force) as tmp:
            (tmp / "base").mkdir()
            (tmp / "base" / "model.safetensors").write_bytes(b"w" * 64)
            (tmp / "report.json").write_text(json.dumps({"n": len(builds)}))
        return {"n": len(builds)}

    monkeypatch.setattr(tiny, "_build", fake_build)
    cfg = tiny.Config(size="smoke")
    folder = Store(tmp_path).path(tiny.KIND, tiny.build_key(cfg))
    assert tiny.prepare(cfg, Store(tmp_path), False) == {"n": 1}
    assert tiny.prepare(cfg, Store(tmp_path), False) == {"n": 1}  # cached
    (folder / "base" / "model.safetensors").write_bytes(b"w")      # truncated base
    assert tiny.prepare(cfg, Store(tmp_path), False) == {"n": 2}
    (folder / "report.json").unlink()                              # deleted report
    assert tiny.prepare(cfg, Store(tmp_path), False) == {"n": 3}
    assert tiny.prepare(cfg, Store(tmp_path), True) == {"n": 4} and builds == [False, False, False, True]


def test_run_force_reaches_the_suite_prepare(tmp_path):
    from harness.pipeline import run
    from harness.suite import Suite
    from tests.factories import EVAL, MODEL, record

    class Prepared(Exception):
        pass

    def prepare(store, force):
        raise Prepared(force)

    suite = Suite(name="t", protocol_version=1, model=MODEL, judges=(), eval=EVAL, max_length=16, prepare=prepare,
                  data=lambda: None)
    for force in (False, True):
        with pytest.raises(Prepared) as exc:
            run(record().spec, suite, {}, store=Store(tmp_path / "home"), results_dir=tmp_path, force=force)
        assert exc.value.args == (force,)


def test_the_judge_loads_safetensors_only(tmp_path):
    import torch
    from tokenizers import Tokenizer, models
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    from harness.judges.hf_classifier import Config, HFClassifierJudge

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1}, "[UNK]")),
                                  unk_token="[UNK]", pad_token="[PAD]")
    model = BertForSequenceClassification(BertConfig(vocab_size=2, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=1, intermediate_size=8))
    pickled, safe = tmp_path / "pickled", tmp_path / "safe"
    for folder in (pickled, safe):
        tok.save_pretrained(folder)
    model.save_pretrained(safe)
    model.config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")  # what a pickled checkpoint looks like
    with pytest.raises(HarnessError, match="safetensors"):
        HFClassifierJudge(Config(model=str(pickled)), Store(tmp_path / "home"))
    assert HFClassifierJudge(Config(model=str(safe)), Store(tmp_path / "home")).model is not None
