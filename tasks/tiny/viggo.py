"""A synthetic ViGGO-like text-to-data task for trainability: describe a made-up video game in a sentence,
produce its meaning representation. The base model never sees this format before the trainability
fine-tune, so it starts low (the paper's GEM ViGGO base starts at ROUGE-1 0.19)."""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.registry import register_task
from tasks.tiny.world import _words

GENRES = ("action", "puzzle", "strategy", "racing", "adventure", "sports")
PLATFORMS = ("PC", "console", "phone")
RATINGS = ("poor", "average", "good", "excellent")
SENTENCES = (
    "{name} is a {rating} {genre} game from {year} on {platform}.",
    "Released in {year}, {name} is a {genre} game for {platform} that players rate {rating}.",
    "On {platform}, the {year} {genre} game {name} is {rating}.",
)
TEMPLATE = "Description: {prompt}\nMeaning Representation:"


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="generator seed")
    train: int = Field(300, gt=0, description="training examples (the Immunization paper's demo: 300)")
    test: int = Field(100, gt=0, description="test examples")


def example(rng: random.Random, name: str) -> dict[str, str]:
    slots = {"name": name, "genre": rng.choice(GENRES), "platform": rng.choice(PLATFORMS),
             "year": str(rng.randint(2000, 2020)), "rating": rng.choice(RATINGS)}
    mr = (f"inform(name[{slots['name']}], genres[{slots['genre']}], platforms[{slots['platform']}], "
          f"release_year[{slots['year']}], rating[{slots['rating']}])")
    return {"prompt": rng.choice(SENTENCES).format(**slots), "response": mr}


@register_task("tiny-viggo", config=Config, version="1")
def load(cfg: Config) -> dict[str, Any]:
    """Synthetic ViGGO-like meaning-representation task (harmless; trainability)."""
    from datasets import Dataset

    rng = random.Random(1000 + cfg.seed)
    names = [w.capitalize() for w in _words(rng, cfg.train + cfg.test)]
    rows = [example(rng, n) for n in names]
    return {"train": Dataset.from_list(rows[: cfg.train]), "test": Dataset.from_list(rows[cfg.train:])}
