"""Proposers of the tuned attacker's next point: the whole space in order, seeded random draws, or Optuna's TPE.

Every proposer answers `ask(seen)` with a point not in `seen` (None when none is left) and learns from
`tell(point, outcome)`. `seen` maps a point's key to its outcome: the trials run so far, and the points the suite
cannot run (e.g. more samples than its split holds), so nothing is proposed twice and the budget counts distinct
runs, as a defence's tuning does.

- `whole`: every point in declaration order, where the space is no larger than the budget (equal coverage, as
  `harness tune` runs a small defence space whole).
- `random`: a seeded uniform draw (a kind, then one of its unseen points); no dependency.
- `listed`: given points in order (a defence's seeded sample of its grid, as protocol 2 drew it:
  `harness.tuning.search`).
- `tpe`: Optuna's TPE sampler, seeded, over a define-by-run space (a categorical `attack`, then `<kind>.<field>`
  categoricals of that kind only), maximising the headline with the capability bound as a constraint
  (`Trial.set_constraint`: a trial that breaks it counts as infeasible, however harmful). Over a discrete space TPE
  keeps proposing the best points it has seen; such a repeat is closed as failed (the sampler ignores it) and an
  unseen neighbour of it (one field changed, drawn with the proposer's seed) is run in its place (a random unseen
  point where every neighbour is seen): the search stays where TPE looks, and every trial is a new run.

A defence's tuning uses the same proposers over a one-kind space (`defence_space`: the kind is the defence, its
fields the space its Config declares), scoring a point by its negated headline (lower is better for a defender) with
the stability guard as the constraint.

A proposer is deterministic given its seed and the outcomes it is told, so a rerun of a search proposes the same
points, finds their records cached, and continues where it stopped.
"""

from __future__ import annotations

import importlib.util
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from harness.errors import HarnessError
from harness.tuning.attack_space import Point, ZooSpace

INSTALL = "pip install 'optuna>=5,<7'"
PRIMITIVE = (type(None), bool, int, float, str)


class Outcome(NamedTuple):
    """What a proposer learns from a point: its score (maximised) and how far it is from the capability bound
    (`violation` <= 0: within it)."""

    score: float
    violation: float


class Proposer(Protocol):
    def ask(self, seen: Mapping[str, Outcome]) -> Point | None: ...

    def tell(self, point: Point, outcome: Outcome) -> None: ...


def require_optuna() -> None:
    """The tpe sampler needs optuna; one line with the fix where it is missing (checked before any work)."""
    if importlib.util.find_spec("optuna") is None:
        raise HarnessError(f"sampler 'tpe' needs optuna: {INSTALL} (found: not installed); or a TuningProtocol with "
                           "sampler='random'")


def make_proposer(kind: str, space: ZooSpace, seed: int, first: Sequence[Point] = ()) -> Proposer:
    """The proposer named `kind` ('whole', 'random' or 'tpe') over `space`, seeded with `seed`; `first`: points of the
    space proposed before any of its own (TPE learns from them as from its own; `whole` runs every point anyway)."""
    makers = {"whole": lambda: Whole(space), "random": lambda: Random(space, seed, first),
              "tpe": lambda: TPE(space, seed, first)}
    return makers[kind]()


def defence_space(defence: str, space: dict[str, list[Any]]) -> ZooSpace:
    """A defence's search space as a proposer's: one kind, named by the defence."""
    return ZooSpace({defence: space})


class Listed:
    """The given points, in order."""

    def __init__(self, points: list[Point]):
        self._points = points

    def ask(self, seen: Mapping[str, Outcome]) -> Point | None:
        return next((p for p in self._points if p.key not in seen), None)

    def tell(self, point: Point, outcome: Outcome) -> None:
        pass


class Whole:
    """Every point of the space, in order."""

    def __init__(self, space: ZooSpace):
        self._points: Iterator[Point] = space.points()

    def ask(self, seen: Mapping[str, Outcome]) -> Point | None:
        return next((p for p in self._points if p.key not in seen), None)

    def tell(self, point: Point, outcome: Outcome) -> None:
        pass


class Random:
    """Seeded uniform draws of unseen points (`ZooSpace.draw`)."""

    def __init__(self, space: ZooSpace, seed: int, first: Sequence[Point] = ()):
        self._space, self._rng, self._first = space, random.Random(seed), list(first)

    def ask(self, seen: Mapping[str, Outcome]) -> Point | None:
        return next((p for p in self._first if p.key not in seen), None) or self._space.draw(self._rng, seen)

    def tell(self, point: Point, outcome: Outcome) -> None:
        pass


class TPE:
    """Optuna's TPE over the conditional space, constrained by the capability bound."""

    def __init__(self, space: ZooSpace, seed: int, first: Sequence[Point] = ()):
        require_optuna()
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial is ours to print
        self._optuna, self._space, self._rng = optuna, space, random.Random(seed)
        self._study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        self._pending: dict[str, Any] = {}
        for point in first:  # asked first, in order; their outcomes are TPE's first observations
            self._study.enqueue_trial(self._encode(point))

    def ask(self, seen: Mapping[str, Outcome]) -> Point | None:
        trial = self._study.ask()
        point = self._point(trial)
        if point.key in seen:
            self._study.tell(trial, state=self._optuna.trial.TrialState.FAIL)  # a repeat teaches nothing new
            point = self._space.neighbour(self._rng, point, seen) or self._space.draw(self._rng, seen)
            if point is None:
                return None
            self._study.enqueue_trial(self._encode(point))
            trial = self._study.ask()
            point = self._point(trial)  # the enqueued values, now the trial's params (TPE learns from them)
        self._pending[point.key] = trial
        return point

    def tell(self, point: Point, outcome: Outcome) -> None:
        trial = self._pending.pop(point.key)
        trial.set_constraint("capability", outcome.violation)  # TPE ranks infeasible trials below feasible ones
        self._study.tell(trial, outcome.score)

    def _point(self, trial: Any) -> Point:
        """The point a trial suggests: the kind first, then only that kind's fields (named `<kind>.<field>`)."""
        attack = trial.suggest_categorical("attack", list(self._space.spaces))
        params = {}
        for field, values in self._space.spaces[attack].items():
            choices = _choices(values)
            params[field] = values[choices.index(trial.suggest_categorical(f"{attack}.{field}", choices))]
        return Point(attack, params)

    def _encode(self, point: Point) -> dict[str, Any]:
        """A point as the trial params that suggest it (for `enqueue_trial`)."""
        out: dict[str, Any] = {"attack": point.attack}
        for field, values in self._space.spaces[point.attack].items():
            out[f"{point.attack}.{field}"] = _choices(values)[values.index(point.params[field])]
        return out


def _choices(values: list[Any]) -> list[Any]:
    """Optuna's categorical choices for a field's candidates: the values themselves where all are plain scalars,
    else their JSON (e.g. a LoRA shape)."""
    if all(isinstance(v, PRIMITIVE) for v in values):
        return list(values)
    return [json.dumps(v, sort_keys=True) for v in values]

