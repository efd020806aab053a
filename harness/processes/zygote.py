"""`python -m MODULE ARGS...` forked from a warm interpreter instead of started afresh.

A harness process that starts torch code in a child (a plugin's process, a sweep's job) pays ~9 s of CPU on
the 2-core machine for the child's imports of torch and transformers: more than a smoke-size stage trains
(`benchmarks/plugin_start.py`). A zygote is a clean interpreter that the harness process starts on first use,
with the children's environment and hash seed: it imports those libraries (`PRELOAD`) once and then forks one
child per request. It never holds data, a model or a store path, and imports no plugin, suite or task (third-party
code only), so each child starts where a fresh `python -m MODULE` would be after those imports: the request's
argv, environment, working directory and standard streams (file descriptors passed over the zygote's socket),
default signal handlers, in its own session if asked (else in the zygote's process group, which is the
parent's), and `MODULE` run as `__main__` (`runpy`, as `-m` runs it).

Forking is safe only from a single-threaded process that has run no torch operation (no thread pool to inherit):
the zygote checks its thread count before each fork and refuses otherwise, and the caller then starts a fresh
interpreter, as it does where there is no `fork` (not Linux), when the zygote died, or when `HARNESS_ZYGOTE=0`.
The zygote ignores Ctrl-C and SIGTERM sent to its group (its children get them), and ends when the thread that
started it ends (the parent-death signal) or closes the socket; its children end with it.

Protocol over a Unix socket (one JSON object per line): parent -> zygote `{"module", "argv", "cwd", "env",
"session"}` with the child's stdin, stdout and stderr as three file descriptors; zygote -> parent `{"pid"}` (or
`{"error"}`) at once, and `{"exit", "code"}` when a child ends (`code` as `Popen.returncode`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable
from typing import IO, Any

# (not pyarrow, datasets or pandas: pyarrow starts a thread at import)
PRELOAD = ("torch", "transformers", "transformers.modeling_utils", "safetensors.torch")
SWITCH = "HARNESS_ZYGOTE"  # "0": every child is a fresh interpreter
STDIO = 3


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
    """The parent's end of one zygote process."""

    def __init__(self, env: dict[str, str], preload: tuple[str, ...]):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with theirs:
            self.proc = subprocess.Popen([sys.executable, "-m", "harness.processes.zygote", str(theirs.fileno()),
                                          *preload], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, env=env, pass_fds=(theirs.fileno(),))
        self.sock = mine
        self.exits: dict[int, int] = {}
        self.buffered = b""
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self, module: str, argv: list[str], *, env: dict[str, str], stdio: tuple[int, int, int],
             session: bool, cwd: str | None = None) -> Forked | None:
        """A child running `python -m module *argv` (None: the zygote cannot fork now; start a fresh process)."""
        order = {"module": module, "argv": argv, "cwd": cwd or os.getcwd(), "env": env, "session": session}
        with self.lock:
            try:
                socket.send_fds(self.sock, [(json.dumps(order) + "\n").encode()], list(stdio))
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
        while b"\n" not in self.buffered:
            if not block and not select.select([self.sock], [], [], 0)[0]:
                return None
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return None
            if not chunk:
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
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)


_ZYGOTES: dict[tuple[Any, ...], Zygote] = {}


def fork(module: str, argv: list[str], *, env: dict[str, str], stdio: tuple[int, int, int], session: bool,
         cwd: str | None = None, preload: tuple[str, ...] = PRELOAD, per_child: Iterable[str] = ()) -> Forked | None:
    """`python -m module *argv` with `env`, forked from the zygote for `env` and `preload` (started on first use);
    None where forking is off or not possible (the caller starts a fresh interpreter). The zygote is shared by
    the requests whose environments differ only in the variables `per_child` names (variables only the child
    reads, such as `HARNESS_HOME`; others, such as `HF_HUB_OFFLINE` and `PYTHONHASHSEED`, are read as an
    interpreter starts). `stdio`: the child's stdin, stdout and stderr (this process keeps its copies)."""
    if env.get(SWITCH, os.environ.get(SWITCH)) == "0" or not sys.platform.startswith("linux"):
        return None
    skip = set(per_child)
    # one per thread too: the parent-death signal that ends a zygote fires when the thread that started it ends
    key = (threading.get_ident(), preload, *sorted((k, v) for k, v in env.items() if k not in skip))
    zygote = _ZYGOTES.get(key)
    if zygote is None or not zygote.alive():
        if not _ZYGOTES:
            atexit.register(close_all)  # ended and waited for (its CPU time counts as this process's children's)
        zygote = _ZYGOTES[key] = Zygote(env, preload)
    return zygote.fork(module, argv, env=env, stdio=stdio, session=session, cwd=cwd)


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


class _Become(BaseException):
    """Raised in a forked child to leave the zygote's loop: the child then runs its module at the top level and
    ends as any interpreter does (atexit handlers, non-daemon threads joined, an uncaught exception printed)."""

    def __init__(self, order: dict[str, Any], stdio: list[int], ready: int, zygote: int):
        super().__init__()
        self.order, self.stdio, self.ready, self.zygote = order, stdio, ready, zygote


def serve(channel: socket.socket, preload: list[str]) -> None:
    """Import `preload`, then fork a child per request until the socket closes. A child's pid is sent once it
    has its session (the parent may kill its group at once). In a child this raises `_Become`."""
    from harness.processes.lifetime import die_with_parent  # `import harness` first: its lean imports, then these

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and SIGTERM to the group are for the children
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for module in preload:
        __import__(module)
    if "transformers" in preload:
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401  (its lazy auto classes)

    def reply(message: dict[str, Any]) -> None:
        channel.sendall((json.dumps(message) + "\n").encode())

    children: set[int] = set()
    buffered, fds = b"", []
    while True:
        ready = select.select([channel], [], [], 0.1)[0]
        while children:  # reap, and report, every child that ended
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            reply({"exit": pid, "code": os.waitstatus_to_exitcode(status)})
        if not ready:
            continue
        chunk, received, _, _ = socket.recv_fds(channel, 65536, STDIO)
        if not chunk:
            return
        buffered += chunk
        fds += received
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            order, stdio, fds = json.loads(line), fds[:STDIO], fds[STDIO:]
            if _threads() != 1:
                reply({"error": f"{_threads()} threads: forking is unsafe"})
            else:
                pid = _fork(order, stdio, channel)
                children.add(pid)
                reply({"pid": pid})
            for fd in stdio:
                os.close(fd)


def _fork(order: dict[str, Any], stdio: list[int], channel: socket.socket) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    ready_r, ready_w = os.pipe()
    me = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        channel.close()
        raise _Become(order, stdio, ready_w, me)
    os.close(ready_w)
    os.read(ready_r, 1)  # the child has its session (or died: end of file)
    os.close(ready_r)
    return pid


def become(child: _Become) -> None:
    """In the forked child: the process a fresh `python -m module` would be, then that module as `__main__`."""
    from harness.processes.lifetime import die_with_parent

    die_with_parent(child.zygote)  # at once: a zygote killed with its parent takes this child with it
    order = child.order
    if order["session"]:
        os.setsid()
    os.write(child.ready, b"1")
    os.close(child.ready)
    for target, fd in enumerate(child.stdio):
        os.dup2(fd, target)
    for fd in set(child.stdio):
        if fd > 2:
            os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(order["cwd"])
    os.environ.clear()
    os.environ.update(order["env"])
    import runpy

    sys.argv = [order["module"], *order["argv"]]  # runpy sets argv[0] to the module's file, as -m does
    runpy.run_module(order["module"], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    try:
        serve(socket.socket(fileno=int(sys.argv[1])), sys.argv[2:])
    except _Become as forked:
        become(forked)
