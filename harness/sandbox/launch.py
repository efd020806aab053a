"""Run a defence or an attack in its own process (`harness.sandbox.worker`) with only its inputs.

`run_plugin` saves the stage's allowed splits (`harness.data.views.STAGE_SPLITS`) into a private temporary
folder, writes a request naming them, the model the plugin starts from (a `ModelPlan`: folders, read-only), its
config, seed, prompt format and context length, and starts `python -m harness.sandbox.worker REQUEST.json`
(forked from a warm interpreter that has imported torch and transformers, `harness.processes.zygote`, where it
can be) with the guard's `Policy`: no import of the suite's data builders, no read of the store but the plugin's
own input and output folders, no process, no network. The environment names no store (`HARNESS_HOME` is an empty
folder) and fixes the hash seed, so a plugin that hashes strings gives one result per run id.

The stage then raises what the plugin did wrong (`Outcome.raise_for_failure`: a withheld split, a guard
refusal, a plugin error) and reads back the curve snapshots (`load_snapshot`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import registry
from harness.data.views import SplitAccessError, allowed, message
from harness.errors import PluginRefused, TrainingDiverged
from harness.plugins import StageContext
from harness.processes.zygote import SHARED, fork
from harness.progress import new_events, relay
from harness.sandbox.guard import Policy, SandboxError
from harness.sandbox.guard import message as guard_message
from harness.sandbox.worker import ModelPlan, Request, Response, Snapshot

RUN_HASH_SEED = 0  # PYTHONHASHSEED of every run's plugin process (the check uses others)


class PluginFailed(RuntimeError):
    """A plugin raised (not bad input: a bug in it), or its process died. Carries the plugin's traceback."""


@dataclasses.dataclass
class Outcome:
    """What a plugin process left: its response (None: it died first), its private folder, its exit code."""

    who: str
    stage: str
    response: Response | None
    work: Path
    returncode: int
    reads: tuple[str, ...] = ()  # the further splits the plugin declares it reads

    def raise_for_failure(self) -> Response:
        """The response of a plugin that succeeded; else the stage's error, in the order a reader needs it: a
        withheld split (even if the plugin then failed), a guard refusal, the plugin's own HarnessError (one
        line), any other failure."""
        resp = self.response
        if resp is None:
            raise PluginFailed(f"{self.who}'s process exited with code {self.returncode} without a result: "
                               f"{_tail(self.work / 'worker.log')} (log: {self.work / 'worker.log'})")
        if resp.withheld:
            raise SplitAccessError(message(self.stage, resp.withheld, self.who, self.reads))
        if resp.violations:
            raise SandboxError(guard_message(self.who, resp.violations[0]))
        if resp.error and resp.harness_error:
            kind, _, text = resp.error.partition(": ")
            if kind == TrainingDiverged.__name__:  # a failed run, not bad input: the stage names itself (exit 1)
                raise TrainingDiverged(text)
            raise PluginRefused(text)
        if resp.error or resp.save_error:
            what = resp.error or f"its model does not save: {resp.save_error}"
            raise PluginFailed(f"{self.who} failed: {what}\n{resp.traceback}")
        return resp

    def cleanup(self) -> None:
        """Delete the private folder (data copies, snapshots); a process that died keeps its log there."""
        if self.response is None:
            for sub in ("data", "curve", "home"):
                shutil.rmtree(self.work / sub, ignore_errors=True)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def model_plan(stages: Any, ref: str, dtype: str | None = None) -> ModelPlan:
    """How `Stages.load(ref)` loads a model, as folders: the checkpoint, then each adapter merged onto it."""
    adapters: list[str] = []
    while (adapter := stages.adapter(ref)) is not None:
        adapters.insert(0, str(adapter[1]))
        ref = adapter[0]
    return ModelPlan(path=str(stages.model_path(ref)), adapters=adapters, dtype=dtype or stages.loading.dtype,
                     trust_remote_code=stages.loading.trust_remote_code)


def policy(plugin: registry.Plugin, *, store_root: Path | None, allow: list[Path]) -> Policy:
    """The guard of a plugin's process: the packages of every suite and task entry point (and the suite
    loader) neither importable nor readable, the store and the datasets caches unreadable but for `allow`.
    A package that holds the plugin itself stays open (an outside distribution may ship both)."""
    def own(module: str) -> bool:
        return plugin.module == module or plugin.module.startswith(module + ".")

    modules = {"harness.resolve"}
    for kind in ("suite", "task"):
        for declared in registry.declared_modules(kind):  # type: ignore[arg-type]
            top = declared.split(".")[0]
            modules.add(declared.rpartition(".")[0] or declared if own(top) else top)
    modules = {m for m in modules if not own(m)}
    labels = {str(store_root): "the store, beyond the plugin's own model"} if store_root is not None else {}
    for module in sorted(modules):
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            continue
        if spec is not None:
            for path in list(spec.submodule_search_locations or []) or ([spec.origin] if spec.origin else []):
                labels[path] = f"the source of '{module}', which builds the suite's data"
    labels |= {path: "a datasets cache" for path in _datasets_caches()}
    return Policy(modules=sorted(modules), paths=list(labels), allow=[str(p) for p in allow], labels=labels)


def _datasets_caches() -> list[str]:
    """Where `datasets` and the hub keep downloaded datasets (a suite's evaluation data may be there)."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    out = [os.environ.get("HF_DATASETS_CACHE", str(home / "datasets"))]
    hub = Path(os.environ.get("HF_HUB_CACHE", home / "hub"))
    return out + [str(p) for p in hub.glob("datasets--*")]


def materialise(data: Any, stage: str, folder: Path, reads: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Save the splits `stage` (with its plugin's declared `reads`) may read into `folder` (a `datasets.Dataset`
    as an Arrow folder; a list of rows as one first); nothing else of `data` leaves this process."""
    from datasets import Dataset
    from datasets.utils import logging as datasets_logging

    out: dict[str, str | None] = {}
    bars = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()  # a copy, not a step the user waits for: the stage's bar says enough
    try:
        for name in allowed(stage, reads):
            split = getattr(data, name)
            if split is None:
                out[name] = None
                continue
            if not isinstance(split, Dataset):
                split = Dataset.from_list(list(split))
            split.save_to_disk(str(folder / name))
            out[name] = str(folder / name)
    finally:
        if bars:
            datasets_logging.enable_progress_bar()
    return out


def run_plugin(kind: registry.Kind, name: str, params: dict[str, Any], plan: ModelPlan, ctx: StageContext, *,
               out: Path, store_root: Path | None, progress: Callable[..., None] | None = None, curve: bool = False,
               check: bool = False, hash_seed: int = RUN_HASH_SEED) -> Outcome:
    """Run plugin `kind:name` with `params` in its own process on the model of `plan` and `ctx`'s data view;
    its model is saved into `out`. `hash_seed` other than the run's also moves the global RNG seed (the
    check's second process must differ in every source of randomness the plugin should not use)."""
    plugin = registry.get(kind, name)
    work = Path(tempfile.mkdtemp(prefix=f"harness-{kind}-"))
    try:
        return _start(plugin, params, plan, ctx, work, out=out, store_root=store_root, progress=progress,
                      curve=curve, check=check, hash_seed=hash_seed)
    except BaseException:  # interrupted (Ctrl-C, SIGTERM) or a bad request: nothing of it stays
        shutil.rmtree(work, ignore_errors=True)
        raise


def _start(plugin: registry.Plugin, params: dict[str, Any], plan: ModelPlan, ctx: StageContext, work: Path, *,
           out: Path, store_root: Path | None, progress: Callable[..., None] | None, curve: bool, check: bool,
           hash_seed: int) -> Outcome:
    from harness.models.plugin_inputs import located
    from harness.store.artifacts import Store

    kind, name = plugin.kind, plugin.name
    (work / "home").mkdir()
    checkpoints = located(plugin.config.model_validate(params), Store(store_root) if store_root else None,
                          input_model=Path(plan.path), trust_remote_code=plan.trust_remote_code)  # its config's
    allow = [Path(plan.path), *map(Path, plan.adapters), out, *checkpoints.values()]
    threads = None
    if "torch" in sys.modules:
        import torch

        threads = torch.get_num_threads()
    splits = materialise(ctx.data, kind, work / "data", plugin.reads)
    from harness.models.loading import torch_device

    req = Request(kind=kind, name=name, params=params, model=plan, splits=splits,
                  evidence=dict(ctx.data.evidence), seed=ctx.seed, rng_seed=(ctx.seed + hash_seed * 1_000_003) % 2**63,
                  max_length=ctx.max_length, template=ctx.template, every=ctx.every, points=ctx.points, curve=curve,
                  check=check, threads=threads, device=torch_device(), out=str(out), work=str(work),
                  checkpoints={field: str(path) for field, path in checkpoints.items()},
                  policy=policy(plugin, store_root=store_root, allow=allow))
    (work / "request.json").write_text(req.model_dump_json())
    env = worker_env(work / "home", hash_seed)
    from harness.stages import free_memory

    free_memory()  # the parent's cached GPU blocks go back before the plugin needs them
    with (work / "worker.log").open("w") as log, open(os.devnull) as null:
        argv = [str(work / "request.json")]  # in its own session: its DataLoader workers end with its group
        proc = fork("harness.sandbox.worker", argv, env=env, stdio=(null.fileno(), log.fileno(), log.fileno()),
                    session=True, per_child=("HARNESS_HOME",)) or subprocess.Popen(
            [sys.executable, "-m", "harness.sandbox.worker", *argv], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            _follow(proc, work / "events.jsonl", progress, work / "response.json")
        finally:
            _kill_group(proc)
    path = work / "response.json"
    response = Response.model_validate_json(path.read_text()) if path.exists() else None
    return Outcome(f"{kind} '{name}'", kind, response, work, proc.returncode, plugin.reads)


def worker_env(home: Path, hash_seed: int) -> dict[str, str]:
    """A plugin process's environment: this process's, with an empty store, the hash seed, every hub offline, and
    no folder of shared zygotes (a plugin reaches no process that forks). The same for every plugin process of a
    run, whether or not this process has loaded a model yet: it is the zygote's key."""
    env = {k: v for k, v in os.environ.items() if k != SHARED}
    return {**env, "HARNESS_HOME": str(home), "PYTHONHASHSEED": str(hash_seed), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # (as quiet_hf sets it)


EXIT_GRACE = 30.0  # seconds a worker may take to exit once its response is written (then its group is killed)


def _follow(proc: Any, events: Path, progress: Callable[..., None] | None, response: Path | None = None,
            grace: float = EXIT_GRACE) -> None:
    """Forward the worker's progress events until it exits, or until `grace` seconds after it wrote `response`:
    what it made is saved by then, and a process stuck in its teardown (a library's exit handler, a GPU driver's)
    must not hold the stage (the caller kills its group)."""
    offset, answered = 0, None
    while True:
        exited = proc.poll() is not None
        found, offset = new_events(events, offset)
        for event in found:
            relay(progress, event)
        if exited:
            return
        if answered is None and response is not None and response.exists():
            answered = time.monotonic()
        if answered is not None and time.monotonic() - answered > grace:
            return
        time.sleep(0.2)


def _kill_group(proc: Any) -> None:
    import signal

    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _tail(log: Path) -> str:
    lines = [x for x in (log.read_text(errors="replace").splitlines() if log.exists() else []) if x.strip()]
    return lines[-1].strip() if lines else "(no output)"


def load_snapshot(stages: Any, source_ref: str, snap: Snapshot) -> Any:
    """The model of a curve snapshot as it was in memory at that step: a full checkpoint in its dtype, or the
    plugin's input model with the adapter on top, unmerged (as it trained)."""
    from harness.models.loading import load_causal_lm

    if not snap.adapter:
        return load_causal_lm(Path(snap.path), snap.dtype, trust_remote_code=stages.loading.trust_remote_code)[0]
    from peft import PeftModel

    base, _ = stages.load(source_ref, snap.dtype)
    return PeftModel.from_pretrained(base, snap.path, autocast_adapter_dtype=False).eval()
