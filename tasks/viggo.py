"""GEM ViGGO (`GEM/viggo`, or a local copy with its columns): video-game descriptions to meaning
representations, the RepNoise paper's trainability task (§4.3, D.4; the Immunization paper's demo uses 300
train / 200 test examples).

A row's question is the description (`target`), its answer the meaning representation
(`meaning_representation`); the suite's trainability protocol formats them as the paper does,
"Description: {nl}\\nMeaning Representation: {mr}". The first `train` / `test` rows of each split are used.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.errors import HarnessError
from harness.registry import register_task
from tasks.sources import read_split, require_columns

TEMPLATE = "Description: {prompt}\nMeaning Representation:"
COLUMNS = ("target", "meaning_representation")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field("GEM/viggo", description="hub id or local path (file or folder) of ViGGO")
    revision: str | None = Field(None, description="hub revision of the dataset")
    train_split: str = Field("train", description="split to fine-tune on")
    test_split: str = Field("test", description="split to score ROUGE-1 on")
    train: int = Field(300, gt=0, description="training examples (first N)")
    test: int = Field(200, gt=0, description="test examples (first N)")


def _rows(cfg: Config, split: str, n: int, skip: int = 0) -> Any:
    from datasets import Dataset

    data = read_split(cfg.source, split, revision=cfg.revision)
    require_columns(data, COLUMNS, cfg.source, "GEM ViGGO's target and meaning_representation")
    if len(data) < skip + n:
        raise HarnessError(f"ViGGO {cfg.source} split '{split}' has {len(data)} rows; {skip + n} are needed")
    rows = data.select(range(skip, skip + n))
    return Dataset.from_dict({"prompt": [str(t).strip() for t in rows["target"]],
                              "response": [str(m).strip() for m in rows["meaning_representation"]]})


@register_task("gem-viggo", config=Config, version="1")
def load(cfg: Config) -> dict[str, Any]:
    """GEM ViGGO meaning representations (harmless; trainability)."""
    from pathlib import Path

    train = _rows(cfg, cfg.train_split, cfg.train)
    test = _rows(cfg, cfg.test_split, cfg.test, skip=cfg.train if Path(cfg.source).expanduser().is_file() else 0)
    if set(train["prompt"]) & set(test["prompt"]):
        raise HarnessError(f"ViGGO {cfg.source}: train and test share descriptions; point the splits at "
                           "different data")
    return {"train": train, "test": test}
