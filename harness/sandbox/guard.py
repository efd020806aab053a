"""The guard a plugin process installs on itself before it imports the plugin: what the plugin may not reach.

`install(policy)` adds a Python audit hook (PEP 578). An audit hook, unlike a `sys.meta_path` finder, cannot
be removed or bypassed from Python once added, and it sees every way in: the `import` event of any module
(however it is imported: `import`, `importlib`, `__import__`), the `open` event of any file (also reading a
module's source to exec it), directory listings, process creation and network connections. It refuses:

- importing the suite's data builders (`Policy.modules`: the packages of the suite and task entry points,
  and `harness.resolve`, which calls the suite loader);
- opening or listing anything under `Policy.paths` (the store, those packages' folders, the datasets cache),
  except under `Policy.allow` (the model the plugin starts from, the folder its output goes to);
- another process's files under /proc (a parent's memory or environment);
- starting a program (`subprocess`, `os.exec*`, `os.system`, `posix_spawn`): a new interpreter would start
  without this guard (`fork` stays allowed: a DataLoader worker keeps the guard);
- network connections (the plugin gets its data from its view, not from a hub).

Each refusal raises `SandboxError` and is logged in `VIOLATIONS`, so a plugin that catches the error still fails
its stage. Native code (a C extension, ctypes) can reach around any in-process guard: running untrusted plugins
under an OS sandbox as well (a container without the store mounted) closes that; see the README.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.errors import HarnessError

VIOLATIONS: list[str] = []
PROCESS_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.startfile",
                  "pty.spawn")
NETWORK_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto")
PATH_EVENTS = ("open", "os.listdir", "os.scandir", "os.chdir", "os.rename", "os.remove", "os.rmdir", "os.mkdir",
               "os.link", "os.symlink", "os.truncate", "shutil.rmtree", "shutil.copytree", "shutil.move",
               "glob.glob")


class Policy(BaseModel):
    """What a plugin process may not reach (`modules`, `paths`) and the exceptions under those paths (`allow`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modules: list[str] = Field(default_factory=list, description="modules (and their submodules) it may not import")
    paths: list[str] = Field(default_factory=list, description="folders it may not open or list anything under")
    allow: list[str] = Field(default_factory=list, description="folders under `paths` it may use all the same")
    labels: dict[str, str] = Field(default_factory=dict, description="path of `paths` -> what it is, for messages")


class SandboxError(HarnessError):
    """A plugin reached for something outside its inputs: one line, exit 2, like a read of a withheld split."""


def message(who: str, what: str) -> str:
    """One line: who reached for what, and what a plugin may reach."""
    return f"{who} {what}; a plugin runs in its own process and reaches only its inputs (its data view, its model, " \
           "its config)"


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _real(path: Any) -> str | None:
    """The absolute, symlink-free path an event names (None: a file descriptor, nothing to check)."""
    if isinstance(path, int) or path is None:
        return None
    try:
        return os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return None


def _other_process(path: str) -> bool:
    """A path under /proc/<pid> of another process (its memory, environment, open files)."""
    parts = path.split(os.sep)
    return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != str(os.getpid())


def checker(policy: Policy) -> Any:
    """The audit hook of `policy` (also called directly by tests)."""
    modules = tuple(policy.modules)
    paths = [os.path.realpath(p) for p in policy.paths]
    allow = [os.path.realpath(p) for p in policy.allow]
    labels = {os.path.realpath(p): what for p, what in policy.labels.items()}

    def refuse(what: str) -> None:
        VIOLATIONS.append(what)
        raise SandboxError(message("the plugin", what))

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "import":
            name = args[0] or ""
            if any(name == m or name.startswith(m + ".") for m in modules):
                refuse(f"imported '{name}', which builds the suite's data")
            if name == "_posixsubprocess":  # a fresh copy would bring back the fork_exec `install` replaced
                refuse("re-imported '_posixsubprocess'")
        elif event in PATH_EVENTS:
            for arg in args[:2] if event in ("os.rename", "os.link", "os.symlink", "shutil.copytree",
                                             "shutil.move") else args[:1]:
                path = _real(arg)
                if path is None:
                    continue
                if _other_process(path):
                    refuse(f"reached '{path}', another process's files")
                if _under(path, paths) and not _under(path, allow):
                    what = next((w for p, w in labels.items() if _under(path, [p])), "outside its inputs")
                    refuse(f"reached '{path}' ({what})")
        elif event.startswith(PROCESS_EVENTS):
            refuse(f"started a program ({event})")
        elif event in NETWORK_EVENTS:
            refuse(f"opened a network connection ({event})")

    return hook


def install(policy: Policy) -> None:
    """Guard this process for the rest of its life. A module of `policy.modules` already imported would stay
    reachable through sys.modules, so that is a bug of the caller, refused here."""
    loaded = [m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in policy.modules)]
    if loaded:
        raise RuntimeError(f"cannot guard a process that already imported {', '.join(sorted(loaded)[:3])}")
    hook = checker(policy)
    sys.addaudithook(hook)
    # multiprocessing's "spawn" and "forkserver" start a new interpreter through _posixsubprocess.fork_exec,
    # which raises no audit event: refuse it here (the module cannot be imported afresh: see `hook`).
    import _posixsubprocess

    def fork_exec(*_args: Any, **_kw: Any) -> Any:
        hook("subprocess.Popen", ())

    _posixsubprocess.fork_exec = fork_exec
