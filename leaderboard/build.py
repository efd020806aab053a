"""`harness leaderboard`: check the inputs, then build the site and LEADERBOARD.md in one go.

The site is rendered into a temporary folder inside the output folder and swapped in whole, so a reader
never sees half a site, and nothing is written outside the output folder. A previous site is replaced only
if it carries this builder's marker file, so pointing --out at the wrong folder cannot delete anything.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.store.layout import atomic_write_text, public_mode
from leaderboard.board import build_boards
from leaderboard.load import load_folder, result_folders

ASSETS = Path(__file__).parent / "assets"
MARKER = ".built-by-harness-leaderboard"


@dataclass(frozen=True)
class BuildSummary:
    site: Path
    markdown: Path
    boards: int
    rows: int
    excluded: int

    def __str__(self) -> str:
        return (f"{self.site / 'index.html'}  ({self.boards} table(s), {self.rows} defence setting(s), "
                f"{self.excluded} excluded)\n{self.markdown}")


def check_inputs(results_dir: Path, out: Path) -> list[Path]:
    """Every problem that would stop the build, before any work or write: one clear line each."""
    folders = check_results(results_dir)
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out} exists and is not a folder")
    site = out / "site"
    if site.exists() and not (site / MARKER).exists():
        raise HarnessError(f"{site} exists but was not built by harness leaderboard; move it or choose another --out")
    return folders


def check_results(results_dir: Path) -> list[Path]:
    if not results_dir.is_dir():
        raise HarnessError(f"--results-dir {results_dir} is not a folder")
    folders = result_folders(results_dir)
    if not folders:
        raise HarnessError(f"no results under {results_dir}: expected <suite>/v<N>/ folders with condition tables")
    return folders


def build_leaderboard(results_dir: Path, out: Path) -> BuildSummary:
    from leaderboard import plots
    from leaderboard.markdown import render_markdown
    from leaderboard.render import Site, board_anchor

    folders = [load_folder(p) for p in check_inputs(results_dir, out)]
    boards = [b for f in folders for b in build_boards(f)]
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".site-"))
    public_mode(staging, folder=True)  # mkdtemp makes it private; the site is for reading (user's umask)
    try:
        plots.configure()
        (staging / "plots").mkdir()
        plot_files = [plots.render_all(b, staging / "plots", board_anchor(b)) for b in boards]
        Site(boards, folders, build_facts(folders)).write(staging, plot_files)
        shutil.copytree(ASSETS, staging / "assets")
        (staging / MARKER).write_text("built by harness leaderboard; safe to delete\n")
        markdown = render_markdown(boards, folders, plot_files)
        _swap_in(staging, out / "site")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    atomic_write_text(out / "LEADERBOARD.md", markdown)
    return BuildSummary(out / "site", out / "LEADERBOARD.md", len(boards), sum(len(b.rows) for b in boards),
                        sum(len(f.exclusions) for f in folders))


def build_facts(folders: list[Any]) -> dict[str, str]:
    """The site's 'last updated' line: the newest record's date and the harness commit that built the site (git in
    the build environment: 'unknown' outside a git checkout), with its clean/dirty state."""
    from harness.results.provenance import git_state

    commit, dirty = git_state()
    last = max((f.last_run for f in folders), default="")
    return {"last_run": last[:10] or "unknown", "commit": commit[:12] if commit != "unknown" else commit,
            "commit_full": commit, "state": "unknown" if commit == "unknown" else "dirty" if dirty else "clean"}


def markdown_for(results_dir: Path) -> str:
    """LEADERBOARD.md's text for a results folder, without writing anything (the freshness test compares it)."""
    from leaderboard.markdown import render_markdown
    from leaderboard.plots import plot_files
    from leaderboard.render import board_anchor

    folders = [load_folder(p) for p in check_results(results_dir)]
    boards = [b for f in folders for b in build_boards(f)]
    return render_markdown(boards, folders, [plot_files(b, board_anchor(b)) for b in boards])


def _swap_in(staging: Path, site: Path) -> None:
    """Replace the previous site (checked to be ours) with the staged one; an identical site stays as it is
    (a rebuild from unchanged tables rewrites no file)."""
    old = None
    if site.is_dir() and _same_tree(staging, site):
        return
    if site.exists():
        old = Path(tempfile.mkdtemp(dir=site.parent, prefix=".site-old-"))
        site.rename(old / "site")
    staging.rename(site)
    if old is not None:
        shutil.rmtree(old)


def _same_tree(a: Path, b: Path) -> bool:
    """Do two folders hold the same relative paths with the same bytes?"""
    def files(root: Path) -> dict[str, Path]:
        return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file() or p.is_symlink()}

    left, right = files(a), files(b)
    return left.keys() == right.keys() and all(
        left[k].read_bytes() == right[k].read_bytes() for k in left)
