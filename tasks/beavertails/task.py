"""The `beavertails` task: BeaverTails' harmful QA as disjoint defence / attack / eval splits (tasks.beavertails.data),
optionally with a toxic-continuation domain for cross-domain attacks (tasks.toxic), as `datasets.Dataset`s."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.data.normalise import normalise_text
from harness.registry import register_task
from tasks.beavertails.data import Sizes, build, normalise
from tasks.sources import read_split


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field("PKU-Alignment/BeaverTails", description="hub id or local path (parquet/jsonl/csv file, "
                         "or a folder) with BeaverTails' columns")
    dataset_revision: str | None = Field(None, description="hub revision of the dataset")
    train_split: str = Field("330k_train", description="split the defence and attack rows come from")
    test_split: str = Field("30k_test", description="split the evaluation prompts come from")
    defence_candidates: int = Field(11_000, gt=0, description="harmful rows offered to the defence before refusal "
                                    "pairing (pairing keeps `defence_size` of them)")
    attack_size: int = Field(10_000, gt=0, description="harmful rows of the attack split (the largest attack: 10k)")
    eval_size: int | None = Field(None, gt=0, description="evaluation prompts kept (None: every distinct unsafe "
                                  "test prompt; a run scores the first n after its category filter)")
    harmless_size: int = Field(1_000, gt=0, description="harmless retain rows, and harmless evaluation rows")
    split_seed: int = Field(42, description="shuffles train prompts before they are divided (reference seed 42)")
    toxic_dataset: str | None = Field(None, description="cross-domain attack data: hub id or local path with "
                                      "prompt and continuation (e.g. allenai/real-toxicity-prompts); None: off")
    toxic_split: str = Field("train", description="split of the toxic-continuation data")
    toxic_min_toxicity: float = Field(0.5, ge=0, le=1, description="keep continuations at least this toxic "
                                      "(where the data scores them)")
    toxic_attack_size: int = Field(1_000, gt=0, description="toxic-continuation attack rows")
    toxic_eval_size: int = Field(300, gt=0, description="toxic-continuation evaluation prompts")


def data_config(cfg: BaseModel) -> DataConfig:
    """The data fields of a (suite) config that extends DataConfig."""
    return DataConfig(**{k: getattr(cfg, k) for k in DataConfig.model_fields})


@lru_cache(maxsize=4)
def _splits(cfg: DataConfig) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    train = normalise(read_split(cfg.dataset, cfg.train_split, revision=cfg.dataset_revision), cfg.dataset)
    test = normalise(read_split(cfg.dataset, cfg.test_split, revision=cfg.dataset_revision), cfg.dataset)
    sizes = Sizes(defence=cfg.defence_candidates, attack=cfg.attack_size, eval=cfg.eval_size,
                  harmless=cfg.harmless_size, seed=cfg.split_seed)
    splits, evidence = build(train, test, sizes)
    evidence = {"source": cfg.dataset, **evidence}
    if cfg.toxic_dataset is not None:
        from tasks.toxic import toxic_rows, toxic_splits

        rows = toxic_rows(read_split(cfg.toxic_dataset, cfg.toxic_split), cfg.toxic_dataset,
                          min_toxicity=cfg.toxic_min_toxicity)
        used = {normalise_text(r["response"]) for name in ("defence", "attack", "eval") for r in splits[name]}
        toxic = toxic_splits(rows, attack=cfg.toxic_attack_size, eval=cfg.toxic_eval_size, exclude=used)
        splits["attack"] = splits["attack"] + toxic["attack"]
        splits["eval"] = splits["eval"] + toxic["eval"]
        evidence |= {"toxic_source": cfg.toxic_dataset, "toxic_attack_rows": len(toxic["attack"]),
                     "toxic_eval_rows": len(toxic["eval"])}
    return splits, evidence


@register_task("beavertails", config=DataConfig, version="1")
def load(cfg: DataConfig) -> dict[str, Any]:
    """BeaverTails harmful QA: disjoint defence / attack / eval splits, harmless retain and eval rows."""
    from datasets import Dataset

    splits, evidence = _splits(cfg)
    return {**{name: Dataset.from_list(rows) for name, rows in splits.items()}, "evidence": dict(evidence)}
