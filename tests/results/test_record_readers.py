"""Records: readers skip what they cannot read (one line each), records are written once, names and paths
from the command line stay inside the results dir, and error text stays on one line."""

from __future__ import annotations

import multiprocessing
import os

import pytest
from pydantic import BaseModel

from harness.errors import ConfigError, CorruptRecordError, HarnessError
from harness.results.budget_table import budget_summary
from harness.results.records import find_record, load_records, read_record, write_record, write_record_once
from harness.safety import check_name, escape_controls
from harness.specs import EvalSpec, validate_config
from harness.suite import AttackBudget, Suite
from tests.factories import EVAL, MODEL, record


def test_unreadable_files_are_corrupt_records(tmp_path):
    (tmp_path / "bytes.json").write_bytes(os.urandom(100) + b"\xff\xfe")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(CorruptRecordError, match="UnicodeDecodeError"):
        read_record(tmp_path / "bytes.json")
    with pytest.raises(CorruptRecordError, match="IsADirectoryError"):
        read_record(tmp_path / "dir.json")


def test_load_records_skips_each_unreadable_file_with_one_line(tmp_path, capfd):
    good = record("none", {}, 1e-4, 0, 0.0, 1.0)
    write_record(tmp_path / f"{good.run_id}.json", good)
    (tmp_path / "bytes.json").write_bytes(b"\x80\x81" * 50)
    (tmp_path / "x.json").mkdir()
    (tmp_path / "torn.json").write_text('{"run_id": ')
    assert [r.run_id for r in load_records(tmp_path)] == [good.run_id]
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("excluded ") for line in lines)
    assert {"bytes.json", "x.json", "torn.json"} == {next(w for w in ("bytes.json", "x.json", "torn.json")
                                                         if w in line) for line in lines}


def _write(path, metrics_value, barrier, out):
    rec = record("none", {}, 1e-4, 0, 0.0, metrics_value, created=str(os.getpid()))
    barrier.wait()
    stored, wrote = write_record_once(path, rec)
    out.put((wrote, stored.provenance.created_at))


def test_two_identical_finishers_write_the_record_once(tmp_path):
    path = tmp_path / "tiny" / "v1" / f"{record().run_id}.json"
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_write, args=(path, 0.9, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    results = [out.get(timeout=5) for _ in procs]
    assert sorted(w for w, _ in results) == [False, True]
    on_disk = read_record(path).provenance.created_at
    assert {c for _, c in results} == {on_disk}  # both return the file's record
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_an_existing_record_is_never_rewritten(tmp_path, capfd):
    first = record("none", {}, 1e-4, 0, 0.0, 0.9)
    path = tmp_path / f"{first.run_id}.json"
    write_record(path, first)
    before = path.read_bytes(), path.stat().st_ino
    stored, wrote = write_record_once(path, record("none", {}, 1e-4, 0, 0.0, 0.1), replace_corrupt=True)
    assert not wrote and stored == first and (path.read_bytes(), path.stat().st_ino) == before
    assert "record is immutable" in capfd.readouterr().err
    path.write_text("{")  # torn: replaced only with --force
    with pytest.raises(CorruptRecordError):
        write_record_once(path, first)
    assert write_record_once(path, first, replace_corrupt=True) == (first, True)


def test_find_record_stays_inside_the_results_dir(tmp_path):
    outside = tmp_path / "outside" / "tiny" / "v1"
    outside.mkdir(parents=True)
    rec = record()
    write_record(outside / f"{rec.run_id}.json", rec)
    results = tmp_path / "results"
    results.mkdir()
    (results / "evil").symlink_to(tmp_path / "outside" / "tiny")
    with pytest.raises(HarnessError, match="outside"):
        find_record(results, rec.run_id[:6])
    for bad in ("../../..", "*", "a/b", "", "ab.json", "x\ny"):
        with pytest.raises(HarnessError, match="not a valid run id"):
            find_record(results, bad)


@pytest.mark.parametrize("name", ["../elsewhere", "a/b", ".hidden", "..", "x\ny", "", "a" * 129])
def test_unsafe_names_are_rejected(name):
    with pytest.raises(HarnessError):
        check_name(name, "suite")


def test_escape_controls_keeps_one_line():
    assert escape_controls("a\nerror: forged\r\x1b[31m\u202e\u2028") == "a\\nerror: forged\\r\\x1b[31m\\u202e\\u2028"
    assert escape_controls("plain 'text' é") == "plain 'text' é"


class Plain(BaseModel):
    beta: float = 0.0  # no range: only the finiteness check stands between it and an infinity
    weights: list[float] = []


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "inf", "-Infinity", 1e400])
def test_non_finite_config_values_are_rejected(value):
    with pytest.raises(ConfigError, match=r"defence\.beta: must be a finite number"):
        validate_config("defence 'x'", Plain, {"beta": value}, prefix="defence.")
    with pytest.raises(ConfigError, match=r"defence\.weights\[1\]: must be a finite number"):
        validate_config("defence 'x'", Plain, {"weights": [1.0, value]}, prefix="defence.")
    assert validate_config("defence 'x'", Plain, {"beta": 1e300}).beta == 1e300


def test_report_never_merges_records_with_other_eval_settings():
    suite = Suite(name="t", protocol_version=1, model=MODEL, judges=(), eval=EVAL, max_length=16,
                  prepare=lambda s, f: {}, data=lambda: None, budget_grid=(AttackBudget("sft-250", {"lr": 1e-4}, "b"),))
    other = EvalSpec(**{**EVAL.model_dump(), "backend": "vllm"})
    records = [record("none", {}, 1e-4, 0, 0.0, 0.9), record("none", {}, 1e-4, 0, 0.0, 0.5)]
    records[1] = records[1].model_copy(update={"spec": records[1].spec.model_copy(update={"eval": other})})
    records.append(record("none", {}, 1e-4, 0, 0.0, 0.7, subsets=("~toxic", "toxic")))  # generalization run
    rows = budget_summary(records, suite, {"size": "smoke"}).rows
    assert {r.label: [c.headline_post.mean for c in r.budgets] for r in rows} == {
        'none (eval.backend="hf")': [0.9], 'none (eval.backend="vllm")': [0.5]}
