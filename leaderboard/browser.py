"""Debian's chromium driven by Playwright: the browser of the leaderboard's tests and of its screenshot.

Playwright's own browser download needs its CDN, so the system chromium is used (`apt-get install
chromium`; `make test` installs it when run as root). The flags keep it from touching the network on its
own (component updates, sync, background fetches), so any request a test sees came from the page.

    python -m leaderboard.browser leaderboard/site/index.html leaderboard/screenshot.png
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def launch(playwright: Any, user_data_dir: Path, width: int = 1680, height: int = 1000) -> Any:
    """A fresh persistent context (its own profile folder) on the system chromium."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
        viewport={"width": width, "height": height})


def screenshot(page_path: Path, png: Path, height: int = 1500) -> None:
    """Screenshot the top of a built page (table, then plots) at a fixed size."""
    import tempfile

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = launch(p, Path(profile), height=height)
        page = context.new_page()
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        page.screenshot(path=str(png), full_page=False)
        context.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m leaderboard.browser PAGE.html OUT.png")
    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
