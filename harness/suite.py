"""What a suite plugin returns: base model, data, judges, budgets and defaults, in one object.

A suite plugin is cheap to call (it only describes); `prepare()` builds what the suite needs (for the
offline `tiny` suite: the world's base model and judge) and is idempotent, cached in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.specs import EvalSpec, ModelSpec
from harness.store import Store


@dataclass(frozen=True)
class SuiteData:
    """The suite's datasets, in one schema. Prompts of defence, attack and eval are disjoint."""

    defence: Any        # harmful rows with a paired `refusal` (prompt, response, refusal, category, is_safe)
    attack: Any         # harmful rows (prompt, response, category, is_safe)
    eval: Any           # held-out harmful prompts (prompt, category)
    retain: Any         # harmless QA rows a defence may train on
    harmless_eval: Any  # held-out harmless QA


@dataclass(frozen=True)
class Budget:
    """One attack of a suite's budget grid: an attack name and the params that set its strength."""

    attack: str
    params: Mapping[str, Any]
    label: str  # short column name, e.g. "3e-4@1k"


@dataclass(frozen=True)
class Suite:
    name: str
    protocol_version: int            # bump when the eval protocol changes: results/<suite>/v<N>/
    model: ModelSpec
    judges: tuple[tuple[str, Mapping[str, Any]], ...]  # (judge name, params); the first is primary
    eval: EvalSpec
    max_length: int                  # training context length
    prepare: Callable[[Store, bool], dict[str, Any]]
    data: Callable[[], SuiteData]
    # Shared attack hyper-parameters (e.g. lr, epochs, batch_size): applied to the fields an attack's
    # Config declares; recorded in the run spec like any other value.
    attack_defaults: Mapping[str, Any] = field(default_factory=dict)
    # Per-plugin overrides keyed "<kind>:<name>", e.g. "defence:repnoise" -> {"beta": 0.01}.
    plugin_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    budget_grid: tuple[Budget, ...] = ()  # the attacks a sweep runs, weakest first (lr, then samples)
    phi_tolerance: float = 0.05  # phi = pre-attack harmfulness of the undefended base + this tolerance
    description: str = ""
