"""The CLI in a process of its own, as users run it (`python -m harness.cli ARGS`), forked from a warm interpreter
(harness.processes.zygote) instead of started afresh: the tests start ~130 of them, and each fresh one imports
torch and transformers again. The child is a separate process with the test's argv, environment, working
directory, exit code and signals; `HARNESS_ZYGOTE=0` (or a machine without fork) starts fresh interpreters."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from harness.processes.zygote import Forked, fork

REPO = Path(__file__).resolve().parent.parent
# Read by the harness as it runs, never at import: processes that differ only in them share a zygote (the tests'
# CLI processes here; and every plugin process of the run, through HARNESS_ZYGOTE_PER_CHILD: tests/conftest.py).
PER_TEST = ("PYTEST_CURRENT_TEST", "HARNESS_HOME", "COLUMNS", "HARNESS_PROGRESS_EVERY")


class CLI:
    """A started CLI process with the part of `subprocess.Popen`'s interface the tests use (text pipes)."""

    def __init__(self, args: list[str], proc: Forked | subprocess.Popen):
        self.args, self.proc = args, proc
        self.stdout, self.stderr = proc.stdout, proc.stderr

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        if isinstance(self.proc, subprocess.Popen):
            return self.proc.wait(timeout)
        return self.proc.wait()

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        import signal

        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str | None]:
        got: dict[str, str | None] = {"err": None}
        pipes = [("out", self.stdout), ("err", self.stderr)]
        readers = [threading.Thread(target=lambda n=name, f=pipe: got.__setitem__(n, f.read()), daemon=True)
                   for name, pipe in pipes if pipe is not None]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(timeout)
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait()
        for _, pipe in pipes:
            if pipe is not None:
                pipe.close()
        return got["out"], got["err"]


def start(args: list[str], *, env: dict[str, str] | None = None, cwd: Path = REPO, session: bool = False,
          merged: bool = False) -> CLI:
    """`python -m harness.cli *args` started with `env` (default: this process's) in `cwd`, stdout and stderr
    piped (`merged`: stderr into stdout's pipe); `session`: in a session (and process group) of its own."""
    env = dict(os.environ if env is None else env)
    argv = [str(a) for a in args]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        with open(os.devnull) as null:
            child = fork("harness.cli", argv, env=env, stdio=(null.fileno(), out_w, out_w if merged else err_w),
                         session=session,
                         cwd=str(cwd), per_child=PER_TEST)
    finally:
        os.close(out_w)
        os.close(err_w)
    if child is None:
        os.close(out_r)
        os.close(err_r)
        return CLI(argv, subprocess.Popen([sys.executable, "-m", "harness.cli", *argv], stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                                          stdin=subprocess.DEVNULL, text=True, env=env, cwd=cwd,
                                          start_new_session=session))
    child.stdout = open(out_r)  # noqa: SIM115  (closed by communicate)
    if merged:
        os.close(err_r)
    else:
        child.stderr = open(err_r)  # noqa: SIM115
    return CLI(argv, child)


def run(args: list[str], *, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 1200,
        check: bool = False) -> subprocess.CompletedProcess:
    """As `subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, ...)`."""
    proc = start(args, env=env, cwd=cwd)
    try:
        out, err = proc.communicate(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check:
        done.check_returncode()
    return done
