"""Hostile grid and record files cost no more than a bounded read: each is refused (a grid: one `error:` line,
exit 2, before any work) or skipped (a record: one line naming it, and the reader goes on with the rest), never a
hang, a memory blow-up or a traceback.

Grids: a YAML alias bomb ("billion laughs"), a merge key, a grid naming 10^6 cells, 5,000 nested brackets, an
unhashable key, a 5,000-digit integer, an oversized file, `true` as a seed. Records: a file of 200,000 nested
brackets (and a FIFO) dropped into a copy of committed records, read by `tables`, `report`, `validate`,
`store ls`, `store gc`, `leaderboard`; a deep tuning log read by a sweep's plan and the leaderboard.

The tests do not assert wall times (machines are noisy); they print them (`pytest -s`). Before the bounds, the
alias bomb and the 10^6-cell grid ran for minutes at gigabytes, and the deep record raised RecursionError.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from harness.cli import main
from harness.errors import ConfigError, CorruptRecordError
from harness.results.jsonio import MAX_DEPTH, JSONLimitError, check_depth, loads, read_json
from harness.results.records import read_record
from harness.store.artifacts import Store
from harness.sweep.grid import MAX_CELLS, MAX_GRID_DEPTH, budgets, cell_count, load_grid, plan
from harness.tuning.logs import TuningLog, read_log
from tasks.tiny.suite import PROTOCOL  # the installed protocol: where runs take tuned settings from
from tests.conftest import REPO

HEAD = "suite: tiny\nsuite_settings: {size: smoke}\n"
ONE_BUDGET = "attacks: {budgets: [{attack: sft-250}]}\n"
DEEP = 200_000
DEEP_NAME = "deadbeefdeadbeef.json"


def alias_bomb() -> str:
    """Nine levels of nine aliases each: 9^9 (387 million) strings once expanded, in about 450 bytes."""
    text = HEAD + 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    return text + "defences: [{name: none, settings: {x: *i}}]\n"


SEEDS = ", ".join(map(str, range(1000)))
GRIDS = {
    "alias-bomb": (alias_bomb(), "YAML anchors and aliases (&name, *name) are not allowed"),
    "merge-key": (HEAD + "base: &b {name: none}\ndefences: [{<<: *b}]\n", "anchors and aliases"),
    "million-cells": (HEAD + f"defences: [{{name: none}}]\ndefence_seeds: [{SEEDS}]\n"
                      f"attacks: {{budgets: [{{attack: sft-250}}], seeds: [{SEEDS}]}}\n",
                      f"it names 1,000,000 cells, more than the {MAX_CELLS:,} one grid may plan"),
    "deep-brackets": (HEAD + "defences: [{name: none, settings: {x: " + "[" * 5000 + "]" * 5000 + "}}]\n",
                      f"line 3: nested deeper than {MAX_GRID_DEPTH} levels"),
    "unhashable-key": (HEAD + "defences: [{name: none}]\n? [a, b]\n: c\n", "line 4: a key must be a plain value, "
                       "not a list"),
    "unhashable-flow-key": (HEAD + "defences: [{name: none, settings: {[1]: 2}}]\n", "a key must be a plain value"),
    "mapping-key": (HEAD + "defences: [{name: none}]\n? {a: 1}\n: c\n", "not a dict"),
    "huge-integer": (HEAD + "defences: [{name: none}]\ndefence_seeds: [" + "1" * 5000 + "]\n",
                     "is not valid YAML: Exceeds the limit (4300 digits)"),
    "oversized": (HEAD + "defences: [{name: none}]\n#" + "x" * 2**16 + "\n", "is larger than 64 KiB"),
    "seed-true": (HEAD + "defences: [{name: none}]\ndefence_seeds: [true]\n" + ONE_BUDGET,
                  "defence_seeds.0: Input should be a valid integer"),
    "attack-seed-float": (HEAD + "defences: [{name: none}]\nattacks: {budgets: [{attack: sft-250}], seeds: [1.0]}\n",
                          "attacks.seeds.0: Input should be a valid integer"),
    "entry-seed-true": (HEAD + "defences: [{name: none, seeds: [0, true]}]\n" + ONE_BUDGET,
                        "defences.0.seeds.1: Input should be a valid integer"),
    "many-problems": (HEAD + "defences: [{name: none}]\ndefence_seeds: [" + ", ".join(["true"] * 1000) + "]\n",
                      "; and 980 more"),
}


@pytest.mark.parametrize("name", list(GRIDS))
def test_hostile_grid_is_one_line_before_any_work(tmp_path, capfd, name):
    text, message = GRIDS[name]
    grid, results, home = tmp_path / f"{name}.yaml", tmp_path / "results", tmp_path / "home"
    grid.write_text(text)
    results.mkdir()
    capfd.readouterr()
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(grid), "--results-dir", str(results), "--home", str(home)])
    seconds = time.perf_counter() - start
    err = capfd.readouterr().err
    print(f"\n{name}: {len(text.encode()):,} bytes refused in {seconds:.2f} s")
    assert exit_.value.code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert message in lines[0] and len(lines[0]) < 3000
    assert not home.exists() and not any(results.iterdir())  # nothing was built or written


def test_the_cell_count_is_the_plans_and_the_cap_is_checked_before_planning(tmp_path, monkeypatch):
    from harness.resolve import load_suite

    counts = {}
    for path in sorted((REPO / "grids").glob("*.yaml")):
        grid = load_grid(path)
        _, suite = load_suite(grid.suite, dict(grid.suite_settings))
        counts[path.stem] = cell_count(grid, budgets(grid, suite))
    # the plans' cell counts (tests/sweep/test_grid.py plans each committed grid)
    assert counts == {"beavertails-llama2": 90, "beavertails-qwen-0.5b": 243, "tiny-smoke": 8, "tiny-v2": 378,
                      "tiny-v3": 432, "tiny-v3-generalization": 144, "tiny-v3-zoo": 360}  # 3 worlds x 12 defences x ...
    smoke = load_grid(REPO / "grids" / "tiny-smoke.yaml")
    assert len(plan(smoke, results_dir=tmp_path, locate=False, max_cells=8).cells) == 8
    import harness.resolve

    def no_resolving(*args, **kwargs):
        raise AssertionError("a cell was resolved")

    monkeypatch.setattr(harness.resolve, "resolve", no_resolving)  # refused before any cell is resolved
    with pytest.raises(ConfigError, match="it names 432 cells, more than the 431 one grid may plan"):
        plan(load_grid(REPO / "grids" / "tiny-v3.yaml"), results_dir=tmp_path, locate=False, max_cells=431)


def test_a_condition_that_picks_budgets_counts_only_those(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(HEAD + """\
defences: [{name: random-init}, {name: safety-training}]
defence_seeds: [0, 1]
attacks:
  budgets: [{attack: sft-250, label: a}, {attack: sft-250, settings: {lr: 1.0e-3}, label: b}]
  seeds: [0, 1, 2]
conditions:
  - {name: main}
  - {name: one, defence_subset: "~violence", attack_subset: violence, budgets: [b, b]}
""")
    g = load_grid(grid)
    the_plan = plan(g, results_dir=tmp_path, locate=False)
    assert len(the_plan.cells) == 2 * 2 * (2 + 1) * 3 == cell_count(g, budgets(g, the_plan.suite))
    grid.write_text(grid.read_text().replace("random-init", "none"))  # seed-independent: one defence seed of two
    g = load_grid(grid)
    assert len(plan(g, results_dir=tmp_path, locate=False).cells) == 27 < cell_count(g, budgets(g, the_plan.suite))


# ------------------------------------------------------------------------------------------------ JSON
def test_depth_is_counted_without_recursion_and_strings_do_not_count():
    check_depth("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    with pytest.raises(JSONLimitError, match=f"nested deeper than {MAX_DEPTH} levels"):
        check_depth("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(JSONLimitError) as exc:
        loads("[" * DEEP + "]" * DEEP)
    assert exc.value.pos == MAX_DEPTH  # the first bracket too deep
    brackets_in_strings = json.dumps({"a": "[" * 1000, "b": ['\\"[[[', "{{{\\"]})
    assert loads(brackets_in_strings) == json.loads(brackets_in_strings)
    # A torn string, or a quote followed by 200k escaped quotes, is one linear pass (a naive string pattern
    # retried from every quote would be quadratic: minutes).
    check_depth('["' + '\\"' * DEEP)
    check_depth('"' + "\\" * DEEP)


def test_read_json_refuses_large_files_and_fifos(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps(list(range(1000))))
    with pytest.raises(JSONLimitError, match="larger than"):
        read_json(big, max_bytes=100)
    assert read_json(big) == list(range(1000))
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: never
    with pytest.raises(JSONLimitError, match="not a regular file"):
        read_json(fifo)
    with pytest.raises(CorruptRecordError, match="not a regular file"):
        read_record(fifo)


def test_a_deep_tuning_log_is_one_line(tmp_path, capfd):
    deep = tmp_path / "repnoise.json"
    deep.write_text("{" * DEEP)
    with pytest.raises(CorruptRecordError, match=f"unreadable tuning log .*: nested deeper than {MAX_DEPTH}"):
        read_log(deep, TuningLog)
    (tmp_path / "missing.json").write_text('{"suite": "tiny"}')
    with pytest.raises(CorruptRecordError, match=r"invalid tuning log .*: protocol_version: Field required \("):
        read_log(tmp_path / "missing.json", TuningLog)
    # A sweep takes tuned settings from the logs: the deep one is one error line before any work.
    tuned = tmp_path / "tuned" / "tiny" / f"v{PROTOCOL}" / "tuning"
    tuned.mkdir(parents=True)
    shutil.move(deep, tuned / "repnoise.json")
    grid = tmp_path / "g.yaml"
    grid.write_text("suite: tiny\ndefences: [{name: repnoise}]\n" + ONE_BUDGET)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(grid), "--dry-run", "--results-dir", str(tmp_path), "--tuned-from", str(tmp_path / "tuned")])
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "unreadable tuning log" in err, err


# ------------------------------------------------------------------------------------------------ readers
@pytest.fixture(scope="module")
def hostile_results(tmp_path_factory):
    """Five committed tiny v2 records, their tables, a record file of 200k nested brackets, a FIFO named like a
    record, and deep scan logs for the copied defences; a store with one artifact."""
    base = tmp_path_factory.mktemp("hostile")
    folder = base / "results" / "tiny" / "v2"
    folder.mkdir(parents=True)
    for path in sorted((REPO / "results" / "tiny" / "v2").glob("*.json"))[:5]:
        shutil.copy(path, folder)
    defences = {read_record(p).spec.defence.name for p in folder.glob("*.json")}
    assert main(["tables", "--results-dir", str(base / "results"), "--quiet"]) is None
    (folder / DEEP_NAME).write_text("[" * DEEP + "]" * DEEP)
    os.mkfifo(folder / "0123456789abcdef.json")
    (folder / "tuning").mkdir()
    for name in defences:
        (folder / "tuning" / f"{name}.scan.json").write_text("{" * DEEP)
    with Store(base / "home").writing("generations", "fedcba9876543210", {"what": "an artifact no record needs"}
                                      ) as tmp:
        (tmp / "x.txt").write_text("x")
    return base, defences


def run_reader(argv: list[str], capfd) -> tuple[int, str, str, float]:
    capfd.readouterr()
    start = time.perf_counter()
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    seconds = time.perf_counter() - start
    out, err = capfd.readouterr()
    print(f"\n{' '.join(argv[:2])}: {seconds:.2f} s")
    return code, out, err, seconds


def named_once(text: str, name: str) -> str:
    lines = [line for line in text.splitlines() if name in line]
    assert len(lines) == 1, text[-3000:]
    return lines[0]


@pytest.mark.parametrize("reader", ["tables", "report", "validate", "store-ls", "store-gc", "leaderboard"])
def test_readers_skip_the_deep_record_with_one_line(hostile_results, capfd, reader):
    base, defences = hostile_results
    results, home = str(base / "results"), str(base / "home")
    argv = {"tables": ["tables", "--results-dir", results, "--quiet"],
            "report": ["report", "--results-dir", results, "--protocol", "2"],  # the committed v2 board
            "validate": ["validate", results],
            "store-ls": ["store", "ls", "--home", home, "--results-dir", results],
            "store-gc": ["store", "gc", "--home", home, "--results-dir", results, "--min-age-hours", "0"],
            "leaderboard": ["leaderboard", "--results-dir", results, "--out", str(base / f"site-{reader}")]}[reader]
    code, out, err, _ = run_reader(argv, capfd)
    assert "Traceback" not in err and "RecursionError" not in out + err
    line = named_once(out + err, DEEP_NAME)
    assert f"nested deeper than {MAX_DEPTH} levels" in line
    assert "not a regular file" in named_once(out + err, "0123456789abcdef.json")  # a FIFO never blocks a reader
    if reader == "tables":
        assert code == 0 and out.count("(5 rows)") == 4  # the five good records, every table
    elif reader == "report":
        assert code == 0 and all(d in out for d in defences)
    elif reader == "validate":
        assert code == 1 and line.startswith("FAIL ") and out.count("FAIL ") == 2  # the deep file and the FIFO
    elif reader == "store-ls":
        assert code == 0 and "(unreferenced)" in out
    elif reader == "store-gc":
        # gc may refuse outright while a record is unreadable (without it, the keep set would miss that
        # record's artifacts); either way, one line names the file and nothing is deleted in a dry run.
        assert code in (0, 2) and (base / "home" / "generations" / "fedcba9876543210").is_dir()
    else:
        assert code == 0 and "2 excluded" in out  # the deep record and the FIFO
        for name in defences:  # each deep scan log: one line, the board still built
            assert "nested deeper than" in named_once(err, f"{name}.scan.json")
        assert DEEP_NAME in (base / f"site-{reader}" / "LEADERBOARD.md").read_text()
