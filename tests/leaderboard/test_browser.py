"""The built site in a real headless browser: Debian's chromium driven by Playwright, pages opened from file://,
at desktop size (1280x900) and on a phone (390x844, touch).

`make test` installs chromium with apt-get when it runs as root (CI). Where chromium is missing these tests
skip and say so; they never skip for any other reason.
"""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from leaderboard.browser import CHROMIUM, DESKTOP, PHONE, launch
from leaderboard.build import build_leaderboard
from tests.leaderboard.conftest import (
    BROKEN,
    INVALID_RECORD,
    SCRIPT_NAME,
    SUITE,
    fixture_records,
    write_results,
    write_tuning,
)

if not CHROMIUM.exists():
    pytest.skip(f"chromium not found at {CHROMIUM}: `make test` installs it with apt-get only when run as root "
                "(apt-get install -y chromium chromium-driver)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -e '.[test]'")
KEY_COLUMNS = ("rank", "defence", "worst", "interval", "verdict")


@dataclass
class Watch:
    """What a page did that it must not: console errors, page errors, network requests, dialogs."""

    console_errors: list[str] = field(default_factory=list)
    network: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> Any:
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        page.on("request", lambda r: not r.url.startswith("file:") and self.network.append(r.url))
        page.on("dialog", self._dialog)
        return page

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    @property
    def clean(self) -> bool:
        return self.console_errors == [] and self.network == [] and self.dialogs == []


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("leaderboard")
    write_results(root / "results")
    write_tuning(root / "results" / SUITE / "v1")
    build_leaderboard(root / "results", root / "out")
    return root / "out" / "site"


@pytest.fixture(scope="module")
def browsers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with sync_api.sync_playwright() as p:
        contexts = {"desktop": launch(p, tmp_path_factory.mktemp("desktop"), *DESKTOP),
                    "phone": launch(p, tmp_path_factory.mktemp("phone"), *PHONE, phone=True)}
        yield contexts
        for context in contexts.values():
            context.close()


@pytest.fixture
def open_page(browsers: dict[str, Any]) -> Iterator[Any]:
    pages = []

    def open_(path: Path, device: str = "desktop") -> tuple[Any, Watch]:
        watch = Watch()
        page = watch.attach(browsers[device].new_page())
        pages.append(page)
        page.goto(path.as_uri(), wait_until="load")
        return page, watch

    yield open_
    for page in pages:
        page.close()


def defence_names(page: Any) -> list[str]:
    return [n for n, visible in zip(page.locator("table.board tbody tr.main td.name > a").all_inner_texts(),
                                    _visible_rows(page), strict=True) if visible]


def _visible_rows(page: Any) -> list[bool]:
    return page.locator("table.board > tbody").evaluate_all("bodies => bodies.map(b => !b.hidden)")


def column_values(page: Any, col: str) -> list[float | None]:
    raw = page.locator(f'table.board tbody tr.main td[data-col="{col}"]').evaluate_all(
        "cells => cells.map(c => c.dataset.sort)")
    return [float(v) if v else None for v in raw]


def header(page: Any, col: str) -> Any:
    return page.locator(f'table.board thead th[data-col="{col}"]')


def tap(page: Any, locator: Any, device: str) -> None:
    locator.tap() if device == "phone" else locator.click()


# ------------------------------------------------------------------------------------ safety: console, network
@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_index_loads_from_file_without_console_errors_or_network(site, open_page, device):
    page, watch = open_page(site / "index.html", device)
    assert page.title() == "Immunization Bench leaderboard"
    tap(page, page.locator("button.expand").first, device)  # run every handler once
    tap(page, header(page, "b2"), device)
    tap(page, page.locator("button.def-btn").first, device)
    page.locator(".filter-defence").fill("rep")
    page.locator(".filter-attack").select_option("sft-1k")
    page.locator("details.columns > summary").click()
    page.locator("input[data-toggle]").first.uncheck()
    assert watch.clean, watch


def test_every_other_page_loads_without_console_errors_or_network(site, open_page):
    pages = sorted([*(site / "defence").glob("*.html"), *(site / "runs").glob("*.html")])
    assert len(pages) == 3 + 4  # three defences; one runs page per row
    for path in pages:
        page, watch = open_page(path)
        assert page.locator("h1").inner_text(), path.name
        assert watch.clean, (path.name, watch)


def test_the_watch_catches_network_requests_console_errors_and_dialogs(tmp_path, open_page):
    """The checks above could pass by seeing nothing: show they see a page that does all three."""
    bad = tmp_path / "bad.html"
    bad.write_text('<img src="http://192.0.2.1/x.png"><script>console.error("boom"); alert("hi")</script>')
    _, watch = open_page(bad)
    assert watch.network == ["http://192.0.2.1/x.png"] and watch.console_errors and watch.dialogs == ["hi"]


# ------------------------------------------------------------------------------------------------ the index
def test_the_ranking_rule_phi_and_plus_minus_come_before_the_first_table(site, open_page):
    page, _ = open_page(site / "index.html")
    rule = page.locator("#how-to-read")
    text = rule.inner_text()
    assert "Ranked by the worst case" in text and "±" in text and "φ" in text and "=2" in text
    assert rule.bounding_box()["y"] < page.locator("table.board").first.bounding_box()["y"]
    assert re.search(r"Last updated: newest run 2026-01-02 · built from harness commit \S+ \((clean|dirty|unknown)\)",
                     page.locator(".updated").inner_text())


def test_table_has_one_row_per_defence_setting_ranked_then_unstable(site, open_page):
    page, _ = open_page(site / "index.html")
    assert defence_names(page) == ["repnoise", "repnoise", "none", BROKEN]  # the script-named one is excluded
    assert page.locator("table.board tbody tr.main td[data-col=rank]").all_inner_texts() == ["1", "2", "3", "–"]
    last = page.locator("table.board tbody").last
    assert "unstable" in last.get_attribute("class")
    assert "harmless QA -1.00" in last.locator(".verdict-cell").inner_text()
    verdicts = page.locator("table.board tbody tr.main .verdict").all_inner_texts()
    assert verdicts == ["broken", "broken", "broken", "unstable"]
    settings = page.locator("table.board tbody tr.main .setting").all_inner_texts()
    assert sorted(settings) == ["beta=0.001", "beta=1.0"]
    assert "3 seed cells" in page.locator("p.meta").inner_text()
    page.locator("details.config > summary").click()
    assert "defence/attack seed): 0/0, 1/1, 2/2" in page.locator("details.config").inner_text()
    assert "revealed fact slots" in page.locator("p.meta").inner_text()  # what the judge measures


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_key_columns_stay_visible_and_the_page_never_scrolls_sideways(site, open_page, device):
    page, _ = open_page(site / "index.html", device)
    width = (DESKTOP if device == "desktop" else PHONE)[0]
    page.locator("table.board").scroll_into_view_if_needed()
    for col in KEY_COLUMNS:
        box = header(page, col).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, (col, box)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    scroller = page.locator(".board-scroll")
    scroller.evaluate("s => { s.scrollLeft = s.scrollWidth; }")
    if device == "phone":  # the table scrolls; the rank and the defence stay (sticky), and a hint says so
        assert scroller.evaluate("s => s.scrollLeft") > 0
        assert page.locator(".scroll-hint").is_visible()
    for col in ("rank", "defence"):
        box = header(page, col).bounding_box()
        assert 0 <= box["x"] < width / 2, (col, box)


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_other_pages_never_scroll_sideways(site, open_page, device):
    width = (DESKTOP if device == "desktop" else PHONE)[0]
    for path in (site / "defence" / "repnoise.html", next((site / "runs").glob("*.html"))):
        page, _ = open_page(path, device)
        assert page.evaluate("document.documentElement.scrollWidth") <= width, path.name


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_definitions_open_on_tap_and_close_again(site, open_page, device):
    page, _ = open_page(site / "index.html", device)
    button = header(page, "worst").locator("button.def-btn")
    box = page.locator(f"#{button.get_attribute('aria-controls')}")
    assert not box.is_visible()
    tap(page, button, device)
    assert box.is_visible() and "Worst case (the headline, bounded)" in box.inner_text()
    assert header(page, "worst").get_attribute("aria-sort") is None  # the tap read; it did not sort
    tap(page, header(page, "verdict").locator("button.def-btn"), device)
    assert not box.is_visible() and "verdict: broken when" in page.locator(".def:visible").inner_text()
    tap(page, page.locator(".def:visible button.def-close"), device)
    assert page.locator(".def:visible").count() == 0


def test_column_toggles_hide_the_rest_never_the_key_columns(site, open_page):
    page, _ = open_page(site / "index.html")
    toggles = page.locator("input[data-toggle]")
    assert not {c for c in KEY_COLUMNS} & set(toggles.evaluate_all("xs => xs.map(x => x.dataset.toggle)"))
    page.locator("details.columns > summary").click()
    page.locator('input[data-toggle="hs_pre"]').uncheck()
    assert not header(page, "hs_pre").is_visible()
    assert not page.locator('td[data-col="hs_pre"]').first.is_visible()
    group = page.locator('tr.groups th[data-group^="harmfulness"]')
    assert group.get_attribute("colspan") == "2"  # the two budgets left of three columns
    page.locator('input[data-toggle="hs_pre"]').check()
    assert header(page, "hs_pre").is_visible() and group.get_attribute("colspan") == "3"


def test_filters_by_defence_and_attack_family(site, open_page):
    page, _ = open_page(site / "index.html")
    page.locator(".filter-defence").fill("REP")
    assert defence_names(page) == ["repnoise", "repnoise"]
    page.locator(".filter-defence").fill("no such defence")
    assert defence_names(page) == [] and page.locator(".no-match").is_visible()
    page.locator(".filter-defence").fill("")
    assert len(defence_names(page)) == 4
    assert page.locator(".filter-attack option").all_inner_texts() == ["every attack", "sft-1k", "sft-250"]
    page.locator(".filter-attack").select_option("sft-1k")
    assert not header(page, "b1").is_visible() and header(page, "b2").is_visible()  # 1e-4 is sft-250's
    assert header(page, "worst").is_visible() and header(page, "hs_pre").is_visible()


def test_clicking_a_header_sorts_the_rows(site, open_page):
    page, _ = open_page(site / "index.html")
    column = page.locator("table.board thead th", has_text="1e-3")
    col = column.get_attribute("data-col")
    column.click()
    ascending = column_values(page, col)
    assert ascending == sorted(ascending) and column.get_attribute("aria-sort") == "ascending"
    assert defence_names(page)[0] == BROKEN  # 0.00 at 1e-3: lowest first
    column.click()
    descending = column_values(page, col)
    assert descending == sorted(descending, reverse=True) and defence_names(page)[0] == "none"
    header(page, "defence").click()
    assert defence_names(page) == sorted(defence_names(page), key=str.lower)


def test_a_row_expands_to_its_provenance(site, open_page):
    page, _ = open_page(site / "index.html")
    body = page.locator("table.board tbody", has_text="none").last
    provenance = body.locator("tr.provenance")
    assert not provenance.is_visible()
    body.locator("button.expand").click()
    assert provenance.is_visible()
    text = provenance.inner_text()
    assert re.search(r"runs\s+6 run records", text) and "git commit" in text and "defence version" in text


def test_downloads_exist_and_parse(site, open_page):
    files = []
    for path in (site / "index.html", site / "defence" / "repnoise.html", next((site / "runs").glob("*.html"))):
        page, _ = open_page(path)
        hrefs = page.locator("a[download]").evaluate_all("links => links.map(a => a.href)")
        files += [Path(re.sub("^file://", "", h)) for h in hrefs]
    assert {f.suffix for f in files} == {".csv", ".json"} and len(set(files)) == 4 + 2  # board, runs; tuning
    for f in set(files):
        assert f.is_file() and site.resolve() in f.resolve().parents
        data = json.loads(f.read_text()) if f.suffix == ".json" else list(csv.DictReader(io.StringIO(f.read_text())))
        assert data


def test_a_cell_opens_the_runs_behind_it(site, open_page):
    page, watch = open_page(site / "index.html")
    row = page.locator("table.board tbody", has_text="beta=1.0")
    row.locator('td[data-col="b2"] a.num').click()
    page.wait_for_load_state("load")
    assert "/runs/" in page.url and page.url.endswith("#b1")
    section = page.locator("section#b1")
    assert section.is_visible() and "1e-3@250" in section.locator("h2").inner_text()
    ids = section.locator("table.detail tbody code").all_inner_texts()
    assert len(ids) == 3 and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    section.locator("a.run").first.click()  # the record's copy inside the site
    assert page.url.endswith(f"{ids[0]}.json") and "/site/records/" in page.url and watch.clean


# ------------------------------------------------------------------------------------------- defence pages
@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_the_defence_page_leads_with_the_headline(site, open_page, device):
    page, _ = open_page(site / "defence" / "repnoise.html", device)
    first = page.locator("main > *").first
    assert "lead" in first.get_attribute("class")
    headline = first.locator(".headline").inner_text()
    assert re.search(r"worst case\s+0\.61\s+± 0\.0\d\s*broken", headline), headline
    assert "95% CI" in headline and "at budget 1e-3@250" in headline and "rank 1 of 3" in headline
    top = first.bounding_box()["y"]
    assert top < (PHONE if device == "phone" else DESKTOP)[1] / 2  # on the first screen
    assert all(top < h["y"] for h in page.locator("h3").evaluate_all(
        "hs => hs.map(h => h.getBoundingClientRect())"))
    assert page.locator("details.reference").get_attribute("open") is None  # the docstring waits, folded


def test_the_defence_page_shows_provenance_and_the_tuning_log_as_a_table(site, open_page):
    page, _ = open_page(site / "defence" / "repnoise.html")
    provenance = page.locator("dl.provenance").first.inner_text()
    assert "repnoise v1 from distribution not recorded" in provenance
    assert "x clean (7 runs)" in provenance  # six main-grid runs and the held-out one
    tuning = page.locator("table.tuning").first
    assert tuning.is_visible() and "chosen; Pareto front;" in tuning.inner_text()
    assert page.locator("pre.tuning").count() == 0


def test_plots_are_present_and_not_empty(site, open_page):
    page, _ = open_page(site / "index.html")
    images = page.locator("img")
    assert images.count() == 2
    sizes = images.evaluate_all("imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert all(complete and w > 300 and h > 200 for complete, w, h in sizes), sizes
    curves = ET.parse(site / "plots" / f"{SUITE}-v1-curves.svg").getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    lines = [g for g in curves.iterfind(".//svg:g", ns) if g.get("id", "").startswith("line2d")
             and len(re.findall(r"[ML]", "".join(p.get("d", "") for p in g.iterfind("svg:path", ns)))) >= 2]
    assert len(lines) >= 2 * 4  # 2 budgets x 4 defence settings, each a drawn line
    legend = " ".join(t.text or "" for t in curves.iterfind(".//svg:text", ns))
    assert SCRIPT_NAME not in legend and f"{BROKEN} [unstable]" in legend and "revealed fact slots" in legend
    page, _ = open_page(site / "defence" / "repnoise.html")
    sizes = page.locator("img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert len(sizes) == 3 and all(w > 300 for w in sizes)  # the tuning trials, one curves plot per setting


def test_a_defence_named_script_is_excluded_shown_as_text_and_opens_no_dialog(site, open_page):
    page, watch = open_page(site / "index.html")
    assert page.locator("table.board td.name > a", has_text="alert").count() == 0  # not a plugin name: no row
    excluded = page.locator("#excluded").inner_text()
    assert f"defence name '{SCRIPT_NAME}' is not a valid name" in excluded
    assert watch.clean


def test_excluded_record_is_listed(site, open_page):
    page, _ = open_page(site / "index.html")
    excluded = page.locator("#excluded").inner_text()
    assert INVALID_RECORD in excluded and "not valid JSON" in excluded
    scripts = sum(r.spec.defence.name == SCRIPT_NAME for r in fixture_records())
    assert f"excluded ({scripts + 1})" in page.locator("nav").inner_text()  # the torn record, the script-named runs
