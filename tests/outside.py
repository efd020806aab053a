"""Outside plugin packages for tests, without a network or pip: a module plus a `*.dist-info` folder
(METADATA and entry_points.txt) in a temporary directory. Put it on PYTHONPATH (`harness_with`) and
importlib.metadata sees an installed distribution, exactly as it sees one installed by pip."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests import process
from tests.conftest import REPO


def make_distribution(root: Path, name: str, version: str, *, modules: dict[str, str],
                      entry_points: dict[str, dict[str, str]]) -> Path:
    """Write `modules` ({module name: source}) and a dist-info declaring `entry_points` ({group: {name:
    module}}) into `root`; returns root."""
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(source)
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, eps in entry_points.items():
        lines += [f"[{group}]", *(f"{n} = {m}" for n, m in eps.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return root


def harness_with(paths: list[Path], *args: str, home: Path | None = None, timeout: int = 600
                 ) -> subprocess.CompletedProcess:
    """The CLI in a subprocess with outside packages on PYTHONPATH (the test process's registry stays clean)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths)), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    if home is not None:
        env["HARNESS_HOME"] = str(home)
    return process.run(list(args), env=env, cwd=REPO, timeout=timeout)


DEFENCE = '''
from pydantic import BaseModel, ConfigDict
from harness.registry import register_defence


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@register_defence({name!r}, config=Config, version="7")
def defend(model, cfg, ctx):
    """An outside defence registered as {name!r}."""
    return None
'''


def sections(stdout: str) -> dict[str, str]:
    """The output of a check of several defences, split at its `defence NAME` lines."""
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith("defence "):
            current = out.setdefault(line.removeprefix("defence "), [])
        else:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in out.items()}
