"""LEADERBOARD.md fits a GitHub page: one legend, the key columns in one narrow table per board, the rest folded
under <details>, current protocols before superseded ones, and the same text on every build."""

from __future__ import annotations

import re
from pathlib import Path

from leaderboard.build import markdown_for
from tests.leaderboard.conftest import SUITE

REPO = Path(__file__).resolve().parents[2]


def tables(text: str) -> list[list[str]]:
    out, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            if current is None:
                out.append(current := [])
            current.append(line)
        else:
            current = None
    return out


def test_the_committed_file_fits_a_github_page():
    text = (REPO / "leaderboard" / "LEADERBOARD.md").read_text()
    assert max(len(line) for line in text.splitlines()) < 160
    assert text.count("**How to read it.**") == 1 and text.count("## Column definitions") == 1
    key = [t for t in tables(text) if t[0] == "| # | defence | worst case | 95% CI | verdict | seeds |"]
    assert len(key) == 3  # tiny v3 and, superseded, tiny v2 and v1
    assert text.index("## tiny · protocol v3") < text.index("## Superseded protocols") < text.index(
        "### tiny · protocol v2") < text.index("### tiny · protocol v1")
    assert "worlds 0, 1, 2 pooled" in text  # the v3 board pools its three worlds
    v3 = " ".join(text[text.index("## tiny · protocol v3"):text.index("## Superseded protocols")].split())
    assert 'suite config `{"size":"default","split":"test"}`' in v3  # not world 0's config: the world is pooled
    assert "| =1 | vaccine v2 | 0.75 ± 0.01 (at 3e-4@1k) | 0.73–0.76 | broken at 3e-5@1k | 9 |" in text
    assert re.search(r"!\[[^]]*\]\(\.\./docs/screenshots/index-1280x900\.png\)", text)
    assert (REPO / "docs" / "screenshots" / "index-1280x900.png").is_file()


def test_key_columns_first_the_rest_folded_and_rebuilt_identically(results_dir):
    text = markdown_for(results_dir)
    assert text == markdown_for(results_dir)  # no date, no commit: the same tables give the same file
    found = tables(text)
    assert found[0][0] == "| # | defence | worst case | 95% CI | verdict | seeds |"
    assert len(found) == 1 + 3  # the key table, then three folded ones
    folded = text.split("<details>")[1].split("</details>")[0]
    assert all("\n".join(t) in folded for t in found[1:])
    assert "Last updated: newest run 2026-01-02" in " ".join(text.split())
    assert f"## {SUITE} · protocol v1" in text and "Superseded" not in text  # one protocol: nothing superseded
    assert "| – | random-init v1 ⚠ | — | — | unstable | 3 |" in text
    assert "- random-init v1 ⚠: unstable (harmless QA -1.00)" in text
