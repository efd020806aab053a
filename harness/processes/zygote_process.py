"""The zygote process itself (`python -m harness.processes.zygote_process`): imports the preloaded libraries, then
forks one child per request from its requesters (harness/processes/zygote.py says what a zygote is and the
protocol). In a child, `_Become` leaves the loop and `become` runs the requested module as `__main__`."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

STDIO = 3
OWN = __spec__.name.split(".")[0] if __spec__ else "harness"  # the zygote's own package



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


class _Requester:
    """A connection the zygote serves: what it has received so far, and the children it asked for."""

    def __init__(self, channel: socket.socket):
        self.channel, self.buffered, self.fds = channel, b"", []
        self.children: dict[int, bool] = {}  # pid -> in a session of its own

    def reply(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # a requester that has gone is dropped when its end of file is read
            self.channel.sendall((json.dumps(message) + "\n").encode())

    def drop(self) -> None:
        """Gone (ended, or killed): its live children go with it, as they would with a private zygote."""
        for pid, session in self.children.items():
            with contextlib.suppress(OSError):
                (os.killpg if session else os.kill)(pid, signal.SIGKILL)
        for fd in self.fds:
            os.close(fd)
        self.channel.close()


def serve(channel: socket.socket | None, preload: list[str], *, listener: socket.socket | None = None,
          owner: int | None = None) -> None:
    """Import `preload`, then fork a child per request: from `channel` (private: until it closes) or from each
    connection `listener` accepts (shared: until `owner` ends). A child's pid is sent once it has its session
    (the requester may kill its group at once). In a child this raises `_Become`."""
    from harness.processes.lifetime import die_with_parent  # `import harness` first: its lean imports, then these

    if owner is None:
        die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and SIGTERM to the group are for the children
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        owner_fd = os.pidfd_open(owner) if owner is not None else None  # readable once the owner has ended
    except OSError:
        return  # ended already
    # pyarrow's bundled jemalloc starts a purging thread as the library loads unless told not to (read then, in
    # this process only: each child gets its own environment); a zygote must stay single-threaded to fork
    os.environ.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")
    # torch.cuda.is_available() asks NVML rather than the CUDA driver, should an import call it: a driver initialised
    # here would leave every forked child unable to use the GPU
    nvml = "PYTORCH_NVML_BASED_CUDA_CHECK" not in os.environ
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    for module in preload:
        __import__(module)
    if "transformers" in preload:
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401  (its lazy auto classes)
    if nvml:  # the imports only: a child's own environment decides how it checks
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]

    requesters = {channel.fileno(): _Requester(channel)} if channel is not None else {}
    children: dict[int, _Requester] = {}
    while requesters or listener is not None:
        watched = [*requesters, *(x.fileno() for x in (listener,) if x is not None), *(
            [owner_fd] if owner_fd is not None else [])]
        ready = select.select(watched, [], [], 0.1)[0]
        while children:  # reap, and report, every child that ended
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            requester = children.pop(pid)
            requester.children.pop(pid, None)
            requester.reply({"exit": pid, "code": os.waitstatus_to_exitcode(status)})
        for fd in ready:
            if fd == owner_fd:
                return
            if listener is not None and fd == listener.fileno():
                conn, _ = listener.accept()
                requesters[conn.fileno()] = _Requester(conn)
                continue
            requester = requesters[fd]
            try:
                chunk, received, _, _ = socket.recv_fds(requester.channel, 65536, STDIO)
            except OSError:
                chunk, received = b"", []
            requester.fds += received
            if not chunk:
                del requesters[fd]
                requester.drop()
                continue
            requester.buffered += chunk
            while b"\n" in requester.buffered:
                line, requester.buffered = requester.buffered.split(b"\n", 1)
                order, stdio, requester.fds = json.loads(line), requester.fds[:STDIO], requester.fds[STDIO:]
                if _threads() != 1:
                    requester.reply({"error": f"{_threads()} threads: forking is unsafe"})
                else:
                    others = [r.channel for r in requesters.values()] + ([listener] if listener else [])
                    pid = _fork(order, stdio, others, owner_fd)
                    children[pid] = requester
                    requester.children[pid] = order["session"]
                    requester.reply({"pid": pid})
                for fd_ in stdio:
                    os.close(fd_)


def _fork(order: dict[str, Any], stdio: list[int], sockets: list[socket.socket], owner_fd: int | None) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    ready_r, ready_w = os.pipe()
    me = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        for sock in sockets:  # the child reaches no zygote and no other requester
            sock.close()
        if owner_fd is not None:
            os.close(owner_fd)
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
    if not _import_path(os.getcwd(), os.environ.get("PYTHONPATH", "")):  # it would import other copies of
        os.execve(sys.executable, [sys.executable, "-m", order["module"], *order["argv"]], order["env"])  # preloads
    import runpy

    sys.argv = [order["module"], *order["argv"]]  # runpy sets argv[0] to the module's file, as -m does
    runpy.run_module(order["module"], run_name="__main__", alter_sys=True)


def _import_path(cwd: str, pythonpath: str) -> bool:
    """Make `sys.path` the one `python -m` builds in `cwd` with `pythonpath`: the working directory, then
    PYTHONPATH's entries made absolute, then this zygote's own path less its working directory, duplicates dropped
    (as `site` drops them). Where that path finds the harness elsewhere (the CLI run in another checkout), the
    zygote's own harness modules are forgotten, to be imported from there. False where it would import another
    copy of any other module the zygote has imported (an entry shadowing a preload): the child must start afresh."""
    entries = [os.path.abspath(e) for e in pythonpath.split(os.pathsep)] if pythonpath else []
    if not entries and sys.path[:1] == [cwd]:
        return True
    loaded = {name: module.__spec__.origin for name, module in list(sys.modules.items()) if "." not in name and
              getattr(module, "__spec__", None) is not None and module.__spec__.has_location}
    sys.path[:] = [cwd, *dict.fromkeys([*entries, *sys.path[1:]])]
    for name, origin in loaded.items():
        spec = next(filter(None, (f.find_spec(name, None) for f in sys.meta_path if hasattr(f, "find_spec"))), None)
        if spec is not None and spec.origin != origin:
            if name != OWN:
                return False
            for module in [m for m in sys.modules if m == OWN or m.startswith(OWN + ".")]:
                del sys.modules[module]
            sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith(OWN + ".")]
    return True


def main(args: list[str]) -> None:
    """`FD PRELOAD...` (private: FD is this zygote's end of its requester's socket pair) or `--listen FD --owner
    PID PRELOAD...` (shared: FD a bound, listening socket; when PID ends, so does this zygote, its socket and, once
    the last of its zygotes has gone, the folder)."""
    if args[0] != "--listen":
        return serve(socket.socket(fileno=int(args[0])), args[1:])
    listener = socket.socket(fileno=int(args[1]))
    path, me = listener.getsockname(), os.getpid()
    try:
        serve(None, args[4:], listener=listener, owner=int(args[3]))
    finally:
        if os.getpid() == me:  # (not in a forked child leaving through here)
            with contextlib.suppress(OSError):
                os.unlink(path)
            with contextlib.suppress(OSError):
                if not any(p.suffix == ".sock" for p in Path(path).parent.iterdir()):
                    shutil.rmtree(Path(path).parent, ignore_errors=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except _Become as forked:
        become(forked)
    else:  # a zygote holds nothing to flush or finalize: skip the seconds torch takes at interpreter shutdown
        os._exit(0)
