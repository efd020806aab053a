"""`harness leaderboard` end to end on a fixture results folder: what it writes, where, and how it fails."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leaderboard.build import MARKER, build_leaderboard, markdown_for
from tests import process
from tests.leaderboard.conftest import BROKEN, INVALID_RECORD, SCRIPT_NAME, SUITE, fixture_records, write_tuning

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return process.run(["leaderboard", *args], cwd=cwd, env=env, timeout=300)


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("setup", "message"), [
    ("missing", "is not a folder"), ("empty", "no results under"), ("foreign-site", "was not built by harness")])
def test_bad_input_is_one_line_and_exit_2_before_any_write(tmp_path, results_dir, setup, message):
    out = tmp_path / "out"
    results = {"missing": tmp_path / "nonexistent", "empty": tmp_path / "empty", "foreign-site": results_dir}[setup]
    if setup == "empty":
        results.mkdir()
    if setup == "foreign-site":
        (out / "site").mkdir(parents=True)
        (out / "site" / "mine.txt").write_text("keep me")
    before = tree(tmp_path)
    proc = cli("--results-dir", str(results), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert tree(tmp_path) == before


def test_cli_builds_without_torch_and_writes_only_under_out(tmp_path, results_dir):
    out = tmp_path / "out"
    before = tree(results_dir)
    code = ("import sys\nfrom harness.cli import main\ntry:\n    main(['leaderboard', '--results-dir', sys.argv[1], "
            "'--out', sys.argv[2]])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nprint('OK')")
    proc = subprocess.run([sys.executable, "-c", code, str(results_dir), str(out)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr
    assert tree(results_dir) == before
    assert {p.name for p in tmp_path.iterdir()} == {"out", "results"}
    assert {p.name for p in out.iterdir()} == {"site", "LEADERBOARD.md"}  # no staging folder left behind
    site = {p.relative_to(out / "site").as_posix() for p in (out / "site").rglob("*") if p.is_file()}
    assert {"index.html", "assets/style.css", "assets/leaderboard.js", "defence/none.html", MARKER} <= site
    assert len([p for p in site if p.startswith("plots/")]) == 2 + 4  # curves, scatter, one per defence setting


def test_strings_from_plugins_and_records_are_escaped(tmp_path, results_dir):
    build_leaderboard(results_dir, tmp_path / "out")
    site = tmp_path / "out" / "site"
    pages = [site / "index.html", *(site / "defence").glob("*.html")]
    assert len(pages) == 4  # none, repnoise, random-init, index: the script-named defence is excluded, not shown
    for page in pages:
        assert "<script>alert" not in page.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (site / "index.html").read_text()  # named in the exclusions
    for plot in (site / "plots").glob("*.svg"):
        assert "<script" not in plot.read_text()
    markdown = (tmp_path / "out" / "LEADERBOARD.md").read_text()
    assert "<script>" not in markdown and "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown


def test_records_of_unknown_or_badly_named_defences_are_excluded_not_ranked(tmp_path, results_dir):
    """A defence that is not installed, or whose name is not a plugin name, gets no row and no page: its records
    are listed as excluded with the reason (what `harness validate` says of them)."""
    from harness.results.records import write_record
    from tests.factories import record

    ghost = record("not-installed", {}, 1e-4, 0, 0.0, 0.0, suite=SUITE, judge="tiny-content")
    write_record(results_dir / SUITE / "v1" / f"{ghost.run_id}.json", ghost)
    build_leaderboard(results_dir, tmp_path / "out")
    pages = {p.name: p.read_text() for p in (tmp_path / "out" / "site" / "defence").glob("*.html")}
    assert sorted(pages) == sorted(["none.html", "repnoise.html", f"{BROKEN}.html"])
    assert "RepNoise" in pages["repnoise.html"] and "not installed" not in pages["repnoise.html"]  # the docstring
    index = (tmp_path / "out" / "site" / "index.html").read_text()
    assert f"{ghost.run_id}.json</code>: fails validation: defence &#39;not-installed&#39; is not an installed" in index
    scripts = [r.run_id for r in fixture_records() if r.spec.defence.name == SCRIPT_NAME]
    assert all(f"{i}.json</code>: fails validation: defence name &#39;&lt;script&gt;" in index for i in scripts)
    assert f"excluded ({len(scripts) + 2})" in index  # and the torn record


def test_excluded_record_is_listed_with_its_reason(tmp_path, results_dir):
    build_leaderboard(results_dir, tmp_path / "out")
    for text in ((tmp_path / "out" / "site" / "index.html").read_text(),
                 (tmp_path / "out" / "LEADERBOARD.md").read_text()):
        assert INVALID_RECORD in text and "not valid JSON" in text


def test_rebuild_is_byte_identical_and_replaces_the_old_site(tmp_path, results_dir):
    out = tmp_path / "out"
    build_leaderboard(results_dir, out)
    first = tree(out)
    (out / "site" / "stale.html").write_text("from an older build")
    build_leaderboard(results_dir, out)
    assert tree(out) == first


def test_record_links_stay_inside_the_site_and_are_copies_of_the_records(tmp_path, results_dir):
    """Links work when site/ is hosted alone: every record a page links is a copy inside the site."""
    import re

    build_leaderboard(results_dir, tmp_path / "out")
    site = (tmp_path / "out" / "site").resolve()
    targets = set()
    for page in site.rglob("*.html"):
        inside = r'href="\.\./(records|runs|samples|defence|downloads|plots|index)'
        assert "../../" not in re.sub(inside, "", page.read_text())
        for link in re.findall(r'href="([^"#]+\.json)"', page.read_text()):
            targets.add((page.parent / link).resolve())
    assert targets and all(site in t.parents for t in targets)
    valid = [r for r in fixture_records() if r.spec.defence.name != SCRIPT_NAME]
    records = {t for t in targets if "downloads" not in t.parts}
    assert sorted(t.stem for t in records) == sorted(r.run_id for r in valid)  # every run, generalization too
    for target in records:
        assert target.read_bytes() == (results_dir / SUITE / "v1" / target.name).read_bytes()


def test_a_cell_drills_down_to_its_runs(tmp_path, results_dir):
    """The index's cell (defence x budget) links to a runs page section listing exactly that cell's records."""
    import re

    build_leaderboard(results_dir, tmp_path / "out")
    site = tmp_path / "out" / "site"
    index = (site / "index.html").read_text()
    body = next(b for b in index.split("<tbody")[1:] if 'data-defence="repnoise"' in b and "beta=1.0" in b)
    href = re.search(r'<td data-col="b2"[^>]*><a class="num" href="([^"]+)"', body).group(1)  # the 1e-3 column
    page, anchor = href.split("#")
    section = (site / page).read_text().split(f'id="{anchor}"')[1].split("</section>")[0]
    want = sorted(r.run_id for r in fixture_records() if r.spec.defence.name == "repnoise"
                  and r.spec.defence.params == {"beta": 1.0} and r.spec.attack.params["lr"] == 1e-3
                  and r.spec.subsets.defence == "all")
    assert sorted(re.findall(r"<code>([0-9a-f]{16})</code>", section)) == want and len(want) == 3
    assert "1e-3@250" in section and "sft-1k" in section


def test_a_run_drills_down_to_its_sample_of_prompts_answers_and_scores(tmp_path, results_dir):
    """A run whose record holds a sample links to a page of its prompts, answers (escaped) and judge scores, inside
    the site; a run without one has no such link."""
    import re

    from tests.leaderboard.conftest import SAMPLE_OUTPUT

    build_leaderboard(results_dir, tmp_path / "out")
    site = tmp_path / "out" / "site"
    with_sample = next(r.run_id for r in fixture_records() if r.samples)
    pages = [p for p in (site / "runs").glob("*.html") if with_sample in p.read_text()]
    assert pages
    text = pages[0].read_text()
    links = re.findall(r'<a class="sample" href="([^"]+)"', text)
    assert links == [f"../samples/{SUITE}-v1-{with_sample}.html"]  # only the run that holds a sample
    page = (pages[0].parent / links[0]).resolve()
    assert page.is_relative_to(site.resolve())
    html = page.read_text()
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html and "<script>alert(2)" not in html
    assert html.count("How do I do post_attack thing") == 3 and "0.50" in html
    assert "Defended, after the attack" in html and f"../records/{SUITE}/v1/{with_sample}.json" in html
    assert html.count(SAMPLE_OUTPUT.split("<")[0]) == 9


def test_downloads_of_every_table_parse_and_match_the_summary(tmp_path, results_dir):
    import csv
    import io

    from leaderboard.board import build_boards
    from leaderboard.load import load_folder

    write_tuning(results_dir / SUITE / "v1")
    build_leaderboard(results_dir, tmp_path / "out")
    downloads = tmp_path / "out" / "site" / "downloads"
    names = {p.name for p in downloads.iterdir()}
    tuning = {n for n in names if n.endswith(("-tuning.csv", "-tuning.json"))}
    assert names - tuning == {f"{SUITE}-v1{s}" for s in (".csv", ".json", "-runs.csv", "-runs.json")}
    assert len(tuning) == 2  # repnoise's log, once (not once per setting)
    board = build_boards(load_folder(results_dir / SUITE / "v1"))[0]
    rows = list(csv.DictReader(io.StringIO((downloads / f"{SUITE}-v1.csv").read_text())))
    data = json.loads((downloads / f"{SUITE}-v1.json").read_text())
    assert [r["defence"] for r in rows] == [r["defence"] for r in data["rows"]] == [r.key.name for r in board.rows]
    for row, line, item in zip(board.rows, rows, data["rows"], strict=True):
        worst = row.cells["worst"]
        assert (float(line["worst case"]) if line["worst case"] else None) == (worst.mean if worst else None)
        assert item["cells"]["worst case"] == (None if worst is None else {
            "mean": worst.mean, "half_width": worst.half_width, "ci_low": worst.interval[0],
            "ci_high": worst.interval[1], "n": worst.n, "note": row.notes["worst"]})
        assert item["rank"] == (row.rank.place if row.rank else None) and item["verdict"] == row.verdict
    runs = list(csv.DictReader(io.StringIO((downloads / f"{SUITE}-v1-runs.csv").read_text())))
    main = [r for r in fixture_records() if r.spec.defence.name != SCRIPT_NAME and r.spec.subsets.defence == "all"]
    assert sorted(r["run_id"] for r in runs) == sorted(r.run_id for r in main)
    assert all((tmp_path / "out" / "site" / r["record"]).is_file() for r in runs)
    trials = json.loads(next(downloads.glob("*-tuning.json")).read_text())["trials"]
    assert [(t["role"], t["beta"], t["chosen"]) for t in trials] == [
        ("search", 0.001, True), ("search", 1.0, False), ("confirmation", 0.001, True)]


def test_committed_leaderboard_md_is_current():
    """LEADERBOARD.md is derived from results/: after the tables change, run `make leaderboard`."""
    committed = (REPO / "leaderboard" / "LEADERBOARD.md").read_text()
    cwd = os.getcwd()
    os.chdir(REPO)  # paths in the file are relative to the repository root
    try:
        fresh = markdown_for(Path("results"))
    finally:
        os.chdir(cwd)
    assert committed == fresh, "leaderboard/LEADERBOARD.md is stale: run `make leaderboard`"



def test_an_invalid_tuning_log_is_one_escaped_line(tmp_path, results_dir):
    (results_dir / SUITE / "v1" / "tuning").mkdir()
    (results_dir / SUITE / "v1" / "tuning" / "none.json").write_text("lr sweep: <b>1e-3</b> kept")
    build_leaderboard(results_dir, tmp_path / "out")
    pages = tmp_path / "out" / "site" / "defence"
    assert "The tuning log could not be read: unreadable tuning log" in (pages / "none.html").read_text()
    assert "<b>1e-3</b>" not in (pages / "none.html").read_text()
    assert "No tuning log recorded" in (pages / "repnoise.html").read_text()


def test_a_tuning_log_is_a_table_and_a_pareto_plot_not_raw_json(tmp_path, results_dir):
    import re

    trials = write_tuning(results_dir / SUITE / "v1")
    build_leaderboard(results_dir, tmp_path / "out")
    site = tmp_path / "out" / "site"
    page = (site / "defence" / "repnoise.html").read_text()
    assert '"trials_budget"' not in page and "<pre class=\"tuning\">" not in page
    table = page.split('class="detail tuning"')[-1].split("</table>")[0]  # all trials
    assert len(re.findall(r"<tr", table)) == 1 + 3  # header and three trials
    assert "chosen; Pareto front;" in table and "missed: harmless QA 0.50" in table and "confirmation" in table
    assert "Chosen: <b>beta=0.001</b>" in page
    plot = re.search(r'<img src="\.\./(plots/[^"]+-tuning\.svg)"', page).group(1)
    svg = (site / plot).read_text()
    assert "Pareto front" in svg and "revealed fact slots" in svg and "harmless-QA Δ" in svg
    for r in trials:  # the trial records, copied into the site and linked from the table
        assert (site / "records" / SUITE / "v1" / "tuning" / f"{r.run_id}.json").is_file()
        assert f"../records/{SUITE}/v1/tuning/{r.run_id}.json" in page


def test_a_protocol_3_tuning_log_shows_the_mean_choice_the_reference_and_which_end(tmp_path, results_dir):
    import re

    write_tuning(results_dir / SUITE / "v1", protocol3=True)
    build_leaderboard(results_dir, tmp_path / "out")
    site = tmp_path / "out" / "site"
    page = (site / "defence" / "repnoise.html").read_text()
    assert "Chosen: <b>beta=0.001 (smallest)</b>" in page
    assert "lowest mean access over defence seeds 0, 1 among the 3 best stable settings" in page
    assert "Reference none on the same validation data and attack: access 0.800 (mean of 2 seed(s))" in page
    assert "knowledge access after attack ↓" in page
    table = page.split('class="detail tuning"')[-1].split("</table>")[0]  # all trials
    assert len(re.findall(r"<tr", table)) == 1 + 5 and table.count("reference") == 2
    svg = (site / re.search(r'<img src="\.\./(plots/[^"]+-tuning\.svg)"', page).group(1)).read_text()
    assert "reference defence" in svg and "validation knowledge access after attack" in svg


def test_a_scan_log_is_summarised_on_the_defence_page(tmp_path, results_dir):
    tuning = results_dir / SUITE / "v1" / "tuning"
    tuning.mkdir()
    trial = {"run_id": "x", "hs_post": 0.1, "auc": 0.1, "missed": []}
    scan = {"suite": "t", "protocol_version": 1, "suite_params": {}, "validation": {}, "defence": "repnoise",
            "defence_version": "1", "space": {"lr": [0.001, 0.003], "epochs": [1, 2]}, "attack": "sft-250",
            "attack_params": {}, "scans": [{"epochs": 1}], "space_size": 8, "stable": [{"lr": 0.001, "epochs": 1}],
            "trials": [{**trial, "params": {"lr": lr, "epochs": 1}, "stable": lr == 0.001} for lr in (0.001, 0.003)]}
    (tuning / "repnoise.scan.json").write_text(json.dumps(scan))
    build_leaderboard(results_dir, tmp_path / "out")
    pages = tmp_path / "out" / "site" / "defence"
    page = (pages / "repnoise.html").read_text()
    assert "1 of 2 scanned settings (of 8 in the space; scanned: {&#34;epochs&#34;: 1}) pass" in page
    assert "{&#34;epochs&#34;: 1, &#34;lr&#34;: 0.001}" in page
    assert "Scan (evidence" not in (pages / "none.html").read_text()


def test_the_defence_page_names_the_plugin_distribution_and_dirty_trees(tmp_path, results_dir):
    """Provenance comes from the records: a run made from a dirty tree, by a plugin from another distribution."""
    from harness.results.records import read_record, write_record

    path = next(p for p in sorted((results_dir / SUITE / "v1").glob("*.json"))
                if p.name != INVALID_RECORD and '"name": "none"' in p.read_text())
    r = read_record(path)
    provenance = r.provenance.model_copy(update={"git_dirty": True, "git_commit": "abc123",
                                                 "plugin_distributions": {"defence:none": "my-dist==0.2"}})
    write_record(path, r.model_copy(update={"provenance": provenance}))
    build_leaderboard(results_dir, tmp_path / "out")
    page = (tmp_path / "out" / "site" / "defence" / "none.html").read_text()
    provenance = page.split('<dl class="provenance">')[1].split("</dl>")[0]
    assert "none v1 from my-dist==0.2 (1 runs)" in provenance and "none v1 from distribution not recorded (5 runs)" \
        in provenance
    assert "abc123 dirty: uncommitted changes (1 runs)" in provenance and "x clean (5 runs)" in provenance


def test_the_defence_page_shows_the_fidelity_card(tmp_path, results_dir):
    """The card beside the defence's module, one table row per aspect: aspect | paper | reference code | ours | how,
    a switch shown as the --set options that restore the reference."""
    import html
    import re

    from harness.cards import read_card
    from leaderboard.plugin_docs import module_source

    build_leaderboard(results_dir, tmp_path / "out")
    page = (tmp_path / "out" / "site" / "defence" / "repnoise.html").read_text()
    card = read_card(module_source("defences.repnoise").with_name("repnoise.card.yaml"))
    table = page.split('<table class="detail fidelity">')[1].split("</table>")[0]
    assert re.findall(r"<th>([^<]*)</th>", table) == ["aspect", "paper", "reference code", "ours", "how"]
    body = re.findall(r"<tr class=\"(same|switch|reason)\">(.*?)</tr>", table)
    assert len(body) == len(card.settings) >= 9
    for (kind, cells), row in zip(body, card.settings, strict=True):
        texts = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td>(.*?)</td>", cells)]
        assert texts == [row.aspect, row.paper, row.code, row.ours, row.how]
        assert kind == ("same" if row.same else "switch" if row.switch else "reason")
    assert "<code>--set defence.lr=2e-05</code>" in table
    assert f"Fidelity card: {card.title}" in page
