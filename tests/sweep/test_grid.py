"""Grid files and the sweep's plan, scheduler and status, without training anything (seconds).

The committed grids validate and dry-run (the real suites' without their models); a grid is read strictly;
the plan shares one defended model among its attacks; the scheduler retries a failing job a bounded number of
times, records it, fails the cells of a failed defended model and runs everything else.
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import ConfigError
from harness.resolve import load_suite
from harness.store.artifacts import Store
from harness.store.locks import file_lock
from harness.sweep.executors import JobFailed
from harness.sweep.grid import load_grid, plan
from harness.sweep.jobs import Job, failure_file, lock_file
from harness.sweep.runner import cell_state, run_sweep, status
from tasks.tiny.suite import BUILD_VERSION, PROTOCOL  # the installed suite: where new tiny runs go
from tests.conftest import REPO

GRIDS = REPO / "grids"
SMOKE = GRIDS / "tiny-smoke.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_every_committed_grid_validates_and_dry_runs(tmp_path):
    files = sorted(GRIDS.rglob("*.yaml"))
    assert [f.name for f in files] == ["beavertails-llama2.yaml", "beavertails-qwen-0.5b.yaml", "tiny-smoke.yaml",
                                       "tiny-v2.yaml", "tiny-v3-generalization.yaml", "tiny-v3-zoo.yaml",
                                       "tiny-v3.yaml"]
    plans = {f.stem: plan(load_grid(f), results_dir=tmp_path, locate=False) for f in files}
    # none is seed-independent: 1 defended model (per world) x the attack seeds; tiny-v3: 3 worlds x 12 defences
    # at defence seed 0 = 36 defended models; its generalization grid adds the held-out condition's 36
    assert {k: (len(p.cells), len(p.nodes)) for k, p in plans.items()} == {
        "beavertails-llama2": (90, 13), "beavertails-qwen-0.5b": (189, 14), "tiny-smoke": (8, 2),
        "tiny-v2": (342, 19), "tiny-v3": (432, 36), "tiny-v3-generalization": (144, 72), "tiny-v3-zoo": (360, 36)}
    assert plans["beavertails-llama2"].provisional and not plans["tiny-v3"].provisional  # hub model not looked up
    # tiny-v2.yaml is kept for the record: against the installed suite it plans the installed protocol's cells, and
    # tiny-v3's world 0 cells of the same defences and seeds are among them
    v2 = {c.id for c in plans["tiny-v2"].cells}
    names = {c.spec.defence.name for c in plans["tiny-v2"].cells}
    world0 = {c.id for c in plans["tiny-v3"].cells if c.spec.suite.params["seed"] == 0 and c.spec.defence.name in names}
    assert world0 < v2 and len(world0) == 7 * 2 * 6  # 7 defences x 2 attack seeds x 6 budgets
    assert {n.label for n in plans["tiny-v3-zoo"].attackers.values()} == {
        f"tune-attack {e.name}" for e in plans["tiny-v3-zoo"].grid.defences}  # a tuned attacker per defence
    assert {c.spec.suite.version for c in plans["tiny-v3"].cells} == {f"{BUILD_VERSION}.{PROTOCOL}"}
    assert {c.spec.suite.params["seed"] for c in plans["tiny-v3-generalization"].cells} == {0, 1, 2}
    for p in plans.values():
        assert len({c.id for c in p.cells}) == len(p.cells)


def test_budgets_default_to_the_suites_budget_grid(tmp_path):
    p = plan(load_grid(GRIDS / "tiny-v3.yaml"), results_dir=tmp_path)
    _, suite = load_suite("tiny", {})
    # a budget is its attack and every setting it makes (lr, and where it says so samples or epochs)
    got = {(c.spec.attack.name, json.dumps(c.overrides["user"]["attack"], sort_keys=True)) for c in p.cells}
    assert got == {(b.attack, json.dumps(b.params, sort_keys=True)) for b in suite.budget_grid} and len(got) == 6
    assert all(c.spec.attack.params[k] == v for c in p.cells for k, v in c.overrides["user"]["attack"].items())
    assert {c.label.split(" x ")[1].split(" attack seed")[0] for c in p.cells} == {b.label for b in suite.budget_grid}
    assert {(c.spec.suite.params["seed"], c.spec.seed, c.spec.attack_seed) for c in p.cells} == {
        (w, 0, a) for w in range(3) for a in range(2)}
    assert {(c.spec.seed, c.spec.attack_seed) for c in p.cells if c.spec.defence.name == "none"} == {
        (0, a) for a in range(2)}
    assert all(c.overrides["user"]["attack"]["lr"] == c.spec.attack.params["lr"] for c in p.cells)  # recorded


def test_one_defended_model_per_defence_setting_and_seed(tmp_path):
    p = plan(load_grid(SMOKE), results_dir=tmp_path)
    for node_id, node in p.nodes.items():
        cells = p.cells_of(node_id)
        assert len(cells) == 4  # 2 budgets x 2 attack seeds
        assert {(c.spec.defence.model_dump_json(), c.spec.seed, c.spec.model.model_dump_json()) for c in cells} == {
            (node.spec.defence.model_dump_json(), node.spec.seed, node.spec.model.model_dump_json())}
    assert {c.spec.defence.params.get("samples") for c in p.cells if c.spec.defence.name != "none"} == {32}
    assert {c.spec.attack.params["samples"] for c in p.cells} == {32}
    assert {c.spec.eval.n_prompts for c in p.cells} == {16}


def test_conditions_and_unset_attack_seeds(tmp_path):
    grid = write(tmp_path, """
suite: tiny
suite_settings: {size: smoke}
defences: [{name: random-init, seeds: [1, 2]}]
attacks:
  budgets: [{attack: sft-250, settings: {lr: 1e-4}}, {attack: sft-1k, settings: {lr: 1e-3}, label: strong}]
conditions:
  - {name: main}
  - {name: held-out, defence_subset: "~violence", attack_subset: violence, budgets: [strong],
     eval: {n_prompts: 4}}
""")
    p = plan(load_grid(grid), results_dir=tmp_path)
    assert len(p.cells) == 2 * 2 + 2 * 1 and len(p.nodes) == 4
    assert {c.spec.attack_seed for c in p.cells} == {None}  # the attack takes its defence seed
    held = [c for c in p.cells if c.spec.subsets.attack == "violence"]
    assert {c.spec.attack.name for c in held} == {"sft-1k"} and {c.spec.eval.n_prompts for c in held} == {4}
    assert {c.spec.attack.params["lr"] for c in p.cells if c.spec.attack.name == "sft-250"} == {1e-4}  # a float


@pytest.mark.parametrize("text, messages", [
    ("suite: tiny\ndefences: [{name: none}]\ndefense_seeds: [0]\n", ["defense_seeds: unknown key (valid: suite"]),
    ("suite: tiny\ndefences: [{name: none, setings: {}}]\n", ["defences.0.setings: unknown key (valid: name"]),
    ("suite: tiny\nsuite: tiny\ndefences: [{name: none}]\n", ["line 2: duplicate key 'suite'"]),
    ("suite: tiny\ndefences: []\n", ["defences: List should have at least 1 item"]),
    ("suite: tiny\ndefences: [{name: none}]\ndefence_seeds: [-1]\nattacks: {seeds: [0, 0]}\n",
     ["defence_seeds.0: Input should be greater than or equal to 0"]),
    ("suite: tiny\ndefences: [{name: none}]\nattacks: {seeds: [0, 0]}\n", ["attacks.seeds repeats a seed"]),
    ("suite: tiny\ndefences: [{name: none}, {name: none}]\n", ["defences.1 repeats defences.0"]),
    ("suite: tiny\ndefences: [{name: none}]\nattacks: {settings: {lr: 1.0e-3}}\n",
     ["attacks.settings sets lr, which the budgets set"]),
    ("suite: tiny\ndefences: [{name: none}]\nattacks: {settings: {samples: 200}}\n",
     ["attacks.settings sets samples, which the budgets set (budget(s) 1e-5@100)"]),
    ("suite: tiny\ndefences: [{name: nope}, {name: repnoise, settings: {bta: 1}}]\n",
     ["Unknown defence 'nope'", "defence.bta: unknown field"]),
    ("suite: tiny\ndefences: [{name: none}]\nconditions: [{name: x, budgets: [9e9@1]}]\n",
     ["conditions.x.budgets: unknown label(s) 9e9@1"]),
    ("suite: [tiny\n", ["is not valid YAML"]),
    ("- a list\n", ["expected a mapping"]),
], ids=["unknown-key", "nested-unknown-key", "duplicate-key", "no-defences", "negative-seed", "repeated-seed",
        "repeated-defence", "setting-a-budget-sets", "setting-one-budget-sets", "every-config-error-at-once",
        "unknown-budget-label",
        "not-yaml", "not-a-mapping"])
def test_bad_grid_is_one_config_error_naming_every_problem(tmp_path, text, messages):
    with pytest.raises(ConfigError) as err:
        plan(load_grid(write(tmp_path, text)), results_dir=tmp_path)
    assert "\n" not in str(err.value) and all(m in str(err.value) for m in messages), str(err.value)


def test_a_seed_independent_defence_is_one_defended_model_at_its_first_seed(tmp_path, capfd):
    """`none` (registered seeded=False) at defence seeds 3, 1, 2: one defended model (seed 3), attacked with one
    attack seed per listed defence seed; the cell at seed 3 has the run id a seeded plan gives it. A seeded
    defence beside it keeps one model per seed, and the dry run says what the plan changed."""
    text = """
suite: tiny
suite_settings: {size: smoke}
defences: [{name: none}, {name: random-init}]
defence_seeds: [3, 1, 2]
attacks:
  budgets: [{attack: sft-250, settings: {lr: 1e-4}}]
"""
    p = plan(load_grid(write(tmp_path, text)), results_dir=tmp_path)
    none = [c for c in p.cells if c.spec.defence.name == "none"]
    seeded = [c for c in p.cells if c.spec.defence.name == "random-init"]
    assert [(c.spec.seed, c.spec.attack_seed_used) for c in none] == [(3, 3), (3, 1), (3, 2)]
    assert none[0].spec.attack_seed is None and {c.defend_id for c in none} == {none[0].defend_id}
    assert [(c.spec.seed, c.spec.attack_seed) for c in seeded] == [(3, None), (1, None), (2, None)]
    assert len({c.defend_id for c in seeded}) == 3 and len(p.nodes) == 4
    assert p.notes == {"none": "none is seed-independent (registered seeded=False): one defended model at defence "
                               "seed 3 instead of 3 copies, attacked with attack seeds 3, 1, 2"}
    with_attack_seeds = plan(load_grid(write(tmp_path, text + "  seeds: [0, 5]\n")), results_dir=tmp_path)
    assert [(c.spec.seed, c.spec.attack_seed) for c in with_attack_seeds.cells if c.spec.defence.name == "none"] == [
        (3, 0), (3, 5)]
    main(["sweep", str(write(tmp_path, text)), "--dry-run", "--results-dir", str(tmp_path / "r")])
    err = " ".join(capfd.readouterr().err.split())
    assert "6 pending of 6 cells" in err and "one defended model at defence seed 3 instead of 3 copies" in err


def test_dry_run_lists_cells_without_a_store(tmp_path, capfd):
    home = tmp_path / "no-store-here"
    main(["sweep", str(SMOKE), "--dry-run", "--home", str(home), "--results-dir", str(tmp_path / "r")])
    err = capfd.readouterr().err
    assert "8 pending of 8 cells" in err and "safety-training(samples=32) seed 0" in err
    assert not home.exists() and not (tmp_path / "r").exists()


def test_dry_run_of_a_real_suite_needs_no_model(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    main(["sweep", str(GRIDS / "beavertails-llama2.yaml"), "--dry-run", "--results-dir", str(tmp_path)])
    err = capfd.readouterr().err
    assert "90 unknown of 90 cells" in err and "the run ids above are provisional" in err


def _smoke_plan(tmp_path: Path):
    return plan(load_grid(SMOKE), results_dir=tmp_path / "results")


def test_status_reads_records_locks_and_failure_logs(tmp_path):
    p, store, results = _smoke_plan(tmp_path), Store(tmp_path / "store"), tmp_path / "results"
    a, b, c = p.cells[0], p.cells[1], p.cells[5]
    record = results / "tiny" / f"v{PROTOCOL}" / f"{a.id}.json"
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    failure_file(store.root, b.id).parent.mkdir(parents=True)
    failure_file(store.root, b.id).write_text("{}")
    with file_lock(lock_file(store.root, c.defend_id)):  # its defended model is being built
        assert [cell_state(p, x, store, results) for x in (a, b, c)] == ["done", "failed", "running"]
        rows = status(p, store, results)
    assert rows["none"] == {"done": 1, "running": 0, "failed": 1, "pending": 2}
    assert rows["safety-training(samples=32)"] == {"done": 0, "running": 4, "failed": 0, "pending": 0}
    assert cell_state(p, c, store, results) == "pending"  # the lock is free again


class FakeExecutor:
    """Finishes every job at once; the jobs named in `failing` raise every time."""

    name, parallel = "fake", 2

    def __init__(self, failing: set[str]):
        self.failing, self.submitted = failing, []

    def submit(self, job: Job) -> Future:
        self.submitted.append(job)
        fut: Future = Future()
        if job.id in self.failing:
            fut.set_exception(JobFailed(f"boom in {job.label}", "traceback..."))
        else:
            fut.set_result({"id": job.id, "cached": False, "seconds": 0.0, "writes": 1})
        return fut

    def close(self) -> None:
        pass


def test_scheduler_retries_then_lists_failures_and_goes_on(tmp_path):
    p, store = _smoke_plan(tmp_path), Store(tmp_path / "store")
    node_a, node_b = list(p.nodes)
    bad_cell = p.cells_of(node_a)[1]
    ex = FakeExecutor({node_b, bad_cell.id})
    result = run_sweep(p, ex, store=store, results_dir=tmp_path / "results", retries=2)
    ids = [j.id for j in ex.submitted]
    assert ids[:2] == [node_a, node_b]  # defended models first
    assert ids.count(node_b) == 3 and ids.count(bad_cell.id) == 3  # 1 try + 2 retries
    assert set(ids) == {node_a, node_b, *(c.id for c in p.cells_of(node_a))}  # node b's cells never start
    assert all(ids.count(c.id) == 1 for c in p.cells_of(node_a) if c is not bad_cell)
    assert not result.ok and result.ran == 3 and result.defended == 1
    failed = {f.id: f for f in result.failures}
    assert set(failed) == {node_b, bad_cell.id, *(c.id for c in p.cells_of(node_b))}
    assert failed[bad_cell.id].attempts == 3 and failed[bad_cell.id].error == f"boom in {bad_cell.label}"
    assert all("its defended model failed: boom" in failed[c.id].error for c in p.cells_of(node_b))
    log = json.loads(failure_file(store.root, bad_cell.id).read_text())
    assert log["attempts"] == 3 and log["detail"] == "traceback..." and log["job"].endswith(f"{bad_cell.id}.json")
    assert status(p, store, tmp_path / "results")["safety-training(samples=32)"]["failed"] == 4


def test_failed_sweep_exits_1_with_a_failure_table(tmp_path, capfd, monkeypatch):
    import harness.sweep.executors

    p = _smoke_plan(tmp_path)
    monkeypatch.setattr(harness.sweep.executors, "make_executor", lambda *a, **k: FakeExecutor({p.cells[0].id}))
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(SMOKE), "--retries", "0", "--home", str(tmp_path / "store"), "--results-dir",
              str(tmp_path / "results")])
    err = capfd.readouterr().err
    assert exit_.value.code == 1 and "failures" in err and f"boom in {p.cells[0].label}" in err
    assert "1 job(s) failed" in err and "python -m harness.sweep.jobs" in err


def test_ray_executor_without_ray_names_the_extra(tmp_path, monkeypatch, capfd):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", str(SMOKE), "--executor", "ray", "--home", str(tmp_path / "store"), "--results-dir",
              str(tmp_path / "results")])
    err = capfd.readouterr().err.strip()
    assert exit_.value.code == 2
    assert err == ("error: --executor ray needs the ray extra: pip install 'immunization-bench[ray]' (found: not "
                   "installed)")


def test_local_executor_runs_a_job_in_a_process_and_reports_its_error_line(tmp_path):
    """A job whose suite does not exist: the child exits 2 with one error line, which becomes the failure."""
    from harness.suite import StageResources
    from harness.sweep.executors import LocalExecutor

    cell = _smoke_plan(tmp_path).cells[0]
    spec = cell.spec.model_copy(update={"suite": cell.spec.suite.model_copy(update={"name": "no-such-suite"})})
    job = Job(kind="cell", id=cell.id, label=cell.label, spec=spec, overrides=cell.overrides,
              results_dir=str(tmp_path / "results"), store=str(tmp_path / "store"))
    executor = LocalExecutor(1, StageResources())
    try:
        with pytest.raises(JobFailed) as failed:
            executor.submit(job).result(timeout=300)
    finally:
        executor.close()
    assert failed.value.error.startswith("Unknown suite 'no-such-suite'")
    assert (tmp_path / "store" / ".sweeps" / "jobs" / f"{cell.id}.json").is_file()  # rerunnable by hand
