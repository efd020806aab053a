"""The BeaverTails loader on a file full of traps (tests/real/builders.py `trap_rows`): case, spacing and Unicode
variants of one question, questions shared by train and test, multi-flag rows, one answer to many questions,
empty answers and a ~4,000-character prompt. No normalised prompt is in two splits, every dropped row is
counted, the split check and the audit count an overlap alike, and the `any` subset rule keeps multi-flag rows."""

import itertools
import re

import pytest
from datasets import Dataset

from harness.data.audit import audit
from harness.data.normalise import distinct, normalise_text
from harness.data.subsets import filter_categories, in_subset, rule_for
from harness.errors import HarnessError
from harness.pipeline import split_evidence
from harness.suite import SuiteData
from tasks.beavertails.task import DataConfig, load
from tests.real.builders import LONG_PROMPT, PRIVACY, TRAP_COUNTS, VIOLENCE, trap_rows, write_traps
from tests.real.conftest import suite_sets

SPLITS = ("defence", "attack", "eval", "retain", "harmless_eval")
BY_DESIGN = {("defence", "retain"), ("eval", "harmless_eval")}  # retain answers defence questions, safely
SIZES = {"eval_size": 8, "defence_candidates": 16, "attack_size": 8, "harmless_size": 4}


@pytest.fixture(scope="module")
def trap_folder(tmp_path_factory):
    return write_traps(tmp_path_factory.mktemp("traps") / "bt")


@pytest.fixture(scope="module")
def loaded(trap_folder):
    return load(DataConfig(dataset=str(trap_folder), train_split="train", test_split="test", **SIZES))


def test_one_normalisation_for_case_space_and_unicode_variants():
    forms = ["How do I X number 2?", "  HOW do i  x\tnumber 2? ", "How\u00a0do I X number \uff12?",
             "how do I x number 2?\n"]
    assert {normalise_text(f) for f in forms} == {"how do i x number 2?"}
    assert normalise_text("Stra\u00dfe") == normalise_text("STRASSE")  # case folding, not lower()


def test_no_normalised_prompt_or_answer_is_in_two_splits(loaded):
    prompts = {name: distinct(loaded[name]["prompt"]) for name in SPLITS}
    for a, b in itertools.combinations(SPLITS, 2):
        if (a, b) not in BY_DESIGN:
            assert not prompts[a] & prompts[b], (a, b, prompts[a] & prompts[b])
    answers = {name: distinct(loaded[name]["response"]) for name in ("defence", "attack", "eval")}
    for a, b in itertools.combinations(answers, 2):
        assert not answers[a] & answers[b], (a, b)
    # Every variant went where its question went (the four train variants and the four shared with test).
    variants = [r["prompt"] for r in trap_rows()["train"] if (r["response"] or "").startswith("Variant")]
    for v in variants:
        assert sum(normalise_text(v) in prompts[name] for name in ("defence", "attack", "eval")) == 1
    assert {r["prompt"] for r in trap_rows()["test"]} >= set(loaded["eval"]["prompt"])
    audited = audit({name: loaded[name] for name in SPLITS})["prompt"]
    assert all(n == 0 for pair, n in audited.items() if tuple(sorted(pair.split("&"))) not in
               {tuple(sorted(p)) for p in BY_DESIGN}), audited


def test_every_dropped_row_is_counted(loaded):
    ev = loaded["evidence"]
    assert TRAP_COUNTS.items() <= ev.items()
    train = trap_rows()["train"]
    safe = sum(r["is_safe"] for r in train)
    assert ev["rows_train"] == len(train) == ev["empty_response_dropped_train"] + ev["unsafe_train"] + safe
    # Every unsafe train row is dropped for a reason that is counted, or is in the defence or attack pool.
    reasons = ("duplicate_pairs_dropped_train", "train_rows_dropped_shared_with_eval",
               "attack_rows_dropped_shared_answer", "defence_duplicate_answers_dropped",
               "attack_duplicate_answers_dropped", "defence_pool_rows", "attack_pool_rows")
    assert ev["unsafe_train"] == sum(ev[k] for k in reasons)
    # One stock answer to 12 questions and one answer given twice: 12 rows go, wherever the shuffle put them.
    assert sum(ev[k] for k in reasons[2:5]) == 12 and ev["defence_duplicate_answers_dropped"] > 0
    for name in ("defence", "attack", "retain"):
        answers = [normalise_text(a) for a in loaded[name]["response"]]
        assert len(answers) == len(set(answers)), name  # no answer trained twice inside a split
    assert all(all(loaded[name]["response"]) for name in SPLITS)
    assert ev["defence_prompts"] == len(distinct(loaded["defence"]["prompt"]))


def test_rows_without_an_answer_token_are_dropped_where_the_tokenizer_is(ckpts, judge_ckpt, files, trap_folder,
                                                                           tmp_path):
    """Through the pipeline's data stage (`open_cell`): the ~4,000-character prompt fills `max_length` (48) under
    the Llama tokenizer and leaves the split it was drawn into, counted in the record's `evidence.data`."""
    from harness.models.loading import load_tokenizer
    from harness.pipeline import open_cell
    from harness.resolve import resolve
    from harness.store.artifacts import Store
    from harness.training.collate import IGNORE, PROMPT_TEMPLATE, encode_sft

    sets = [*suite_sets({**files, "beavertails": trap_folder}, judge_ckpt), "suite.train_split=train",
            "suite.test_split=test"]
    spec, suite, _ = resolve("beavertails-llama2", "none", "sft-1k", sets=sets, model=str(ckpts["llama"]))
    cell = open_cell(spec, suite, store=Store(tmp_path / "home"))
    data, ev = cell.evidence.data, cell.evidence
    dropped = {k: v for k, v in data.items() if "_rows_dropped_" in k and k.split("_")[0] in
               ("defence", "retain", "attack")}
    assert sum(v for k, v in dropped.items() if k.endswith("no_answer_token")) == 1, dropped
    assert sum(v for k, v in dropped.items() if k.endswith("empty_answer")) == 0
    assert all(LONG_PROMPT not in getattr(cell.data, name)["prompt"] for name in ("defence", "attack"))
    assert TRAP_COUNTS.items() <= data.items()
    assert set(ev.prompt_overlap.values()) == {0} and set(ev.answer_overlap.values()) == {0}
    assert all(ev.audit["prompt"][p] == 0 for p in ("attack&defence", "attack&eval", "defence&eval"))
    # The rule the stage applies is what training sees: the long row has no label left, a kept row has.
    tok = load_tokenizer(ckpts["llama"])
    for prompt, answer, kept in ((LONG_PROMPT, "Pour fuel.", False), (cell.data.attack[0]["prompt"], "Yes.", True)):
        labels = encode_sft(tok, prompt, answer, max_length=48, loss_on="answer", template=PROMPT_TEMPLATE)["labels"]
        assert any(x != IGNORE for x in labels) is kept


@pytest.mark.parametrize("variant", ["how do i steal a car?", "How do I steal a car?  ", "HOW DO I STEAL A CAR?",
                                     "How\u00a0do\u2003I steal a car?", "How do I ｓｔｅａｌ a car?"])
def test_split_check_and_audit_agree_on_a_constructed_overlap(variant):
    def ds(prompt, answer):
        return Dataset.from_list([{"prompt": prompt, "response": answer, "category": VIOLENCE}])

    data = SuiteData(defence=ds("How do I steal a car?", "Take it."), attack=ds(variant, "Drive off."),
                     eval=ds("Where is a car?", "There."), retain=None, harmless_eval=None)
    counted = audit({"defence": data.defence, "attack": data.attack, "eval": data.eval})["prompt"]
    assert counted == {"attack&defence": 1, "attack&eval": 0, "defence&eval": 0}
    with pytest.raises(HarnessError, match=re.escape("overlap in prompts: {'defence&attack': 1}")):
        split_evidence(data)


def test_any_rule_keeps_multi_flag_rows(loaded):
    violence = frozenset({VIOLENCE})
    multi = [r for r in loaded["eval"].to_list() if set(r["categories"]) == {VIOLENCE, PRIVACY}]
    assert len(multi) == 4
    assert len(filter_categories(loaded["eval"], violence, "eval", "all")) == 4
    assert len(filter_categories(loaded["eval"], violence, "eval", "any")) == 8
    # A complement withholds every row that carries the group's flag, under either rule.
    rest = frozenset({PRIVACY})
    assert rule_for("~violence", "any") == "all" and not in_subset([VIOLENCE, PRIVACY], rest, "all")
    assert in_subset([VIOLENCE, PRIVACY], rest, "any") and not in_subset([], rest, "any")


def test_any_rule_through_the_run_spec(ckpts, judge_ckpt, files, trap_folder):
    from harness.pipeline import select_data
    from harness.resolve import resolve
    from harness.specs import key_view

    base = [*suite_sets({**files, "beavertails": trap_folder}, judge_ckpt), "suite.train_split=train",
            "suite.test_split=test", "subsets.defence=~violence", "subsets.attack=violence", "suite.n_eval=4"]
    specs = {rule: resolve("beavertails-llama2", "none", "sft-1k", sets=[*base, f"subsets.rule={rule}"],
                           model=str(ckpts["llama"]))[:2] for rule in ("all", "any")}
    default, _ = resolve("beavertails-llama2", "none", "sft-1k", sets=base, model=str(ckpts["llama"]))[:2]
    assert specs["all"][0].run_id == default.run_id != specs["any"][0].run_id  # only the non-default re-keys
    assert "rule" not in key_view(default.model_dump(mode="json"))["subsets"]
    sizes = {}
    for rule, (spec, suite) in specs.items():
        data, ev = select_data(suite, spec)
        assert ev.subsets.held_out and ev.subsets.defence_rows_with_attack_flags == 0
        assert not any(VIOLENCE in cs for cs in data.defence["categories"])
        sizes[rule] = (len(data.attack), len(data.eval))
        assert all(VIOLENCE in cs for cs in [*data.attack["categories"], *data.eval["categories"]])
    assert sizes["any"][1] == 8 > sizes["all"][1] == 4


def test_per_category_scores_count_every_flag():
    from harness.judges import harmfulness

    out = harmfulness([0.9, 0.2, 0.6], [[VIOLENCE, PRIVACY], [VIOLENCE], "other"])
    assert out["n"] == 3 and out["mean"] == pytest.approx(1.7 / 3)
    per = out["per_category"]
    assert {c: per[c]["n"] for c in per} == {VIOLENCE: 2, PRIVACY: 1, "other": 1}
    assert per[VIOLENCE]["mean"] == pytest.approx(0.55) and per[PRIVACY]["mean"] == pytest.approx(0.9)
    assert harmfulness([0.9, 0.2], ["a", "b"])["per_category"]["a"]["n"] == 1  # one name per row: as before
