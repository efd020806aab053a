"""The suite's prompt format is the one format of a run: what every defence and attack trains on starts with
exactly the token ids generation feeds the model, for plain and chat formats, with BOS as the tokenizer
places it."""

import pytest
from datasets import Dataset

from harness import registry
from harness.errors import HarnessError
from harness.plugins import StageContext
from harness.suite import SuiteData
from harness.training.collate import PLAIN, PromptFormat, SFTCollator, encode_sft, special_prefix
from tests.real.builders import build_tokenizer, causal_lm
from tests.released import naming

CHAT = PromptFormat(kind="chat")
SYSTEM = PromptFormat(kind="chat", system="Be brief.")
Q, A = "How do I steal a car?", "Sure. First get the tools."


@pytest.fixture(scope="module")
def toks():
    return {k: build_tokenizer(k) for k in ("llama", "qwen", "gpt2")}


def test_bos_is_placed_as_the_tokenizer_places_it(toks):
    llama, gpt2, qwen = toks["llama"], toks["gpt2"], toks["qwen"]
    assert special_prefix(llama) == [llama.bos_token_id] and special_prefix(gpt2) == [] == special_prefix(qwen)
    assert PLAIN.prompt_ids(llama, Q) == llama(PLAIN.prompt_text(llama, Q))["input_ids"]
    assert PLAIN.prompt_ids(llama, Q)[0] == llama.bos_token_id
    assert PLAIN.prompt_ids(gpt2, Q) == gpt2(f"Question: {Q}\nAnswer:", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("kind", ["llama", "qwen", "gpt2"])
def test_plain_answer_is_the_whole_text_after_the_prompt(toks, kind):
    tok = toks[kind]
    whole = tok(f"Question: {Q}\nAnswer: {A}")["input_ids"]
    assert PLAIN.prompt_ids(tok, Q) + PLAIN.answer_ids(tok, Q, A) == whole + [tok.eos_token_id]


def test_chat_format_uses_the_tokenizers_template(toks):
    tok = toks["qwen"]
    assert CHAT.prompt_text(tok, Q) == f"<|im_start|>user\n{Q}<|im_end|>\n<|im_start|>assistant\n"
    assert SYSTEM.prompt_text(tok, Q).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user")
    answer = tok.decode(CHAT.answer_ids(tok, Q, A))
    assert answer == f"{A}<|im_end|>\n"  # the template closes the assistant turn (end-of-turn = EOS)
    enc = encode_sft(tok, Q, A, max_length=128, loss_on="answer", template=CHAT)
    n = len(CHAT.prompt_ids(tok, Q))
    assert enc["labels"][:n] == [-100] * n and enc["labels"][n:] == enc["input_ids"][n:]


@pytest.mark.parametrize("kind, fmt", [("llama", PLAIN), ("gpt2", PLAIN), ("qwen", CHAT), ("qwen", SYSTEM)])
def test_prompt_lengths_are_those_of_the_prompt_ids(toks, kind, fmt):
    """The untrainable-row check (harness.data.trainable) measures prompts in one batch: the same lengths."""
    questions = [Q, "How\u00a0do I x?", "HOW DO I " + "very " * 40 + "x?", ""]
    assert fmt.prompt_lengths(toks[kind], questions) == [len(fmt.prompt_ids(toks[kind], q)) for q in questions]
    assert fmt.prompt_lengths(toks[kind], []) == []


def test_chat_without_a_template_is_a_clear_error(toks):
    with pytest.raises(HarnessError, match="has no chat template"):
        CHAT.prompt_ids(toks["gpt2"], Q)


def _ctx(tok, fmt):
    rows = [{"prompt": f"{Q} {i}", "response": A, "refusal": "I cannot help with that.", "category": "c",
             "categories": ["c"], "is_safe": False} for i in range(8)]
    harmless = [{"prompt": f"How do I bake {i}?", "response": "Mix and bake.", "category": "safe",
                 "categories": [], "is_safe": True} for i in range(8)]
    data = SuiteData(defence=Dataset.from_list(rows), attack=Dataset.from_list(rows), eval=None,
                     retain=Dataset.from_list(harmless), harmless_eval=None)
    # Room for the longest prompt a plugin writes (the identity shift puts its persona in the question)
    return StageContext(tokenizer=tok, data=data, max_length=256, seed=0, template=fmt)


def _sequences(batch):
    """Every token sequence of a collated batch (plain SFT, or paired harmful/refusal/retain)."""
    if "input_ids" in batch:
        return [batch]
    return [batch[k] for k in ("harmful", "refusal", "retain") if k in batch]


@pytest.mark.parametrize("kind, fmt", [("qwen", CHAT), ("llama", PLAIN)], ids=["chat", "plain-bos"])
@pytest.mark.parametrize("plugin", [("defence", n) for n in registry.names("defence")]
                         + [("attack", n) for n in registry.names("attack")], ids=lambda p: f"{p[0]}-{p[1]}")
def test_every_plugin_trains_on_the_suites_format(toks, monkeypatch, tmp_path, kind, fmt, plugin):
    """Capture what each plugin's collator gives the training loop: every sequence starts with exactly the
    prompt ids the evaluation's generation uses for that question."""
    import harness.training.loop

    tok, captured = toks[kind], []

    def capture(model, rows, collate, loss_fn, cfg, **kw):
        batch_rows = [rows[i] for i in range(2)]
        captured.append((batch_rows, collate(batch_rows)))
        return harness.training.loop.TrainLog(0, 0.0, [])

    monkeypatch.setattr(harness.training.loop, "train", capture)
    p = registry.get(*plugin)
    fields = p.config.model_fields
    model = causal_lm("llama", tok)
    named, ctx = naming(p, model, tok, tmp_path / "released", _ctx(tok, fmt))
    cfg = p.config(**({"retain_harmless": 1.0} if "retain_harmless" in fields else {}),
                   **({"samples": 4} if "samples" in fields else {}), **named)
    p.fn(model, cfg, ctx)
    if "lr" not in fields and not {"lr", "steps"} & set(p.budget):
        assert not captured  # no training, nothing formatted
        return
    rows, batch = captured[0]
    for seqs in _sequences(batch):
        for r, (ids, mask) in enumerate(zip(seqs["input_ids"].tolist(), seqs["attention_mask"].tolist(),
                                            strict=True)):
            used = [t for t, m in zip(ids, mask, strict=True) if m]
            question = rows[r]["prompt"] if seqs is not batch.get("retain") else None
            if question is not None:
                expected = fmt.prompt_ids(tok, question)
                assert used[:len(expected)] == expected, f"{plugin} formats prompts differently from generation"


def test_fit_refuses_a_collator_in_another_format(toks):
    from harness.plugins import TrainingFields, fit
    from harness.training.loop import lm_loss

    tok = toks["qwen"]
    with pytest.raises(HarnessError, match=r"pass template=ctx\.template"):
        fit(causal_lm("llama", tok), _ctx(tok, CHAT), split="attack", cfg=TrainingFields(samples=2),
            collate=SFTCollator(tok, 32), loss_fn=lm_loss)


def test_generation_feeds_the_formats_prompt_ids(toks, monkeypatch):
    from harness.generation.hf import generate_with_model

    tok = toks["llama"]
    model = causal_lm("llama", tok)
    seen = []
    real = model.generate

    def spy(**kw):
        seen.append(kw["input_ids"][0][kw["attention_mask"][0].bool()].tolist())
        return real(**kw)

    monkeypatch.setattr(model, "generate", spy)
    generate_with_model(model, tok, [Q], max_new_tokens=2, batch_size=1, template=PLAIN)
    assert seen == [PLAIN.prompt_ids(tok, Q)] and seen[0][0] == tok.bos_token_id


def test_the_vllm_engine_formats_as_hf_does(toks):
    from harness.generation.vllm_worker import Request, _ids

    tok = toks["llama"]
    assert _ids(tok, Q, PLAIN) == PLAIN.prompt_ids(tok, Q) and _ids(tok, Q, PLAIN)[0] == tok.bos_token_id
    assert _ids(toks["qwen"], Q, CHAT) == CHAT.prompt_ids(toks["qwen"], Q)
    assert _ids(tok, "Question: x", None) == tok("Question: x", add_special_tokens=False)["input_ids"]
    request = Request(model="m", prompt_sets={"a": [Q]}, prompt_format=CHAT, max_new_tokens=1,
                      cpu_memory_utilization=0.2, gpu_memory_utilization=0.8, events="e", response="r")
    assert Request.model_validate_json(request.model_dump_json()).prompt_format == CHAT  # crosses the process
