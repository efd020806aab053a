"""Checks of a run's inputs that need more than its config, done before any stage starts.

Why: a run trains for minutes before it writes its record; a results dir it cannot write, or an attack
that asks for more samples than the split holds, must fail in a second with one line, not after the work.
Config values themselves (types, ranges, finite numbers, seeds) are checked by `harness.resolve`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.results.records import record_path
from harness.specs import RunSpec, stable_hash
from harness.store.artifacts import Store, clean_results_temp
from harness.suite import Suite


def writable_dir(path: Path, what: str) -> None:
    """`path` is a directory this process can write, or can be created as one.

    Probed with a file created and deleted in it (or in its nearest existing parent), so a read-only
    mount, a missing permission or a file in the way fails now; nothing is left behind.
    """
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise HarnessError(f"{what} {path} is not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise HarnessError(f"{what} {path} cannot be created: {existing} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".harness-probe-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise HarnessError(f"{what} {path} is not writable ({exc.strerror or exc})") from None


def readable_dir(path: Path, what: str) -> None:
    if Path(path).exists() and not Path(path).is_dir():
        raise HarnessError(f"{what} {path} is not a directory")


def check_split_sizes(spec: RunSpec, suite: Suite, overrides: dict[str, Any]) -> None:
    """Sample counts against the sizes of the splits the run will read (after its harm subsets).

    The rows the defence and the attack take must fit: what the plugin declares (`Plugin.rows`, e.g. a poisoned
    task's harmful and harmless parts), else `samples` rows of its own split (the plugins' shared convention: the
    first N rows, or N drawn). So must the eval prompt counts: a record must not claim prompts it never measured
    (a harm subset has fewer prompts than the suite's default count: set `eval.n_prompts` for it).
    """
    sizes = split_sizes(spec, suite)
    for kind in ("defence", "attack"):
        for split, n in rows_taken(kind, spec).items():
            if n > sizes.get(split, 0):
                subset = getattr(spec.subsets, kind)
                where = "" if subset == "all" or split not in ("defence", "attack") else f" (harm subset '{subset}')"
                part = f"{kind}" if split == kind else f"{kind} '{getattr(spec, kind).name}' (rows of {split})"
                raise HarnessError(f"{part} needs {n} samples but the suite's {split} split has "
                                   f"{sizes.get(split, 0)}{where}")
    for field, split, what in (("n_prompts", "eval", "harmful eval prompts"),
                               ("n_harmless", "harmless_eval", "harmless eval prompts")):
        n = getattr(spec.eval, field)
        if n > sizes[split]:
            raise HarnessError(f"eval.{field}={n} but the suite has {sizes[split]} {what} for this run "
                               f"(set --set eval.{field}={sizes[split]} or fewer)")


def rows_taken(kind: str, spec: RunSpec) -> dict[str, int]:
    """The rows the run's defence or attack takes from each split: its plugin's declaration (`Plugin.rows`), else
    `samples` rows of its own split ({} when it names no count)."""
    from harness import registry

    params = getattr(spec, kind).params
    plugin = registry.get(kind, getattr(spec, kind).name)
    if plugin.rows is not None:
        return {split: int(n) for split, n in plugin.rows(plugin.config.model_validate(params)).items()}
    n = params.get("samples")
    return {kind: n} if isinstance(n, int) else {}


_SIZES: dict[str, dict[str, int]] = {}


def split_sizes(spec: RunSpec, suite: Suite) -> dict[str, int]:
    """Row counts of the run's splits, once per (suite config, harm subsets) in a process: a sweep checks
    every cell, and building the default tiny world's splits takes seconds."""
    from harness.pipeline import select_data

    key = stable_hash({"suite": spec.suite.model_dump(mode="json"), "subsets": spec.subsets.model_dump()})
    if key not in _SIZES:
        data, _ = select_data(suite, spec)
        splits = [f.name for f in fields(data) if f.name not in ("other", "evidence")]
        _SIZES[key] = {name: len(getattr(data, name)) for name in splits if getattr(data, name) is not None}
    return _SIZES[key]


def check_checkpoints(spec: RunSpec, suite: Suite, store: Store) -> None:
    """The checkpoints the defence's config names (`harness.models.plugin_inputs`) are where its stage will find
    them, and outside this run's store (`--home` included)."""
    from harness import registry
    from harness.models.plugin_inputs import checkpoint_fields, located

    plugin = registry.get("defence", spec.defence.name)
    cfg = plugin.config.model_validate(spec.defence.params)
    if checkpoint_fields(cfg):
        try:
            located(cfg, store, trust_remote_code=suite.trust_remote_code)
        except HarnessError as exc:
            raise HarnessError(f"defence '{plugin.name}': {exc}") from None


def check_unaligned(spec: RunSpec, suite: Suite) -> None:
    """The suite's base before alignment, where a run measures against it, is a causal LM that loads (a hub id or a
    folder; one the suite builds into the store is built by its prepare step)."""
    from harness.models.checkpoints import check_causal_lm, locate
    from harness.store.artifacts import STORE_SCHEME

    model = suite.unaligned_for(spec.model)
    if model is None or model.id.startswith(STORE_SCHEME):
        return
    try:
        check_causal_lm(locate(model.id, revision=model.revision, remote_code=suite.trust_remote_code),
                        remote_code=suite.trust_remote_code)
    except HarnessError as exc:
        raise HarnessError(f"suite '{suite.name}': its base before alignment: {exc}") from None


def check_run(spec: RunSpec, suite: Suite, overrides: dict[str, Any], *, store: Store, results_dir: Path,
              force: bool = False) -> None:
    """Everything about one cell that can fail before its first stage (nothing, if its record exists and
    will only be read)."""
    path = record_path(results_dir, suite.name, suite.protocol_version, spec.run_id)
    readable_dir(results_dir, "--results-dir")
    if path.is_file() and not force:
        return
    if path.exists() and not path.is_file():
        raise HarnessError(f"record path {path} exists and is not a file; move it away")
    check_split_sizes(spec, suite, overrides)
    check_checkpoints(spec, suite, store)
    check_unaligned(spec, suite)
    writable_dir(results_dir, "--results-dir")
    writable_dir(store.root, "--home (the artifact store)")


def start(store: Store, results_folder: Path | None = None) -> None:
    """Before a run's first stage: refuse a store whose kind folders are links (they would lead its writes
    outside the store), mark a new store (or adopt one an earlier version wrote; harness.store.layout), and
    remove what killed runs left behind (temporary folders and files no live writer holds)."""
    store.check_folders()
    store.mark(adopt_only=True)
    store.clean_temp()
    if results_folder is not None:
        clean_results_temp(results_folder)
