"""Condition tables: built from records, written with their schema, round-tripped through pandas and DuckDB."""

import duckdb
import pandas as pd
import pytest

from harness.errors import CorruptRecordError
from harness.results.records import load_records, write_record
from harness.results.tables import TABLES, build, read_table, write_table
from tests.factories import record


@pytest.fixture
def records():
    rs = [record("none", {}, lr, seed, 0.0, 1.0) for lr in (1e-4, 1e-3) for seed in (0, 1)]
    rs += [record("repnoise", {"beta": 1.0}, lr, seed, 0.0, post, qa=0.9)
           for lr, post in ((1e-4, 0.02), (1e-3, 0.6)) for seed in (0, 1)]
    rs += [record("repnoise", {"beta": 1.0}, 1e-4, 0, 0.0, 0.03, subsets=("~toxic", "toxic"))]
    return rs


def test_build_shapes(records):
    t = build(records)
    assert len(t["resistance"]) == 9
    assert len(t["stability"]) == 5  # one per (defence config, seed, defence subset): runs share defended models
    assert len(t["trainability"]) == 5
    g = t["generalization"]
    assert len(g) == 9 and g["held_out"].sum() == 1 and g.loc[g.held_out, "attack_subset"].iloc[0] == "toxic"
    for name, frame in t.items():
        assert list(frame.columns) == [c.name for c in TABLES[name]]
    r = t["resistance"]
    assert r.loc[r.defence == "repnoise", "held"].sum() == 3
    assert pd.isna(r.loc[r.defence == "repnoise", "first_cross_step"]).sum() == 3


def test_round_trip_pandas_and_duckdb(records, tmp_path):
    for name, frame in build(records).items():
        path = write_table(frame, name, tmp_path)
        back = read_table(path)
        pd.testing.assert_frame_equal(back, frame)
    con = duckdb.connect()
    worst = con.execute(f"""
        SELECT defence, max(hs_post) AS worst FROM '{tmp_path}/resistance.parquet'
        GROUP BY defence ORDER BY defence""").fetchall()
    assert worst == [("none", 1.0), ("repnoise", 0.6)]
    ppl = con.execute(f"SELECT avg(ppl_ratio) FROM '{tmp_path}/stability.parquet'").fetchone()[0]
    assert ppl == pytest.approx(2.0 / 1.5)


def test_torn_record_is_reported_and_excluded(records, tmp_path, capsys):
    for r in records[:3]:
        write_record(tmp_path / f"{r.run_id}.json", r)
    torn = tmp_path / "deadbeefdeadbeef.json"
    torn.write_text(records[3].model_dump_json()[:200])
    loaded = load_records(tmp_path)
    assert len(loaded) == 3
    assert "deadbeefdeadbeef" in capsys.readouterr().err
    assert torn.read_text() == records[3].model_dump_json()[:200]  # left as it was


def test_table_with_wrong_schema_is_rejected(records, tmp_path):
    frame = build(records)["stability"]
    path = write_table(frame.drop(columns=["ppl_ratio"]), "stability", tmp_path)
    with pytest.raises(CorruptRecordError, match="columns differ"):
        read_table(path)
    frame.to_parquet(tmp_path / "trainability.parquet")  # written without the schema version
    with pytest.raises(CorruptRecordError, match="schema missing"):
        read_table(tmp_path / "trainability.parquet")
    (tmp_path / "resistance.parquet").write_bytes(b"PAR1 torn")
    with pytest.raises(CorruptRecordError, match="unreadable"):
        read_table(tmp_path / "resistance.parquet")
