"""Plugin processes forked from a zygote (harness/processes/zygote.py): a child leads its own session, writes its
log, reports its exit code as `Popen.returncode` does, dies with its group; a zygote that died is replaced; and
forking is off on request. A real run through the zygote gives the records of fresh processes (the plugin
isolation tests compare in-process and in-process-group outputs bitwise; the CLI tests run through it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness.processes import zygote

pytestmark = pytest.mark.slow  # each zygote imports torch and transformers once (~10 s)


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """A private zygote of this test's own (no shared folder), and none left from the tests that ran before it in
    this process (a worker that ran plugin stages first holds connections to the session's zygotes)."""
    zygote.close_all()
    monkeypatch.delenv(zygote.SHARED, raising=False)
    yield {**os.environ, "HARNESS_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
           "HARNESS_TEST_ZYGOTE": str(tmp_path)}
    zygote.close_all()


@pytest.fixture()
def shared(env, monkeypatch):
    """A folder of shared zygotes whose owner is a stand-in process the test can end."""
    owner = subprocess.Popen(["sleep", "600"])
    folder = Path(tempfile.mkdtemp(prefix="zyg-"))  # short: a socket's path has at most 107 bytes
    (folder / "owner").write_text(str(owner.pid))
    monkeypatch.setenv(zygote.SHARED, str(folder))
    yield folder, owner
    zygote.close_all()
    owner.kill()
    owner.wait()
    shutil.rmtree(folder, ignore_errors=True)


def start_worker(request: Path, log: Path, env: dict[str, str]) -> zygote.Forked | None:
    """As the plugin launcher starts a worker."""
    with log.open("a") as out, open(os.devnull) as null:
        return zygote.fork("harness.sandbox.worker", [str(request)], env=env, session=True,
                           stdio=(null.fileno(), out.fileno(), out.fileno()), per_child=("HARNESS_HOME",))


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def test_a_forked_worker_leads_its_session_logs_and_reports_its_exit(env, tmp_path):
    request = tmp_path / "request.json"
    os.mkfifo(request)  # the worker blocks reading its request until the test writes it
    child = start_worker(request, tmp_path / "worker.log", env)
    assert child is not None and child.poll() is None
    ppid, pgid, sid = _stat(child.pid)[1:4]
    assert int(pgid) == int(sid) == child.pid  # its own session and process group, as start_new_session gives
    assert int(ppid) != os.getpid()  # a child of the zygote, not of this process
    request.write_text("{}\n")  # not a valid request: the worker raises, as a fresh one would
    assert child.wait() == 1 and child.poll() == 1
    assert "validation errors for Request" in (tmp_path / "worker.log").read_text()


def test_killing_the_group_ends_the_child_and_a_dead_zygote_is_replaced(env, tmp_path):
    request = tmp_path / "request.json"
    os.mkfifo(request)
    child = start_worker(request, tmp_path / "worker.log", env)
    os.killpg(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    [first] = list(zygote._ZYGOTES.values())
    first.proc.kill()
    first.proc.wait()
    second = tmp_path / "second.json"
    second.write_text("{}\n")
    again = start_worker(second, tmp_path / "second.log", env)
    assert again is not None and again.wait() == 1
    assert [z for z in zygote._ZYGOTES.values() if z.alive()] != [first]


def test_forking_off_on_request_or_when_the_environment_differs(env, tmp_path):
    assert start_worker(tmp_path / "r.json", tmp_path / "log", {**env, zygote.SWITCH: "0"}) is None
    request = tmp_path / "request.json"
    request.write_text("{}\n")
    for seed in ("0", "1"):  # the hash seed is fixed as an interpreter starts: one zygote per environment
        assert start_worker(request, tmp_path / "log", {**env, "PYTHONHASHSEED": seed}).wait() == 1
    assert len(zygote._ZYGOTES) == 2


def test_a_zygote_with_threads_refuses_to_fork(env, tmp_path):
    """torch starts an OpenMP thread at import unless OMP_NUM_THREADS=1: forking then is unsafe, and the
    launcher starts a fresh interpreter instead."""
    threaded = {k: v for k, v in env.items() if k != "OMP_NUM_THREADS"}
    got = start_worker(tmp_path / "r.json", tmp_path / "log", threaded)
    [made] = zygote._ZYGOTES.values()
    if len(os.listdir(f"/proc/{made.proc.pid}/task")) == 1:
        pytest.skip("torch started no thread at import on this machine: nothing to refuse")
    assert got is None


def test_a_sweep_job_is_forked_into_the_sweeps_group_with_its_output_piped(env, tmp_path):
    from harness.sweep import executors

    job = tmp_path / "job.json"
    job.write_text("{}")  # not a valid job: the job's own `error:` line and exit 2, as from a fresh process
    child = executors._start(str(job), env)
    assert isinstance(child, zygote.Forked)  # forked, not started afresh
    assert int(_stat(child.pid)[2]) == os.getpgrp()  # in this process's group: a sweep killed with its group
    out, err = executors._communicate(child, "a job")
    assert child.returncode == 2 and out == ""
    assert err.startswith(f"error: job file {job} is not a valid job")


def test_the_tests_cli_processes_are_forked_and_behave_as_fresh_ones(tmp_path):
    from tests import process

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARNESS_HOME": str(tmp_path)}
    proc = process.start(["list", "nothing-like-this"], env=env)
    assert isinstance(proc.proc, zygote.Forked)  # tests/process.py forks: the suite's CLI runs are not fresh
    out, err = proc.communicate(60)
    fresh = subprocess.run([sys.executable, "-m", "harness.cli", "list", "nothing-like-this"], capture_output=True,
                           text=True, env=env, cwd=process.REPO, timeout=60)
    assert (proc.returncode, out, err) == (fresh.returncode, fresh.stdout, fresh.stderr) and proc.returncode == 2


def _gone(pid: int, within: float = 20.0) -> bool:
    """The process ended within `within` seconds (gone, or a zombie its parent has not reaped yet)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            if _stat(pid)[0] == "Z":
                return True
        except (FileNotFoundError, ProcessLookupError):  # gone before or while its stat was read
            return True
        time.sleep(0.1)
    return False


def test_requesters_share_one_zygote_and_a_requester_that_goes_takes_its_children(shared, env, tmp_path):
    """Two requesters (two threads: two connections, as two harness processes have) get their session children
    from one zygote; closing one connection (its process ended or was killed) ends its live children only; a
    child in the requester's own process group still comes from a private zygote."""
    folder, _ = shared
    fifos = [tmp_path / "one.json", tmp_path / "two.json"]
    for fifo in fifos:
        os.mkfifo(fifo)  # each worker blocks reading its request
    first = start_worker(fifos[0], tmp_path / "one.log", env)
    got: list[zygote.Forked | None] = []
    thread = threading.Thread(target=lambda: got.append(start_worker(fifos[1], tmp_path / "two.log", env)))
    thread.start()
    thread.join()
    [second] = got
    assert isinstance(first, zygote.Forked) and isinstance(second, zygote.Forked)
    assert first.zygote is not second.zygote  # two connections ...
    assert _stat(first.pid)[1] == _stat(second.pid)[1]  # ... to one zygote process
    assert [p.suffix for p in folder.iterdir() if p.suffix == ".sock"] == [".sock"]
    second.zygote.close()
    assert _gone(second.pid) and first.poll() is None
    fifos[0].write_text("{}\n")
    assert first.wait() == 1  # the remaining requester's child runs to its own end
    job = tmp_path / "job.json"
    job.write_text("{}")
    from harness.sweep import executors

    in_group = executors._start(str(job), env)
    assert isinstance(in_group, zygote.Forked) and in_group.zygote.proc is not None  # private
    assert int(_stat(in_group.pid)[2]) == os.getpgrp()
    executors._communicate(in_group, "a job")


def test_a_shared_zygote_ends_with_its_owner(shared, env, tmp_path):
    folder, owner = shared
    request = tmp_path / "request.json"
    os.mkfifo(request)
    child = start_worker(request, tmp_path / "log", env)
    assert isinstance(child, zygote.Forked) and child.zygote.proc is None  # shared
    made = int(_stat(child.pid)[1])
    owner.kill()
    assert _gone(made) and child.wait() == -signal.SIGKILL  # the zygote's children end with it
    assert not folder.exists()  # its socket and, the last one gone, the folder


PROBE = '''
import json, os, sys
preloaded = "torch" in sys.modules  # forked from the zygote, not started afresh
import harness, safetensors
from outside_probe import WHERE
print(json.dumps({"path": sys.path[:3], "where": WHERE, "safetensors": safetensors.__file__, "pid": os.getpid(),
                  "var": os.environ.get("PROBE_VAR"), "harness": harness.__file__, "preloaded": preloaded}))
'''


def test_a_child_imports_from_its_own_directory_and_pythonpath_as_a_fresh_interpreter_does(env, tmp_path):
    """PYTHONPATH and the working directory are the child's own, as are the variables HARNESS_ZYGOTE_PER_CHILD
    names (requests that differ only in them share a zygote): its import path is the one `python -m` builds, and
    where an entry shadows a module the zygote has imported (here safetensors), the child starts afresh in the
    same process and imports that entry's copy."""
    plain, shadowing, cwd = tmp_path / "plain", tmp_path / "shadowing", tmp_path / "cwd"
    for folder in (plain, shadowing, cwd):
        folder.mkdir()
    (cwd / "probe_main.py").write_text(PROBE)
    for folder in (plain, shadowing):
        (folder / "outside_probe.py").write_text(f"WHERE = {folder.name!r}\n")
    (shadowing / "safetensors").mkdir()
    (shadowing / "safetensors" / "__init__.py").write_text("")

    def both(pythonpath: str, var: str) -> tuple[dict, dict]:
        child_env = {**env, "PYTHONPATH": pythonpath, "PROBE_VAR": var, zygote.PER_CHILD: "PROBE_VAR"}
        out = tmp_path / "out.txt"
        with out.open("w") as sink, open(os.devnull) as null:
            child = zygote.fork("probe_main", [], env=child_env, stdio=(null.fileno(), sink.fileno(), sink.fileno()),
                                session=False, cwd=str(cwd))
        assert isinstance(child, zygote.Forked) and child.wait() == 0, out.read_text()
        fresh = subprocess.run([sys.executable, "-m", "probe_main"], cwd=cwd, env=child_env, capture_output=True,
                               text=True, check=True)
        got, want = json.loads(out.read_text()), json.loads(fresh.stdout)
        assert got.pop("pid") == child.pid  # (a fresh start keeps the forked child's pid)
        want.pop("pid")
        assert not want.pop("preloaded")
        return got, want

    got, want = both(f"{plain}{os.pathsep}relative", "one")
    assert got.pop("preloaded") and got == want and got["where"] == "plain"
    assert got["path"] == [str(cwd), str(plain), str(cwd / "relative")] and got["var"] == "one"
    assert "site-packages" in got["safetensors"]
    (cwd / "harness").mkdir()  # another checkout's harness: the zygote forgets its own, and still forks
    (cwd / "harness" / "__init__.py").write_text("")
    got, want = both(str(plain), "one")
    assert got.pop("preloaded") and got == want and got["harness"] == str(cwd / "harness" / "__init__.py")
    shutil.rmtree(cwd / "harness")
    got, want = both(str(shadowing), "two")
    assert not got.pop("preloaded") and got == want and got["var"] == "two"
    assert got["safetensors"] == str(shadowing / "safetensors" / "__init__.py")
    assert len(zygote._ZYGOTES) == 1  # one zygote for all three
