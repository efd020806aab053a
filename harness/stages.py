"""The cached-stage helper: every stage of a run is `inputs -> key -> artifact`.

A stage names its inputs (a JSON-able dict); their hash is the artifact's key in the store. On a cache
miss, `build(folder)` fills a temporary folder that becomes the artifact atomically, with the stage name
and its inputs in its `meta.json`; on a hit nothing runs. Each stage's time, key and hit are kept for the
record's provenance. Models are named by *refs* ('store:models/<key>' or the base model's id), so a
defence that changes nothing is an alias of its input and shares every cached evaluation with it. A base
model named by a hub id is *bound* to its local snapshot folder; every model of a run loads in the run's
dtype (`Loading`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.records import StageInfo
from harness.specs import stable_hash
from harness.store import Store, atomic_write_text, resolve_ref

MODELS, GENERATIONS, SCORES = "models", "generations", "scores"
DEGENERATE, STABILITY, TRAINABILITY, GOLD_NLL = "degenerate", "stability", "trainability", "gold_nll"

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

    def cached(self, name: str, kind: str, inputs: Mapping[str, Any], build: Build) -> str:
        """Stage `name`: the artifact of `kind` keyed by the hash of `inputs`, built on a miss. Returns the key."""
        key = stable_hash(dict(inputs))
        start = time.perf_counter()
        # Under the artifact's lock: an identical concurrent run waits here, then finds the artifact.
        with self.store.compute_once(kind, key, force=self.force) as need:
            if need:
                meta: dict[str, Any] = {"stage": name, "inputs": dict(inputs)}
                with self.store.writing(kind, key, meta, force=self.force) as tmp:
                    meta.update(build(tmp) or {})
        self.timed(name, start, cached=not need, key=key)
        return key

    def cached_value(self, name: str, kind: str, inputs: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
        """A stage whose artifact is one JSON value: `compute()` once per key."""
        def build(tmp: Path) -> None:
            atomic_write_text(tmp / "value.json", json.dumps(compute()))

        key = self.cached(name, kind, inputs, build)
        return json.loads((self.store.path(kind, key) / "value.json").read_text())

    def timed(self, name: str, start: float, *, cached: bool = False, key: str = "") -> None:
        """Record a stage that stores nothing of its own (its sub-stages are cached)."""
        self.info[name] = StageInfo(seconds=round(time.perf_counter() - start, 3), cached=cached, key=key)

    def model_ref(self, key: str) -> str:
        """The ref of a stored model, following the alias a defence that changed nothing leaves behind."""
        return self.store.meta(MODELS, key).get("alias") or f"store:{MODELS}/{key}"

    def bind(self, ref: str, path: Path) -> None:
        """Load `ref` (e.g. a hub id) from the local folder `path` (its snapshot)."""
        self._bound[ref] = Path(path)

    def model_path(self, ref: str) -> Path:
        return self._bound.get(ref) or Path(resolve_ref(ref, self.store))

    def load(self, ref: str) -> tuple[Any, Any]:
        """(model, tokenizer) of a ref, loaded as the run loads every model."""
        from harness.models import load_causal_lm

        return load_causal_lm(self.model_path(ref), self.loading.dtype,
                              trust_remote_code=self.loading.trust_remote_code)

    def backend_options(self) -> dict[str, Any]:
        """The loading options a generation backend takes."""
        return {"dtype": self.loading.dtype, "trust_remote_code": self.loading.trust_remote_code}


def fingerprint(dataset: Any) -> str:
    """Content hash of a dataset's rows (order included); a missing dataset hashes as '-'."""
    if dataset is None:
        return "-"
    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    return stable_hash(rows)
