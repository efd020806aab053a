"""`harness validate`: the committed results are valid, and each kind of tampering is caught and named."""

import json
import shutil

import pytest

from harness.results.records import load_records
from harness.results.tables import build, write_table
from harness.results.validate import validate
from tests.conftest import REPO, harness

COMMITTED = REPO / "results"


def test_committed_results_validate():
    """What CI runs (`harness validate results/` in `make test`): every committed folder is valid."""
    findings = list(validate(COMMITTED))
    assert findings and all(f.ok for f in findings), [f.line() for f in findings if not f.ok][:5]
    assert any("tables match the records" in f.detail for f in findings)


@pytest.fixture
def results(tmp_path):
    """A small results folder: six committed records and the tables built from them."""
    folder = tmp_path / "results" / "tiny" / "v1"
    folder.mkdir(parents=True)
    for path in sorted((COMMITTED / "tiny" / "v1").glob("*.json"))[:6]:
        shutil.copy(path, folder)
    for name, frame in build(load_records(folder)).items():
        write_table(frame, name, folder)
    assert all(f.ok for f in validate(tmp_path / "results"))
    return folder


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def _failures(root):
    return [f.line() for f in validate(root) if not f.ok]


def test_a_changed_metric_makes_the_tables_stale(results):
    path = sorted(results.glob("*.json"))[0]
    _edit(path, lambda d: d["metrics"]["post_attack"]["harmfulness"].update(mean=0.123))
    lines = _failures(results)
    (line,) = [x for x in lines if "resistance.parquet" in x]
    # greedy harmfulness is these records' headline too (protocol 2: harmfulness)
    assert f"differs from the records: column(s) hs_post, headline_post differ in 1 row(s) (run {path.stem})" in line
    # The record contradicts itself too (its per-category means, its curve): tests/results/test_forged_records.py.
    assert any(path.name in x and "per-category values give" in x for x in lines)


def test_a_changed_spec_no_longer_hashes_to_its_run_id(results):
    path = sorted(results.glob("*.json"))[1]
    _edit(path, lambda d: d["spec"].update(seed=d["spec"]["seed"] + 100))
    lines = [x for x in _failures(results) if path.name in x]
    assert any("is not the hash of its spec" in x for x in lines)


def test_a_schema_violation_names_the_field(results):
    path = sorted(results.glob("*.json"))[2]
    _edit(path, lambda d: d["metrics"]["pre_attack"]["harmfulness"].update(mean=1.5))
    lines = [x for x in _failures(results) if path.name in x]
    assert any("metrics.pre_attack.harmfulness.mean" in x for x in lines)


def test_a_missing_table_and_a_misplaced_record_fail(results):
    (results / "stability.parquet").unlink()
    other = results.parent.parent / "elsewhere" / "v1"
    other.mkdir(parents=True)
    shutil.copy(sorted(results.glob("*.json"))[0], other)
    failures = _failures(results.parent.parent)
    assert any("stability.parquet missing" in x for x in failures)
    assert any("a record of suite 'tiny' v1 in folder elsewhere/v1" in x for x in failures)


def test_cli_exit_codes(results, tmp_path):
    ok = harness("validate", str(results), home=tmp_path)
    assert ok.returncode == 0 and ok.stdout.startswith("OK")
    (results / "trainability.parquet").unlink()
    bad = harness("validate", str(results), home=tmp_path)
    assert bad.returncode == 1 and "FAIL" in bad.stdout and "trainability.parquet missing" in bad.stdout
    missing = harness("validate", str(tmp_path / "nope"), home=tmp_path)
    assert missing.returncode == 2 and missing.stdout == "" and len(missing.stderr.strip().splitlines()) == 1


def test_a_dirty_record_fails_from_the_protocol_its_suite_requires_clean():
    """tiny v1/v2 hold records from dirty trees (published before the rule); from v3 (`clean_from_protocol`) a
    record made from uncommitted changes fails `harness validate`."""
    from harness.results.validate import provenance_problems

    record = load_records(REPO / "results" / "tiny" / "v2")[0]
    dirty = record.model_copy(update={"provenance": record.provenance.model_copy(update={"git_dirty": True})})
    clean = record.model_copy(update={"provenance": record.provenance.model_copy(update={"git_dirty": False})})
    assert provenance_problems(dirty) == [] and provenance_problems(clean) == []  # v2: the rule starts at v3
    problems = provenance_problems(dirty.model_copy(update={"protocol_version": 3}))
    assert len(problems) == 1 and "dirty tree" in problems[0] and "tiny v3" in problems[0], problems
    assert provenance_problems(clean.model_copy(update={"protocol_version": 3})) == []
