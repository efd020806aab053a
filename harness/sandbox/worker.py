"""A defence's or an attack's own process: `python -m harness.sandbox.worker REQUEST.json`.

The stage that runs a plugin (`harness.sandbox.launch`) starts this process with only what the plugin may
have: the model it starts from (folders, read-only), its stage's splits (saved to a private folder), its
config, the seed, the prompt format and the context length. It loads the model and the data, seeds the global
RNGs from the request, installs the guard (`harness.sandbox.guard`), and only then imports and calls the
plugin, so the plugin's own imports are guarded too. It saves the plugin's model (or adapter) into the
request's `out` folder exactly as the stage did in-process, and writes a `Response`. Progress and the
attack's curve snapshots are JSON-lines events in `events`.

With `check` (`harness plugins check`) it also reports what the check measures of the in-memory model
(`harness.sandbox.inspection`). A run and a check differ only in that flag, the hash seed and the global RNG
seed: the plugin's inputs are built the same way in both.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.processes.lifetime import die_with_parent
from harness.sandbox.guard import VIOLATIONS, Policy, install
from harness.training.collate import PromptFormat


class ModelPlan(BaseModel):
    """How to load the model a plugin starts from, as `Stages.load` does: a checkpoint, then adapters merged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    adapters: list[str] = Field(default_factory=list, description="LoRA adapter folders merged in order")
    service_adapter: str | None = Field(None, description="a service adapter's folder: attached, frozen and active "
                                        "in training mode only, while the plugin runs (harness.training.service)")
    dtype: str = "float32"
    trust_remote_code: bool = False


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["defence", "attack"]
    name: str
    params: dict[str, Any]
    model: ModelPlan
    splits: dict[str, str | None] = Field(description="allowed split -> its saved dataset folder (None: absent)")
    evidence: dict[str, Any] = Field(default_factory=dict, description="how the suite built its data (counts)")
    seed: int
    rng_seed: int = Field(description="seeds Python's, NumPy's and torch's global RNGs before the plugin runs")
    max_length: int
    template: PromptFormat = Field(description="the suite's prompt format")
    every: int = 0
    points: int = 0
    curve: bool = Field(False, description="save the model at each training callback (a resistance curve)")
    check: bool = Field(False, description="report what `plugins check` measures of the in-memory model")
    threads: int | None = Field(None, description="torch CPU threads (the parent's)")
    device: str = Field("cpu", description="the device the parent runs models on (harness.models.loading): the "
                        "model must load onto it here too")
    out: str = Field(description="folder the plugin's model is saved into")
    checkpoints: dict[str, str] = Field(default_factory=dict, description="config field -> the local folder of the "
                                        "checkpoint it names (harness.models.plugin_inputs)")
    work: str = Field(description="private folder: events, response, curve snapshots, probe")
    policy: Policy


class Snapshot(BaseModel):
    step: int
    path: str
    dtype: str
    adapter: bool


class Response(BaseModel):
    result: Literal["model", "adapter", "unchanged"] | None = Field(None, description="None: the plugin failed")
    service_adapter: bool = Field(False, description="the defence kept a service adapter back (saved beside it)")
    error: str = ""
    harness_error: bool = Field(False, description="the plugin raised a HarnessError (bad input, one line)")
    traceback: str = ""
    withheld: list[str] = Field(default_factory=list, description="withheld splits the plugin touched")
    violations: list[str] = Field(default_factory=list, description="what the guard refused")
    seconds: float = 0.0
    snapshots: list[Snapshot] = Field(default_factory=list)
    # With `check`: what was measured of the in-memory model.
    architecture: str = Field("", description="how the returned model differs from the input ('' if it does not)")
    changes: list[str] = Field(default_factory=list, description="hooks, forwards or classes the plugin changed")
    save_error: str = ""
    digests: dict[str, str] = Field(default_factory=dict)
    dtype: str = ""


def main(request_path: str) -> None:
    req = Request.model_validate_json(Path(request_path).read_text())
    work = Path(req.work)
    events = (work / "events.jsonl").open("a", buffering=1)

    def emit(**event: Any) -> None:
        events.write(json.dumps(event) + "\n")

    _exit_with_parent()
    import torch

    from harness.data.views import view
    from harness.training.loop import seed_everything

    if req.threads:
        torch.set_num_threads(req.threads)
    model, tok = load(req.model)
    found = next(model.parameters()).device.type
    if found != req.device:  # never train on another device than the run's without a word
        resp = Response(error=f"RuntimeError: the plugin's process loaded its model on {found}, but the run's device "
                        f"is {req.device} (a process forked after CUDA was initialised cannot use it; set "
                        "HARNESS_ZYGOTE=0 to start every plugin process afresh)")
        (work / "response.json.tmp").write_text(resp.model_dump_json())
        os.replace(work / "response.json.tmp", work / "response.json")
        return
    log: list[str] = []
    from harness import registry

    reads = registry.get(req.kind, req.name).reads  # the further splits the plugin declares it reads
    data = view(load_data(req), req.kind, log, reads)  # the defence and attack stages' views are named by the kind
    before = _prepare_check(model, tok) if req.check else None
    detach = None
    if req.model.service_adapter:  # read before the guard is installed: the plugin never opens its folder
        from harness.training.service import attach

        detach = attach(model, Path(req.model.service_adapter))
    seed_everything(req.rng_seed)
    install(req.policy)
    resp, returned = run(req, model, tok, data, emit)
    if detach is not None:
        detach()
    resp.withheld, resp.violations = list(dict.fromkeys(log)), list(dict.fromkeys(VIOLATIONS))
    if before is not None and not resp.error:
        _report(req, resp, model, returned, before)
    (work / "response.json.tmp").write_text(resp.model_dump_json())
    os.replace(work / "response.json.tmp", work / "response.json")


def load(plan: ModelPlan) -> tuple[Any, Any]:
    """(model, tokenizer) as `Stages.load` gives them: the checkpoint in the run's dtype, adapters merged."""
    from harness.models.loading import load_causal_lm

    model, tok = load_causal_lm(Path(plan.path), plan.dtype, trust_remote_code=plan.trust_remote_code)
    for adapter in plan.adapters:
        from harness.training.lora import load_adapter_model

        model = load_adapter_model(model, Path(adapter), merge=True)
    return model, tok


def load_data(req: Request) -> Any:
    """`SuiteData` holding the stage's allowed splits (loaded from their saved folders) and the evidence; every
    other field is empty here (the view then withholds it): this process never had it."""
    import dataclasses

    from datasets import load_from_disk

    from harness.suite import SuiteData

    required = {f.name: None for f in dataclasses.fields(SuiteData) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING}  # type: ignore[misc]
    splits = {name: load_from_disk(path) if path else None for name, path in req.splits.items()}
    return SuiteData(**{**required, **splits}, evidence=dict(req.evidence))


def run(req: Request, model: Any, tok: Any, data: Any, emit: Any) -> tuple[Response, Any]:
    """Call the plugin on the stage's context and save what it returns into `req.out`. Returns the response
    and what the plugin returned."""
    from harness import registry
    from harness.errors import HarnessError
    from harness.plugins import StageContext

    resp = Response()
    work = Path(req.work)

    def progress(n: int = 1, info: str = "", *, expect: int | None = None) -> None:
        emit(event="progress", n=n, info=info, **({"expect": expect} if expect is not None else {}))

    def callback(step: int, m: Any) -> None:  # the stage's curve: the model at this step, saved for the parent
        if step > 0:
            resp.snapshots.append(_save(m, tok, work / "curve" / f"{step:09d}", step))
            emit(event="snapshot", step=step)

    start = time.perf_counter()
    try:
        plugin = registry.get(req.kind, req.name)
        cfg = plugin.config.model_validate(req.params)
        ctx = StageContext(tokenizer=tok, data=data, max_length=req.max_length, seed=req.seed, progress=progress,
                           callback=callback if req.curve else None, every=req.every, points=req.points,
                           template=req.template,
                           checkpoints={field: Path(path) for field, path in req.checkpoints.items()})
        result = plugin.fn(model, cfg, ctx)
        result = _keep_service_adapter(req, resp, result)  # the released model
    except Exception as exc:  # the plugin's failure is the stage's: reported to the parent, which raises
        resp.seconds = time.perf_counter() - start
        resp.error, resp.harness_error = f"{type(exc).__name__}: {exc}", isinstance(exc, HarnessError)
        resp.traceback = traceback.format_exc(limit=-8)
        return resp, None
    resp.seconds = time.perf_counter() - start
    try:
        resp.result = "unchanged" if result is None else "adapter" if _save(result, tok, Path(req.out)).adapter \
            else "model"
    except Exception as exc:  # a model that does not save: the run fails, the check reports it
        resp.save_error = f"{type(exc).__name__}: {exc}"
        resp.traceback = traceback.format_exc(limit=-8)
    return resp, result


def _keep_service_adapter(req: Request, resp: Response, result: Any) -> Any:
    """A defence's `ServiceAdapter`: its adapter saved into the artifact's service-adapter folder; returns the
    released model (None: unchanged). Anything else passes through."""
    from harness.errors import HarnessError
    from harness.training import service

    if not isinstance(result, service.ServiceAdapter):
        return result
    if req.kind != "defence":
        raise HarnessError(f"{req.kind} '{req.name}' returned a ServiceAdapter; only a defence keeps one back")
    from harness.training.lora import is_adapter_model, save_adapter

    if not is_adapter_model(result.adapter):
        raise HarnessError(f"defence '{req.name}' returned a ServiceAdapter whose adapter is "
                           f"{type(result.adapter).__name__}, not a peft LoRA model")
    folder = Path(req.out) / service.FOLDER
    save_adapter(result.adapter, None, folder)
    service.attach(result.adapter.get_base_model(), folder)()  # one that cannot be attached is refused now, not
    # in every attack later (the base model: its module names are the ones the hooks will find)
    # the adapter's layers out of the model it wraps (the input, if it is released as is), every weight trainable
    result.adapter.unload().requires_grad_(True)
    resp.service_adapter = True
    return result.model


def _save(model: Any, tok: Any, folder: Path, step: int = 0) -> Snapshot:
    """Save a model as the stage stores it: a LoRA adapter alone, else the full checkpoint."""
    from harness.models.loading import save_checkpoint
    from harness.training.lora import is_adapter_model, save_adapter

    folder.mkdir(parents=True, exist_ok=True)
    adapter = is_adapter_model(model)
    (save_adapter if adapter else save_checkpoint)(model, tok, folder)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return Snapshot(step=step, path=str(folder), dtype=dtype, adapter=adapter)


def _prepare_check(model: Any, tok: Any) -> Any:
    """One forward pass asking for hidden states and attentions (transformers installs its own capturing hooks
    on first such use and keeps them: they are not the plugin's), then the model's structure."""
    import torch

    from harness.sandbox.inspection import structure

    with torch.no_grad():
        model(input_ids=torch.tensor([[tok.eos_token_id or 0]], device=model.device), output_hidden_states=True,
              output_attentions=True)
    return {"exact": structure(model), "loose": structure(model, exact=False), "class": type(model),
            "shapes": _shapes(model)}


def _shapes(model: Any) -> dict[str, tuple[Any, str]]:
    return {n: (tuple(t.shape), str(t.dtype)) for n, t in model.state_dict().items()}


def _report(req: Request, resp: Response, model: Any, returned: Any, before: dict[str, Any]) -> None:
    """The check's measurements of the model the plugin returned (an adapter merged, as the evaluation loads
    it): architecture, changed structure, tensor digests, and its logits on the probe (`probe.pt`)."""
    import torch

    from harness.sandbox.inspection import changes, digests, probe_logits, structure
    from harness.training.lora import is_adapter_model

    output = model if returned is None else returned.merge_and_unload() if is_adapter_model(returned) else returned
    if type(output) is not before["class"]:
        resp.architecture = f"returned {type(output).__name__}, input was {before['class'].__name__}"
    else:
        diff = sorted(set(_shapes(output).items()) ^ set(before["shapes"].items()))
        resp.architecture = f"parameters differ in name, shape or dtype: {diff[0][0]}" if diff else ""
    found = changes(before["exact"], structure(model))
    if output is not model:  # another object (a fresh model, a merged adapter): its hooks are its own
        found += changes(before["loose"], structure(output, exact=False))
    resp.changes = list(dict.fromkeys(found))
    resp.digests = digests(output)
    resp.dtype = str(next(output.parameters()).dtype).removeprefix("torch.")
    torch.save(probe_logits(output), Path(req.work) / "probe.pt")


def _exit_with_parent() -> None:
    """End this process when the stage that started it is gone (killed, or ended without waiting): on Linux at
    once (the parent-death signal: an orphan must not write into a folder a resumed run has cleaned), elsewhere
    within a second."""
    parent = os.getppid()
    die_with_parent()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1])
