"""Shared fixtures. The smoke-size tiny suite is built once per session in a temporary store."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """The CLI processes the tests start, their sweeps' jobs and the tests' own plugin launches start plugin
    processes from zygotes this run shares (harness/processes/zygote.py): one per environment for the whole run,
    not one per CLI process, nor one per test: the variables that name the test are the children's own. (Under
    pytest-xdist the workers inherit the folder and the variables: the main process sets them.)"""
    from harness.processes.zygote import PER_CHILD, share_with_descendants
    from tests.process import PER_TEST

    os.environ[PER_CHILD] = ",".join(PER_TEST)
    share_with_descendants()


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: it must see the markers added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses the smoke world is `slow` whether or not it says so, so a new test cannot land in the fast
    tier (`make test-fast`) by forgetting the marker."""
    for item in items:
        if "smoke_base" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    heaviest_first(items)


def heaviest_first(items: list[pytest.Item]) -> None:
    """Modules with the most slow tests first, each module's tests in their own order: `make test`'s two workers
    take modules whole (`--dist loadfile`) in this order, so the long ones start early and the last minutes are not
    one worker finishing a long module while the other idles. The second module is the heaviest one that does not
    use the smoke world: the first worker builds the world (minutes) while the second works instead of waiting."""
    slow: dict[str, int] = {}
    first: dict[str, int] = {}
    needs_world: dict[str, bool] = {}
    for i, item in enumerate(items):
        module = item.nodeid.split("::")[0]
        first.setdefault(module, i)
        slow[module] = slow.get(module, 0) + (item.get_closest_marker("slow") is not None)
        needs_world[module] = needs_world.get(module, False) or "smoke_base" in getattr(item, "fixturenames", ())
    order = sorted(first, key=lambda m: (-slow[m], first[m]))
    if order and needs_world[order[0]]:
        free = next((m for m in order if slow[m] and not needs_world[m]), None)
        if free is not None:
            order.remove(free)
            order.insert(1, free)
    rank = {m: i for i, m in enumerate(order)}
    items.sort(key=lambda item: rank[item.nodeid.split("::")[0]])


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh artifact store for the session (never the user's ~/.cache). Under pytest-xdist (`make test` runs
    two workers) the workers of one run share it: the store computes each artifact once across processes
    (per-artifact locks), so the smoke world is built once, not once per worker. A test that deletes from a
    store uses its own."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.mktemp("harness_home")
    shared = tmp_path_factory.getbasetemp().parent / "harness_home"
    shared.mkdir(exist_ok=True)
    return shared


@pytest.fixture(scope="session")
def smoke_base(home: Path) -> Path:
    """The smoke-size tiny suite's base checkpoint, built once per session (the store caches it). The process that
    builds it leaves what it printed, without a terminal and a progress line every 2 s, in `PREPARE_LOG` (the
    progress test reads the world build's lines there instead of building a second world)."""
    from tasks.tiny.suite import Config, build_key

    proc = harness("prepare", "tiny", "--set", "suite.size=smoke", home=home, check=True,
                   env={"HARNESS_PROGRESS_EVERY": "2"})
    if "] started" in proc.stderr:  # this process built it (another worker's waited and found it built)
        tmp = home / f".{PREPARE_LOG}.{os.getpid()}"
        tmp.write_text(proc.stderr)
        tmp.replace(home / PREPARE_LOG)
    return home / "suites" / build_key(Config(size="smoke")) / "base"


PREPARE_LOG = "smoke-prepare.log"


def harness(*args: str, home: Path, check: bool = False, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a process of its own (tests/process.py; with extra environment variables
    `env`)."""
    from tests import process

    env = {**os.environ, "HARNESS_HOME": str(home), "COLUMNS": "200", **(env or {})}
    proc = process.run(list(args), env=env, cwd=REPO, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"harness {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


PROGRESS_LINE = re.compile(r"^\[[^\]\n]+\] ")  # a plain progress line of harness.progress: "[defence: x] ..."


def messages(stderr: str) -> list[str]:
    """The lines of stderr that are not progress lines: what a command said (an error is one such line)."""
    return [line for line in stderr.splitlines() if not PROGRESS_LINE.match(line)]
