"""A grid's `tuned_attacker: true`: one tuned-attacker search per defence (`harness tune-attack` as a sweep job, on
the local or Ray executor like any job), planned in the first world at the first defence seed, run by the job
module, done when its log says finished, shown in the status and the dry run."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from harness.store.artifacts import Store
from harness.sweep.grid import load_grid, plan
from harness.sweep.jobs import execute
from harness.sweep.runner import run_sweep, status
from harness.tuning.attacker_log import AttackerLog, attacker_log_path

GRID = """suite: tiny
suite_settings: {size: smoke}
worlds: [{seed: 1}, {seed: 2}]
defences:
  - name: none
  - {name: safety-training, seeds: [3, 4]}
  - {name: safety-training, settings: {samples: 32}}
defence_seeds: [0]
attacks: {budgets: [{attack: sft-250, settings: {lr: 1.0e-4}}]}
tuned_attacker: true
"""


class InProcess:
    """An executor that runs attacker jobs in this process (jobs.execute, as a job process or Ray task does) and
    reports every other job done without running it."""

    name, parallel = "in-process", 1

    def __init__(self):
        self.jobs = []

    def submit(self, job):
        self.jobs.append(job)
        fut = Future()
        fut.set_result(execute(job) if job.kind == "attacker" else {"id": job.id, "cached": True, "seconds": 0,
                                                                      "writes": 0})
        return fut


@pytest.fixture
def searched(monkeypatch, tmp_path):
    """tune_attacker replaced: it remembers its arguments, and a defence it searched reads as done."""
    import harness.tuning.attacker

    calls = []

    def tune_attacker(suite, defence, *, store, results_dir, suite_params, tuned_from=None, seed=0, test_worlds=(),
                      attack_seeds=()):
        calls.append((suite, defence, suite_params, seed, tuned_from, test_worlds, attack_seeds))
        return None

    monkeypatch.setattr(harness.tuning.attacker, "tune_attacker", tune_attacker)
    monkeypatch.setattr("harness.sweep.runner.attacker_done",
                        lambda the_plan, node, results_dir: node.spec.defence.name in {c[1] for c in calls})
    return calls


def test_one_search_per_defence_in_the_first_world_at_the_first_seed(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(GRID)
    the_plan = plan(load_grid(path), results_dir=tmp_path / "runs", locate=False)
    nodes = sorted(the_plan.attackers.values(), key=lambda n: n.label)
    assert [n.label for n in nodes] == ["tune-attack none", "tune-attack safety-training"]  # not the set entry
    assert [(n.spec.suite.params["seed"], n.spec.seed) for n in nodes] == [(1, 0), (1, 3)]
    # the chosen attack then runs in every world of the grid, at the attack seeds of the defence's first seed
    assert [(n.test_worlds, n.attack_seeds) for n in nodes] == [(({"seed": 1}, {"seed": 2}), (None,))] * 2
    assert the_plan.tuned_from == tmp_path / "runs"
    path.write_text(GRID.replace("tuned_attacker: true\n", ""))
    assert not plan(load_grid(path), results_dir=tmp_path / "runs", locate=False).attackers


def test_the_sweep_runs_each_search_once_and_shows_it(searched, tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(GRID)
    results, store = tmp_path / "runs", Store(tmp_path / "home")
    the_plan = plan(load_grid(path), results_dir=results, locate=False)
    rows = status(the_plan, store, results)
    assert rows["tune-attack none"] == {"done": 0, "running": 0, "failed": 0, "pending": 1}
    executor = InProcess()
    result = run_sweep(the_plan, executor, store=store, results_dir=results)
    assert result.ok and result.attackers == 2
    assert sorted((c[1], c[2]["seed"], c[3]) for c in searched) == [("none", 1, 0), ("safety-training", 1, 3)]
    assert {c[4] for c in searched} == {results.absolute()}  # the tuning logs the defence takes its settings from
    assert {(tuple(map(tuple, (w.items() for w in c[5]))), tuple(c[6])) for c in searched} == {
        (((("seed", 1),), (("seed", 2),)), (None,))}  # the job carries the worlds and seeds of its test runs
    assert status(the_plan, store, results)["tune-attack safety-training"]["done"] == 1
    again = InProcess()
    run_sweep(the_plan, again, store=store, results_dir=results)
    assert not [j for j in again.jobs if j.kind == "attacker"] and len(searched) == 2  # done: not run again


def test_attacker_done_reads_the_logs_finished_flag(tmp_path):
    from harness.sweep.runner import attacker_done

    path = tmp_path / "g.yaml"
    path.write_text(GRID)
    the_plan = plan(load_grid(path), results_dir=tmp_path, locate=False)
    node = next(n for n in the_plan.attackers.values() if n.spec.defence.name == "none")
    assert not attacker_done(the_plan, node, tmp_path)  # no log
    log = attacker_log_path(tmp_path, "tiny", the_plan.suite.protocol_version, "none")
    log.parent.mkdir(parents=True)
    head = dict(suite="tiny", protocol_version=3, suite_params={}, validation={}, defence="none", defence_version="1",
                defence_params={}, defence_seed=0, zoo={}, space={}, space_size=0, sampler="tpe", sampler_seed=0,
                capability_bound=0.9, trials_budget=24, defender_trials_budget=24, trials=[])
    log.write_text(AttackerLog(**head, finished=False).model_dump_json())
    assert not attacker_done(the_plan, node, tmp_path)  # interrupted: the sweep runs it again (it resumes)
    log.write_text(AttackerLog(**head, finished=True).model_dump_json())
    assert attacker_done(the_plan, node, tmp_path)  # nothing feasible was chosen: nothing to run on the test data

    from harness.tuning.attacker_log import AttackTrial, ReportedRun

    point = dict(attack="sft-250", params={"lr": 1e-4}, run_id="r", score=0.5, measure="access", qa_defended=0.9,
                 qa_attacked=0.9, feasible=True)
    chosen = AttackTrial(**point)
    head.update(suite_params=dict(node.spec.suite.params), trials=[chosen])
    world1 = ReportedRun(**point, role="chosen")  # the searched world (1): no world of its own
    log.write_text(AttackerLog(**head, chosen=chosen, test=[world1], finished=True).model_dump_json())
    assert not attacker_done(the_plan, node, tmp_path)  # world 2's test run is missing: the sweep runs it (cached rest)
    world2 = ReportedRun(**point, role="chosen", world={"seed": 2})
    log.write_text(AttackerLog(**head, chosen=chosen, test=[world1, world2],
                               finished=True).model_dump_json())
    assert attacker_done(the_plan, node, tmp_path)


def test_a_defended_models_cells_run_before_the_next_defended_model(tmp_path):
    """Depth first: a sweep stopped early leaves the plan's first defended models with all their cells."""
    path = tmp_path / "g.yaml"
    path.write_text(GRID.replace("tuned_attacker: true\n", "attacks: {seeds: [0, 1]}\n").replace(
        "attacks: {budgets: [{attack: sft-250, settings: {lr: 1.0e-4}}]}\n", ""))
    the_plan = plan(load_grid(path), results_dir=tmp_path / "runs", locate=False)
    executor = InProcess()
    run_sweep(the_plan, executor, store=Store(tmp_path / "home"), results_dir=tmp_path / "runs")
    kinds = [(j.kind, j.spec.defence.name, j.spec.suite.params["seed"], j.spec.seed) for j in executor.jobs]
    model = None
    for kind, *defended in kinds:
        if kind == "defend":
            model = defended
        else:
            assert defended == model  # every cell follows its own defended model, before the next one is built
    assert len(kinds) == len(the_plan.nodes) + len(the_plan.cells)
    built = [tuple(k[1:]) for k in kinds if k[0] == "defend"]
    assert built == [(n.spec.defence.name, n.spec.suite.params["seed"], n.spec.seed) for n in the_plan.nodes.values()]


def test_each_search_follows_its_own_defences_rows(searched, tmp_path):
    """A sweep cut short leaves whole rows: a defence's defended models, their cells, then the search against it,
    before the next defence's first model; a search whose defence has nothing left to run goes first."""
    path = tmp_path / "g.yaml"
    path.write_text(GRID)
    results = tmp_path / "runs"
    the_plan = plan(load_grid(path), results_dir=results, locate=False)
    executor = InProcess()
    run_sweep(the_plan, executor, store=Store(tmp_path / "home"), results_dir=results)
    order = [(j.kind, j.spec.defence.name) for j in executor.jobs]
    searched_at = {name: order.index(("attacker", name)) for name in ("none", "safety-training")}
    for i, (kind, name) in enumerate(order):
        if kind != "attacker":  # every job of a defence runs before the search against it, none of the next's after
            assert (i < searched_at[name]) and all(i > at for other, at in searched_at.items()
                                                   if other != name and at < searched_at[name])
    assert order[-1] == ("attacker", "safety-training") and order.index(("attacker", "none")) < order.index(
        ("defend", "safety-training"))

    from harness.sweep.runner import rows_in_order
    done_row = [j for j in executor.jobs if j.kind != "attacker" and j.spec.defence.name == "safety-training"]
    searches = [j for j in executor.jobs if j.kind == "attacker"]
    assert [j.spec.defence.name for j in rows_in_order(done_row, searches)][:1] == ["none"]  # none: nothing left
