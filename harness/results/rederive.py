"""`harness validate --deep`: re-derive a record's metrics from the store artifacts it names.

Each evaluation of a record (base, pre_attack, post_attack) names its generations
(`metrics.<name>.artifacts.generations`), and its provenance names the key of every stage that measured them:
each judge's scores, the scores on the attack-visible prompts, the degenerate flags, the gold NLL (and the
unaligned base's). Those artifacts are read from the store and aggregated again with the functions the pipeline uses
(`harness.judges.harmfulness` and `agreement`, `harness.evaluation.exact_match`); so are the attack's recorded
curve (the attacked model's `extra.json`), the stability perplexities and the trainability curves. A value that
differs from the record's is a problem. An artifact the store does not hold is "not checked (no artifact)",
never a failure: a store may have been garbage-collected, or be another machine's.

Per-category harmfulness and harmless QA need the suite's evaluation rows (categories, reference answers): the
installed suite gives them where it is the record's suite version (else those two are not checked, and said so).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.results.consistency import STORE_KEY, TOL
from harness.results.records import RunRecord
from harness.stages import DEGENERATE, GENERATIONS, GOLD_NLL, MODELS, SCORES, STABILITY, TRAINABILITY
from harness.store.artifacts import MISSING, Store

EVALUATIONS = ("base", "pre_attack", "post_attack")


@dataclass
class Deep:
    """What `--deep` found for one record: differences (problems), how many values it re-derived, and what it
    could not check and why."""

    problems: list[str] = field(default_factory=list)
    checked: int = 0
    unchecked: list[str] = field(default_factory=list)


def differences(path: str, recorded: Any, derived: Any) -> list[str]:
    """'path: recorded != derived' for every leaf that differs (floats within TOL, tuples equal to lists)."""
    if isinstance(recorded, dict) and isinstance(derived, dict):
        out = []
        for k in [*recorded, *(k for k in derived if k not in recorded)]:  # the record's order: mean first
            out += differences(f"{path}.{k}", recorded.get(k), derived.get(k))
        return out
    if isinstance(recorded, (list, tuple)) and isinstance(derived, (list, tuple)):
        if len(recorded) != len(derived):
            return [f"{path}: {len(recorded)} values != {len(derived)}"]
        pairs = enumerate(zip(recorded, derived, strict=True))
        return [d for i, (a, b) in pairs for d in differences(f"{path}[{i}]", a, b)]
    numbers = (int, float)
    if isinstance(recorded, numbers) and isinstance(derived, numbers) and not isinstance(recorded, bool):
        same = abs(recorded - derived) <= TOL * max(1.0, abs(recorded), abs(derived))
    else:
        same = recorded == derived
    return [] if same else [f"{path}: {recorded!r} != {derived!r}"]


@dataclass
class EvalRows:
    """The suite's rows an evaluation used: harmful prompts and their categories, harmless prompts and answers."""

    harmful: list[str]
    categories: list[str]
    harmless: list[str]
    answers: list[str]
    units: list[str] | None = None  # the harmful prompts' independent units (the suite's `unit` column)


class SuiteRows:
    """The installed suites' evaluation rows, loaded once per suite configuration and harm subset."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[EvalRows | None, str]] = {}

    def get(self, record: RunRecord) -> tuple[EvalRows | None, str]:
        """(the rows, '') or (None, why they are not available)."""
        spec = record.spec
        key = json.dumps([spec.suite.model_dump(), spec.subsets.attack, spec.eval.n_prompts, spec.eval.n_harmless],
                         sort_keys=True, default=str)
        if key not in self._cache:
            self._cache[key] = self._load(record)
        return self._cache[key]

    @staticmethod
    def _load(record: RunRecord) -> tuple[EvalRows | None, str]:
        from harness import registry
        from harness.data.subsets import filter_categories
        from harness.resolve import load_suite

        spec = record.spec
        try:
            installed = registry.get("suite", spec.suite.name).version
            if installed != spec.suite.version:
                return None, (f"the installed suite {spec.suite.name} is v{installed}, the record's "
                              f"v{spec.suite.version}")
            _, suite = load_suite(spec.suite.name, dict(spec.suite.params))
            data = suite.data()
            harmful = filter_categories(data.eval, suite.subset(spec.subsets.attack), "eval")
            harmful = harmful.select(range(min(spec.eval.n_prompts, len(harmful))))
            harmless = data.harmless_eval.select(range(min(spec.eval.n_harmless, len(data.harmless_eval))))
        except Exception as exc:  # a suite whose data cannot be built here (missing files, no network) leaves
            # two checks undone; it must not stop the validation of every other record
            return None, f"suite {spec.suite.name} does not load ({type(exc).__name__}: {exc})"
        units = list(map(str, harmful["unit"])) if "unit" in harmful.column_names else None
        return EvalRows(list(harmful["prompt"]), list(harmful["category"]), list(harmless["prompt"]),
                        list(harmless["response"]), units), ""


class _Reader:
    """Reads the artifacts one record names and notes each comparison in a `Deep`."""

    def __init__(self, store: Store, record: RunRecord, out: Deep):
        self.store, self.record, self.out = store, record, out

    def key(self, stage: str) -> str | None:
        info = self.record.provenance.stages.get(stage)
        if info is None or not info.key or not STORE_KEY.fullmatch(info.key):  # a bad key is a FAIL already
            self.out.unchecked.append(f"{stage}: not checked (the record names no artifact)")
            return None
        return info.key

    def folder(self, kind: str, key: str, what: str) -> Path | None:
        problem = self.store.problem(kind, key)
        if problem == MISSING:
            self.out.unchecked.append(f"{what}: not checked (no artifact {kind}/{key})")
            return None
        if problem is not None:
            self.out.unchecked.append(f"{what}: not checked (artifact {kind}/{key} is damaged: {problem})")
            return None
        return self.store.path(kind, key)

    def value(self, stage: str, kind: str) -> tuple[bool, Any]:
        """(found, the JSON value of a `cached_value` stage)."""
        key = self.key(stage)
        folder = self.folder(kind, key, stage) if key else None
        if folder is None:
            return False, None
        return True, json.loads((folder / "value.json").read_text())

    def scores(self, stage: str) -> list[float] | None:
        import pandas as pd

        key = self.key(stage)
        folder = self.folder(SCORES, key, stage) if key else None
        return None if folder is None else pd.read_parquet(folder / "scores.parquet")["score"].tolist()

    def compare(self, where: str, recorded: Any, derived: Any, source: str) -> None:
        found = differences(where, recorded, derived)
        self.out.checked += 1
        if found:
            more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
            self.out.problems.append(f"--deep: the stored {source} give another value: "
                                     f"{'; '.join(found[:3])}{more} (record != re-derived)")


def rederive(record: RunRecord, store: Store, suites: SuiteRows) -> Deep:
    """Every metric of `record` that its artifacts in `store` determine, re-derived and compared."""
    out = Deep()
    reader = _Reader(store, record, out)
    rows, why = suites.get(record)
    if rows is None:
        out.unchecked.append(f"per-category harmfulness and harmless QA: not checked ({why})")
    for name in EVALUATIONS:
        _evaluation(reader, name, rows)
    _conditions(reader)
    return out


def _evaluation(r: _Reader, name: str, rows: EvalRows | None) -> None:
    from harness.judges import agreement, harmfulness

    ev, judges = getattr(r.record.metrics, name), r.record.spec.judges
    where = f"metrics.{name}"
    scores = {j.name: r.scores(f"{name}.judge.{j.name}") for j in judges}
    for i, (judge, values) in enumerate(scores.items()):
        if values is None:
            continue
        per_prompt = rows is not None and len(rows.categories) == len(values)
        units = rows.units if per_prompt and rows is not None else None
        derived = harmfulness(values, rows.categories if per_prompt else ["-"] * len(values), units)
        if i == 0:
            recorded = ev.harmfulness.model_dump(by_alias=True)
            if not per_prompt:
                recorded.pop("per_category"), derived.pop("per_category")
                if recorded.get("units") is not None:  # a cluster interval needs the suite's units
                    recorded.pop("ci95"), recorded.pop("units"), derived.pop("ci95")
            r.compare(f"{where}.harmfulness", recorded, derived, f"scores of {judge}")
        own = ev.by_judge.get(judge)
        r.compare(f"{where}.by_judge.{judge}", own.model_dump(by_alias=True) if own else None,
                  {k: derived[k] for k in ("mean", "frac_over_0.5")}, f"scores of {judge}")
    a = ev.judge_agreement
    if a is not None and scores.get(ev.judge) is not None and scores.get(a.other) is not None:
        r.compare(f"{where}.judge_agreement", a.model_dump(by_alias=True),
                  {"with": a.other, **agreement(scores[ev.judge], scores[a.other])}, "scores of both judges")
    if ev.visible is not None:
        visible = r.scores(f"{name}.judge.visible")
        if visible is not None:
            derived = harmfulness(visible, ["-"] * len(visible))
            derived.pop("per_category")
            r.compare(f"{where}.visible", ev.visible.model_dump(by_alias=True), derived, "visible-prompt scores")
    _generations(r, name, rows)
    for stage, kind, recorded in ((f"{name}.degenerate", DEGENERATE, ev.degenerate.model_dump(by_alias=True)),
                                  (f"{name}.gold_nll", GOLD_NLL, ev.gold_nll)):
        if stage in r.record.provenance.stages:
            found, value = r.value(stage, kind)
            if found:
                r.compare(f"{where}.{stage.split('.')[-1]}", recorded, value, f"{stage} artifact")


def _generations(r: _Reader, name: str, rows: EvalRows | None) -> None:
    """Harmless QA from the stored generations and the suite's answers; the generations are for its prompts."""
    import pandas as pd

    from harness.evaluation import exact_match

    ev = getattr(r.record.metrics, name)
    key = ev.artifacts.get("generations", "")
    folder = r.folder(GENERATIONS, key, f"{name} generations") if STORE_KEY.fullmatch(key) else None
    if folder is None or rows is None:
        return
    frame = pd.read_parquet(folder / "generations.parquet")
    sets = {s: frame.loc[frame["set"] == s] for s in ("harmful", "harmless")}
    if sets["harmful"]["prompt"].tolist() != rows.harmful or sets["harmless"]["prompt"].tolist() != rows.harmless:
        r.out.problems.append(f"--deep: the generations {key} of {name} were not made for the suite's evaluation "
                              "prompts")
        return
    r.compare(f"metrics.{name}.harmless_qa", ev.harmless_qa.model_dump(by_alias=True),
              exact_match(sets["harmless"]["generation"].tolist(), rows.answers), f"{name} generations")


def _conditions(r: _Reader) -> None:
    """The attack's recorded curve points, the stability perplexities and the trainability curves."""
    m = r.record.metrics
    key = r.key("attack")
    folder = r.folder(MODELS, key, "attack curve") if key else None
    if folder is not None and (folder / "extra.json").is_file():
        points = json.loads((folder / "extra.json").read_text()).get("curve", [])
        recorded = [list(p) for p in m.resistance.curve]
        # as measure_resistance builds it: an attack with no points (no training) ends at step 1
        derived = [*recorded[:1], *points[:-1], [points[-1][0] if points else 1, recorded[-1][1]]]
        r.compare("metrics.resistance.curve", recorded, derived, "attack's curve points")
    for who in ("defended", "base"):
        found, value = r.value(f"stability.perplexity.{who}", STABILITY)
        if found:
            r.compare(f"metrics.stability.perplexity.{who}", getattr(m.stability.perplexity, who), value,
                      f"stability.perplexity.{who} artifact")
    if m.unaligned is not None and "unaligned.gold_nll" in r.record.provenance.stages:
        found, value = r.value("unaligned.gold_nll", GOLD_NLL)
        if found:
            r.compare("metrics.unaligned.gold_nll", m.unaligned.gold_nll, value, "unaligned.gold_nll artifact")
    t = m.trainability
    if t is None:
        return
    then = t.then_attack
    for who, curve, harm in (("defended", t.curve, then and [then.before, then.after]),
                             ("base", t.base_curve, then and [then.base_before, then.base_after])):
        found, value = r.value(f"trainability.{who}", TRAINABILITY)
        if found:
            r.compare(f"metrics.trainability.{'curve' if who == 'defended' else 'base_curve'}",
                      [list(p) for p in curve], value["curve"], f"trainability.{who} artifact")
            if harm:
                r.compare(f"metrics.trainability.then_attack ({who})", harm, value.get("harm"),
                          f"trainability.{who} artifact")
