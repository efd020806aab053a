"""Estimates with 95% confidence intervals: the one interval every results view prints.

The seed is the unit of replication: a cell is the mean over seeds of a per-seed value, with a Student-t
interval, mean ± t(0.975, n-1) * s / sqrt(n). With 2-5 seeds a bootstrap would understate the spread, and
the t-interval is what a reader can recompute from the tables by hand. One seed gives no interval.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% half-width (None for n = 1) and the run ids it was computed from."""

    mean: float
    half_width: float | None
    n: int
    run_ids: tuple[str, ...] = ()

    @property
    def interval(self) -> tuple[float, float] | None:
        if self.half_width is None:
            return None
        return self.mean - self.half_width, self.mean + self.half_width


def t_estimate(values: Iterable[float | None], run_ids: Iterable[str] = ()) -> Estimate | None:
    """Mean and 95% t-interval of the finite values; None when there are none (the cell shows n/a)."""
    finite = [float(v) for v in values if v is not None and _is_finite(v)]
    if not finite:
        return None
    ids = tuple(sorted(set(run_ids)))
    if len(finite) == 1:
        return Estimate(finite[0], None, 1, ids)
    from scipy.stats import t  # lazy: scipy.stats costs a second to import

    half = float(t.ppf(0.975, len(finite) - 1)) * statistics.stdev(finite) / math.sqrt(len(finite))
    return Estimate(statistics.fmean(finite), half, len(finite), ids)


def wilson_interval(accuracy: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion `accuracy` measured on `n` items ((0, 1) for none): the
    stability guard's interval rule (`harness.suite.StabilityGuard`)."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (accuracy + z * z / (2 * n)) / denom
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _is_finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False  # pandas NA and friends


RANK_RULE = ("A row's place is one more than the number of rows whose 95% interval of the headline lies entirely "
             "below its own (clearly better, lower first); rows that no interval separates share a place, shown =N. "
             "A row without an interval (one seed) counts as the point it is; rows without a headline come after "
             "every row with one.")


@dataclass(frozen=True)
class Rank:
    """A place in a ranking, and whether another row shares it (shown '=N')."""

    place: int
    shared: bool = False

    def __str__(self) -> str:
        return f"={self.place}" if self.shared else str(self.place)


def shared_ranks(estimates: Sequence[Estimate | None]) -> list[Rank]:
    """The places of `estimates` (lower is better) by RANK_RULE: 1 + the number of estimates whose interval lies
    entirely below an estimate's own; a missing estimate comes after every present one, all missing sharing."""
    bounds = [(e.interval or (e.mean, e.mean)) if e is not None else None for e in estimates]
    present = sum(b is not None for b in bounds)
    places = [1 + sum(o is not None and o[1] < b[0] for o in bounds) if b is not None else present + 1
              for b in bounds]
    return [Rank(p, places.count(p) > 1) for p in places]
