"""Plugin processes forked from a warm interpreter instead of started afresh.

Each plugin process imports torch and transformers before it loads its model: ~9 s of CPU on the 2-core
machine, more than a smoke-size stage trains (`benchmarks/plugin_start.py`). A run starts two or three of them
(defence, attack, a condition's attack). A zygote is a clean interpreter that a harness process starts at its
first plugin launch, with the plugin processes' environment and hash seed: it imports those libraries once and
then forks one child per plugin launch. It never holds a split, a model or a store path; it imports no plugin,
suite or task (`PRELOAD` is third-party code and the harness's own leaves), so the child starts exactly where a
fresh `python -m harness.sandbox.worker` would be after its imports: its own session (process group), its log as
stdout and stderr, /dev/null as stdin, the request's environment, and the worker's `main`, which arms the
parent-death signal, installs the guard and only then imports the plugin.

Forking is safe only from a single-threaded process that has run no torch operation (no thread pool to
inherit): the zygote checks its thread count before each fork and refuses otherwise, and the launcher then starts
a fresh interpreter, as it does where there is no `fork` (not Linux), when the zygote died, or when
`HARNESS_ZYGOTE=0`. The zygote ends when its parent does (parent-death signal) or closes the pipe.

Protocol (one JSON object per line): parent -> zygote `{"request", "log", "cwd", "env"}`; zygote -> parent
`{"pid"}` (or `{"error"}`) at once, and `{"exit", "code"}` when a child ends (`code` as `Popen.returncode`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

PRELOAD = ("torch", "transformers", "transformers.modeling_utils", "safetensors.torch")
SWITCH = "HARNESS_ZYGOTE"  # "0": every plugin process is a fresh interpreter


class Forked:
    """A child of a zygote, with the part of `subprocess.Popen`'s interface the launcher uses."""

    def __init__(self, zygote: Zygote, pid: int):
        self.zygote, self.pid, self.returncode = zygote, pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.exit_code(self.pid, block=False)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = self.zygote.exit_code(self.pid, block=True)
        return self.returncode


class Zygote:
    """The parent's end of one zygote process."""

    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.sandbox.zygote"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0,
                                     start_new_session=True)
        self.exits: dict[int, int] = {}
        self.buffered = b""
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self, request: Path, log: Path, env: dict[str, str]) -> Forked | None:
        """A child running the worker on `request` (None: the zygote cannot fork now; start a fresh process)."""
        order = {"request": str(request), "log": str(log), "cwd": os.getcwd(), "env": env}
        with self.lock:
            try:
                os.write(self.proc.stdin.fileno(), (json.dumps(order) + "\n").encode())
            except OSError:
                return None
            while (reply := self._next(block=True)) is not None:
                if "error" in reply:
                    return None
                if "pid" in reply:
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
            return self.exits[pid]

    def _next(self, *, block: bool) -> dict[str, Any] | None:
        """The next reply (exits recorded as they pass); None at end of stream, or when none is ready and not
        `block`."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffered:
            if not block and not select.select([fd], [], [], 0)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self.buffered += chunk
        line, self.buffered = self.buffered.split(b"\n", 1)
        reply = json.loads(line)
        if "exit" in reply:
            self.exits[reply["exit"]] = reply["code"]
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)


_ZYGOTES: dict[tuple[Any, ...], Zygote] = {}


def start_worker(request: Path, log: Path, env: dict[str, str]) -> Forked | None:
    """The worker on `request` forked from the zygote for `env` (all of it but `HARNESS_HOME`, which each child
    sets: variables such as `HF_HUB_OFFLINE` and `PYTHONHASHSEED` are read as the interpreter starts), started
    on first use; None where forking is off or not possible (the caller starts a fresh interpreter)."""
    if env.get(SWITCH, os.environ.get(SWITCH)) == "0" or not sys.platform.startswith("linux"):
        return None
    # one per thread too: the parent-death signal that ends a zygote fires when the thread that started it ends
    key = (threading.get_ident(), *sorted((k, v) for k, v in env.items() if k != "HARNESS_HOME"))
    zygote = _ZYGOTES.get(key)
    if zygote is None or not zygote.alive():
        if not _ZYGOTES:
            atexit.register(close_all)  # ended and waited for (its CPU time counts as this process's children's)
        zygote = _ZYGOTES[key] = Zygote(env)
    return zygote.fork(request, log, env)


def close_all() -> None:
    for zygote in _ZYGOTES.values():
        zygote.close()
    _ZYGOTES.clear()


# ---- the zygote process -------------------------------------------------------------------------------------


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _child(order: dict[str, Any], pipes: tuple[int, ...], ready: int, zygote: int) -> None:
    """In the forked child: become the worker a fresh interpreter would be. Never returns."""
    code = 1
    try:
        from harness.sandbox.worker import die_with_parent

        die_with_parent(zygote)  # at once: a zygote killed with its parent takes this child with it
        os.setsid()
        os.write(ready, b"1")
        os.close(ready)
        for fd in pipes:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(order["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.chdir(order["cwd"])
        os.environ.clear()
        os.environ.update(order["env"])
        import harness.sandbox.worker as worker

        sys.argv = [worker.__file__, order["request"]]  # as `python -m harness.sandbox.worker REQUEST` has it
        worker.main(order["request"])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """Import `PRELOAD`, then fork a worker per request line until stdin closes. A child's pid is sent once it
    leads its own session (the parent may kill its group at once)."""
    from harness.sandbox.worker import die_with_parent  # `import harness` first: its lean imports, then these

    die_with_parent()
    for module in PRELOAD:
        __import__(module)
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401  (transformers' lazy auto classes)

    requests, replies = sys.stdin.fileno(), os.dup(sys.stdout.fileno())
    reply = os.fdopen(replies, "w", buffering=1)
    children: set[int] = set()
    buffered = b""
    while True:
        ready = select.select([requests], [], [], 0.1)[0]
        while children:  # reap, and report, every child that ended
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            reply.write(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}) + "\n")
        if not ready:
            continue
        chunk = os.read(requests, 65536)
        if not chunk:
            return
        buffered += chunk
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            order = json.loads(line)
            if _threads() != 1:
                reply.write(json.dumps({"error": f"{_threads()} threads: forking is unsafe"}) + "\n")
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            ready_r, ready_w = os.pipe()
            me = os.getpid()
            pid = os.fork()
            if pid == 0:
                os.close(ready_r)
                _child(order, (requests, replies), ready_w, me)
            os.close(ready_w)
            os.read(ready_r, 1)  # the child has called setsid (or died: end of file)
            os.close(ready_r)
            children.add(pid)
            reply.write(json.dumps({"pid": pid}) + "\n")


if __name__ == "__main__":
    serve()
