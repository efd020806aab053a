"""`harness run ... 2>&1 | cat` (CI, a pipe, a file) shows progress lines during the world build and every long
stage, each with its count, total and ETA, arriving while the stage runs. A fresh store, so the world is built
(slow: ~3 min on two CPU cores)."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
PERIODIC = r"\[{}\] {} \d+/(\d+) \(\d+%\) elapsed \d+:\d\d eta \d+:\d\d"


def run_without_a_terminal(tmp_path) -> list[tuple[float, str]]:
    """(seconds since start, line) of everything the run writes, read from a pipe as it arrives."""
    env = {**os.environ, "HARNESS_HOME": str(tmp_path / "home"), "HARNESS_PROGRESS_EVERY": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--defence", "repnoise", "--attack",
                             "sft-250", "--set", "suite.size=smoke", "--results-dir", str(tmp_path / "runs")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    start, lines = time.monotonic(), []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.monotonic() - start, line.rstrip("\n")))
    assert proc.wait(timeout=1200) == 0, "\n".join(text for _, text in lines[-30:])
    return lines


def test_a_piped_run_reports_progress_through_the_world_build_and_every_stage(tmp_path):
    timed = run_without_a_terminal(tmp_path)
    text = "\n".join(line for _, line in timed)
    assert "\r" not in text and not re.search(r"━ *\d+/", text)  # no bar drawn into a log
    for name, unit in (("tiny base: pretrain", "step"), ("tiny base: align", "step"),
                       ("tiny judge: train classifier", "step"), ("defence: repnoise", "step"),
                       ("attack: sft-250", "step")):
        assert re.search(rf"^\[{re.escape(name)}\] started", text, re.M), name
        total = re.search(PERIODIC.format(re.escape(name), unit), text)
        assert total and int(total.group(1)) > 1, f"no line with a total and an ETA for {name}"
        assert re.search(rf"^\[{re.escape(name)}\] done: {total.group(1)} {unit}s in \d+:\d\d", text, re.M), name
    for stage in ("pre_attack: generate (hf)", "post_attack: generate (hf)", "post_attack.judge.hf-classifier",
                  "attack: sft-250: curve", "trainability: defended: fine-tune on tiny-viggo"):
        assert re.search(rf"^\[{re.escape(stage)}\] done: \d+ ", text, re.M), stage
    assert not re.search(r"^\[(defence|attack): [a-z0-9-]+\] step \d+/\?", text, re.M)  # the plugin told its total
    # Lines arrive while the stages run: no long silence (before, the world build printed nothing for minutes).
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(timed)]
    assert max(gaps) < 40, max(gaps)
