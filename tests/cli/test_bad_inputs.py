"""The bad-input catalogue: every input a user can get wrong fails before any work, with exit 2, one line on
stderr, no traceback, and no file changed (every file and folder under the test's tree checksummed before
and after). Runs `harness.cli.main` in-process for speed; a few cases again in a subprocess, as users run it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import registry
from harness.cli import main
from harness.results.records import write_record
from tests.conftest import harness
from tests.factories import record

SMOKE = ["--set", "suite.size=smoke"]
RUN = ["run", "--defence", "none", "--attack", "sft-250", *SMOKE]
SWEEP = ["sweep", "{G}/ok.yaml"]
# Grid files of the sweep cases, written into the tree ({G}/<name>.yaml).
GRID_HEAD = "suite: tiny\nsuite_settings: {size: smoke}\n"
GRIDS = {
    "ok": GRID_HEAD + "defences: [{name: none}]\nattacks: {budgets: [{attack: sft-250, settings: {lr: 1.0e-4}}]}\n",
    "unknown-key": GRID_HEAD + "defences: [{name: none}]\ndefense_seeds: [0]\n",
    "duplicate-key": GRID_HEAD + "defences: [{name: none}]\ndefences: [{name: repnoise}]\n",
    "huge-seed": GRID_HEAD + f"defences: [{{name: none}}]\ndefence_seeds: [{2**64}]\n",
    "lr-in-shared-settings": GRID_HEAD + "defences: [{name: none}]\nattacks: {settings: {lr: 1.0e-4}}\n",
    # One budget of its own: the suite's budget grid sets samples and epochs in some budgets (a clash, tested apart).
    "bad-epochs": GRID_HEAD + "defences: [{name: none}]\nattacks: {budgets: [{attack: sft-250, settings: {lr: 1.0e-4}}]"
                  ", settings: {epochs: 0}}\n",
    "samples-beyond-split": GRID_HEAD + "defences: [{name: none}]\nattacks: {budgets: [{attack: sft-250, settings: "
                            "{lr: 1.0e-4}}], settings: {samples: 100000}}\n",
    "unknown-defence": GRID_HEAD + "defences: [{name: nope}]\n",
    "two-problems": GRID_HEAD + "defences: [{name: nope}, {name: none, settings: {beta: 1}}]\n",
    "not-yaml": "suite: [tiny\n",
    # hostile grids (issue 22): each refused in well under a second, before any cell is planned
    "alias-bomb": "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                  "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
    "million-cells": GRID_HEAD + "defences: [{name: none}]\ndefence_seeds: [" + ", ".join(map(str, range(1000)))
                     + "]\nattacks: {seeds: [" + ", ".join(map(str, range(1000))) + "]}\n",
    "deep-brackets": GRID_HEAD + "defences: " + "[" * 5000 + "]" * 5000 + "\n",
    "unhashable-key": GRID_HEAD + "? [a, b]\n: 1\ndefences: [{name: none}]\n",
    "seed-true": GRID_HEAD + "defences: [{name: none}]\ndefence_seeds: [true]\n",
}
BIG = str(2**64)

# (case id, argv with {R} results, {H} home, {F} a file, {D} damaged results, {RO} a read-only dir, {G} the grid
# files above; message part)
CASES = [
    ("grid-alias-bomb", ["sweep", "{G}/alias-bomb.yaml"], "alias"),
    ("grid-million-cells", ["sweep", "{G}/million-cells.yaml"], "6,000,000 cells"),
    ("grid-deep-brackets", ["sweep", "{G}/deep-brackets.yaml"], "nest"),
    ("grid-unhashable-key", ["sweep", "{G}/unhashable-key.yaml"], "key"),
    ("grid-seed-true", ["sweep", "{G}/seed-true.yaml"], "defence_seeds"),
    ("lr-infinity", [*RUN, "--set", "attack.lr=Infinity"], "attack.lr: must be a finite number"),
    ("lr-1e400", [*RUN, "--set", "attack.lr=1e400"], "attack.lr: must be a finite number"),
    ("lr-nan", [*RUN, "--set", "attack.lr=NaN"], "attack.lr"),
    ("lr-minus-infinity", [*RUN, "--set", "attack.lr=-Infinity"], "attack.lr"),
    ("lr-inf-string", [*RUN, "--set", "attack.lr=inf"], "attack.lr: must be a finite number"),
    ("lr-negative", [*RUN, "--set", "attack.lr=-1"], "attack.lr: Input should be greater than 0"),
    ("lr-not-a-number", [*RUN, "--set", "attack.lr=abc"], "attack.lr"),
    ("seed-beyond-64-bits", [*RUN, "--seed", BIG], "seed 18446744073709551616 is out of range"),
    ("seed-2-63", [*RUN, "--seed", str(2**63)], "is out of range"),
    ("seed-negative", [*RUN, "--seed", "-1"], "seed -1 is out of range"),
    ("seed-not-int", [*RUN, "--seed", "x"], "Invalid value for '--seed'"),
    ("results-dir-is-a-file", [*RUN, "--results-dir", "{F}"], "--results-dir"),
    ("results-dir-below-a-file", [*RUN, "--results-dir", "{F}/sub"], "cannot be created"),
    ("results-dir-read-only", [*RUN, "--results-dir", "{RO}"], "is not writable"),
    ("home-is-a-file", [*RUN, "--home", "{F}"], "is not a directory"),
    ("home-read-only", [*RUN, "--home", "{RO}"], "is not writable"),
    ("attack-samples-beyond-split", [*RUN, "--set", "attack.samples=100000"], "attack needs 100000 samples"),
    ("attack-samples-beyond-subset", [*RUN, "--set", "subsets.attack=violence", "--set", "attack.samples=1500"],
     "harm subset 'violence'"),
    ("defence-samples-beyond-split", ["run", "--defence", "repnoise", "--attack", "sft-250", *SMOKE, "--set",
                                      "defence.samples=100000"], "defence needs 100000 samples"),
    ("attack-rows-beyond-another-split", ["run", "--defence", "none", "--attack", "poison-10", *SMOKE, "--set",
                                          "attack.poison_fraction=0", "--set", "attack.samples=100000"],
     "attack 'poison-10' (rows of retain) needs 100000 samples"),
    ("eval-prompts-beyond-split", [*RUN, "--set", "eval.n_prompts=100000"], "eval.n_prompts=100000"),
    ("eval-harmless-beyond-split", [*RUN, "--set", "eval.n_harmless=100000"], "eval.n_harmless=100000"),
    ("curve-prompts-beyond-n-prompts", [*RUN, "--set", "eval.curve_prompts=100000"], "curve_prompts 100000 exceeds"),
    ("unknown-defence", ["run", "--defence", "nope", "--attack", "sft-250"], "Unknown defence 'nope'"),
    ("unknown-attack", ["run", "--defence", "none", "--attack", "sft-2"], "Unknown attack 'sft-2'"),
    ("unknown-suite", [*RUN, "--suite", "tiyn"], "Unknown suite 'tiyn'"),
    ("suite-path", [*RUN, "--suite", "../x"], "Unknown suite '../x'"),
    ("newline-forges-a-line", ["run", "--defence", "none\nerror: forged", "--attack", "sft-250"],
     "Unknown defence 'none\\nerror: forged'"),
    ("escape-sequence", ["run", "--defence", "\x1b[2Jnone", "--attack", "sft-250"], "\\x1b[2Jnone"),
    ("unknown-field", [*RUN, "--set", "defence.beta=1"], "defence.beta: unknown field"),
    ("malformed-set", [*RUN, "--set", "attack"], "expected TARGET.FIELD=VALUE"),
    ("unknown-target", [*RUN, "--set", "nope.x=1"], "unknown target 'nope'"),
    ("set-escape-not-json", [*RUN, "--set", "suite.size=smoke\\n"], "write it JSON-quoted: --set 'suite.size="),
    ("unknown-subset-rule", [*RUN, "--set", "subsets.rule=some"], "subsets.rule"),
    ("unknown-subset", [*RUN, "--set", "subsets.attack=violense"], "Unknown harm subset 'violense'"),
    ("unknown-backend", [*RUN, "--backend", "nope"], "eval.backend"),
    ("suite-size", ["run", "--defence", "none", "--attack", "sft-250", "--set", "suite.size=huge"], "suite.size"),
    ("suite-seed-negative", [*RUN, "--set", "suite.seed=-1"], "suite.seed"),
    ("suite-seed-huge", [*RUN, "--set", f"suite.seed={BIG}"], "suite.seed"),
    ("max-new-tokens-zero", [*RUN, "--set", "eval.max_new_tokens=0"], "eval.max_new_tokens"),
    ("epochs-zero", [*RUN, "--set", "attack.epochs=0"], "attack.epochs"),
    ("warmup-above-one", [*RUN, "--set", "attack.warmup_ratio=2"], "attack.warmup_ratio"),
    ("batch-negative", [*RUN, "--set", "eval.batch_size=-1"], "eval.batch_size"),
    ("unknown-option", [*RUN, "--bogus"], "No such option: --bogus"),
    ("missing-option", ["run", "--attack", "sft-250"], "Missing option '--defence'"),
    ("show-glob", ["show", "*"], "not a valid run id"),
    ("show-parent-path", ["show", "../../.."], "not a valid run id"),
    ("show-newline", ["show", "ab\ncd"], "'ab\\ncd'"),
    ("show-missing", ["show", "0123abcd"], "no run '0123abcd'"),
    ("show-random-bytes", ["show", "deadbeef", "--results-dir", "{D}"], "(UnicodeDecodeError)"),
    ("show-directory", ["show", "cafe", "--results-dir", "{D}"], "(IsADirectoryError)"),
    ("tables-suite-path", ["tables", "--suite", "../elsewhere"], "is not a valid name"),
    ("tables-absolute-suite", ["tables", "--suite", "/tmp"], "is not a valid name"),
    ("tables-no-records", ["tables", "--suite", "nosuch"], "no run records"),
    ("tables-results-file", ["tables", "--results-dir", "{F}"], "is not a directory"),
    ("report-suite-path", ["report", "--suite", "../x"], "Unknown suite '../x'"),
    ("report-no-records", ["report", *SMOKE], "no run records for suite 'tiny'"),
    ("report-protocol-zero", ["report", "--protocol", "0"], "'--protocol': Input should be greater than or equal to 1"),
    ("sweep-missing-grid", ["sweep", "{G}/nope.yaml"], "grid file"),
    ("sweep-grid-is-a-folder", ["sweep", "{G}"], "is not a file"),
    ("sweep-unknown-key", ["sweep", "{G}/unknown-key.yaml"], "defense_seeds: unknown key (valid: suite"),
    ("sweep-duplicate-key", ["sweep", "{G}/duplicate-key.yaml"], "duplicate key 'defences'"),
    ("sweep-not-yaml", ["sweep", "{G}/not-yaml.yaml"], "is not valid YAML"),
    ("sweep-huge-seed", ["sweep", "{G}/huge-seed.yaml"], "defence_seeds.0: Input should be less than or equal"),
    ("sweep-lr-in-shared-settings", ["sweep", "{G}/lr-in-shared-settings.yaml"], "which the budgets set"),
    ("sweep-bad-epochs", ["sweep", "{G}/bad-epochs.yaml"], "attack.epochs"),
    ("sweep-samples-beyond-split", ["sweep", "{G}/samples-beyond-split.yaml"], "attack needs 100000 samples"),
    ("sweep-unknown-defence", ["sweep", "{G}/unknown-defence.yaml"], "Unknown defence 'nope'"),
    ("sweep-every-problem-at-once", ["sweep", "{G}/two-problems.yaml"], "Unknown defence 'nope'. Did you mean: "
     "none? Available: " + ", ".join(registry.names("defence")) + " | Invalid defence 'none' config: defence.beta: "
     "unknown field"),
    ("sweep-results-file", [*SWEEP, "--results-dir", "{F}"], "--results-dir"),
    ("sweep-home-file", [*SWEEP, "--home", "{F}"], "is not a directory"),
    ("sweep-max-parallel-zero", [*SWEEP, "--max-parallel", "0"], "--max-parallel must be at least 1"),
    ("sweep-negative-retries", [*SWEEP, "--retries", "-1"], "--retries must be 0 or more"),
    ("sweep-unknown-executor", [*SWEEP, "--executor", "slurm"], "Unknown executor 'slurm'. Available: local, ray"),
    ("sweep-ray-address-local", [*SWEEP, "--ray-address", "auto"], "--ray-address is for --executor ray"),
    ("tune-unknown-defence", ["tune", "nope", *SMOKE], "Unknown defence 'nope'"),
    ("tune-nothing-to-tune", ["tune", "none", *SMOKE], "declares no search space"),
    ("tune-defence-set-without-scan", ["tune", "safety-training", *SMOKE, "--set", "defence.lr=1e-3"],
     "defence.FIELD=VALUE only with --scan"),
    ("tune-attack-set", ["tune", "safety-training", *SMOKE, "--set", "attack.lr=1e-3"], "tune takes --set suite"),
    ("tune-scan-field-outside-space", ["tune", "repnoise", *SMOKE, "--scan", "--set", "defence.samples=10"],
     "cannot fix 'samples' in a scan of 'repnoise'"),
    ("tune-scan-value-off-grid", ["tune", "repnoise", *SMOKE, "--scan", "--set", "defence.alpha=3"],
     "cannot fix alpha=3: not one of its candidate values [0.5, 1.0, 2.0]"),
    ("tune-attack-unknown-defence", ["tune-attack", "nope", *SMOKE], "Unknown defence 'nope'"),
    ("tune-attack-no-protocol", ["tune-attack", "repnoise", "--suite", "beavertails-llama2"],
     "suite 'beavertails-llama2' declares no tuning protocol"),
    ("tune-attack-attack-set", ["tune-attack", "repnoise", *SMOKE, "--set", "attack.lr=1e-3"],
     "tune-attack takes --set suite.FIELD=VALUE only"),
    ("prepare-unknown-suite", ["prepare", "nope"], "Unknown suite 'nope'"),
    ("prepare-home-file", ["prepare", "tiny", *SMOKE, "--home", "{F}"], "is not a directory"),
    ("prepare-home-read-only", ["prepare", "tiny", *SMOKE, "--home", "{RO}"], "is not writable"),
    ("list-unknown-kind", ["list", "nope"], "Unknown kind 'nope'"),
    ("verify-home-file", ["store", "verify", "--home", "{F}"], "is not a directory"),
    ("verify-no-store", ["store", "verify", "--home", "{H}/none"], "is not a directory"),
    ("gc-yes-unmarked-folder", ["store", "gc", "--yes", "--min-age-hours", "0", "--home", "{H}", "--results-dir",
                                "{R}"], "is not marked as an artifact store"),
    ("verify-delete-unmarked-folder", ["store", "verify", "--delete", "--home", "{H}"],
     "is not marked as an artifact store"),
    ("gc-torn-record", ["store", "gc", "--home", "{H}", "--results-dir", "{D}"], "cannot read 1 file(s)"),
    ("store-init-unrelated-folder", ["store", "init", "--home", "{G}"], "does not look like an artifact store"),
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """results (a valid record), a damaged results dir, a store, a plain file, a sibling folder, a read-only dir."""
    base = tmp_path_factory.mktemp("bad_inputs")
    rec = record()
    write_record(base / "results" / "t" / "v1" / f"{rec.run_id}.json", rec)
    write_record(base / "elsewhere" / "v1" / f"{rec.run_id}.json", rec)
    damaged = base / "damaged" / "tiny" / "v1"
    damaged.mkdir(parents=True)
    (damaged / "deadbeef.json").write_bytes(b"\x80\xff" + os.urandom(64))
    (damaged / "cafe.json").mkdir()
    (base / "home" / "suites" / "x").mkdir(parents=True)
    (base / "home" / "suites" / "x" / "meta.json").write_text("{}")
    (base / "a-file").write_text("not a directory")
    (base / "grids").mkdir()
    for name, text in GRIDS.items():
        (base / "grids" / f"{name}.yaml").write_text(text)
    ro = base / "read-only"
    ro.mkdir()
    locked = _make_read_only(ro)
    yield base, locked
    if locked and os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(ro)], check=False)
    ro.chmod(0o755)


def _make_read_only(path: Path) -> bool:
    """chmod for users; root ignores modes, so there the immutable attribute. False if neither holds."""
    path.chmod(0o555)
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(path)], check=False, capture_output=True)
    try:
        (path / "probe").write_text("x")
    except OSError:
        return True
    (path / "probe").unlink()
    return False


def snapshot(base: Path) -> dict[str, str]:
    """Every path under `base` with the sha256 of its content ('dir' for folders)."""
    out = {}
    for dirpath, dirs, files in os.walk(base):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), base)] = "dir"
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, base)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def expand(argv: list[str], base: Path) -> list[str]:
    subs = {"{R}": base / "results", "{H}": base / "home", "{F}": base / "a-file", "{D}": base / "damaged",
            "{RO}": base / "read-only", "{G}": base / "grids"}
    out = []
    for a in argv:
        for k, v in subs.items():
            a = a.replace(k, str(v))
        out.append(a)
    defaults = {"run": True, "sweep": True, "prepare": True, "tune": True, "tune-attack": True, "show": False,
                "tables": False, "report": False}
    if argv[0] in defaults and "--results-dir" not in argv and argv[0] != "prepare":
        out += ["--results-dir", str(base / "results")]
    if defaults.get(argv[0]) and "--home" not in argv:
        out += ["--home", str(base / "home")]
    return out


def test_catalogue_has_at_least_40_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("argv, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_before_work(tree, capfd, argv, message):
    base, read_only = tree
    if "{RO}" in " ".join(argv) and not read_only:
        pytest.skip("cannot make a read-only directory here (root without chattr)")
    before = snapshot(base)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(expand(argv, base))
    err = capfd.readouterr().err
    assert exit_.value.code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0] and "Traceback" not in err
    assert snapshot(base) == before


@pytest.mark.parametrize("argv, message", [
    (["run", "--defence", "none\nerror: forged", "--attack", "sft-250"], "Unknown defence 'none\\nerror: forged'"),
    ([*RUN, "--set", "attack.lr=1e400"], "attack.lr: must be a finite number"),
    (["show", "*"], "not a valid run id"),
], ids=["newline", "overflow", "glob"])
def test_bad_input_in_a_real_process(tree, argv, message):
    base, _ = tree
    before = snapshot(base)
    proc = harness(*expand(argv, base), home=base / "home")
    assert proc.returncode == 2 and proc.stderr.splitlines() == [proc.stderr.strip()] and message in proc.stderr
    assert "Traceback" not in proc.stderr and snapshot(base) == before


def test_a_hub_error_is_one_line_and_never_cut(tree, capfd, monkeypatch):
    """The hub's message says what went wrong late in its first sentence (a network error, then why the cache
    cannot help): the line keeps all of it, on one line, and drops only the advice sentences after it."""
    import huggingface_hub

    why = ("Got: ConnectError: [Errno -2] Name or service not known An error happened while trying to locate the "
           "files on the Hub, and we cannot find the appropriate snapshot folder for the specified revision on the "
           "local disk")

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError(f"{why}.\nPlease check your connection and try again.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    base, _ = tree
    before = snapshot(base)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(expand([*RUN, "--model", "some-org/absent-model"], base))
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: model 'some-org/absent-model' not found") and err.rstrip().endswith(f"{why})")
    assert "Please check" not in err and snapshot(base) == before


@pytest.mark.parametrize("text, clipped", [
    ("short message", "short message"),
    ("word " * 100, "word " * 59 + "word ... (200 more characters)"),
    ("x" * 400, "x" * 300 + " ... (100 more characters)"),
])
def test_a_long_parser_message_is_clipped_at_a_word_and_says_so(text, clipped):
    from harness.safety import clip

    assert clip(text) == clipped.strip()
