"""Reading a dataset split from wherever a suite's config points: a hub id (through `datasets`, offline from
its cache when HF_DATASETS_OFFLINE=1 / HF_HUB_OFFLINE=1) or a local path.

Local paths: a file (.parquet, .jsonl, .json, .csv: every row, whatever split is asked for), a folder
written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or a folder holding `<split>.<ext>` files.
A missing path, split or column is one `HarnessError` line.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.models.checkpoints import is_local_name

EXTENSIONS = (".parquet", ".jsonl", ".json", ".csv")


def read_split(source: str, split: str, *, revision: str | None = None) -> Any:
    """One split of a dataset as a `datasets.Dataset`."""
    path = Path(source).expanduser()
    if path.is_file():
        return _read_file(path)
    if path.is_dir():
        return _read_folder(path, split)
    if is_local_name(source):
        raise HarnessError(f"dataset not found: {source}")
    return _read_hub(source, split, revision)


def require_columns(dataset: Any, columns: Iterable[str], source: str, schema: str) -> None:
    """A dataset without the columns a loader reads is one clear error naming what is missing."""
    missing = sorted(set(columns) - set(dataset.column_names))
    if missing:
        raise HarnessError(f"dataset {source} lacks the column(s) {', '.join(missing)} (has: "
                           f"{', '.join(dataset.column_names) or 'none'}; expected {schema})")


def _read_file(path: Path) -> Any:
    import pandas as pd
    from datasets import Dataset

    readers = {".parquet": pd.read_parquet, ".jsonl": lambda p: pd.read_json(p, lines=True),
               ".json": pd.read_json, ".csv": pd.read_csv}
    if path.suffix not in readers:
        raise HarnessError(f"cannot read dataset file {path}: use one of {', '.join(EXTENSIONS)}")
    try:
        frame = readers[path.suffix](path)
    except Exception as exc:  # pyarrow / pandas parse errors of every kind
        raise HarnessError(f"cannot read dataset file {path}: {type(exc).__name__}: {str(exc)[:200]}") from None
    return Dataset.from_pandas(frame, preserve_index=False)


def _read_folder(path: Path, split: str) -> Any:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        from datasets import load_from_disk

        data = load_from_disk(str(path))
        if hasattr(data, "keys"):
            if split not in data:
                raise HarnessError(f"dataset {path} has no split '{split}' (has: {', '.join(data.keys())})")
            return data[split]
        return data
    for ext in EXTENSIONS:
        if (path / f"{split}{ext}").is_file():
            return _read_file(path / f"{split}{ext}")
    raise HarnessError(f"dataset folder {path} has no split '{split}' (looked for {split}.<"
                       f"{'|'.join(e.lstrip('.') for e in EXTENSIONS)}> and a save_to_disk folder)")


def _read_hub(repo: str, split: str, revision: str | None) -> Any:
    from datasets import load_dataset

    try:
        return load_dataset(repo, split=split, revision=revision)
    except Exception as exc:  # datasets raises many types for "not available"
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise HarnessError(f"dataset '{repo}' split '{split}' is not available (no such local path either): "
                           f"{type(exc).__name__}: {detail}") from None
