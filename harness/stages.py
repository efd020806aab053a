"""The cached-stage helper: every stage of a run is `inputs -> key -> artifact`.

A stage names its inputs (a JSON-able dict); their hash is the artifact's key in the store. On a cache
miss, `build(folder)` fills a temporary folder that becomes the artifact atomically, with the stage name
and its inputs in its `meta.json`; on a hit nothing runs. Each stage's time, key and hit are kept for the
record's provenance. Models are named by *refs* ('store:models/<key>' or the base model's id), so a
defence that changes nothing is an alias of its input and shares every cached evaluation with it. A base
model named by a hub id is *bound* to its local snapshot folder; every model of a run loads in the run's
dtype (`Loading`). A stored model may be a LoRA adapter (`adapter_of` in its metadata names its base's ref):
`load` applies it to its base, `adapter` tells generation to serve it. Each stage's peak memory (CUDA
allocator on a GPU, resident set on CPU; a vLLM engine's own process is not counted) is kept with its time.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import DiskFullError, TrainingDiverged
from harness.results.records import StageInfo
from harness.specs import stable_hash
from harness.store.artifacts import Store, atomic_write_text, resolve_ref

# The stage kinds, defined where the store decides which folders hold artifacts; imported from here by the stages.
from harness.store.layout import (  # noqa: F401
    DEGENERATE,
    FLOORS,
    GENERATIONS,
    GOLD_NLL,
    MODELS,
    SCORES,
    STABILITY,
    TRAINABILITY,
)

# build(folder) writes the artifact's files into `folder`; it may return extra metadata for meta.json.
Build = Callable[[Path], Mapping[str, Any] | None]


@dataclass(frozen=True)
class Loading:
    """How every model of a run is loaded: the run spec's dtype, and remote code only where a suite opts in."""

    dtype: str = "float32"
    trust_remote_code: bool = False


class Stages:
    """Runs cached stages against one store and keeps their timings for the record."""

    def __init__(self, store: Store, *, force: bool = False, loading: Loading = Loading()):
        self.store, self.force, self.loading = store, force, loading
        self.info: dict[str, StageInfo] = {}
        self._bound: dict[str, Path] = {}
        self._peaks: list[tuple[float, float]] = []  # (end time, peak MiB) of every stage, for enclosing stages

    def cached(self, name: str, kind: str, inputs: Mapping[str, Any], build: Build) -> str:
        """Stage `name`: the artifact of `kind` keyed by the hash of `inputs`, built on a miss. Returns the key."""
        from harness.models.memory import reset_peak

        key = stable_hash(dict(inputs))
        start = time.perf_counter()
        reset_peak()
        # Under the artifact's lock: an identical concurrent run waits here, then finds the artifact.
        try:
            with self.store.compute_once(kind, key, force=self.force) as need:
                if need:
                    meta: dict[str, Any] = {"stage": name, "inputs": dict(inputs)}
                    with self.store.writing(kind, key, meta, force=self.force) as tmp:
                        meta.update(build(tmp) or {})
        except DiskFullError as exc:  # name the stage (the innermost one: a nested stage's error is kept)
            if exc.stage_named:
                raise
            raise DiskFullError(name, exc.path, stage_named=True) from None
        except TrainingDiverged as exc:  # nothing was stored; the line says which stage and which setting
            if exc.stage is not None:
                raise
            hint = {"defend": "; lower defence.lr", "attack": "; lower attack.lr"}.get(name, "")
            raise TrainingDiverged(f"{name} stage: {exc}{hint}", stage=name) from None
        made = self.info.get(name)
        if need or made is None or made.key != key:  # a repeat lookup of this run's own stage keeps its entry
            self.timed(name, start, cached=not need, key=key)
        return key

    def cached_value(self, name: str, kind: str, inputs: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
        """A stage whose artifact is one JSON value: `compute()` once per key."""
        def build(tmp: Path) -> None:
            atomic_write_text(tmp / "value.json", json.dumps(compute()))

        key = self.cached(name, kind, inputs, build)
        return json.loads((self.store.path(kind, key) / "value.json").read_text())

    def timed(self, name: str, start: float, *, cached: bool = False, key: str = "") -> None:
        """Record a stage that stores nothing of its own (its sub-stages are cached): its time, and its peak
        memory (the largest of its sub-stages' and of the window since the last of them began)."""
        from harness.models.memory import memory_kind, peak_mb

        now = time.perf_counter()
        peak = max([peak_mb(), *(p for t, p in self._peaks if t >= start)])
        self._peaks.append((now, peak))
        self.info[name] = StageInfo(seconds=round(now - start, 3), cached=cached, key=key, peak_mb=peak,
                                    memory=memory_kind())

    def model_ref(self, key: str) -> str:
        """The ref of a stored model, following the alias a defence that changed nothing leaves behind."""
        return self.store.meta(MODELS, key).get("alias") or f"store:{MODELS}/{key}"

    def service_adapter(self, key: str) -> Path | None:
        """The folder of the service adapter a defence kept back beside the stored model `key`, if it did."""
        from harness.training.service import FOLDER

        return self.store.path(MODELS, key) / FOLDER if self.store.meta(MODELS, key).get("service_adapter") else None

    def bind(self, ref: str, path: Path) -> None:
        """Load `ref` (e.g. a hub id) from the local folder `path` (its snapshot)."""
        self._bound[ref] = Path(path)

    def model_path(self, ref: str) -> Path:
        return self._bound.get(ref) or Path(resolve_ref(ref, self.store))

    def adapter(self, ref: str) -> tuple[str, Path] | None:
        """(ref of its base, adapter folder) if `ref` names a stored LoRA adapter, else None."""
        prefix = f"store:{MODELS}/"
        if not ref.startswith(prefix) or "/" in ref[len(prefix):]:
            return None
        key = ref[len(prefix):]
        base = self.store.meta(MODELS, key).get("adapter_of")
        return (base, self.store.path(MODELS, key)) if base else None

    def load(self, ref: str, dtype: str | None = None) -> tuple[Any, Any]:
        """(model, tokenizer) of a ref, loaded as the run loads every model (`dtype`: another dtype). A stored
        adapter is loaded onto its base and merged, so every consumer sees a plain model."""
        from harness.models.loading import load_causal_lm

        adapter = self.adapter(ref)
        if adapter is not None:
            from harness.training.lora import load_adapter_model

            base, tok = self.load(adapter[0], dtype)
            return load_adapter_model(base, adapter[1], merge=True), tok
        return load_causal_lm(self.model_path(ref), dtype or self.loading.dtype,
                              trust_remote_code=self.loading.trust_remote_code)

    @contextlib.contextmanager
    def loaded(self, ref: str, dtype: str | None = None) -> Iterator[tuple[Any, Any]]:
        """`load` for one block: the model is freed (and cached GPU memory returned) when the block ends, so a
        model a stage needs (e.g. the undefended base for scoring) is never held through the next stage."""
        model, tok = self.load(ref, dtype)
        try:
            yield model, tok
        finally:
            del model
            free_memory()

    def backend_options(self) -> dict[str, Any]:
        """The loading options a generation backend takes."""
        return {"dtype": self.loading.dtype, "trust_remote_code": self.loading.trust_remote_code}


def data_fingerprint(dataset: Any) -> str:
    """Content hash of a dataset's rows (order included); a missing dataset hashes as '-'."""
    if dataset is None:
        return "-"
    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    return stable_hash(rows)


_FROZEN = False


def freeze_long_lived() -> None:
    """Once per process, after the libraries a run needs are imported: collect, then move every object alive now
    (modules, classes, the suite's data) to the garbage collector's permanent generation, so each `free_memory`
    after a model is dropped scans what the runs created, not the whole of torch and transformers again (a full
    collection took ~0.25 s: 24 of them 5.9 s of a 53.6 s profiled smoke run). What later runs create is collected
    as before."""
    import atexit
    import gc

    global _FROZEN
    if not _FROZEN:
        import transformers.modeling_utils  # noqa: F401  (the heavy imports every run makes, made now)

        gc.collect()
        gc.freeze()
        atexit.register(gc.unfreeze)  # finalized at exit as before (native bindings check their objects then)
        _FROZEN = True


def free_memory() -> None:
    """Collect garbage and return cached CUDA blocks (after a model is dropped)."""
    import gc
    import sys

    gc.collect()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
