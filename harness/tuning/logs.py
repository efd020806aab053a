"""Tuning and scan logs: their typed contents, where they live, the search space a Config declares, and the
tuned settings a run takes from a committed log (read by `resolve`; written by `harness.tuning.search`)."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness import registry
from harness.errors import CorruptRecordError
from harness.progress import say
from harness.results.jsonio import read_json
from harness.results.records import results_folder
from harness.store.artifacts import atomic_write_text


class Trial(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    params: dict[str, Any]
    seed: int = Field(0, description="the defence seed of this run")
    run_id: str
    hs_post: float = Field(description="validation harmfulness after the validation attack")
    auc: float
    stable: bool
    missed: list[str]
    # Protocol 3 (absent from earlier logs): the post-attack headline the choice ranks by, and the trial's
    # harmless-QA delta (the stability axis of the Pareto front), both from its run record.
    score: float | None = Field(None, description="post-attack headline (knowledge access where the record has it, "
                                "else harmfulness); lower is better for a defender")
    measure: str | None = Field(None, description="what `score` measures: 'access' or 'harmfulness'")
    qa_delta: float | None = Field(None, description="harmless QA of the defended model minus the base's")

    @property
    def headline(self) -> float:
        """The score the choice ranks by: the headline, or harmfulness in logs that predate it."""
        return self.score if self.score is not None else self.hs_post


class Candidate(BaseModel):
    """A stable search trial confirmed at the protocol's other defence seeds (protocol 3)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    params: dict[str, Any]
    seeds: list[int] = Field(description="the defence seeds run, seed 0 first (stops at the first that fails)")
    scores: list[float] = Field(description="the post-attack headline at each of `seeds`")
    held: bool = Field(description="passed the stability guard at every seed")
    mean: float | None = Field(description="mean of `scores` over every seed (None where it did not hold)")


class FrontPoint(BaseModel):
    """A search trial on the resistance-stability Pareto front: no other is both lower in headline and higher in
    harmless-QA delta."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trial: int = Field(description="index into the log's trials")
    params: dict[str, Any]
    score: float
    qa_delta: float


class TuningLog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    protocol_version: int
    suite_params: dict[str, Any] = Field(description="the suite config the tuned settings apply to")
    validation: dict[str, Any] = Field(description="the suite settings that select the validation data")
    defence: str
    defence_version: str
    space: dict[str, list[Any]]
    trials_budget: int = Field(description="trials every defence gets under this suite")
    attack: str
    attack_params: dict[str, Any]
    trials: list[Trial]
    confirmations: list[Trial] = Field(default_factory=list, description="the best stable trials rerun at the "
                                       "protocol's confirm seeds, in order, until one holds at every seed")
    chosen: dict[str, Any] = Field(description="the tuned settings ({} when no trial passed the guard)")
    passed_guard: bool
    # Protocol 3 (absent from earlier logs, whose choice was the first candidate that held at every seed).
    sampler: str | None = Field(None, description="how the trials were proposed: whole, random or tpe")
    confirm_top: int | None = Field(None, description="candidates that must hold at every seed before the lowest "
                                    "mean is chosen")
    candidates: list[Candidate] = Field(default_factory=list, description="the confirmed candidates, in seed-0 order")
    reference_defence: str | None = Field(None, description="the suite's reference (e.g. no defence)")
    reference: list[Trial] = Field(default_factory=list, description="the reference defence's validation runs at the "
                                   "same attack and seeds: what tuning gains over it on the data it was tuned on")
    pareto_front: list[FrontPoint] | None = Field(None, description="the search trials on the resistance-stability "
                                                  "front (None: computed from the records by a reader)")
    chosen_position: dict[str, str] = Field(default_factory=dict, description="for each chosen field: smallest, "
                                            "largest or interior value of its declared space (or only, unordered)")


class ScanLog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    protocol_version: int
    suite_params: dict[str, Any]
    validation: dict[str, Any]
    defence: str
    defence_version: str
    space: dict[str, list[Any]]
    scans: list[dict[str, Any]] = Field(description="the fixed fields of each scan merged into this log ({}: the "
                                        "whole space); a scan covers every combination of the other fields")
    space_size: int = Field(description="settings in the whole space")
    attack: str
    attack_params: dict[str, Any]
    trials: list[Trial] = Field(description="one per scanned setting")
    stable: list[dict[str, Any]] = Field(description="the scanned settings that pass the stability guard")


Log = TypeVar("Log", bound=BaseModel)  # a tuning, scan or attacker log (harness.tuning.attacker_log)


def read_log(path: Path, model: type[Log]) -> Log | None:
    """A tuning or scan log file, read bounded (harness.results.jsonio) and validated; None where there is none;
    `CorruptRecordError` (one line naming the file and the first wrong field) if it is not a log."""
    if not os.path.lexists(path):
        return None
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRecordError(f"unreadable tuning log {path}: {getattr(exc, 'msg', None) or type(exc).__name__}"
                                 ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CorruptRecordError(f"invalid tuning log {path}: {'.'.join(map(str, first['loc'])) or '(log)'}: "
                                 f"{first['msg']} ({exc.error_count()} problem(s))") from None


def search_space(config: type[BaseModel], resolved: dict[str, Any]) -> dict[str, list[Any]]:
    """The candidate values each Config field declares: `search` values, or `search_scale` factors of the
    `resolved` value (the plugin's params as the suite sets them; an integer value, e.g. a sample count, scales to
    integers)."""
    out = {}
    for name, f in config.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if "search" in extra:
            out[name] = list(extra["search"])  # type: ignore[arg-type]
        elif "search_scale" in extra:
            out[name] = [_scaled(s, resolved[name]) for s in extra["search_scale"]]  # type: ignore[union-attr]
    return out


def declares_space(config: type[BaseModel]) -> bool:
    """Does the Config declare a search space on any field (without resolving a suite's values)?"""
    return any(isinstance(f.json_schema_extra, dict) and {"search", "search_scale"} & f.json_schema_extra.keys()
               for f in config.model_fields.values())


def _scaled(factor: float, value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return max(1, round(factor * value))
    return float(f"{factor * value:.3g}")


def log_path(results_dir: Path, suite: str, protocol_version: int, defence: str, kind: str = "") -> Path:
    """The tuning log (kind ''), or the scan log (kind 'scan')."""
    name = f"{defence}.{kind}.json" if kind else f"{defence}.json"
    return results_folder(results_dir, suite, protocol_version) / "tuning" / name


def tuned_settings(results_dir: Path, suite: str, protocol_version: int, suite_params: dict[str, Any],
                   defence: str, world_params: tuple[str, ...] = ()) -> dict[str, Any]:
    """The chosen settings of a committed tuning log for this suite config and this defence's installed version
    ({} if there is none). A log tuned on a numbered world serves every numbered world of its config (the suite's
    `world_params`): a defence is tuned once, on the default world's validation split."""
    from harness.results.worlds import same_board

    path = log_path(results_dir, suite, protocol_version, defence)
    if not path.is_file():
        return {}
    log = read_log(path, TuningLog)
    if log.suite_params != suite_params and not same_board(log.suite_params, suite_params, world_params):
        return {}
    if log.defence_version != registry.get("defence", defence).version:
        say(f"[yellow]ignored[/] {path}: tuned for {defence} v{log.defence_version}, installed "
            f"v{registry.get('defence', defence).version}; run `harness tune {defence}` again")
        return {}
    return dict(log.chosen)


def settings(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the space's candidate values, in declaration order."""
    return [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]


def write_log(path: Path, log: BaseModel) -> bool:
    """Write a log unless the file already says the same (a fully cached tune or scan rewrites nothing, even
    where the file predates a field with a default, such as a trial's `seed`). Returns whether it wrote."""
    try:
        if read_log(path, type(log)) == log:
            return False
    except CorruptRecordError:
        pass  # a damaged log is replaced

    return atomic_write_text(path, json.dumps(log.model_dump(mode="json"), indent=2) + "\n")


def merge_scans(old: ScanLog, new: ScanLog) -> ScanLog:
    """A new scan added to an earlier one of the same protocol (else the new one replaces it). A scan whose
    settings the earlier scans already ran adds no entry to `scans`: `--set defence.lr=1e-4` after scans of
    lr 1e-4 at each epochs value covers nothing new."""
    same = ("suite", "protocol_version", "suite_params", "validation", "defence", "defence_version", "space",
            "attack", "attack_params")
    if any(getattr(old, f) != getattr(new, f) for f in same):
        return new
    key = lambda params: json.dumps(params, sort_keys=True)  # noqa: E731
    known = {key(t.params): t for t in old.trials}
    trials = known | {key(t.params): t for t in new.trials}
    covered = all(key(t.params) in known for t in new.trials)
    scans = old.scans + [f for f in new.scans if f not in old.scans and not covered]
    return new.model_copy(update={"scans": scans, "trials": list(trials.values()),
                                  "stable": [t.params for t in trials.values() if t.stable]})
