"""`harness run ... 2>&1 | cat` (CI, a pipe, a file) shows progress lines during the world build and every long
stage, each with its count, total and ETA, arriving while the stage runs. The world build's lines are those the
session's smoke build printed without a terminal (tests/conftest.py: `smoke_base`); the run goes into a store that
holds only that world, so every stage of the run is computed."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests import process
from tests.conftest import PREPARE_LOG, REPO

pytestmark = pytest.mark.slow
PERIODIC = r"\[{}\] {} \d+/(\d+) \(\d+%\) elapsed \d+:\d\d eta \d+:\d\d"


def build_log(home: Path) -> str:
    """What the session's smoke build printed (the worker that built it writes it; another may still be writing)."""
    deadline = time.monotonic() + 120
    while not (home / PREPARE_LOG).exists() and time.monotonic() < deadline:
        time.sleep(1)
    return (home / PREPARE_LOG).read_text()


def run_without_a_terminal(tmp_path, home: Path) -> list[tuple[float, str]]:
    """(seconds since start, line) of everything the run writes, read from a pipe as it arrives."""
    shutil.copytree(home / "suites", tmp_path / "home" / "suites")  # the built world, no stage of any run
    # a line at every advance: a stage shorter than any interval (the warm attack trains in ~2 s) still shows its
    # count, total and ETA (tests/test_progress.py checks the interval itself)
    env = {**os.environ, "HARNESS_HOME": str(tmp_path / "home"), "HARNESS_PROGRESS_EVERY": "0"}
    proc = process.start(["run", "--defence", "repnoise", "--attack", "sft-250", "--set", "suite.size=smoke",
                          "--results-dir", str(tmp_path / "runs")], env=env, cwd=REPO, merged=True)
    start, lines = time.monotonic(), []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.monotonic() - start, line.rstrip("\n")))
    assert proc.wait(timeout=1200) == 0, "\n".join(text for _, text in lines[-30:])
    return lines


def test_a_piped_run_reports_progress_through_the_world_build_and_every_stage(smoke_base, home, tmp_path):
    built = build_log(home)
    timed = run_without_a_terminal(tmp_path, home)
    text = "\n".join(line for _, line in timed)
    for log in (built, text):
        assert "\r" not in log and not re.search(r"━ *\d+/", log)  # no bar drawn into a log
    for name, unit, log in (("tiny base: pretrain", "step", built), ("tiny base: align", "step", built),
                            ("tiny judge: train classifier", "step", built), ("defence: repnoise", "step", text),
                            ("attack: sft-250", "step", text)):
        assert re.search(rf"^\[{re.escape(name)}\] started", log, re.M), name
        total = re.search(PERIODIC.format(re.escape(name), unit), log)
        assert total and int(total.group(1)) > 1, f"no line with a total and an ETA for {name}"
        assert re.search(rf"^\[{re.escape(name)}\] done: {total.group(1)} {unit}s in \d+:\d\d", log, re.M), name
    # The world build speaks while it runs: its longest stage prints a line at least every few seconds.
    elapsed = [int(m) * 60 + int(s) for m, s in re.findall(r"^\[tiny base: pretrain\] step .* elapsed (\d+):(\d\d)",
                                                           built, re.M)]
    assert len(elapsed) >= 3 and max(b - a for a, b in itertools.pairwise([0, *elapsed])) < 40, elapsed
    for stage in ("pre_attack: generate (hf)", "post_attack: generate (hf)", "post_attack.judge.hf-classifier",
                  "attack: sft-250: curve", "trainability: defended: fine-tune on tiny-viggo"):
        assert re.search(rf"^\[{re.escape(stage)}\] done: \d+ ", text, re.M), stage
    assert not re.search(r"^\[(defence|attack): [a-z0-9-]+\] step \d+/\?", text, re.M)  # the plugin told its total
    # Lines arrive while the stages run: no long silence (before, the world build printed nothing for minutes).
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(timed)]
    assert max(gaps) < 40, max(gaps)
