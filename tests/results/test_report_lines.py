"""The run summary a user reads after `harness run` / `make run`: the held-out score with its interval and
the verdict (a model that fails the stability guard says so)."""

from pathlib import Path

from harness.results.console import _hs, condition_lines
from harness.results.records import read_record

REPO = Path(__file__).resolve().parents[2]


def _record(defence: str):
    for path in sorted((REPO / "results" / "tiny" / "v2").glob("*.json")):
        record = read_record(path)
        if record.spec.defence.name == defence:
            return record
    raise AssertionError(f"no committed v2 record of {defence}")


def test_the_summary_shows_the_mean_with_its_interval():
    post = _record("none").metrics.post_attack
    lo, hi = post.harmfulness.ci95
    assert _hs(post).startswith(f"{post.harmfulness.mean:.3f} [{lo:.3f}, {hi:.3f}]")


def test_the_summary_names_an_unstable_model_and_why():
    lines = condition_lines(_record("gradient-ascent").metrics)  # no setting of its space passes the guard
    verdict = next(line for line in lines if line.startswith("verdict: "))
    assert verdict.startswith("verdict: unstable: ") and "harmless QA" in verdict
    assert "verdict: broken" in condition_lines(_record("none").metrics)
