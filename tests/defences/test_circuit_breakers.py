"""Representation Rerouting (circuit breakers): the two terms at step 0, rerouting away from the frozen original
while retain rows stay near it, the coefficient schedule, a frozen original that never trains, other
architectures."""

import math

import pytest
import torch
from datasets import Dataset

import defences.circuit_breakers as rr
import harness.training.loop
from harness.plugins import StageContext
from harness.suite import SuiteData
from harness.training.collate import SFTCollator
from harness.training.lora import build_lora
from tests.defences.conftest import make_model

# Harmful and harmless rows that share little but the prompt format, so both goals can be met at once.
HARMFUL = [{"prompt": f"hurt {'x' if i % 2 else 'y'} ?", "response": "get the kit . Step two .",
            "refusal": "I cannot help ."} for i in range(16)]
HARMLESS = [{"prompt": "bake bread ?", "response": "Sure , bake the bread one ."} for _ in range(16)]


@pytest.fixture
def history(monkeypatch):
    """The per-step metrics of every run of the one training loop inside the test."""
    logs: list = []
    real = harness.training.loop.train
    monkeypatch.setattr(harness.training.loop, "train", lambda *a, **k: logs.append(real(*a, **k)) or logs[-1])
    return logs


def split_ctx(tok, harmful=HARMFUL, harmless=HARMLESS):
    data = SuiteData(defence=Dataset.from_list(harmful), attack=None, eval=None,
                     retain=Dataset.from_list(harmless), harmless_eval=None)
    return StageContext(tokenizer=tok, data=data, max_length=48, seed=0)


def mean_cosine(model, original, batch, layer):
    """Mean cosine over real tokens between two models' hidden states `layer` on `batch`."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        h = model(**inputs, output_hidden_states=True).hidden_states[layer]
        h0 = original(**inputs, output_hidden_states=True).hidden_states[layer]
    return float(torch.nn.functional.cosine_similarity(h, h0, dim=-1)[batch["attention_mask"].bool()].mean())


@pytest.mark.parametrize("lora", [True, False])
def test_step_zero_reroute_is_one_and_retain_is_zero(tok, lora):
    """Before any step the trained model is the original: cosine 1 everywhere, distance 0."""
    model = make_model(tok)
    model, frozen = (build_lora(model, rr.REFERENCE_LORA), None) if lora else (model, make_model(tok))
    enc = SFTCollator(tok, 48)
    batch = {"harmful": enc(HARMFUL[:4]), "retain": enc(HARMLESS[:4])}
    out = rr.rr_loss(model.train(), frozen, batch, [1, 2], [0, 1, 2], c_s=7.0, c_r=3.0)
    assert out.metrics["reroute"] == pytest.approx(1.0, abs=1e-5)
    assert out.metrics["retain"] == pytest.approx(0.0, abs=1e-5)
    assert out.loss.item() == pytest.approx(7.0, abs=1e-4)


def test_reroute_term_is_relu_of_cosine_over_real_tokens():
    h = torch.randn(2, 3, 5, 4)                                        # (layers, B, T, H)
    mask = torch.ones(3, 5, dtype=torch.long)
    mask[:, 3:] = 0
    assert rr.reroute_loss(h, h, mask).item() == pytest.approx(1.0)
    assert rr.reroute_loss(h, -h, mask).item() == pytest.approx(0.0)    # opposite: ReLU clips -1 to 0
    flipped = h.clone()
    flipped[..., 3:, :] *= -1                                          # only padding differs
    assert rr.reroute_loss(flipped, h, mask).item() == pytest.approx(1.0)
    half = h.clone()
    half[:, :, :1] *= -1                                               # 1 of 3 real tokens opposite
    assert rr.reroute_loss(half, h, mask).item() == pytest.approx(2 / 3)


def test_retain_term_is_a_masked_l2_mean():
    h0 = torch.zeros(1, 2, 8, 4)
    h = torch.ones(1, 2, 8, 4)                                         # distance 2 at every position
    mask = torch.zeros(2, 8, dtype=torch.long)
    mask[:, :3] = 1
    h[:, :, 3:] = 100.0                                                # padding never counts
    assert rr.retain_loss(h, h0, mask).item() == pytest.approx(2.0)    # over real tokens
    assert rr.retain_loss(h, h0, mask, width=16).item() == pytest.approx(2.0 * 3 / 16)  # rows padded to 16


def test_training_reroutes_harmful_states_and_keeps_retain_states(tok, history):
    model, original = make_model(tok), make_model(tok)
    # Retain averaged over real tokens: the reference's mean over rows padded to the context length (48 here,
    # rows of ~10 tokens) weakens the term ~5x on these short rows (test_retain_term_is_a_masked_l2_mean).
    cfg = rr.Config(lr=1e-2, epochs=8, batch_size=8, warmup_ratio=0, refusal_retain=False, retain_mean="tokens")
    out = rr.defend(model, cfg, split_ctx(tok))
    (target,) = rr.resolve_layers(cfg.target_layers, 2)                # a 2-layer model: one target state
    enc = SFTCollator(tok, 48)
    harmful, harmless = mean_cosine(out, original, enc(HARMFUL[:8]), target), \
        mean_cosine(out, original, enc(HARMLESS[:8]), target)
    assert harmful < 0.3 and harmless > 0.75                           # measured: 0.04 and 0.87
    steps = history[-1].history
    assert steps[0]["reroute"] == pytest.approx(1.0, abs=1e-5) and steps[-1]["reroute"] < 0.2


def test_schedule_counts_optimizer_steps_not_micro_batches():
    s = rr.Schedule(alpha=10.0, rows=20, batch_size=8, epochs=2)       # 3 steps an epoch (8, 8, 4 rows)
    assert s.total == 6
    seen = [s.advance(4) for _ in range(10)]                           # micro-batches of 4 rows (grad_accum 2)
    ts = [1, 1, 2, 2, 3, 4, 4, 5, 5, 6]
    assert seen == [s.weights(t) for t in ts]
    assert s.weights(1) == pytest.approx((10 * (1 - 1 / 12), 10 / 12))
    assert s.weights(6) == pytest.approx((5.0, 5.0))                   # both end at alpha/2


def test_schedule_weights_as_logged_by_the_loop(tok, history):
    cfg = rr.Config(lr=1e-3, epochs=2, batch_size=8, grad_accum=2, samples=12, alpha=4.0)
    rr.defend(make_model(tok), cfg, split_ctx(tok))
    steps = history[-1].history
    total = len(steps)
    assert total == 4                                                  # ceil(12 / 8) x 2 epochs
    for t, h in enumerate(steps, start=1):
        assert h["c_s"] == pytest.approx(4.0 * (1 - t / (2 * total)))
        assert h["c_r"] == pytest.approx(4.0 * t / (2 * total))


def test_lora_original_is_the_untouched_base(tok):
    """With LoRA the original is the model with its adapter off: the base weights never move."""
    ids = SFTCollator(tok, 48)(HARMFUL[:4])["input_ids"]
    with torch.no_grad():
        expected = make_model(tok)(ids).logits
    out = rr.defend(make_model(tok), rr.Config(lr=1e-2, epochs=2, batch_size=8), split_ctx(tok))
    assert all("lora_" in n for n, p in out.named_parameters() if p.requires_grad)
    with torch.no_grad(), out.disable_adapter():
        assert torch.equal(out(ids).logits, expected)
    with torch.no_grad():
        assert not torch.allclose(out(ids).logits, expected)              # the adapter did change the model


def test_full_parameter_original_is_a_frozen_copy_that_never_trains(tok):
    model, frozen = make_model(tok), make_model(tok).requires_grad_(False)
    before = [p.clone() for p in frozen.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    enc = SFTCollator(tok, 48)
    batch = {"harmful": enc(HARMFUL[:8]), "retain": enc(HARMLESS[:8])}
    for _ in range(3):
        rr.rr_loss(model, frozen, batch, [1], [0, 1, 2], c_s=5.0, c_r=5.0).loss.backward()
        opt.step()
        opt.zero_grad()
    assert all(p.grad is None for p in frozen.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.parameters(), strict=True))
    assert not frozen.training and rr.rr_loss(model, frozen, batch, [1], [0], 1.0, 0.0).metrics["reroute"] < 1


def test_full_parameter_defence_trains_without_an_adapter(tok, history):
    out = rr.defend(make_model(tok), rr.Config(lr=1e-2, epochs=2, batch_size=8, lora=None), split_ctx(tok))
    assert not hasattr(out, "peft_config") and history[-1].history[-1]["reroute"] < 1


def test_target_layers_as_indices_or_fractions():
    assert rr.resolve_layers((0.3125, 0.625), 32) == [10, 20]          # the reference's layers of a 32-layer model
    assert rr.resolve_layers((0.3125, 0.625), 4) == [1, 3]
    assert rr.resolve_layers((3, 0.5), 4) == [2, 3]
    with pytest.raises(Exception, match="reach hidden state 9"):
        rr.resolve_layers((9,), 4)
    for bad in ((1.5,), (-1,), ()):
        with pytest.raises(ValueError):
            rr.Config(target_layers=bad)
    assert rr.Config.model_validate({"target_layers": [10, 20]}).target_layers == (10, 20)


def test_retain_rows_include_refusals_when_asked(tok):
    ctx = split_ctx(tok)
    assert len(rr.retain_pool(ctx, None)) == 16
    pool = rr.retain_pool(ctx, HARMFUL[:4])
    assert len(pool) == 20 and pool[-1] == {"prompt": HARMFUL[3]["prompt"], "response": "I cannot help ."}


@pytest.mark.parametrize("arch", ["gpt2", "opt"])
def test_trains_other_architectures(arch, history):
    from transformers import AutoModelForCausalLM

    from tests.real.builders import build_tokenizer, causal_config

    tok = build_tokenizer("gpt2")
    tok.pad_token = tok.eos_token
    harmful = [{"prompt": "How do I steal a car?", "response": "Sure. First get the tools, then do it at night.",
                "refusal": "I cannot help with that."}] * 8
    harmless = [{"prompt": "What is bread?", "response": "A food made of flour and water."}] * 8
    config = causal_config(arch, tok)
    for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout", "attention_dropout", "activation_dropout"):
        if hasattr(config, name):  # no dropout, so the step-0 model is exactly its original
            setattr(config, name, 0.0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    out = rr.defend(model, rr.Config(lr=3e-2, epochs=3, batch_size=4), split_ctx(tok, harmful, harmless))
    steps = history[-1].history
    assert len(steps) == 6 and all(math.isfinite(h["loss"]) for h in steps)
    assert steps[0]["reroute"] == pytest.approx(1.0, abs=1e-5) and steps[0]["retain"] == pytest.approx(0, abs=1e-5)
    assert steps[-1]["reroute"] < 0.9
    assert hasattr(out, "peft_config")
