"""Committed results are read-only to everyday commands (issue 22).

- `run`, `sweep`, `tune` and `tune --scan` write to the working folder `runs/`; only `harness publish` writes into
  `results/`, after checks: it refuses a smoke-size (non-default) record under the default suite's name, a record
  from a dirty tree without --allow-dirty, an invalid record, and never overwrites one; `--results-dir results`
  spelled out says so on one line and refuses non-default settings before any work.
- A cached command rewrites no file (scan and tuning logs, tables, LEADERBOARD.md, the site), and files are
  written with the user's umask.
- Diverged training is one line naming the stage (exit 1); SIGTERM is the Ctrl-C line (exit 143); a sweep shows
  its jobs' warnings.
- End to end (slow): the README's "Using it" commands at smoke size, run in a folder holding a copy of the
  committed results/, change no byte and no modification time there (nor in the repository's results/).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.errors import TrainingDiverged
from harness.results.publish import check_target, is_published, plan, publish, writing_note
from harness.results.tables import build, write_table
from harness.specs import spec_id, stable_hash
from harness.store.artifacts import Store, atomic_write_text
from harness.tuning.logs import ScanLog, merge_scans, write_log
from tasks.tiny.suite import PROTOCOL
from tests import process
from tests.conftest import REPO, messages

COMMITTED = REPO / "results" / "tiny" / "v2"  # published records of an older protocol than the installed one
NOW = f"v{PROTOCOL}"                            # the installed protocol's folder: what `publish` takes
INTERRUPTED = "interrupted; rerun the same command to resume from the last finished stage"


def tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under `root`: (sha256, mtime in ns)."""
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli(*args: str, cwd: Path, home: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    """The CLI in a subprocess with `cwd` as the working directory (its ./results and ./runs)."""
    env = {**os.environ, "HARNESS_HOME": str(home), "COLUMNS": "200"}
    return process.run(list(args), env=env, cwd=cwd, timeout=timeout)


def clean_record() -> Path:
    """A committed record made from a clean tree (the default tiny suite)."""
    return next(p for p in sorted(COMMITTED.glob("*.json")) if '"git_dirty": false' in p.read_text())


def working_copy(tmp_path: Path, source: Path, edit=None, folder: str = "") -> Path:
    """`source` copied into tmp/runs/tiny/v<its protocol>/[folder] (edited by `edit(raw)`, run id recomputed from
    its spec)."""
    raw = json.loads(source.read_text())
    if edit is not None:
        edit(raw)
        raw["run_id"] = spec_id(raw["spec"])
    path = tmp_path / "runs" / "tiny" / f"v{raw['protocol_version']}" / folder / f"{raw['run_id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw, indent=2) + "\n")
    return path


def installed(raw: dict, **suite: object) -> None:
    """A committed record of an older protocol made anew by the installed tiny suite: its spec resolved again from its
    defence settings, attack budget, seeds and suite settings (updated by `suite`), so the installed suite version,
    base model, judges and attack defaults; its protocol version, plugins and overrides to match; its numbers kept
    (each record checks only itself)."""
    from harness.resolve import resolve

    s = raw["spec"]
    extra = {"defence": s["defence"]["params"], "attack": raw["overrides"]["user"].get("attack", {}),
             "suite": {**s["suite"]["params"], **suite}}
    spec, made_by, overrides = resolve(s["suite"]["name"], s["defence"]["name"], s["attack"]["name"], seed=s["seed"],
                                       attack_seed=s["attack_seed"], extra=extra)
    raw.update(spec=spec.model_dump(mode="json"), protocol_version=made_by.protocol_version, overrides=overrides)
    named = [("suite", spec.suite), ("defence", spec.defence), ("attack", spec.attack),
             *(("judge", j) for j in spec.judges)]
    raw["provenance"]["plugins"] = {f"{kind}:{p.name}": p.version for kind, p in named}
    stages = raw["provenance"]["stages"]
    for name in ("base", "pre_attack", "post_attack"):  # its judges' scores are keyed by their specs
        gen = raw["metrics"][name]["artifacts"]["generations"]
        for stage, inputs in [*((f"{name}.judge.{j.name}", {"generations": gen, "judge": j.model_dump()})
                                for j in spec.judges),
                              (f"{name}.judge.visible", {"generations": gen, "judge": spec.judges[0].model_dump(),
                                                         "set": "visible"})]:
            if stage in stages:
                stages[stage]["key"] = stable_hash(inputs)


# ------------------------------------------------------------------------------------------------ publish
def test_publish_copies_a_record_rebuilds_tables_and_never_rewrites(tmp_path):
    src = working_copy(tmp_path, clean_record(), installed)
    dst = tmp_path / "results"
    tables = publish(plan(tmp_path / "runs", dst, run_ids=[src.stem[:8]], every=False))
    target = dst / "tiny" / NOW / src.name
    assert target.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in tables) == sorted(f"{n}.parquet" for n in build([]))
    before = tree(dst)
    again = plan(tmp_path / "runs", dst, run_ids=[], every=True)
    assert again.items == [] and any("already published" in line for line in again.kept)
    publish(again)
    assert tree(dst) == before  # nothing rewritten, tables included
    proc = cli("validate", str(dst), cwd=tmp_path, home=tmp_path / "home")
    assert proc.returncode == 0, proc.stdout


def test_publish_refuses_a_record_of_an_older_protocol(tmp_path):
    """A record of a protocol the installed suite no longer runs stays in the working folder: its board is closed."""
    old = working_copy(tmp_path, clean_record())
    assert old.parent.name == "v2" != NOW
    refused = plan(tmp_path / "runs", tmp_path / "results", run_ids=[old.stem], every=False)
    assert refused.items == [] and len(refused.problems) == 1, refused.problems
    assert f"made under protocol v2; the installed 'tiny' is {NOW}; it stays in {tmp_path / 'runs'}" in \
        refused.problems[0]
    with pytest.raises(Exception, match="nothing written"):
        publish(refused)
    assert not (tmp_path / "results").exists()


def test_publish_refuses_a_smoke_record_under_the_default_suite_name(tmp_path):
    path = working_copy(tmp_path, clean_record(), lambda raw: installed(raw, size="smoke"))
    (tmp_path / "results").mkdir()
    proc = cli("publish", path.stem, cwd=tmp_path, home=tmp_path / "home")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "{'size': 'smoke'}" in proc.stderr and "nothing written" in proc.stderr
    everything = cli("publish", "--all", cwd=tmp_path, home=tmp_path / "home")  # --all: listed, kept, exit 0
    assert everything.returncode == 0 and f"kept in runs: {path.name}" in everything.stderr
    assert list((tmp_path / "results").rglob("*")) == []


def test_publish_refuses_dirty_invalid_and_keeps_existing_records(tmp_path):
    dirty = working_copy(tmp_path, clean_record(), installed)
    raw = json.loads(dirty.read_text())
    raw["provenance"]["git_dirty"] = True  # not in the spec: same run id
    dirty.write_text(json.dumps(raw))
    dst = tmp_path / "results"
    refused = plan(tmp_path / "runs", dst, run_ids=[dirty.stem], every=False)
    # The installed protocol requires clean records (`Suite.clean_from_protocol`): --allow-dirty cannot override it
    assert len(refused.problems) == 1 and "must come from a clean commit" in refused.problems[0]
    assert plan(tmp_path / "runs", dst, run_ids=[dirty.stem], every=False, allow_dirty=True).problems == \
        refused.problems
    with pytest.raises(Exception, match="nothing written"):
        publish(refused)
    assert not dst.exists()
    forged = dirty.with_name("0" * 16 + ".json")
    forged.write_text(dirty.read_text())  # a run id that is not its spec's hash
    bad = plan(tmp_path / "runs", dst, run_ids=["0" * 16], every=False)
    assert bad.problems and "hash of its spec" in bad.problems[0]
    forged.unlink()
    existing = dst / "tiny" / NOW / dirty.name
    existing.parent.mkdir(parents=True)
    existing.write_text("published earlier")
    kept = plan(tmp_path / "runs", dst, run_ids=[dirty.stem], every=False, allow_dirty=True)
    assert kept.items == [] and kept.problems == [] and "already published" in kept.kept[0]
    publish(kept)
    assert existing.read_text() == "published earlier"


def test_publish_tuning_logs_with_their_trials(tmp_path):
    """A tuning log goes with its trial records; one that differs from the published log needs --replace-logs; a
    scan log is merged into the published one; a log whose trials have no record is refused."""
    runs, dst = tmp_path / "runs", tmp_path / "results"
    trial = working_copy(tmp_path, next((COMMITTED / "tuning" / "runs" / "tiny" / "v2").glob("*.json")), installed,
                         folder=f"tuning/runs/tiny/{NOW}")  # a trial of the installed suite (validation split)
    raw = json.loads(trial.read_text())
    trial.write_text(json.dumps({**raw, "provenance": {**raw["provenance"], "git_dirty": False}}))  # v3: clean only
    assert json.loads(trial.read_text())["spec"]["suite"]["params"]["split"] == "validation"
    committed = json.loads((COMMITTED / "tuning" / "repnoise.json").read_text())
    first = {**committed, "protocol_version": int(PROTOCOL),
             "trials": [{**committed["trials"][0], "run_id": trial.stem}], "confirmations": []}
    log_file = runs / "tiny" / NOW / "tuning" / "repnoise.json"
    log_file.write_text(json.dumps(first))
    published = plan(runs, dst, run_ids=[], every=True, allow_dirty=True)
    assert sorted(i.kind for i in published.items) == ["trial", "tuning"] and not published.problems
    publish(published)
    assert (dst / "tiny" / NOW / "tuning" / "runs" / "tiny" / NOW / trial.name).read_bytes() == trial.read_bytes()
    assert json.loads((dst / "tiny" / NOW / "tuning" / "repnoise.json").read_text())["chosen"] == first["chosen"]
    log_file.write_text(json.dumps({**first, "chosen": {"lr": 3e-3}}))  # a re-tune
    retune = plan(runs, dst, run_ids=[], every=True, allow_dirty=True)
    assert retune.problems and "--replace-logs" in retune.problems[0]
    assert [i.kind for i in plan(runs, dst, run_ids=[], every=True, allow_dirty=True, replace_logs=True).items] == [
        "tuning"]
    log_file.write_text(json.dumps({**first, "trials": [{**first["trials"][0], "run_id": "f" * 16}]}))
    orphan = plan(runs, dst, run_ids=[], every=True, allow_dirty=True)
    assert orphan.problems and "have no record" in orphan.problems[0]


def test_explicit_results_dir_is_noted_and_refuses_non_default_settings(tmp_path):
    (tmp_path / "results").mkdir()
    assert is_published(tmp_path / "results") is False  # not the working directory's, not the repository's
    assert is_published(REPO / "results") and "published results" in writing_note(REPO / "results")
    with pytest.raises(Exception, match="size': 'smoke'"):
        check_target(REPO / "results", "tiny", {"size": "smoke", "seed": 0, "split": "test"})
    check_target(REPO / "results", "tiny", {"size": "default", "seed": 0, "split": "test"})  # the defaults pass
    proc = cli("run", "--defence", "none", "--attack", "sft-250", "--set", "suite.size=smoke", "--results-dir",
               "results", cwd=tmp_path, home=tmp_path / "home")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "published results" in proc.stderr, proc.stderr
    assert list((tmp_path / "results").rglob("*")) == [] and not (tmp_path / "home").exists()  # before any work


# ---------------------------------------------------------------------------------- cached: no rewrite, umask
def test_cached_scan_of_the_committed_log_rewrites_nothing(tmp_path):
    """The issue's case: `tune repnoise --scan --set defence.lr=1e-4` fully cached over the committed scan log
    (whose trials predate the `seed` field) adds no scan entry and leaves the file as it is."""
    committed = COMMITTED / "tuning" / "repnoise.scan.json"
    log = ScanLog.model_validate_json(committed.read_text())
    rescan = log.model_copy(update={"scans": [{"lr": 1e-4}],
                                    "trials": [t for t in log.trials if t.params["lr"] == 1e-4]})
    assert merge_scans(log, rescan) == log
    path = tmp_path / "repnoise.scan.json"
    shutil.copy2(committed, path)
    stamp = path.stat().st_mtime_ns
    assert write_log(path, merge_scans(log, rescan)) is False
    assert path.read_bytes() == committed.read_bytes() and path.stat().st_mtime_ns == stamp
    other = log.trials[0].model_copy(update={"params": {**log.trials[0].params, "lr": 1e-3}})
    new = rescan.model_copy(update={"scans": [{"lr": 1e-3, "epochs": 1}], "trials": [other]})
    merged = merge_scans(log, new)  # a setting the log lacks: a new entry, and the file changes
    assert merged.scans == [*log.scans, {"lr": 1e-3, "epochs": 1}] and len(merged.trials) == len(log.trials) + 1
    assert write_log(path, merged) is True


def test_cached_tune_scan_rewrites_nothing(monkeypatch, tmp_path):
    """`tune --scan` twice with every trial cached: the second writes no file."""
    import harness.pipeline
    from harness.results.metrics import Guard
    from harness.tuning.search import scan
    from tests.factories import record

    def run(spec, suite, overrides, *, store, results_dir, force=False):
        r = record("safety-training", spec.defence.params, post=0.5)
        guard = Guard(passed=True, reasons=[])
        return r.model_copy(update={"metrics": r.metrics.model_copy(update={"guard": guard})}), True

    monkeypatch.setattr(harness.pipeline, "run", run)
    kwargs = {"store": Store(tmp_path / "home"), "results_dir": tmp_path, "suite_params": {"size": "smoke"}}
    for epochs in (1, 2):
        scan("tiny", "safety-training", fixed={"lr": 1e-3, "epochs": epochs}, **kwargs)
    before = tree(tmp_path)
    time.sleep(0.01)
    log = scan("tiny", "safety-training", fixed={"lr": 1e-3}, **kwargs)  # covered by the two scans above
    assert tree(tmp_path) == before and len(log.scans) == 2


def test_identical_writes_keep_the_file(tmp_path):
    path = tmp_path / "a.json"
    assert atomic_write_text(path, "x\n") is True
    stamp = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert atomic_write_text(path, "x\n") is False and path.stat().st_mtime_ns == stamp
    assert atomic_write_text(path, "y\n") is True and path.read_text() == "y\n"
    from tests.factories import record

    frame = build([record()])["resistance"]
    table = write_table(frame, "resistance", tmp_path)
    stamp = table.stat().st_mtime_ns
    time.sleep(0.01)
    write_table(frame.copy(), "resistance", tmp_path)
    assert table.stat().st_mtime_ns == stamp


@pytest.fixture
def umask_027(monkeypatch):
    import harness.store.layout as layout

    monkeypatch.setattr(layout, "_UMASK", None)  # read again below
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)
        layout._UMASK = None


def test_files_follow_the_umask(umask_027, tmp_path):
    from harness.results.records import write_record
    from leaderboard.build import build_leaderboard
    from tests.factories import record
    from tests.leaderboard.conftest import write_results

    r = record()
    write_record(tmp_path / "r" / f"{r.run_id}.json", r)
    table = write_table(build([r])["resistance"], "resistance", tmp_path / "r")
    results = tmp_path / "results"
    write_results(results)
    summary = build_leaderboard(results, tmp_path / "out")
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "r" / f"{r.run_id}.json") == 0o640 and mode(table) == 0o640
    assert mode(summary.markdown) == 0o640 and mode(summary.site) == 0o750
    assert mode(summary.site / "index.html") == 0o640
    store = Store(tmp_path / "home")
    with store.writing("models", "k", {}) as tmp:
        (tmp / "w").write_text("x")
    assert mode(store.path("models", "k")) == 0o750 and mode(store.path("models", "k") / "meta.json") == 0o640


def test_leaderboard_rebuilt_from_unchanged_tables_rewrites_nothing(tmp_path):
    from leaderboard.build import build_leaderboard
    from tests.leaderboard.conftest import write_results

    results_dir = tmp_path / "results"
    write_results(results_dir)
    build_leaderboard(results_dir, tmp_path / "out")
    before = tree(tmp_path / "out")
    time.sleep(0.01)
    build_leaderboard(results_dir, tmp_path / "out")
    assert tree(tmp_path / "out") == before


# ------------------------------------------------------------------------------ divergence, SIGTERM, warnings
def test_non_finite_loss_stops_training_at_its_step():
    import torch

    from harness.training.loop import LossOut, TrainConfig, train

    model = torch.nn.Linear(2, 1)
    calls = []

    def loss_fn(m, batch):
        calls.append(1)
        value = m(batch["x"]).sum() * (float("nan") if len(calls) == 3 else 1.0)
        return LossOut(value, {"loss": float(value.detach())})

    rows = [torch.ones(2)] * 8
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 3"):
        train(model, rows, lambda b: {"x": torch.stack(b)}, loss_fn, TrainConfig(lr=1e-3, batch_size=2), seed=0)


def test_diverged_stage_is_named_and_stores_nothing(tmp_path):
    from harness.stages import Stages

    stages = Stages(Store(tmp_path))

    def build(folder):
        raise TrainingDiverged("training diverged (loss is nan at step 3)")

    with pytest.raises(TrainingDiverged) as caught:
        stages.cached("attack", "models", {"x": 1}, build)
    assert str(caught.value) == "attack stage: training diverged (loss is nan at step 3); lower attack.lr"
    assert caught.value.exit_code == 1 and list((tmp_path / "models").iterdir()) == []


def test_sigterm_prints_the_interrupt_line(tmp_path):
    """SIGTERM during a run: the Ctrl-C line and exit 143, no traceback (the run's work is a stand-in)."""
    code = textwrap.dedent(f"""
        import sys, time
        import harness.pipeline, harness.preflight
        def slow(*args, **kwargs):
            print("ready", file=sys.stderr, flush=True)
            time.sleep(120)
        harness.pipeline.run = slow
        harness.preflight.check_run = lambda *args, **kwargs: None
        from harness.cli import main
        main(["run", "--defence", "none", "--attack", "sft-250", "--set", "suite.size=smoke",
              "--home", {str(tmp_path / 'home')!r}])
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    assert proc.stderr.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 143 and messages(rest) == [INTERRUPTED], rest


def test_a_sweep_shows_its_jobs_warnings(capfd):
    from harness.sweep.executors import _communicate

    script = ("import sys; print('progress', file=sys.stderr); "
              "print('warning: artifact models/abc is damaged (truncated); recomputing it', file=sys.stderr); "
              "print('{\"id\": \"x\"}')")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = _communicate(proc, "none seed 0 x 3e-4@250")
    assert json.loads(out) == {"id": "x"} and "progress" in err  # what the executor reads, unchanged
    shown = capfd.readouterr().err
    assert "warning: none seed 0 x 3e-4@250: artifact models/abc is damaged (truncated); recomputing it" in shown
    assert "progress" not in shown


# ----------------------------------------------------------------------------------------------- end to end
SMOKE = ("--set", "suite.size=smoke")
CELL_GRID = """\
suite: tiny
suite_settings: {size: smoke}
eval: {n_prompts: 16, n_harmless: 16}
defences: [{name: none}]
defence_seeds: [0]
attacks:
  budgets: [{attack: sft-250, settings: {lr: 3.0e-4}, label: 3e-4@32}]
  settings: {samples: 32}
  seeds: [7]
"""


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A working directory with a copy of the committed results/ (the commands' ./results)."""
    root = tmp_path_factory.mktemp("clone")
    shutil.copytree(REPO / "results", root / "results")
    (root / "cell.yaml").write_text(CELL_GRID)
    return root


@pytest.mark.slow
def test_using_it_commands_leave_the_committed_results_unchanged(smoke_base, home, clone):
    repo_before, copy_before = tree(REPO / "results"), tree(clone / "results")
    steps = [("list",), ("prepare", "tiny", *SMOKE),
             ("run", "--defence", "none", "--attack", "sft-250", *SMOKE),
             ("run", "--defence", "none", "--attack", "sft-250", *SMOKE, "--json"),  # cached
             ("sweep", str(REPO / "grids" / "tiny-v3.yaml"), "--dry-run"),
             ("sweep", "cell.yaml"), ("report", "--protocol", "2"),  # the published board (the installed one is empty)
             ("report", "--results-dir", "runs", "--set", "suite.size=smoke"),
             ("tune", "safety-training", "--scan", *SMOKE, "--set", "defence.lr=0.001", "--set", "defence.epochs=1"),
             ("store", "ls"), ("store", "gc"), ("validate", "results"), ("publish", "--all")]
    for step in steps:
        proc = cli(*step, cwd=clone, home=home)
        assert proc.returncode == 0, f"harness {' '.join(step)}: {proc.stderr[-2000:]}"
    records = sorted((clone / "runs" / "tiny" / NOW).glob("*.json"))
    assert len(records) == 2  # the run and the sweep's cell, in runs/
    run_id = records[0].stem
    assert cli("show", run_id, cwd=clone, home=home).returncode == 0  # found in runs/
    scan_log = clone / "runs" / "tiny" / NOW / "tuning" / "safety-training.scan.json"
    stamp = scan_log.stat().st_mtime_ns
    again = cli("tune", "safety-training", "--scan", *SMOKE, "--set", "defence.lr=0.001", "--set", "defence.epochs=1",
                cwd=clone, home=home)
    assert again.returncode == 0 and scan_log.stat().st_mtime_ns == stamp  # fully cached: not rewritten
    assert tree(clone / "results") == copy_before and tree(REPO / "results") == repo_before


@pytest.mark.slow
def test_sweep_forwards_a_jobs_damaged_artifact_warning(smoke_base, home, clone):
    """A cell rerun over a damaged artifact: the job's warning reaches the sweep's output, named by the cell."""
    first = cli("sweep", "cell.yaml", "--results-dir", "other", cwd=clone, home=home)
    assert first.returncode == 0, first.stderr[-2000:]
    record = json.loads(next((clone / "other" / "tiny" / NOW).glob("*.json")).read_text())
    key = record["provenance"]["stages"]["post_attack.generate"]["key"]
    parquet = home / "generations" / key / "generations.parquet"
    parquet.write_bytes(parquet.read_bytes()[:100])
    next((clone / "other" / "tiny" / NOW).glob("*.json")).unlink()
    proc = cli("sweep", "cell.yaml", "--results-dir", "other", cwd=clone, home=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
    assert any(f"generations/{key} is damaged" in ln and " x 3e-4@32" in ln for ln in lines), proc.stderr[-2000:]


@pytest.mark.slow
def test_diverging_attack_is_one_line_naming_the_stage(smoke_base, home, tmp_path):
    proc = cli("run", "--defence", "none", "--attack", "sft-250", *SMOKE, "--set", "attack.lr=1e6",
               "--attack-seed", "11", cwd=tmp_path, home=home)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: attack stage: training "
                                                                                   "diverged (loss is ")
    assert "Traceback" not in proc.stderr and "lower attack.lr" in proc.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.json"))


@pytest.mark.slow
def test_sigterm_mid_run_resumes_like_ctrl_c(smoke_base, home, tmp_path):
    env = {**os.environ, "HARNESS_HOME": str(home)}
    args = ["run", "--defence", "none", "--attack", "sft-250", *SMOKE, "--attack-seed", "12"]
    proc = process.start(args, cwd=tmp_path, env=env)
    deadline = time.monotonic() + 300
    while proc.poll() is None and not list(home.glob("models/.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the attack is being trained
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and messages(err) == [INTERRUPTED], err[-2000:]
    done = process.run(args, cwd=tmp_path, env=env, timeout=1200)
    assert done.returncode == 0 and list((tmp_path / "runs").rglob("*.json"))


def test_publish_logs_takes_the_tuned_attackers_log_with_the_runs_it_names(tmp_path):
    """`harness publish --logs`: every log in the working folder (a tuned attacker's under tuning/attacker/) with the
    records it names, its validation trials and its test runs, and no other record; a log naming a run with no
    record is refused."""
    from harness.tuning.attacker_log import AttackerLog

    runs, dst = tmp_path / "runs", tmp_path / "results"
    trial = working_copy(tmp_path, next((COMMITTED / "tuning" / "runs" / "tiny" / "v2").glob("*.json")), installed,
                         folder=f"tuning/runs/tiny/{NOW}")
    raw = json.loads(trial.read_text())
    trial.write_text(json.dumps({**raw, "provenance": {**raw["provenance"], "git_dirty": False}}))
    test_runs = [working_copy(tmp_path, p) for p in sorted((REPO / "results" / "tiny" / NOW).glob("*.json"))[:3]]
    point = dict(attack="sft-250", params={"lr": 1e-4}, score=0.5, measure="access", qa_defended=0.9,
                 qa_attacked=0.9, feasible=True)
    chosen = dict(point, run_id=trial.stem)
    log = AttackerLog(suite="tiny", protocol_version=int(PROTOCOL), suite_params={"seed": 0, "size": "default",
                      "split": "test"}, validation={"split": "validation"}, defence="none", defence_version="1",
                      defence_params={}, defence_seed=0, zoo={}, space={}, space_size=1, sampler="whole",
                      sampler_seed=0, capability_bound=0.9, trials_budget=24, defender_trials_budget=24,
                      trials=[chosen], chosen=chosen, finished=True,
                      test=[dict(point, run_id=p.stem, role="chosen", world={"seed": i}) for i, p in
                            enumerate(test_runs[:2])])
    log_file = runs / "tiny" / NOW / "tuning" / "attacker" / "none.json"
    log_file.parent.mkdir(parents=True)
    log_file.write_text(log.model_dump_json())
    published = plan(runs, dst, run_ids=[], every=False, logs=True)
    assert not published.problems, published.problems
    assert sorted((i.kind, i.src.name) for i in published.items) == sorted(
        [("attacker", "none.json"), ("trial", trial.name), *(("record", p.name) for p in test_runs[:2])])
    publish(published)  # the third record, named by no log, stays in the working folder
    assert not (dst / "tiny" / NOW / test_runs[2].name).exists()
    written = dst / "tiny" / NOW / "tuning" / "attacker" / "none.json"
    assert AttackerLog.model_validate_json(written.read_text()) == log
    test_runs[1].unlink()
    (dst / "tiny" / NOW / test_runs[1].name).unlink()
    orphan = plan(runs, dst, run_ids=[], every=False, logs=True, replace_logs=True)
    assert orphan.problems and "have no record" in orphan.problems[0]
    log_file.write_text(log.model_copy(update={"finished": False}).model_dump_json())
    unfinished = plan(runs, dst, run_ids=[], every=False, logs=True)
    assert unfinished.items == [] and any("unfinished search" in line for line in unfinished.kept)
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="--logs"):
        plan(runs, dst, run_ids=[], every=False)
