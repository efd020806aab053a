"""Where a sweep's jobs run. Both executors take a `Job` and return a `concurrent.futures.Future` of its
result (harness.sweep.jobs.execute's dict); a failure is the future's exception, one readable line in `JobFailed`.

- `local`: each job in its own process (`python -m harness.sweep.jobs JOB.json`), at most `max_parallel` at once,
  each with the suite's CPU threads (one on a small CPU: OMP_NUM_THREADS, MKL_NUM_THREADS and torch's). A job's
  `warning:` lines are shown on the sweep's output as they come, prefixed with the job's label.
- `ray`: each job a Ray task with the suite's resource needs (CPUs, GPUs, memory), on the cluster at
  `address` (`ray.init(address=...)`: "auto", "ray://host:10001", ...) or on a local one started here. The
  artifact store and the results folder must be paths every node sees (a shared file system): the jobs
  write there, and the store's locks keep concurrent writers of one artifact safe. Ray forwards its workers'
  output, warnings included, to the sweep's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from harness.errors import HarnessError
from harness.processes.zygote import fork, share_with_descendants
from harness.safety import clip
from harness.suite import StageResources
from harness.sweep.jobs import Job, write_job

RAY_EXTRA = "pip install 'immunization-bench[ray]'"


class JobFailed(Exception):
    """A job that did not finish: `error` is one line, `detail` the end of its output."""

    def __init__(self, error: str, detail: str = ""):
        super().__init__(error)
        self.error, self.detail = error, detail


class Executor(Protocol):
    name: str
    parallel: int | None  # jobs in flight at most (None: as many as the cluster schedules)

    def submit(self, job: Job) -> Future[dict[str, Any]]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Jobs in separate processes on this machine, `parallel` at a time."""

    name = "local"

    def __init__(self, parallel: int, resources: StageResources):
        self.parallel, self.resources = parallel, resources
        share_with_descendants()  # the jobs' plugin processes come from this sweep's zygotes, not one per job
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="sweep")
        self._procs: set[Any] = set()  # Popen or zygote children
        self._lock = threading.Lock()

    def submit(self, job: Job) -> Future[dict[str, Any]]:
        return self._pool.submit(self._run, job)

    def _run(self, job: Job) -> dict[str, Any]:
        threads = str(job.threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
        proc = _start(str(write_job(job)), env)
        with self._lock:
            self._procs.add(proc)
        try:
            out, err = _communicate(proc, job.label)
        finally:
            with self._lock:
                self._procs.discard(proc)
        if proc.returncode != 0:
            raise JobFailed(error_line(err, proc.returncode), err[-4000:])
        return json.loads(out.strip().splitlines()[-1])

    def close(self) -> None:
        """Stop what still runs (Ctrl-C, an error in the sweep itself): the store keeps every finished stage."""
        with self._lock:
            for proc in self._procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        self._pool.shutdown(wait=True, cancel_futures=True)


def _start(job_file: str, env: dict[str, str]) -> Any:
    """`python -m harness.sweep.jobs JOB_FILE` in this process's group, its stdout and stderr as text pipes:
    forked from a warm interpreter where it can be (harness.processes.zygote), else started afresh."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        with open(os.devnull) as null:
            child = fork("harness.sweep.jobs", [job_file], env=env, stdio=(null.fileno(), out_w, err_w),
                         session=False)
    finally:
        os.close(out_w)
        os.close(err_w)
    if child is None:
        os.close(out_r)
        os.close(err_r)
        return subprocess.Popen([sys.executable, "-m", "harness.sweep.jobs", job_file], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
    child.stdout, child.stderr = open(out_r), open(err_r)  # noqa: SIM115  (closed by _communicate)
    return child


def _communicate(proc: Any, label: str) -> tuple[str, str]:
    """(stdout, stderr) of a job's process, as `communicate` gives them, while its `warning:` lines (a damaged
    artifact being recomputed, a record kept that this run's metrics contradict) are shown on the sweep's own
    output as they come, named by the job: captured output would hide them until the job failed, or for good."""
    from harness.progress import warn

    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None  # both are pipes (_start)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(stdout.read()), daemon=True)
    reader.start()  # stdout in its own thread: a full pipe must never block the job while stderr is read here
    err = []
    for line in stderr:
        err.append(line)
        if line.startswith("warning: "):
            warn(f"{label}: {line.removeprefix('warning: ').rstrip()}")
    proc.wait()
    reader.join()
    stdout.close()
    stderr.close()
    return "".join(out), "".join(err)


def error_line(stderr: str, returncode: int) -> str:
    """The line that says why a job failed: its `error:` line, else the last line (a traceback's exception)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    if errors:
        return errors[-1].removeprefix("error: ")
    if returncode < 0:
        return f"killed by signal {-returncode}" + (f" (last output: {lines[-1]})" if lines else "")
    return lines[-1] if lines else f"exit code {returncode}, no output"


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise HarnessError(f"--executor ray needs the ray extra: {RAY_EXTRA} (found: not installed)") from None
    return ray


def _ray_job(data: dict[str, Any]) -> dict[str, Any]:
    """A Ray task: one job in the worker's process. A harness error travels back as one line."""
    from harness.errors import HarnessError
    from harness.sweep.jobs import Job, execute

    try:
        return execute(Job.model_validate(data))
    except HarnessError as exc:
        raise JobFailed(str(exc)) from None


class RayExecutor:
    """Jobs as Ray tasks with the suite's resource needs, on an existing cluster or a local one."""

    name = "ray"

    def __init__(self, parallel: int | None, resources: StageResources, address: str | None = None):
        ray = require_ray()
        self.parallel, self._ray = parallel, ray
        self._started = not ray.is_initialized()
        if self._started:
            if address is None:  # a local cluster started for this sweep: its jobs are the work, not background
                os.environ.setdefault("RAY_worker_niceness", "0")  # (Ray nices workers to 15 by default)
            ray.init(address=address, include_dashboard=False, logging_level="WARNING")
        options: dict[str, Any] = {"num_cpus": resources.cpus, "num_gpus": resources.gpus, "max_retries": 0}
        if resources.memory_gb:
            options["memory"] = int(resources.memory_gb * 2**30)
        self._task = ray.remote(_ray_job).options(**options)

    def submit(self, job: Job) -> Future[dict[str, Any]]:
        return self._task.remote(job.model_dump(mode="json")).future()

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def ray_error(exc: BaseException) -> JobFailed:
    """A Ray task's failure as one line: the harness error it raised, or the exception inside RayTaskError."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, JobFailed):
        return cause
    if isinstance(exc, JobFailed) and hasattr(exc, "error"):
        return exc
    inner = cause if isinstance(cause, BaseException) else exc
    return JobFailed(f"{type(inner).__name__}: {clip(str(inner))}", str(exc)[-4000:])


def make_executor(name: str, *, parallel: int | None, resources: StageResources,
                  address: str | None = None) -> Executor:
    if name == "ray":
        return RayExecutor(parallel, resources, address)
    return LocalExecutor(parallel or 1, resources)
