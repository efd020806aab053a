"""`harness tune`: the same number of trials for every defence over the space its Config declares, the choice
under the stability guard, the committed log, and later runs taking their settings from it."""

import json

import pytest

from harness import registry
from harness.errors import ConfigError
from harness.resolve import resolve
from harness.results.metrics import Guard
from harness.store.artifacts import Store
from harness.tuning.logs import ScanLog, TuningLog, log_path, search_space, tuned_settings
from harness.tuning.search import scan, tune
from tasks.tiny.suite import PROTOCOL
from tests.factories import record

P = int(PROTOCOL)  # the installed tiny protocol: where its tuning logs go

SMOKE = {"size": "smoke"}


def test_search_space_reads_the_declaration_and_scales_the_suite_value():
    repnoise = registry.get("defence", "repnoise").config
    space = search_space(repnoise, {"lr": 1e-3})
    assert space["lr"] == [1e-4, 3e-4, 1e-3, 3e-3] and space["epochs"] == [1, 2]
    assert space["beta"] == [1e-3, 1e-2, 1e-1, 1.0] and space["alpha"] == [0.5, 1.0, 2.0]
    assert search_space(registry.get("defence", "none").config, {}) == {}


@pytest.fixture
def fake_runs(monkeypatch):
    """pipeline.run replaced by records whose outcome depends on the trial's lr: lr 3e-3 breaks the guard and
    is the most 'resistant'; lr 1e-3 resists better than 3e-4."""
    import harness.pipeline

    seen = []

    def run(spec, suite, overrides, *, store, results_dir, force=False):
        seen.append((spec, results_dir))
        lr = spec.defence.params["lr"]
        r = record("safety-training", spec.defence.params, post={3e-3: 0.0, 1e-3: 0.3}.get(lr, 0.6))
        guard = Guard(passed=lr != 3e-3, reasons=[] if lr != 3e-3 else ["harmless QA 0.10 < 0.95 x base 1.00"])
        return r.model_copy(update={"metrics": r.metrics.model_copy(update={"guard": guard})}), False

    monkeypatch.setattr(harness.pipeline, "run", run)
    return seen


def test_tune_chooses_the_most_resistant_stable_setting(fake_runs, tmp_path):
    log = tune("tiny", "safety-training", store=Store(tmp_path / "home"), results_dir=tmp_path, suite_params=SMOKE)
    assert log.trials_budget == 96 and len(log.trials) == 8  # the budget covers lr x epochs (8 combinations)
    assert len({json.dumps(t.params, sort_keys=True) for t in log.trials}) == 8  # distinct settings
    stable = [t for t in log.trials if t.stable]
    assert stable and all(t.params["lr"] != 3e-3 for t in stable)  # 3e-3 resists best but fails the guard
    assert log.passed_guard and log.chosen == min(stable, key=lambda t: (t.hs_post, t.auc)).params
    spec, results_dir = fake_runs[0]
    assert spec.suite.params["split"] == "validation" and spec.attack.params["samples"] == 250
    assert results_dir == log_path(tmp_path, "tiny", P, "safety-training").parent / "runs"
    saved = TuningLog.model_validate_json(log_path(tmp_path, "tiny", P, "safety-training").read_text())
    assert (saved == log and not saved.trials[0].missed) or saved.trials[0].params["lr"] == 3e-3


def test_progress_names_each_trial(fake_runs, tmp_path, capfd):
    tune("tiny", "safety-training", store=Store(tmp_path / "home"), results_dir=tmp_path, suite_params=SMOKE)
    out = capfd.readouterr()
    assert "[tune safety-training 1/8] {" in out.out + out.err  # not swallowed as rich markup


def _trial_counts(fake_runs, tmp_path):
    counts = {}
    for name in ("repnoise", "vaccine", "adversarial-loss"):
        before = len(fake_runs)
        log = tune("tiny", name, store=Store(tmp_path / "home"), results_dir=tmp_path, suite_params=SMOKE)
        counts[name] = len(log.trials)
        assert len({json.dumps(t.params, sort_keys=True) for t in log.trials}) == counts[name]  # distinct settings
        assert len(fake_runs) - before == counts[name] + len(log.confirmations)  # runs: trials, then confirmations
    return counts


def test_the_suites_budget_covers_every_built_in_space_whole(fake_runs, tmp_path):
    assert _trial_counts(fake_runs, tmp_path) == {"repnoise": 96, "vaccine": 24, "adversarial-loss": 24}


def test_a_budget_smaller_than_a_space_samples_the_same_number_for_every_defence(fake_runs, tmp_path, monkeypatch):
    import dataclasses

    import harness.resolve

    load_suite = harness.resolve.load_suite

    def six_trials(name, params):
        spec, suite = load_suite(name, params)
        return spec, dataclasses.replace(suite, tuning=dataclasses.replace(suite.tuning, trials=6))

    monkeypatch.setattr(harness.resolve, "load_suite", six_trials)
    assert set(_trial_counts(fake_runs, tmp_path).values()) == {6}


def test_runs_take_the_tuned_settings_and_say_so(fake_runs, tmp_path):
    log = tune("tiny", "safety-training", store=Store(tmp_path / "home"), results_dir=tmp_path, suite_params=SMOKE)
    spec, _, overrides = resolve("tiny", "safety-training", "sft-250", sets=["suite.size=smoke"], tuned_from=tmp_path)
    assert spec.defence.params["lr"] == log.chosen["lr"] == overrides["tuned"]["lr"]
    spec, _, _ = resolve("tiny", "safety-training", "sft-250", sets=["suite.size=smoke", "defence.lr=5e-4"],
                         tuned_from=tmp_path)
    assert spec.defence.params["lr"] == 5e-4  # the user's --set wins
    assert tuned_settings(tmp_path, "tiny", P, {"size": "default", "seed": 0, "split": "test"}, "safety-training") == {}
    path = log_path(tmp_path, "tiny", P, "safety-training")
    path.write_text(json.dumps({**json.loads(path.read_text()), "defence_version": "0"}))
    assert tuned_settings(tmp_path, "tiny", P, {**SMOKE, "seed": 0, "split": "test"}, "safety-training") == {}


def test_a_scan_runs_every_matching_setting_and_never_changes_the_tuned_settings(fake_runs, tmp_path):
    home = Store(tmp_path / "home")
    tuned = tune("tiny", "safety-training", store=home, results_dir=tmp_path, suite_params=SMOKE)
    tuned_text = log_path(tmp_path, "tiny", P, "safety-training").read_text()
    first = scan("tiny", "safety-training", store=home, results_dir=tmp_path, suite_params=SMOKE,
                 fixed={"epochs": 1})
    assert sorted(t.params["lr"] for t in first.trials) == [1e-4, 3e-4, 1e-3, 3e-3]  # every lr, epochs held at 1
    assert all(t.params["epochs"] == 1 for t in first.trials) and first.space_size == 8
    assert first.stable == [t.params for t in first.trials if t.params["lr"] != 3e-3]
    spec, results_dir = fake_runs[-1]
    assert spec.suite.params["split"] == "validation" and results_dir.name == "runs"  # scored as trials are
    second = scan("tiny", "safety-training", store=home, results_dir=tmp_path, suite_params=SMOKE,
                  fixed={"epochs": 2})
    saved = ScanLog.model_validate_json(log_path(tmp_path, "tiny", P, "safety-training", "scan").read_text())
    assert saved == second and saved.scans == [{"epochs": 1}, {"epochs": 2}]  # merged, not overwritten
    assert len({json.dumps(t.params, sort_keys=True) for t in saved.trials}) == 8 == len(saved.trials)
    assert log_path(tmp_path, "tiny", P, "safety-training").read_text() == tuned_text
    assert tuned_settings(tmp_path, "tiny", P, {**SMOKE, "seed": 0, "split": "test"}, "safety-training") == tuned.chosen


def test_a_scan_fixes_only_fields_and_values_of_the_space(fake_runs, tmp_path):
    for fixed, message in (({"gamma": 1}, "cannot fix 'gamma'"), ({"lr": 5e-4}, "not one of its candidate values")):
        with pytest.raises(ConfigError, match=message):
            scan("tiny", "safety-training", store=Store(tmp_path), results_dir=tmp_path, suite_params=SMOKE,
                 fixed=fixed)
    assert not fake_runs and not (tmp_path / "tiny").exists()


def test_a_defence_without_a_search_space_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="declares no search space"):
        tune("tiny", "none", store=Store(tmp_path), results_dir=tmp_path, suite_params=SMOKE)


def test_the_choice_must_hold_the_guard_at_the_confirm_seeds(fake_runs, tmp_path, monkeypatch):
    """lr 1e-3 is the most resistant stable trial at seed 0, but fails the guard at defence seed 2: the next best
    setting that holds at seeds 1 and 2 is chosen, and the log lists every confirmation run."""
    import harness.pipeline

    fake = harness.pipeline.run

    def run(spec, suite, overrides, **kw):
        r, cached = fake(spec, suite, overrides, **kw)
        if spec.defence.params["lr"] == 1e-3 and spec.seed == 2:
            guard = Guard(passed=False, reasons=["harmless QA 0.92 < 0.95 x base 1.00"])
            r = r.model_copy(update={"metrics": r.metrics.model_copy(update={"guard": guard})})
        return r, cached

    monkeypatch.setattr(harness.pipeline, "run", run)
    log = tune("tiny", "safety-training", store=Store(tmp_path / "home"), results_dir=tmp_path, suite_params=SMOKE)
    seen = [(t.params, t.seed, t.stable) for t in log.confirmations]
    assert [(p["lr"], seed, ok) for p, seed, ok in seen[:4]] == [(1e-3, 1, True), (1e-3, 2, False)] * 2  # 2 epochs
    assert seen[4:] == [(log.chosen, 1, True), (log.chosen, 2, True)]  # the next best, confirmed at both seeds
    assert log.passed_guard and log.chosen["lr"] in (1e-4, 3e-4)
    assert fake_runs[-1][0].seed == 2 and fake_runs[-1][0].suite.params["split"] == "validation"


def test_no_setting_that_holds_at_every_seed_keeps_the_defaults(fake_runs, tmp_path, monkeypatch):
    import harness.pipeline

    fake = harness.pipeline.run

    def run(spec, suite, overrides, **kw):
        r, cached = fake(spec, suite, overrides, **kw)
        guard = Guard(passed=spec.seed == 0 and r.metrics.guard.passed, reasons=[] if spec.seed == 0 else ["x"])
        return r.model_copy(update={"metrics": r.metrics.model_copy(update={"guard": guard})}), cached

    monkeypatch.setattr(harness.pipeline, "run", run)
    log = tune("tiny", "safety-training", store=Store(tmp_path / "home"), results_dir=tmp_path, suite_params=SMOKE)
    assert not log.passed_guard and log.chosen == {}
    assert len(log.confirmations) == sum(t.stable for t in log.trials)  # each candidate fails at its first seed


def test_runs_written_elsewhere_still_take_the_committed_tuned_settings(tmp_path):
    """`--results-dir` says where records go, not where tuning logs come from: a dry run of the installed protocol's
    grid into an empty folder, from a working directory whose ./results holds tuning logs, plans the cells of the
    tuned settings (what planning with those logs gives); with `--tuned-from` an empty folder, the tuned defences'
    ids change and the untuned ones (none, random-init) stay."""
    import os
    import re
    import subprocess
    import sys

    from harness.sweep.grid import load_grid, plan
    from tests.conftest import REPO

    # The committed protocol-2 tuning logs, filed as the installed protocol's (none of its own is published yet).
    tuning = log_path(tmp_path / "results", "tiny", P, "x").parent
    tuning.mkdir(parents=True)
    chosen = {}
    for path in (REPO / "results" / "tiny" / "v2" / "tuning").glob("*.json"):
        if not path.name.endswith(".scan.json"):
            log = TuningLog.model_validate_json(path.read_text()).model_copy(update={"protocol_version": P})
            (tuning / path.name).write_text(log.model_dump_json())
            chosen[log.defence] = log.chosen
    grid = REPO / "grids" / "tiny-v3.yaml"
    env = {**os.environ, "HARNESS_HOME": str(tmp_path / "home"), "COLUMNS": "200"}

    def dry_run(*extra: str) -> set[str]:
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(grid), "--dry-run", "--results-dir",
                               str(tmp_path / "out"), *extra], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return set(re.findall(r"\b[0-9a-f]{16}\b", proc.stdout + proc.stderr))

    tuned = plan(load_grid(grid), results_dir=tmp_path / "out", tuned_from=tmp_path / "results")
    assert any(chosen.values()) and all(
        c.spec.defence.params.items() >= chosen[c.spec.defence.name].items() for c in tuned.cells
        if c.spec.defence.name in chosen)  # the logs' settings are what the plan runs
    planned = dry_run()
    assert planned == {c.id for c in tuned.cells} and len(planned) == 342
    (tmp_path / "no-logs").mkdir()
    untuned = dry_run("--tuned-from", str(tmp_path / "no-logs"))
    assert len(untuned) == 342 and 0 < len(untuned & planned) < 342  # the none / random-init cells stay
    assert untuned & planned == {c.id for c in tuned.cells if not chosen.get(c.spec.defence.name)}


def test_tuned_from_must_be_a_folder(tmp_path):
    from tests.conftest import harness

    proc = harness("run", "--defence", "none", "--attack", "sft-250", "--tuned-from", str(tmp_path / "missing"),
                   home=tmp_path / "home")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--tuned-from" in proc.stderr
    assert not (tmp_path / "home").exists()  # checked before any work
