"""The tuned attacker's conditional search space: an attack kind, then that kind's own fields.

Each attack of the suite's zoo contributes the space its Config declares (`harness.tuning.logs.search_space`, the
same declaration a defence's tuning reads). A point is one kind and a value for each of *its* fields: a kind never
receives another kind's fields, so a point always validates against its own Config.

Proposers (`harness.tuning.samplers`) walk this space; here live the parts they share: the points, their identity
(`key`), the whole space in order, a seeded uniform draw of a point not yet seen (uniform over the kinds that have
one left, then over that kind's unseen points, so a kind with a small space is not drowned by a large one), and an
unseen neighbour of a point (one field changed).
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from harness.tuning.logs import settings

DRAW_TRIES = 64  # random draws of a kind's point before its unseen points are listed (a nearly covered kind)


@dataclass(frozen=True)
class Point:
    """One attack kind and a value for each field of its search space."""

    attack: str
    params: dict[str, Any]

    @property
    def key(self) -> str:
        """The point's identity (a repeated proposal is recognised by it)."""
        return json.dumps([self.attack, self.params], sort_keys=True)


@dataclass(frozen=True)
class ZooSpace:
    """attack kind -> {field: candidate values}, kinds in the zoo's order, fields in declaration order."""

    spaces: dict[str, dict[str, list[Any]]]

    def size(self, attack: str | None = None) -> int:
        """Points of one kind, or of the whole zoo."""
        kinds = [attack] if attack is not None else list(self.spaces)
        return sum(math.prod(len(v) for v in self.spaces[k].values()) for k in kinds)

    def points(self) -> Iterator[Point]:
        """Every point, kind by kind, in declaration order."""
        for attack, space in self.spaces.items():
            for params in settings(space):
                yield Point(attack, params)

    def draw(self, rng: random.Random, seen: Collection[str]) -> Point | None:
        """A uniform draw of an unseen point (`seen`: point keys): a kind among those with one left, then one of
        its unseen points. None when every point has been seen."""
        counts = Counter(json.loads(key)[0] for key in seen)
        left = [k for k in self.spaces if counts[k] < self.size(k)]
        if not left:
            return None
        attack = rng.choice(left)
        space = self.spaces[attack]
        for _ in range(DRAW_TRIES):
            point = Point(attack, {f: rng.choice(values) for f, values in space.items()})
            if point.key not in seen:
                return point
        return rng.choice([p for p in (Point(attack, s) for s in settings(space)) if p.key not in seen])

    def neighbour(self, rng: random.Random, point: Point, seen: Collection[str]) -> Point | None:
        """An unseen point that differs from `point` in one field (drawn uniformly); None where all are seen."""
        near = [Point(point.attack, {**point.params, field: value})
                for field, values in self.spaces[point.attack].items() for value in values
                if value != point.params[field]]
        unseen = [p for p in near if p.key not in seen]
        return rng.choice(unseen) if unseen else None
