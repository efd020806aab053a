"""Debian's chromium driven by Playwright: the browser of the leaderboard's tests and of its screenshots.

Playwright's own browser download needs its CDN, so the system chromium is used (`apt-get install
chromium`; `make test` installs it when run as root). The flags keep it from touching the network on its
own (component updates, sync, background fetches), so any request a test sees came from the page.

    python -m leaderboard.browser leaderboard/site docs/screenshots   # the README's four screenshots
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
DESKTOP, PHONE = (1280, 900), (390, 844)
SCREENSHOTS = {"index": "index.html", "defence": "defence/repnoise.html"}  # the pages the README shows


def launch(playwright: Any, user_data_dir: Path, width: int = DESKTOP[0], height: int = DESKTOP[1],
           phone: bool = False) -> Any:
    """A fresh persistent context (its own profile folder) on the system chromium; `phone`: a touch screen that
    reports itself as mobile (taps, not hovers)."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
        viewport={"width": width, "height": height}, has_touch=phone, is_mobile=phone)


def screenshots(site: Path, out: Path) -> list[Path]:
    """The top of the index and of a defence page at desktop (1280x900) and phone (390x844) size, as small
    palette PNGs: out/<page>-<width>x<height>.png."""
    import tempfile

    from PIL import Image
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        for (width, height), phone in ((DESKTOP, False), (PHONE, True)):
            context = launch(p, Path(profile) / str(width), width, height, phone)
            page = context.new_page()
            for name, path in SCREENSHOTS.items():
                png = out / f"{name}-{width}x{height}.png"
                page.goto((site / path).resolve().as_uri(), wait_until="load")
                page.screenshot(path=str(png), full_page=False)
                Image.open(png).convert("RGB").quantize(colors=128).save(png, optimize=True)  # ~4x smaller
                written.append(png)
            context.close()
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m leaderboard.browser SITE_FOLDER OUT_FOLDER")
    for png in screenshots(Path(sys.argv[1]), Path(sys.argv[2])):
        print(f"{png}  ({png.stat().st_size // 1024} KiB)")
