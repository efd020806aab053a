"""Budgets of the results summary: what the attacker spent, read from the resistance table, ordered weakest
first and labelled as the README's tables write them (lr@samples).

Runs of one attack at one lr, sample count and epoch count whose other attack settings differ (a tuned attacker's
choice of batch size, schedule or LoRA rank beside a grid cell) are different attacks: each is a budget of its own,
told apart by the settings that differ (`Budget.params`), never pooled into one mean. A tuned attacker's test runs
(a summary given their run ids marks them in an `attack_source` column) are budgets of their own family,
`TUNED_ATTACKER`: an attack found by a search is another attacker than the same settings named in advance."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

TUNED_ATTACKER = "tuned attacker"  # the family of a tuned attacker's test runs (`harness.tuning.attacker`)
SOURCE = "attack_source"          # the summary's column naming where a run's attack came from ('' or TUNED_ATTACKER)


@dataclass(frozen=True)
class Budget:
    """(attack, lr, samples) and, where the tables carry it, epochs: what the attacker spends."""

    attack: str
    lr: float
    samples: int | None
    epochs: int | None
    label: str
    family: str = ""  # the attack's family (`Plugin.family`), where the summary knows it: not part of the id
    # canonical JSON of the attack settings that tell this budget from another of the same attack, lr, samples and
    # epochs ('': there is no other)
    params: str = ""
    source: str = ""  # TUNED_ATTACKER for a tuned attacker's test runs, else ''

    @property
    def id(self) -> str:
        return f"{self.base_id}|{self.params}" if self.params else self.base_id

    @property
    def base_id(self) -> str:
        base = f"{self.attack}|{self.lr!r}|{self.samples}|{self.epochs}"
        return f"{base}|{self.source}" if self.source else base

    def matches(self, row: dict[str, Any]) -> bool:
        """Is a resistance-table row a run of this budget?"""
        if budget_of(row).base_id != self.base_id:
            return False
        own = json.loads(self.params) if self.params else {}
        settings = attack_settings(row)
        return all(_canonical(_lookup(settings, k)) == _canonical(v) for k, v in own.items())

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
    declared = family_of or (lambda name: "")

    def family(b: Budget) -> str:
        return b.source or declared(b.attack)

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in resistance.to_dict("records"):
        groups.setdefault(budget_of(r).base_id, []).append(r)
    variants = [b for rows in groups.values() for b in _variants(rows)]
    size = {f: sum(family(b) == f for b in variants) for f in map(family, variants)}
    # the family of the most budgets first (a suite's budget grid: the resistance curve), a tuned attacker's last
    budgets = sorted(variants, key=lambda b: (family(b) == "", family(b) == TUNED_ATTACKER, -size[family(b)],
                                              family(b), math.isnan(b.lr), b.lr, b.samples or 0, b.epochs or 0,
                                              b.attack, b.params))
    several_epochs = len({b.epochs for b in budgets}) > 1
    labels = [b.label + (f"×{b.epochs}ep" if several_epochs and b.epochs is not None else "") for b in budgets]
    attacks_of = {label: {b.attack for b, other in zip(budgets, labels, strict=True) if other == label}
                  for label in labels}
    labels = [f"{b.attack} {label}" if (len(attacks_of[label]) > 1 or b.source) and label != b.attack else label
              for b, label in zip(budgets, labels, strict=True)]
    return [replace(b, label=label + _settings_label(b.params), family=family(b))
            for b, label in zip(budgets, labels, strict=True)]


def mark_tuned(resistance: Any, tuned_runs: Any) -> Any:
    """The resistance table with its SOURCE column: TUNED_ATTACKER for the rows of `tuned_runs`, else '' (as given
    without any)."""
    tuned = set(tuned_runs)
    if not tuned:
        return resistance
    return resistance.assign(**{SOURCE: [TUNED_ATTACKER if i in tuned else "" for i in resistance["run_id"]]})


def attack_settings(row: dict[str, Any]) -> dict[str, Any]:
    """A row's attack settings (its `attack_params` JSON; {} where the table has none)."""
    text = row.get("attack_params")
    return json.loads(text) if isinstance(text, str) and text.startswith("{") else {}


def _variants(rows: list[dict[str, Any]]) -> list[Budget]:
    """The budgets of rows that share attack, lr, samples and epochs: one, or one per combination of the settings
    that differ among them (settings some rows lack, e.g. an option a later harness added, tell none apart)."""
    base = budget_of(rows[0])
    settings = [attack_settings(r) for r in rows]
    common = set.intersection(*(set(s) for s in settings)) if settings else set()
    # a setting that is a mapping in every row (e.g. a LoRA config) is compared field by field: 'lora.rank'
    keys = sorted(f"{k}.{sub}" for k in common if all(isinstance(s[k], dict) for s in settings)
                  for sub in set.intersection(*(set(s[k]) for s in settings)))
    keys += sorted(k for k in common if not all(isinstance(s[k], dict) for s in settings))
    varying = sorted(k for k in keys if len({_canonical(_lookup(s, k)) for s in settings}) > 1)
    if not varying:
        return [base]
    combos = sorted({_canonical({k: _lookup(s, k) for k in varying}) for s in settings})
    return [replace(base, params=c) for c in combos]


def _lookup(settings: dict[str, Any], key: str) -> Any:
    """A setting by name, 'lora.rank' reading a field of a mapping setting (None where absent)."""
    value: Any = settings
    for part in key.split(".") if key not in settings else [key]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _settings_label(params: str) -> str:
    """' [batch_size=16]' for a budget told apart by its settings ('' for none)."""
    if not params:
        return ""
    return " [" + ", ".join(f"{k}={_canonical(v)}" for k, v in json.loads(params).items()) + "]"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def budget_of(row: dict[str, Any]) -> Budget:
    """A table row's budget (its label without the disambiguation budgets_of adds)."""
    samples = None if _missing(row["attack_samples"]) else int(row["attack_samples"])
    epochs = row.get("attack_epochs")  # optional: tables before the budget declaration have no epochs
    epochs = None if epochs is None or _missing(epochs) else int(epochs)
    lr = float(row["attack_lr"])
    source = row.get(SOURCE) or ""
    return Budget(str(row["attack"]), lr, samples, epochs, budget_label(row["attack"], lr, samples),
                  source=str(source))


def budget_label(attack: str, lr: float, samples: Any) -> str:
    """lr@samples, as the README's tables write budgets: 1e-4@250, 3e-4@1k (attack@samples without an lr; the
    attack's name alone without either, e.g. a prompting attack that trains nothing)."""
    samples = None if _missing(samples) else int(samples)
    if not _lr_label(float(lr)) and samples is None:
        return str(attack)
    return f"{_lr_label(float(lr)) or attack}@{_samples_label(samples)}"


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
