"""Progress without a terminal (CI logs, a pipe): plain lines, at most one per bar every HARNESS_PROGRESS_EVERY
seconds plus one at start and end, each with the count, the total and an ETA; a bar whose total a training loop
announces shows it; in a terminal, the rich bar shows the total too."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console

from harness import progress
from harness.errors import HarnessError
from harness.progress import Lines, bar, clock, relay, report_every


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def lines_bar(total, every=10.0, unit="step"):
    out: list[str] = []
    now = Clock()
    return Lines("defence: repnoise", total, unit=unit, every=every, write=out.append, now=now), out, now


def test_plain_lines_are_rate_limited_with_a_line_at_start_and_end():
    b, out, now = lines_bar(400)
    assert out == ["[defence: repnoise] started: 400 steps"]
    for _ in range(100):  # 100 steps over 25 s: a line at 10 s and at 20 s, none in between
        now.t += 0.25
        b.advance(1, "loss 2.000")
    assert len(out) == 3
    assert out[1].startswith("[defence: repnoise] step 40/400 (10%) elapsed 0:10 eta ")
    assert out[2].startswith("[defence: repnoise] step 80/400 (20%) elapsed 0:20 eta ")
    now.t = 100.0
    b.advance(300, "loss 1.204")
    b.close()
    assert out[-1] == "[defence: repnoise] done: 400 steps in 1:40  loss 1.204"


def test_eta_is_measured_from_when_the_work_began():
    """A plugin's process spends its first seconds importing and loading: the ETA counts from the loop's start."""
    b, out, now = lines_bar(None)
    now.t = 30.0  # start-up: no step yet
    b.advance(0, expect=400)
    now.t = 71.0
    b.advance(120, "loss 2.310")
    assert out[-1] == "[defence: repnoise] step 120/400 (30%) elapsed 1:11 eta 1:36  loss 2.310"


def test_a_bar_without_a_total_says_so_until_a_loop_announces_one():
    b, out, now = lines_bar(None)
    assert out == ["[defence: repnoise] started"]
    now.t = 11.0
    b.advance(3)
    assert out[-1] == "[defence: repnoise] step 3/? elapsed 0:11"
    b.advance(0, expect=10)  # the loop announces its steps: the bar's total
    assert b.total == 13
    b.advance(10)
    b.advance(0, expect=5)  # a second loop in the same stage: the total grows
    assert b.total == 18


def test_an_announced_total_does_not_double_a_given_one():
    b, _, _ = lines_bar(400)
    b.advance(0, expect=400)  # the stage's own bar already counts the loop's steps
    assert b.total == 400


def test_an_opening_note_lasts_until_the_first_advance():
    out: list[str] = []
    now = Clock()
    b = Lines("defence: none", None, every=0, write=out.append, now=now, info="starting its process")
    b.close()  # nothing happened (a defence that changed nothing): the note does not outlive the stage
    assert out[-1] == "[defence: none] done: 0 steps in 0:00"
    b = Lines("defence: repnoise", None, every=0, write=out.append, now=now, info="starting its process")
    now.t = 5.0
    b.advance(0, expect=35)
    b.advance(1)
    assert out[-1] == "[defence: repnoise] step 1/35 (2%) elapsed 0:05"


def test_a_failed_stage_says_where_it_stopped():
    b, out, now = lines_bar(400)
    now.t = 41.0
    b.advance(120)
    b.close(failed=True)
    assert out[-1] == "[defence: repnoise] stopped at step 120/400 after 0:41"


def test_clock_reads_as_a_person_reads_a_duration():
    assert [clock(s) for s in (0, 41, 95.4, 725, 3723)] == ["0:00", "0:41", "1:35", "12:05", "1:02:03"]


@pytest.mark.parametrize("raw, value", [("", 15.0), ("0", 0.0), ("2.5", 2.5)])
def test_report_every_reads_the_environment(monkeypatch, raw, value):
    monkeypatch.setenv("HARNESS_PROGRESS_EVERY", raw)
    assert report_every() == value


@pytest.mark.parametrize("raw", ["abc", "-1", "inf", "nan"])
def test_a_bad_report_interval_is_an_error_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("HARNESS_PROGRESS_EVERY", raw)
    with pytest.raises(HarnessError, match=r"HARNESS_PROGRESS_EVERY=.* is not a number of seconds"):
        report_every()


def test_bar_prints_plain_lines_on_stderr_when_not_a_terminal(monkeypatch, capfd):
    monkeypatch.setenv("HARNESS_PROGRESS_EVERY", "0")
    with bar("post_attack: generate (hf)", 3, unit="prompt") as advance:
        advance(2)
        advance(1)
    out, err = capfd.readouterr()
    lines = err.splitlines()
    assert out == "" and lines[0] == "[post_attack: generate (hf)] started: 3 prompts"
    assert lines[1].startswith("[post_attack: generate (hf)] prompt 2/3 (66%) elapsed 0:00")
    assert lines[-1].startswith("[post_attack: generate (hf)] done: 3 prompts in 0:00")


def test_a_stage_over_within_the_grace_prints_its_end_line_only(monkeypatch, capfd):
    monkeypatch.setenv("HARNESS_PROGRESS_EVERY", "10")
    monkeypatch.setattr(progress, "GRACE", 0.3)
    with bar("base.judge.hf-classifier", 56, unit="pair") as advance:
        advance(56)
    with bar("defence: repnoise", None) as advance:
        time.sleep(1.0)  # loading: the start line comes from the timer, before any step
        advance(0, expect=35)
        advance(35)
    lines = capfd.readouterr().err.splitlines()
    assert lines[0].startswith("[base.judge.hf-classifier] done: 56 pairs in 0:00")
    assert lines[1:] == ["[defence: repnoise] started", "[defence: repnoise] done: 35 steps in 0:01"]


def test_bar_in_a_terminal_shows_the_announced_total(monkeypatch):
    """The defence bar used to read `0/?` for the whole stage: its total comes from the plugin's loop."""
    screen = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=screen, force_terminal=True, width=120))
    with bar("defence: repnoise", None, info="starting its process") as advance:
        advance(0, expect=35)
        advance(35, "loss 1.204")
    final = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue()).rsplit("\r", 1)[-1]
    assert "35/35" in final and "?" not in final and "loss 1.204" in final and "starting" not in final


def test_relay_passes_a_workers_total_to_the_bar():
    calls = []
    relay(lambda n, info, **kw: calls.append((n, info, kw)), {"event": "progress", "n": 0, "info": "",
                                                             "expect": 35})
    relay(lambda n, info, **kw: calls.append((n, info, kw)), {"event": "progress", "n": 1, "info": "loss 2.0"})
    relay(lambda n, info, **kw: calls.append((n, info, kw)), {"event": "snapshot", "step": 5})
    assert calls == [(0, "", {"expect": 35}), (1, "loss 2.0", {})]
