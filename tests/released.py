"""Checkpoints a plugin's config may name (`harness.models.plugin_inputs`), for the tests that run every plugin: a
copy of the model a test trains on, every weight nudged (so a plugin that returns it changes the model), saved
with the test's tokenizer (the same vocabulary, as a released model of that base has)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from harness.models.plugin_inputs import declared_checkpoints


def save_released(model: Any, tok: Any, folder: Path) -> Path:
    import torch

    from harness.models.loading import save_checkpoint

    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    save_checkpoint(other, tok, folder)
    return folder


def naming(plugin: Any, model: Any, tok: Any, folder: Path, ctx: Any) -> tuple[dict[str, Any], Any]:
    """(params naming a released copy of `model` for each checkpoint the plugin's Config declares, `ctx` with their
    folders as a stage hands them over); ({}, ctx) for a plugin that names none."""
    fields = declared_checkpoints(plugin.config)
    if not fields:
        return {}, ctx
    save_released(model, tok, folder)
    return ({name: {"id": str(folder)} for name in fields},
            dataclasses.replace(ctx, checkpoints=dict.fromkeys(fields, folder)))
