"""The built site in a real headless browser: Debian's chromium driven by Playwright, pages opened from file://.

`make test` installs chromium with apt-get when it runs as root (CI). Where chromium is missing these tests
skip and say so; they never skip for any other reason.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from leaderboard.browser import CHROMIUM, launch
from leaderboard.build import build_leaderboard
from tests.leaderboard.conftest import BROKEN, INVALID_RECORD, SCRIPT_NAME, SUITE, fixture_records, write_results

if not CHROMIUM.exists():
    pytest.skip(f"chromium not found at {CHROMIUM}: `make test` installs it with apt-get only when run as root "
                "(apt-get install -y chromium chromium-driver)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -e '.[test]'")


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


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("leaderboard")
    write_results(root / "results")
    build_leaderboard(root / "results", root / "out")
    return root / "out" / "site"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        context = launch(p, tmp_path_factory.mktemp("chromium-profile"))
        yield context
        context.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    pages = []

    def open_(path: Path) -> tuple[Any, Watch]:
        watch = Watch()
        page = watch.attach(browser.new_page())
        pages.append(page)
        page.goto(path.as_uri(), wait_until="load")
        return page, watch

    yield open_
    for page in pages:
        page.close()


def defence_names(page: Any) -> list[str]:
    return page.locator("table.board tbody tr.main td.name > a").all_inner_texts()


def column_values(page: Any, col: str) -> list[float | None]:
    raw = page.locator(f'table.board tbody tr.main td[data-col="{col}"]').evaluate_all(
        "cells => cells.map(c => c.dataset.sort)")
    return [float(v) if v else None for v in raw]


def test_index_loads_from_file_without_console_errors_or_network(site, open_page):
    page, watch = open_page(site / "index.html")
    assert page.title() == "Immunization Bench leaderboard"
    page.locator("button.expand").first.click()  # run the script's handlers too
    page.locator("table.board thead th[data-col]").nth(3).click()
    assert watch.console_errors == [] and watch.network == [] and watch.dialogs == []


def test_defence_pages_load_without_console_errors_or_network(site, open_page):
    for path in sorted((site / "defence").glob("*.html")):
        page, watch = open_page(path)
        assert page.locator("h1").inner_text(), path.name
        assert watch.console_errors == [] and watch.network == [], path.name


def test_the_watch_catches_network_requests_console_errors_and_dialogs(tmp_path, open_page):
    """The checks above could pass by seeing nothing: show they see a page that does all three."""
    bad = tmp_path / "bad.html"
    bad.write_text('<img src="http://192.0.2.1/x.png"><script>console.error("boom"); alert("hi")</script>')
    _, watch = open_page(bad)
    assert watch.network == ["http://192.0.2.1/x.png"] and watch.console_errors and watch.dialogs == ["hi"]


def test_table_has_one_row_per_defence_setting_ranked_then_unstable(site, open_page):
    page, _ = open_page(site / "index.html")
    assert defence_names(page) == ["repnoise", "repnoise", "none", BROKEN]  # the script-named one is excluded
    assert page.locator("table.board tbody tr.main td[data-col=rank]").all_inner_texts() == ["1", "2", "3", "–"]
    last = page.locator("table.board tbody").last
    assert "unstable" in last.get_attribute("class") and "unstable: harmless QA -1.00" in last.inner_text()
    settings = page.locator("table.board tbody tr.main .setting").all_inner_texts()
    assert sorted(settings) == ["beta=0.001", "beta=1.0"]
    assert "3 seeds (defence/attack 0/0, 1/1, 2/2)" in page.locator("p.meta").inner_text()


def test_clicking_a_header_sorts_the_rows(site, open_page):
    page, _ = open_page(site / "index.html")
    header = page.locator("table.board thead th", has_text="1e-3@250")
    col = header.get_attribute("data-col")
    header.click()
    ascending = column_values(page, col)
    assert ascending == sorted(ascending) and header.get_attribute("aria-sort") == "ascending"
    assert defence_names(page)[0] == BROKEN  # 0.00 at 1e-3: lowest first
    header.click()
    descending = column_values(page, col)
    assert descending == sorted(descending, reverse=True) and defence_names(page)[0] == "none"
    page.locator("table.board thead th[data-col=defence]").click()
    assert defence_names(page) == sorted(defence_names(page), key=str.lower)


def test_a_row_expands_to_its_provenance(site, open_page):
    page, _ = open_page(site / "index.html")
    body = page.locator("table.board tbody", has_text="none").last
    provenance = body.locator("tr.provenance")
    assert not provenance.is_visible()
    body.locator("button.expand").click()
    assert provenance.is_visible()
    text = provenance.inner_text()
    assert re.search(r"run ids\s+[0-9a-f]{16}", text) and "git commit" in text and "defence version" in text


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
    assert SCRIPT_NAME not in legend and f"{BROKEN} [unstable]" in legend
    page, _ = open_page(site / "defence" / "repnoise.html")
    sizes = page.locator("img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert len(sizes) == 2 and all(w > 300 for w in sizes)  # one curves plot per setting


def test_a_defence_named_script_is_excluded_shown_as_text_and_opens_no_dialog(site, open_page):
    page, watch = open_page(site / "index.html")
    assert page.locator("table.board td.name > a", has_text="alert").count() == 0  # not a plugin name: no row
    excluded = page.locator("#excluded").inner_text()
    assert f"defence name '{SCRIPT_NAME}' is not a valid name" in excluded
    assert watch.dialogs == [] and watch.console_errors == []


def test_excluded_record_is_listed(site, open_page):
    page, _ = open_page(site / "index.html")
    excluded = page.locator("#excluded").inner_text()
    assert INVALID_RECORD in excluded and "not valid JSON" in excluded
    scripts = sum(r.spec.defence.name == SCRIPT_NAME for r in fixture_records())
    assert f"excluded ({scripts + 1})" in page.locator("nav").inner_text()  # the torn record, the script-named runs
