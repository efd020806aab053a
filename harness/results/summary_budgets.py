"""Budgets of the results summary: what the attacker spent, read from the resistance table, ordered weakest
first and labelled as the README's tables write them (lr@samples)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Budget:
    """(attack, lr, samples) and, where the tables carry it, epochs: what the attacker spends."""

    attack: str
    lr: float
    samples: int | None
    epochs: int | None
    label: str
    family: str = ""  # the attack's family (`Plugin.family`), where the summary knows it: not part of the id

    @property
    def id(self) -> str:
        return f"{self.attack}|{self.lr!r}|{self.samples}|{self.epochs}"

    @property
    def description(self) -> str:
        epochs = f", {self.epochs} epoch(s)" if self.epochs is not None else ""
        return f"attack {self.attack}, lr {self.lr:g}, {self.samples} samples{epochs}"


def budgets_of(resistance: Any, family_of: Callable[[str], str] | None = None) -> list[Budget]:
    """The main grid's budgets, grouped by attack family (`family_of`: attack name -> family; families in name
    order, an undeclared one last), each family's weakest first (lr, then samples, then epochs); epochs enter the
    label only where they differ, the attack name only where two attacks share a label."""
    if resistance is None or not len(resistance):
        return []
    family = family_of or (lambda name: "")
    budgets = sorted({budget_of(r) for r in resistance.to_dict("records")},
                     key=lambda b: (family(b.attack) == "", family(b.attack), math.isnan(b.lr), b.lr, b.samples or 0,
                                    b.epochs or 0, b.attack))
    several_epochs = len({b.epochs for b in budgets}) > 1
    labels = [b.label + (f"×{b.epochs}ep" if several_epochs and b.epochs is not None else "") for b in budgets]
    return [Budget(b.attack, b.lr, b.samples, b.epochs, f"{b.attack} {label}" if labels.count(label) > 1 else label,
                   family(b.attack)) for b, label in zip(budgets, labels, strict=True)]


def budget_of(row: dict[str, Any]) -> Budget:
    """A table row's budget (its label without the disambiguation budgets_of adds)."""
    samples = None if _missing(row["attack_samples"]) else int(row["attack_samples"])
    epochs = row.get("attack_epochs")  # optional: tables before the budget declaration have no epochs
    epochs = None if epochs is None or _missing(epochs) else int(epochs)
    lr = float(row["attack_lr"])
    return Budget(str(row["attack"]), lr, samples, epochs, budget_label(row["attack"], lr, samples))


def budget_label(attack: str, lr: float, samples: Any) -> str:
    """lr@samples, as the README's tables write budgets: 1e-4@250, 3e-4@1k (attack@samples without an lr)."""
    return f"{_lr_label(float(lr)) or attack}@{_samples_label(None if _missing(samples) else int(samples))}"


def _lr_label(lr: float) -> str:
    """1e-4 for 0.0001, 2.5e-5 for 0.000025, '' for no lr."""
    if math.isnan(lr):
        return ""
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _samples_label(samples: int | None) -> str:
    if samples is None:
        return "?"
    return f"{samples // 1000}k" if samples >= 1000 and samples % 1000 == 0 else str(samples)


def _missing(value: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(value))
