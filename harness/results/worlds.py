"""Worlds: suite configs that differ only in which world they build.

A suite names the params that only pick its world (`Suite.world_params`, e.g. the tiny suite's `seed`: other facts,
subjects and base-model seed). Records of the numbered worlds of one config are one board: the worlds are
independent units of replication, pooled by the results summary (unit: world x defence seed x attack seed) and
paired by world in comparisons. A world named by anything but an integer (e.g. a private world's
`private:<digest>`) stands alone: its board is never pooled with public ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from harness.specs import canonical_json

WORLD = "world"  # the column a summary of several worlds adds: each run's world label


def _params(suite_params: str) -> dict[str, Any]:
    try:
        params = json.loads(suite_params)
    except (TypeError, ValueError):
        return {}
    return params if isinstance(params, dict) else {}


def numbered(params: dict[str, Any], world_params: Sequence[str]) -> bool:
    """Does the config name a numbered (public) world: every world param it sets is an integer?"""
    values = [params[p] for p in world_params if p in params]
    return bool(values) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def board_key(suite_params: str, world_params: Sequence[str]) -> str:
    """The board a suite config belongs to: its config without the world params where its world is numbered, else
    the whole config (a board of its own)."""
    params = _params(suite_params)
    if not numbered(params, world_params):
        return suite_params
    return canonical_json({k: v for k, v in params.items() if k not in world_params})


def world_label(suite_params: str, world_params: Sequence[str]) -> str:
    """A short name of a config's world: its world params' values ('0'; 'seed=0,...' for several), else ''."""
    params = _params(suite_params)
    values = [(p, params[p]) for p in world_params if p in params]
    if len(values) == 1:
        return str(values[0][1])
    return ",".join(f"{p}={v}" for p, v in values)


def same_board(a: dict[str, Any], b: dict[str, Any], world_params: Sequence[str]) -> bool:
    """Are two suite configs (dicts) worlds of one board (equal, or numbered worlds of one config)?"""
    return board_key(canonical_json(a), world_params) == board_key(canonical_json(b), world_params)


def boards(configs: Iterable[str], world_params: Sequence[str]) -> list[list[str]]:
    """The configs grouped into boards, each board's worlds in world order (numbered worlds by number), boards in
    the order of their first config."""
    groups: dict[str, list[str]] = {}
    for config in sorted(configs, key=lambda c: (board_key(c, world_params), _order(c, world_params))):
        groups.setdefault(board_key(config, world_params), []).append(config)
    return sorted(groups.values(), key=lambda g: g[0])


def board_of(config: str, configs: Iterable[str], world_params: Sequence[str]) -> list[str]:
    """The configs among `configs` on `config`'s board (the board's worlds; [config] where it has no records)."""
    mine = board_key(config, world_params)
    found = [g for g in boards(configs, world_params) if board_key(g[0], world_params) == mine]
    return found[0] if found else [config]


def _order(config: str, world_params: Sequence[str]) -> tuple[Any, ...]:
    params = _params(config)
    return tuple((0, params[p]) if isinstance(params.get(p), int) else (1, str(params.get(p))) for p in world_params)


def of_worlds(frame: Any, worlds: Sequence[str], world_params: Sequence[str]) -> Any:
    """A table's rows of the given suite configs; of several, with a WORLD column naming each row's world."""
    mine = frame[frame["suite_params"].isin(worlds)].reset_index(drop=True)
    if len(worlds) > 1:
        mine = mine.assign(**{WORLD: [world_label(p, world_params) for p in mine["suite_params"]]})
    return mine
