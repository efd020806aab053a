"""Checkpoints a defence's config names: a released defended model, the base it was made from.

A Config field typed `CheckpointRef` names a checkpoint the defence reads besides its input model (a hub id or a
local folder, optionally `@revision`; attacks name none: `harness.registry` refuses them). The plugin's process has
no network and no store, so the harness does the rest, for any defence that declares such a field:

- `pin` (at resolve time, before any work): locates each one (fetching a hub snapshot unless
  `HF_HUB_OFFLINE=1`), checks it is a causal LM, and writes the revision it found into the plugin's params:
  the run id names the exact weights (a hub commit, a folder's content fingerprint), and so does the record;
- `located` (in the run's pre-flight checks, and when the stage starts the plugin): the local folder of each,
  refused inside the run's store (which holds the suite's data, models and judges), handed to the plugin's
  process as `StageContext.checkpoints[field]` and opened to it by the guard.

A field typed `RunModelRef` names the base model the plugin's checkpoint was made from: it must be the run's own
model (`--model`; its revision, where given, too), so a released model is measured against its own base.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.errors import ConfigError
from harness.store.artifacts import Store


class CheckpointRef(BaseModel):
    """A checkpoint a plugin reads: `id` (a hub id or a local folder outside the store) and its `revision` (a hub
    commit, branch or tag; a folder's content fingerprint). Given as a string, `ID` or `ID@REVISION`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="hub id or local folder (the run's own model: also a store: path)")
    revision: str | None = Field(None, description="pinned at resolve time to the revision found")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            name, _, revision = value.partition("@")
            return {"id": name, "revision": revision or None}
        return value


class RunModelRef(CheckpointRef):
    """The base model a plugin's checkpoint was made from: it must be the run's model."""


def checkpoint_fields(cfg: Any) -> dict[str, CheckpointRef]:
    """The config's top-level fields that name a checkpoint, by field name (none where it is no pydantic model)."""
    if not isinstance(cfg, BaseModel):
        return {}
    return {name: value for name in type(cfg).model_fields if isinstance(value := getattr(cfg, name), CheckpointRef)}


def declared_checkpoints(config: type[BaseModel]) -> dict[str, type[CheckpointRef]]:
    """The Config class's fields typed as a checkpoint (`CheckpointRef`, `RunModelRef`, optional or not)."""
    import typing

    found = {}
    for name, info in config.model_fields.items():
        for kind in (info.annotation, *typing.get_args(info.annotation)):
            if isinstance(kind, type) and issubclass(kind, CheckpointRef):
                found[name] = kind
    return found


def _same_model(ref: CheckpointRef, run_id: str) -> bool:
    from harness.models.checkpoints import is_local_name

    if is_local_name(ref.id) and is_local_name(run_id):
        return Path(ref.id).expanduser().resolve() == Path(run_id).expanduser().resolve()
    return ref.id == run_id


def pin(who: str, prefix: str, cfg: BaseModel, run_model: Any, *, locate: bool = True,
        trust_remote_code: bool = False) -> dict[str, Any]:
    """The plugin's params with every checkpoint located, checked and its revision pinned (`locate=False`, a dry
    run: hub ids are not looked up and stay as given). `run_model` is the run's `ModelSpec`. Raises one line."""
    from harness.models.checkpoints import check_causal_lm, is_local_name
    from harness.models.checkpoints import locate as find

    params = cfg.model_dump(mode="json")
    for name, ref in checkpoint_fields(cfg).items():
        field = f"{prefix}{name}"
        if isinstance(ref, RunModelRef):
            if not _same_model(ref, run_model.id) or ref.revision not in (None, run_model.revision):
                given = ref.id + (f"@{ref.revision}" if ref.revision else "")
                raise ConfigError(f"{who}: {field} is {given}, but the run's model is {run_model.id}@"
                                  f"{run_model.revision}: a checkpoint is measured against the base it was made "
                                  f"from (run with --model {ref.id})")
            params[name] = {"id": run_model.id, "revision": run_model.revision}
            continue
        if not locate and not is_local_name(ref.id):
            continue
        ckpt = find(ref.id, revision=ref.revision, remote_code=trust_remote_code)
        check_causal_lm(ckpt, remote_code=trust_remote_code)
        params[name] = {"id": ckpt.id, "revision": ckpt.revision}
    return params


def outside_store(what: str, path: Path, store_root: Path) -> None:
    """Refuse a checkpoint in the artifact store: the store holds the suite's data, models and judges, which a
    plugin's process must not reach; a checkpoint a plugin reads comes from the hub or a folder of the user's."""
    real, root = Path(path).resolve(), Path(store_root).resolve()
    if real == root or root in real.parents:
        raise ConfigError(f"{what}: {path} is in the artifact store {root}; a plugin's checkpoint comes from the hub "
                          "or a folder outside the store")


def located(cfg: BaseModel, store: Any = None, *, input_model: Path | None = None,
            trust_remote_code: bool = False) -> dict[str, Path]:
    """The local folder of every checkpoint the config names (at its pinned revision), each outside the store. A
    `RunModelRef` is the model the plugin starts from, `input_model` where given (a stage: the plugin's process is
    opened no other folder for it; `pin` has checked it is the run's model), else wherever the run has it."""
    from harness.models.checkpoints import locate as find

    store = store if store is not None else Store()
    found = {}
    for name, ref in checkpoint_fields(cfg).items():
        if isinstance(ref, RunModelRef):
            found[name] = Path(input_model) if input_model is not None else find(
                ref.id, revision=ref.revision, store=store, remote_code=trust_remote_code).path
            continue
        found[name] = find(ref.id, revision=ref.revision, store=store, remote_code=trust_remote_code).path
        outside_store(f"{name} (model {ref.id})", found[name], store.root)
    return found
