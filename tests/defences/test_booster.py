"""Booster: the loss is f + lambda (h(w) - h(w~)) with the reference's first-order gradient, the simulated step
leaves the weights exactly as they were, lambda = 0 is plain alignment, and training with it shrinks the harmful-loss
drop a simulated attack step buys (more than plain alignment does). Also: GPT-2 and OPT train, the card's switches
restore the reference and train."""

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from defences.booster import (
    BoosterCollator,
    Config,
    booster_loss,
    defend,
    grad_norm,
    harmful_grads,
    perturbed_harmful_grads,
)
from harness.plugins import StageContext
from harness.suite import SuiteData
from harness.training.collate import IGNORE, PLAIN
from harness.training.hooks import hook_count
from tests.defences.conftest import harmless_rows, make_model, paired_rows


def batch_of(tok, n=4):
    return BoosterCollator(tok, 48, PLAIN)(paired_rows(n))


def reference_terms(model, batch, lamb, alpha):
    """f, h(w), h(w~) and the gradient grad f + lambda (grad h(w) - grad h(w~)), computed on copies of the model the
    plain way (the reference's order of operations, a separate perturbed copy instead of an in-place step)."""
    base = copy.deepcopy(model)
    params = list(base.parameters())
    h = base(**batch["harmful"]).loss
    g = torch.autograd.grad(h, params)
    norm = torch.sqrt(sum((x**2).sum() for x in g)) + 1e-7
    moved = copy.deepcopy(base)
    with torch.no_grad():
        for p, x in zip(moved.parameters(), g, strict=True):
            p -= alpha * x / norm
    h_after = moved(**batch["harmful"]).loss
    g_after = torch.autograd.grad(h_after, list(moved.parameters()))
    f = base(**batch["align"]).loss
    g_f = torch.autograd.grad(f, params)
    grads = [a + lamb * (b - c) for a, b, c in zip(g_f, g, g_after, strict=True)]
    return float(f.detach()), float(h.detach()), float(h_after.detach()), grads


def test_loss_is_alignment_plus_lambda_times_the_harmful_drop_with_the_first_order_gradient(tok, model):
    batch = batch_of(tok)
    f, h, h_after, want = reference_terms(model, batch, lamb=5.0, alpha=0.5)
    out = booster_loss(model, batch, Config(lamb=5.0, alpha=0.5))
    assert out.metrics["harmful"] == pytest.approx(h, rel=1e-5)
    assert out.metrics["harmful_after_step"] == pytest.approx(h_after, rel=1e-5)
    assert out.metrics["harmful_drop"] == pytest.approx(h - h_after, abs=1e-5)
    assert h - h_after > 0.05                                          # the step does lower the harmful loss
    assert out.loss.item() == pytest.approx(f + 5.0 * (h - h_after), rel=1e-5)
    out.loss.backward()
    for p, g in zip(model.parameters(), want, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)


def test_the_simulated_step_leaves_the_weights_bit_for_bit(tok, model):
    before = [p.detach().clone() for p in model.parameters()]
    booster_loss(model, batch_of(tok), Config(alpha=1.0))
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_under_autocast_the_perturbed_pass_sees_the_moved_weights(tok, model):
    """The loop runs the whole loss in one autocast block, whose cache of bf16 weight copies would otherwise hold
    the unperturbed weights through the perturbed pass (the drop then comes out less than half its size)."""
    batch = batch_of(tok, 8)
    full = booster_loss(model, batch, Config()).metrics
    with torch.autocast("cpu", dtype=torch.bfloat16):
        align = float(model(**batch["align"]).loss.detach())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = booster_loss(model, batch, Config()).metrics
    assert half["harmful_drop"] == pytest.approx(full["harmful_drop"], abs=0.02)
    assert half["align"] == align                                      # on the restored weights, not stale casts


def test_the_weights_are_restored_when_the_perturbed_pass_fails(tok, model, monkeypatch):
    import defences.booster as booster

    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    _, grads = harmful_grads(model, batch_of(tok)["harmful"], params)

    def fail(*_args, **_kwargs):
        assert not torch.equal(params[0], before[0])                    # the step was taken
        raise RuntimeError("out of memory")

    monkeypatch.setattr(booster, "harmful_grads", fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        perturbed_harmful_grads(model, batch_of(tok)["harmful"], params, grads, 1.0 / grad_norm(grads))
    assert all(torch.equal(a, p) for a, p in zip(before, params, strict=True))


def test_lambda_zero_is_plain_alignment_and_alpha_zero_adds_nothing(tok, model):
    batch = batch_of(tok)
    plain = model(**batch["align"]).loss
    want = torch.autograd.grad(plain, list(model.parameters()))
    for cfg in (Config(lamb=0.0), Config(lamb=5.0, alpha=0.0)):
        model.zero_grad()
        out = booster_loss(model, batch, cfg)
        assert out.loss.item() == pytest.approx(plain.item(), rel=1e-6)
        out.loss.backward()
        for p, g in zip(model.parameters(), want, strict=True):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
    assert "harmful" not in booster_loss(model, batch, Config(lamb=0.0)).metrics   # no harmful passes at all


def test_both_batches_label_only_their_answers(tok):
    rows = paired_rows(2)
    batch = BoosterCollator(tok, 48, PLAIN)(rows)
    for key, target in (("align", "refusal"), ("harmful", "response")):
        labels = batch[key]["labels"][0]
        kept = [t for t in labels.tolist() if t != IGNORE]
        assert tok.decode(kept) == rows[0][target] + " </s>"            # the answer and EOS, no prompt


def harmful_drop(model, batch, step):
    """How much one normalised gradient step of length `step` on the harmful batch lowers its loss."""
    params = list(model.parameters())
    before, grads = harmful_grads(model, batch["harmful"], params)
    after, _ = perturbed_harmful_grads(model, batch["harmful"], params, grads, step / grad_norm(grads))
    return before - after


def test_booster_shrinks_the_harmful_drop_more_than_plain_alignment(tok, ctx):
    """Ten steps on the toy split: Booster's models gain much less from a simulated attack step than models aligned
    on the same refusals without the regulariser (measured: about 0.24 vs 0.15 at both seeds)."""
    batch = batch_of(tok, 8)
    drops = {}
    for lamb in (0.0, 5.0):
        for seed in (0, 1):
            model = make_model(tok, seed)
            defend(model, Config(lamb=lamb, alpha=0.1, lr=3e-3, epochs=5, batch_size=8, warmup_ratio=0), ctx)
            drops[lamb, seed] = harmful_drop(model, batch, 0.1)
    for seed in (0, 1):
        assert drops[5.0, seed] < 0.8 * drops[0.0, seed], drops


def test_train_config_carries_the_reference_optimizer_options():
    cfg = Config(optimizer="adamw", weight_decay=0.1, schedule="constant", warmup_ratio=0.0).train_config()
    assert (cfg.optimizer, cfg.weight_decay, cfg.schedule, cfg.warmup_ratio) == ("adamw", 0.1, "constant", 0.0)
    assert Config().train_config().schedule == "cosine" and Config().train_config().weight_decay == 0.0


@pytest.mark.parametrize("arch", ["gpt2", "opt"])
def test_trains_gpt2_and_opt(arch):
    from tests.real.builders import ANSWERS, SAFE, TOPICS, build_tokenizer, causal_lm

    tok = build_tokenizer("gpt2")
    tok.pad_token = tok.eos_token                                       # as harness.models.loading does
    rows = [{"prompt": f"How do I {t}?", "response": a, "refusal": SAFE} for t in TOPICS[:4] for a in ANSWERS[:2]]
    data = SuiteData(defence=Dataset.from_list(rows), attack=None, eval=None, retain=None, harmless_eval=None)
    ctx = StageContext(tokenizer=tok, data=data, max_length=48, seed=0)
    model = causal_lm(arch, tok)
    before, hooks = [p.detach().clone() for p in model.parameters()], hook_count(model)
    seen = []
    ctx = dataclasses.replace(ctx, callback=lambda step, _m: seen.append(step), every=1)
    out = defend(model, Config(lr=1e-3, batch_size=4, alpha=0.5), ctx)
    assert seen == [0, 1, 2] and hook_count(out) == hooks
    after = list(out.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, p) for a, p in zip(before, after, strict=True))


CARD = Path(__file__).resolve().parents[2] / "defences" / "booster.card.yaml"
ASPECTS = {"model", "data", "steps", "lr", "loss terms", "layers", "lora", "clipping", "precision", "lambda", "alpha",
           "batch size", "epochs"}


def test_card_rows_are_complete_and_the_switches_restore_the_reference(tok, ctx):
    """The card (issue 25 format): every required aspect, one of same/switch/reason per row; all switches applied
    validate, change the run's params, and train two steps (with the reference's LoRA) to a finite model."""
    pytest.importorskip("peft")
    import yaml

    card = yaml.safe_load(CARD.read_text())
    assert card["defence"] == "booster"
    rows = card["settings"]
    assert {r["aspect"] for r in rows} >= ASPECTS
    assert all(sum(k in r for k in ("same", "switch", "reason")) == 1 for r in rows)
    switches = {k: v for r in rows for k, v in r.get("switch", {}).items()}
    assert set(switches) <= set(Config.model_fields)
    for row in rows:                                                    # each switch changes the run's params
        assert "switch" not in row or Config(**row["switch"]).model_dump() != Config().model_dump(), row["aspect"]
    reference = Config(**switches)
    assert (reference.lr, reference.epochs, reference.batch_size, reference.lora.rank) == (5e-4, 20, 10, 32)
    smoke = Config(**{**switches, "epochs": 1, "batch_size": 8})   # 16 toy rows: two optimizer steps
    model = make_model(tok)
    out = defend(model, smoke, ctx)
    assert all(torch.isfinite(p).all() for p in out.parameters())
    trained = [n for n, p in out.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)


def test_every_step_logs_the_terms_with_the_harmless_retain_term(tok, monkeypatch):
    import harness.training.loop

    history = []
    real = harness.training.loop.train
    monkeypatch.setattr(harness.training.loop, "train", lambda *a, **k: history.extend(real(*a, **k).history))
    data = SuiteData(defence=Dataset.from_list(paired_rows(8)), attack=None, eval=None,
                     retain=Dataset.from_list(harmless_rows(8)), harmless_eval=None)
    ctx = StageContext(tokenizer=tok, data=data, max_length=48, seed=0)
    defend(make_model(tok), Config(lr=1e-3, batch_size=4, retain_harmless=1.0), ctx)
    assert len(history) == 2
    for step in history:
        assert {"align", "harmful", "harmful_drop", "retain_harmless"} <= set(step)
        assert step["loss"] == pytest.approx(step["align"] + 5.0 * step["harmful_drop"] + step["retain_harmless"],
                                             rel=1e-5)
