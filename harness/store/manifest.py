"""Content manifests of store artifacts: {relative file: {size, sha256}}, written into `meta.json`.

Why: a truncated checkpoint, a deleted parquet or a hand-edited `scores.parquet` must never be used as if
it were the stage's output. Every file's size and sha256 are recorded when the artifact is written (one
pass over what was just saved). Reading checks the cheap part always and the expensive part where it is
cheap: every file must exist with its recorded size, and files up to `HASH_ON_READ_MAX` bytes (parquet,
JSON, tokenizers, small checkpoints) are also hashed. Larger files (real model weights) are size-checked on
read; `harness store verify` hashes everything.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

HASH_ON_READ_MAX = 32 * 2**20  # bytes; above this a read checks the size only (`harness store verify`: all)
META = "meta.json"
_CHUNK = 2**20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[str]:
    """Every file below `folder` except meta.json, as sorted POSIX paths relative to it (links not followed)."""
    out = []
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            rel = (Path(dirpath) / name).relative_to(folder).as_posix()
            if rel != META:
                out.append(rel)
    return sorted(out)


def build_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file an artifact folder holds."""
    return {rel: {"size": (folder / rel).stat().st_size, "sha256": sha256_file(folder / rel)}
            for rel in _files(folder)}


def check_manifest(folder: Path, manifest: Any, *, full: bool = False) -> str | None:
    """Why `folder` does not match `manifest` (one phrase naming the file), or None when it does.

    Sizes always; sha256 for files up to HASH_ON_READ_MAX bytes, or for every file when `full`.
    """
    if not isinstance(manifest, dict):
        return "its manifest is not a mapping"
    present = set(_files(folder))
    for rel, info in sorted(manifest.items()):
        path = folder / rel
        if rel not in present or not path.is_file():
            return f"{rel} is missing"
        size = path.stat().st_size
        if not isinstance(info, dict) or size != info.get("size"):
            return f"{rel} has {size} bytes, expected {info.get('size') if isinstance(info, dict) else '?'}"
        if (full or size <= HASH_ON_READ_MAX) and sha256_file(path) != info.get("sha256"):
            return f"{rel} does not match its sha256"
    extra = sorted(present - set(manifest))
    if extra:
        return f"{extra[0]} is not in its manifest"
    return None
