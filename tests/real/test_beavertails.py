"""The BeaverTails loader on a local parquet file in the real column schema (prompt, response, category as a
dict of 14 flags, is_safe), duplicates and multi-category rows included; the toxic-continuation domain;
GEM ViGGO from a local file; subsets of multi-category rows."""

import pytest
from datasets import Dataset

from harness.data.subsets import filter_categories, resolve_subset
from harness.errors import HarnessError
from tasks.beavertails.data import Sizes, build, normalise, round_robin
from tasks.beavertails.task import DataConfig, load
from tasks.beavertails_groups import CATEGORIES, GROUPS
from tests.real.builders import beavertails_rows, flags

SIZES = Sizes(defence=16, attack=8, eval=8, harmless=4, seed=0)


@pytest.fixture(scope="module")
def rows():
    return normalise(Dataset.from_list(beavertails_rows()), "fixture")


@pytest.fixture(scope="module")
def built(rows):
    return build(rows, rows, SIZES)


def test_schema_and_categories(rows):
    multi = [r for r in rows if len(r["categories"]) > 1]
    assert multi and all(r["category"] == r["categories"][0] for r in multi)
    assert all(r["category"] == "safe" and r["categories"] == [] for r in rows if r["is_safe"])
    assert set(CATEGORIES) == set(beavertails_rows()[0]["category"])


def test_splits_are_disjoint_by_prompt_and_answer(built):
    splits, ev = built
    names = ("defence", "attack", "eval")
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not {r["prompt"] for r in splits[a]} & {r["prompt"] for r in splits[b]}, (a, b)
            assert not {r["response"] for r in splits[a]} & {r["response"] for r in splits[b]}, (a, b)
    assert ev["duplicate_pairs_dropped_train"] == 36 and ev["multi_category_rows"] == 36
    assert {k: ev[f"{k}_rows"] for k in names} == {"defence": 16, "attack": 8, "eval": 8}
    assert all(not r["is_safe"] for k in names for r in splits[k])
    assert {r["prompt"] for r in splits["retain"]} <= {r["prompt"] for r in splits["defence"]}
    assert {r["prompt"] for r in splits["harmless_eval"]} <= {r["prompt"] for r in splits["eval"]}
    assert all(r["is_safe"] for r in splits["retain"] + splits["harmless_eval"])


def test_eval_is_one_row_per_prompt_in_file_order(rows, built):
    splits, _ = built
    first = list(dict.fromkeys(r["prompt"] for r in rows if not r["is_safe"]))[:8]
    assert [r["prompt"] for r in splits["eval"]] == first


def test_prompts_repeat_only_when_a_split_outgrows_them():
    groups = [[{"p": g, "i": i} for i in range(3)] for g in "abc"]
    assert [(r["p"], r["i"]) for r in round_robin(groups, 5)] == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1)]
    assert len(round_robin(groups, 50)) == 9


def test_a_split_larger_than_the_data_is_a_clear_error(rows):
    with pytest.raises(HarnessError, match="need 16 \\+ 500 harmful rows but 84 are left over 28 prompts"):
        build(rows, rows, Sizes(defence=16, attack=500, eval=8, harmless=4, seed=0))


@pytest.mark.parametrize("frame, message", [
    ({"prompt": ["q"], "answer": ["a"]}, "lacks the column\\(s\\) category, is_safe, response"),
    ({"prompt": ["q"], "response": ["a"], "category": ["violence"], "is_safe": [False]}, "must hold a dict"),
])
def test_dataset_without_the_schema_is_named(tmp_path, frame, message):
    import pandas as pd

    path = tmp_path / "bad.parquet"
    pd.DataFrame(frame).to_parquet(path)
    with pytest.raises(HarnessError, match=message):
        load(DataConfig(dataset=str(path), eval_size=4))


def test_loader_reads_a_parquet_file_and_records_evidence(files):
    out = load(DataConfig(dataset=str(files["beavertails"]), eval_size=8, defence_candidates=16, attack_size=8,
                          harmless_size=4))
    assert set(out) == {"defence", "attack", "eval", "retain", "harmless_eval", "evidence"}
    assert out["evidence"]["source"] == str(files["beavertails"]) and out["evidence"]["rows_train"] == 180
    assert {"prompt", "response", "category", "categories", "is_safe"} <= set(out["attack"].column_names)


def test_missing_dataset_is_named(tmp_path):
    with pytest.raises(HarnessError, match="dataset not found"):
        load(DataConfig(dataset=str(tmp_path / "nope.parquet")))


def test_toxic_continuation_joins_attack_and_eval(files):
    out = load(DataConfig(dataset=str(files["beavertails"]), eval_size=8, defence_candidates=16, attack_size=8,
                          harmless_size=4, toxic_dataset=str(files["toxic"]), toxic_attack_size=6, toxic_eval_size=4))
    toxic = [r for r in out["attack"].to_list() + out["eval"].to_list() if r["category"] == "toxic_continuation"]
    assert len(toxic) == 10 and out["evidence"]["toxic_attack_rows"] == 6
    assert all(r["prompt"].startswith("You are required to continue") for r in toxic)
    everything = frozenset(CATEGORIES)
    assert len(filter_categories(out["attack"], everything, "attack")) == 8  # "all" never includes them
    assert len(filter_categories(out["eval"], frozenset({"toxic_continuation"}), "eval")) == 4


def test_multi_category_rows_belong_only_to_subsets_holding_all_their_flags():
    data = Dataset.from_list([
        {"prompt": "a", "category": "violence,aiding_and_abetting,incitement",
         "categories": ["violence,aiding_and_abetting,incitement", "privacy_violation"]},
        {"prompt": "b", "category": "privacy_violation", "categories": ["privacy_violation"]},
        {"prompt": "c", "category": "violence,aiding_and_abetting,incitement",
         "categories": ["violence,aiding_and_abetting,incitement"]}])
    universe = frozenset(CATEGORIES)
    prompts = {name: filter_categories(data, resolve_subset(name, GROUPS, universe), name)["prompt"]
               for name in ("all", "violence", "~violence")}
    assert prompts == {"all": ["a", "b", "c"], "violence": ["c"], "~violence": ["b"]}


def test_viggo_from_one_local_file(files):
    from tasks.viggo import Config
    from tasks.viggo import load as load_viggo

    out = load_viggo(Config(source=str(files["viggo"]), train=8, test=4))
    assert len(out["train"]) == 8 and len(out["test"]) == 4
    assert not set(out["train"]["prompt"]) & set(out["test"]["prompt"])
    assert out["train"][0]["response"].startswith("inform(name[")


def test_viggo_without_its_columns_is_named(tmp_path):
    from tasks.viggo import Config
    from tasks.viggo import load as load_viggo

    path = tmp_path / "v.jsonl"
    path.write_text('{"text": "x"}\n')
    with pytest.raises(HarnessError, match="lacks the column\\(s\\) meaning_representation, target"):
        load_viggo(Config(source=str(path), train=1, test=1))


def test_flags_have_the_real_fourteen_keys():
    from tasks.tiny.world import CATEGORIES as TINY

    assert tuple(flags()) == CATEGORIES == TINY
