"""`python -m MODULE ARGS...` forked from a warm interpreter instead of started afresh.

A harness process that starts torch code in a child (a plugin's process, a sweep's job) pays ~9 s of CPU on
the 2-core machine for the child's imports of torch and transformers: more than a smoke-size stage trains
(`benchmarks/plugin_start.py`). A zygote is a clean interpreter with the children's environment and hash seed:
it imports those libraries (`PRELOAD`) once and then forks one child per request. It never holds data, a model
or a store path, and imports no plugin, suite or task (third-party code only), so each child starts where a fresh
`python -m MODULE` would be after those imports: the request's argv, environment, working directory and standard
streams (file descriptors passed over the zygote's socket), default signal handlers, in its own session if asked
(else in the zygote's process group), its import path built from its own working directory and PYTHONPATH as
`-m` builds it, and `MODULE` run as `__main__` (`runpy`, as `-m` runs it). Where that path would import another
copy of a module the zygote has imported (an entry shadowing torch, say), the child starts a fresh interpreter
in its own place (`execve`, same pid). The zygote's key is the rest of the environment: the variables read as an
interpreter starts (`PYTHONHASHSEED`, `HF_HOME`, `OMP_NUM_THREADS`), less those the caller or
`HARNESS_ZYGOTE_PER_CHILD` name as read only while the child runs.

Two kinds of zygote:

- **private** (the default): started by the harness process on first use, in that process's group (so a child
  not in a session of its own is in its parent's group); it ends when the thread that started it ends (the
  parent-death signal) or closes the socket.
- **shared**: a process that calls `share_with_descendants()` (the tests, a sweep) owns a folder of zygotes
  (`HARNESS_ZYGOTES`) that its descendants reach by a named socket, one zygote per environment, so the many
  short harness processes under it (CLI runs, sweep jobs) start their plugin processes from one warm interpreter
  instead of each starting its own. Only requests for a child in a session of its own go there (a child in its
  requester's process group can come only from a private zygote). A shared zygote ends when its owner ends; a
  requester that disconnects (ends, or is killed) takes its live children with it.

Forking is safe only from a single-threaded process that has run no torch operation (no thread pool to inherit):
the zygote checks its thread count before each fork and refuses otherwise, and the caller then starts a fresh
interpreter, as it does where there is no `fork` (not Linux), when the zygote died, or when `HARNESS_ZYGOTE=0`.
The zygote ignores Ctrl-C and SIGTERM sent to its group (its children get them); its children end with it.

Protocol over a Unix socket (one JSON object per line): requester -> zygote `{"module", "argv", "cwd", "env",
"session"}` with the child's stdin, stdout and stderr as three file descriptors; zygote -> requester `{"pid"}`
(or `{"error"}`) at once, and `{"exit", "code"}` when a child ends (`code` as `Popen.returncode`).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

# (datasets brings pyarrow and pandas: ~0.8 s more per child; the zygote keeps pyarrow's allocator single-threaded)
PRELOAD = ("torch", "transformers", "transformers.modeling_utils", "safetensors.torch", "datasets")
SWITCH = "HARNESS_ZYGOTE"  # "0": every child is a fresh interpreter
SHARED = "HARNESS_ZYGOTES"  # the folder of shared zygotes (share_with_descendants); never given to a plugin
# More variables no library reads as an interpreter starts, named by the environment (comma-separated): requests
# that differ only in them share a zygote (a test runner's per-test variables, a terminal's size).
PER_CHILD = "HARNESS_ZYGOTE_PER_CHILD"
# Always the child's own: it builds its import path from its working directory and PYTHONPATH as `python -m` does.
IMPORT_PATH = ("PYTHONPATH",)
ROOT = str(Path(__file__).resolve().parents[2])  # where `harness` is imported from: the zygote's working directory


class Forked:
    """A child of a zygote, with the part of `subprocess.Popen`'s interface the harness uses."""

    def __init__(self, zygote: Zygote, pid: int):
        self.zygote, self.pid, self.returncode = zygote, pid, None
        self.stdout: IO[str] | None = None  # the caller's ends of pipes it passed, if it sets them
        self.stderr: IO[str] | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.exit_code(self.pid, block=False)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = self.zygote.exit_code(self.pid, block=True)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # (an ended child's pid may be reused)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


class Zygote:
    """The requester's end of one zygote: a private one it started, or a connection to a shared one."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen | None):
        self.sock, self.proc = sock, proc  # proc: the private zygote (a shared one is not this process's)
        self.exits: dict[int, int] = {}
        self.buffered = b""
        self.lock = threading.Lock()
        self.closed = False

    @classmethod
    def start(cls, env: dict[str, str], preload: tuple[str, ...]) -> Zygote:
        """A private zygote: this process's child, in its process group."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with theirs:
            proc = _spawn([str(theirs.fileno()), *preload], env, theirs.fileno(), session=False)
        return cls(mine, proc)

    @classmethod
    def connect(cls, folder: str, env: dict[str, str], preload: tuple[str, ...]) -> Zygote | None:
        """A connection to the shared zygote for `env` in `folder`, started if there is none (or it died); None
        where the folder is gone or its socket path too long."""
        key = json.dumps([sys.executable, preload, sorted(env.items())]).encode()
        path = os.path.join(folder, hashlib.sha256(key).hexdigest()[:16] + ".sock")
        try:
            with open(os.path.join(folder, "lock"), "a") as lock:
                import fcntl

                fcntl.flock(lock, fcntl.LOCK_EX)  # one starter per zygote, however many requesters race
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(path)
                except OSError:
                    sock.close()
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)  # a zygote that died left its socket
                    owner = Path(folder, "owner").read_text().strip()
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
                        listener.bind(path)  # bound here: requesters can connect before the zygote has imported
                        listener.listen(64)
                        _spawn(["--listen", str(listener.fileno()), "--owner", owner, *preload], env,
                               listener.fileno(), session=True)  # not killed with the group of its first requester
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.connect(path)
        except OSError:
            return None
        return cls(sock, None)

    def alive(self) -> bool:
        return not self.closed and (self.proc is None or self.proc.poll() is None)

    def fork(self, module: str, argv: list[str], *, env: dict[str, str], stdio: tuple[int, int, int],
             session: bool, cwd: str | None = None) -> Forked | None:
        """A child running `python -m module *argv` (None: the zygote cannot fork now; start a fresh process)."""
        order = {"module": module, "argv": argv, "cwd": cwd or os.getcwd(), "env": env, "session": session}
        with self.lock:
            try:
                socket.send_fds(self.sock, [(json.dumps(order) + "\n").encode()], list(stdio))
            except OSError:
                self.closed = True
                return None
            while (reply := self._next(block=True)) is not None:
                if "error" in reply:
                    return None
                if "pid" in reply:  # an earlier child's exit under the same pid (pids are reused) is not this one's
                    self.exits.pop(reply["pid"], None)
                    return Forked(self, reply["pid"])
            return None  # the zygote died

    def exit_code(self, pid: int, *, block: bool) -> int | None:
        with self.lock:
            while pid not in self.exits:
                reply = self._next(block=block)
                if reply is None:
                    if block or not self.alive():  # the zygote died, and its children with it
                        self.exits.setdefault(pid, -9)
                        break
                    return None
            return self.exits.pop(pid)  # read once: its Forked keeps it, and the pid may come again

    def _next(self, *, block: bool) -> dict[str, Any] | None:
        """The next reply (exits recorded as they pass); None at end of stream, or when none is ready and not
        `block`."""
        while b"\n" not in self.buffered:
            if not block and not select.select([self.sock], [], [], 0)[0]:
                return None
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.buffered += chunk
        line, self.buffered = self.buffered.split(b"\n", 1)
        reply = json.loads(line)
        if "exit" in reply:
            self.exits[reply["exit"]] = reply["code"]
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=5)


def _spawn(args: list[str], env: dict[str, str], fd: int, *, session: bool) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.processes.zygote_process", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            pass_fds=(fd,), start_new_session=session, cwd=ROOT)


_ZYGOTES: dict[tuple[Any, ...], Zygote] = {}


def share_with_descendants() -> None:
    """Make this process the owner of a folder of shared zygotes that its descendants use (`HARNESS_ZYGOTES` in
    its environment; the zygotes end when it ends). Nothing to do where an ancestor that is still running already
    shares one."""
    folder = os.environ.get(SHARED)
    if folder:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(Path(folder, "owner").read_text()), 0)
            return
    folder = tempfile.mkdtemp(prefix="harness-zygotes-")
    Path(folder, "owner").write_text(str(os.getpid()))
    os.environ[SHARED] = folder
    atexit.register(shutil.rmtree, folder, True)


def fork(module: str, argv: list[str], *, env: dict[str, str], stdio: tuple[int, int, int], session: bool,
         cwd: str | None = None, preload: tuple[str, ...] = PRELOAD, per_child: Iterable[str] = ()) -> Forked | None:
    """`python -m module *argv` with `env`, forked from the zygote for `env` and `preload` (started on first use);
    None where forking is off or not possible (the caller starts a fresh interpreter). The zygote is shared by
    the requests whose environments differ only in the variables `per_child` (or `HARNESS_ZYGOTE_PER_CHILD`)
    names and in PYTHONPATH (variables only the child reads, such as `HARNESS_HOME`; others, such as
    `HF_HUB_OFFLINE` and `PYTHONHASHSEED`, are read as an interpreter starts). `stdio`: the child's stdin, stdout
    and stderr (this process keeps its copies). A child in a session of its own comes from a shared zygote where
    this process has a folder of them (`HARNESS_ZYGOTES`)."""
    if env.get(SWITCH, os.environ.get(SWITCH)) == "0" or not sys.platform.startswith("linux"):
        return None
    skip = {*per_child, *IMPORT_PATH, *filter(None, env.get(PER_CHILD, "").split(","))}
    zygote_env = {k: v for k, v in env.items() if k not in skip}
    folder = os.environ.get(SHARED) if session else None
    # one per thread too: a private zygote's parent-death signal fires when the thread that started it ends
    key = (threading.get_ident(), preload, folder, *sorted(zygote_env.items()))
    zygote = _ZYGOTES.get(key)
    if zygote is None or not zygote.alive():
        if not _ZYGOTES:
            atexit.register(close_all)  # ended and waited for (its CPU time counts as this process's children's)
        zygote = (folder and Zygote.connect(folder, zygote_env, preload)) or Zygote.start(zygote_env, preload)
        _ZYGOTES[key] = zygote
    return zygote.fork(module, argv, env=env, stdio=stdio, session=session, cwd=cwd)


def close_all() -> None:
    for zygote in _ZYGOTES.values():  # every zygote told first, then each waited for: they end side by side
        with contextlib.suppress(OSError):
            zygote.sock.close()
    for zygote in _ZYGOTES.values():
        zygote.close()
    _ZYGOTES.clear()
