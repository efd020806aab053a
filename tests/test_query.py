"""An attack's query options (harness.generation.query): which evaluation query they ask for, and sampled
generation that is reproducible from its seed."""

from __future__ import annotations

import pytest

from harness.generation.query import QueryFields
from harness.results.metrics import Query


def test_default_options_ask_greedily():
    assert QueryFields().query(seed=7) is None


def test_a_prefill_alone_is_greedy_and_unseeded():
    assert QueryFields(prefill="Sure,").query(seed=7) == Query(prefill="Sure,", best_of=1, temperature=0.0, seed=0)


def test_best_of_samples_from_the_attack_seed():
    assert QueryFields(best_of=4, temperature=0.7).query(seed=7) == Query(best_of=4, temperature=0.7, seed=7)


def test_prompt_prefix_is_a_shared_query_option_left_out_while_unset():
    """`prompt_prefix` alone makes a query (greedy, unseeded); unset it is left out of a Config's params and of a
    Query's JSON, so the run ids and cache keys of the query attacks made before it hold."""
    assert QueryFields(prompt_prefix="Please: ").query(seed=7) == Query(prompt_prefix="Please: ")
    assert QueryFields().query(seed=7) is None
    assert "prompt_prefix" not in QueryFields(prefill="Sure,").model_dump(mode="json")
    assert Query(prefill="Sure,").model_dump() == {"prefill": "Sure,", "best_of": 1, "temperature": 0.0, "seed": 0}
    assert Query(prompt_prefix="x").model_dump()["prompt_prefix"] == "x"
    assert Query.model_validate({"prefill": "Sure,"}).prompt_prefix == ""  # a record written before it


@pytest.mark.parametrize("bad", [{"best_of": 0}, {"best_of": 65}, {"temperature": 0.0}, {"prefill": "x" * 201},
                                 {"prompt_prefix": "x" * 2001}])
def test_out_of_range_options_are_refused(bad):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        QueryFields(**bad)


def test_sampled_generation_repeats_from_its_seed_and_differs_across_seeds(tmp_path):
    """hf sampling at a temperature: the same seed gives the same answers, another seed others; greedy ignores it."""
    from harness.generation.hf import generate_with_model
    from tests.real.builders import build_tokenizer, causal_lm

    tok = build_tokenizer("llama")
    model = causal_lm("llama", tok)

    prompts = [f"question {i}" for i in range(6)]

    def gen(**kw):
        return generate_with_model(model, tok, prompts, max_new_tokens=8, batch_size=3, **kw)

    a, b, c = gen(temperature=1.5, seed=1), gen(temperature=1.5, seed=1), gen(temperature=1.5, seed=2)
    assert a == b and a != c
    assert gen() == gen(seed=5)
