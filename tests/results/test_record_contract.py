"""The run record is the project's public contract: typed, versioned, with a committed JSON Schema.

A renamed or malformed metric is a clear error naming the field, never a NaN in a table; every committed
record validates against the committed schema (with the `jsonschema` package, no torch needed); schema-1
records stay readable; the committed records' run ids are still what the current code resolves.
"""

import json
import math

import jsonschema
import pytest

from harness.errors import CorruptRecordError
from harness.results.records import (
    RECORD_SCHEMA_VERSION,
    SCHEMA_FILE,
    load_records,
    read_record,
    record_schema,
    write_record,
)
from harness.results.tables import build
from tests.conftest import REPO, harness
from tests.factories import record

COMMITTED = sorted(REPO.glob("results/*/v*/*.json"))


def test_committed_schema_is_generated_from_the_models():
    assert json.loads(SCHEMA_FILE.read_text()) == record_schema(), "stale: run `harness schema`"


def test_committed_schema_validates_every_committed_record():
    assert len(COMMITTED) >= 100
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    for path in COMMITTED:
        errors = [e.message for e in validator.iter_errors(json.loads(path.read_text()))]
        assert not errors, f"{path.name}: {errors[:2]}"


def test_schema_rejects_what_the_models_reject():
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    data = json.loads(record().model_dump_json())
    assert validator.is_valid(data) and data["schema_version"] == RECORD_SCHEMA_VERSION
    data["metrics"]["post_attack"]["harmfulness"]["mean"] = 1.5
    assert not validator.is_valid(data)


def _renamed(folder, mutate):
    r = record()
    data = json.loads(r.model_dump_json())
    mutate(data)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{r.run_id}.json"
    path.write_text(json.dumps(data))
    return path


def test_a_renamed_metric_is_named_not_a_nan(tmp_path):
    def rename(d):
        h = d["metrics"]["post_attack"]["harmfulness"]
        h["avg"] = h.pop("mean")

    folder = tmp_path / "results" / "t" / "v1"
    path = _renamed(folder, rename)
    with pytest.raises(CorruptRecordError, match=r"metrics\.post_attack\.harmfulness\.mean: Field required"):
        read_record(path)
    good = record(seed=1)
    write_record(folder / f"{good.run_id}.json", good)
    tables = build(load_records(folder))
    assert list(tables["resistance"]["run_id"]) == [good.run_id]  # the broken record is left out, not NaN
    proc = harness("tables", "--results-dir", str(tmp_path / "results"), "--quiet", home=tmp_path)
    assert proc.returncode == 0 and "metrics.post_attack.harmfulness.mean" in proc.stderr
    assert "(1 rows)" in proc.stdout


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.1])
def test_a_probability_must_be_a_probability(tmp_path, value):
    def poison(d):
        d["metrics"]["pre_attack"]["harmfulness"]["mean"] = value

    path = _renamed(tmp_path, poison)
    path.write_text(path.read_text().replace("Infinity", "1e999"))
    with pytest.raises(CorruptRecordError, match=r"metrics\.pre_attack\.harmfulness\.mean"):
        read_record(path)


def test_schema_one_records_are_read_with_the_declared_budget():
    path = next(p for p in COMMITTED if json.loads(p.read_text())["schema_version"] == 1)
    r = read_record(path)
    assert r.budget.samples == r.spec.attack.params["samples"] and r.budget.lr == r.spec.attack.params["lr"]


def test_committed_run_ids_are_still_what_the_code_resolves():
    """A change of what a spec means must come with a version bump: every committed record either names a plugin
    version that is no longer installed, or still resolves to its own run id."""
    from harness import registry
    from harness.resolve import resolve

    checked, of_installed_suite = 0, 0
    for path in COMMITTED:
        r = read_record(path)
        s = r.spec
        of_installed_suite += registry.get("suite", s.suite.name).version == s.suite.version
        plugins = [("suite", s.suite), ("defence", s.defence), ("attack", s.attack), *(("judge", j) for j in s.judges)]
        if any(registry.get(kind, p.name).version != p.version for kind, p in plugins):
            continue  # an older version: its meaning is declared changed
        user = r.overrides.get("user", {})
        if user.keys() - {"attack", "defence", "subsets", "suite"}:  # suite: a grid's world, in `sets` below
            continue
        sets = [f"{target}.{k}={json.dumps(v)}" for target in ("attack", "defence", "subsets")
                for k, v in user.get(target, {}).items()]
        sets += [f"suite.{k}={json.dumps(v)}" for k, v in s.suite.params.items()]
        tuned_from = path.parents[2] if r.overrides.get("tuned") else None  # results/<suite>/v<N>/<id>.json
        spec, _, _ = resolve(s.suite.name, s.defence.name, s.attack.name, seed=s.seed, attack_seed=s.attack_seed,
                             sets=sets, tuned_from=tuned_from)
        assert spec.run_id == r.run_id, path.name
        checked += 1
    # Not vacuous: where records of the installed suite version are committed, some of them were resolved (none are
    # while the installed protocol has no published board: every committed record is then of an older version).
    assert checked or not of_installed_suite, "no committed record of the installed suite version resolves"
