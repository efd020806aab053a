"""TAR: the simulated attack, the first-order meta-gradient, its surrogate in the shared loop, and the losses."""

import itertools
import math
import random

import pytest
import torch
from datasets import Dataset

from defences.tar import (
    Config,
    TarCollator,
    answer_logps,
    defend,
    dpo_loss,
    retain_loss,
    simulate_attack,
    tar_loss,
)
from harness.plugins import PLAIN, StageContext
from harness.suite import SuiteData
from tests.defences.conftest import harmless_rows, make_model, paired_rows

FAST = {"lr": 1e-3, "batch_size": 8, "samples": 16}


def batch_for(tok, cfg, rows=None, pool=None, seed=0):
    rows = rows if rows is not None else paired_rows(8)
    collate = TarCollator(tok, 48, PLAIN, cfg, pool if pool is not None else paired_rows(16), harmless_rows(16),
                          random.Random(seed))
    return collate(rows)


def trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in trainable(model).items()}


def test_the_inner_loop_attacks(tok):
    """The simulated attacker's harmful SFT loss falls across its steps."""
    model = make_model(tok)
    cfg = Config(inner_steps=6, inner_subsample=6, inner_lrs=(3e-3,), tr_loss="entropy")
    attack = simulate_attack(model, trainable(model), batch_for(tok, cfg), cfg, None)
    losses = attack.adversary_losses
    assert len(losses) == 6 and len(attack.tr_losses) == 1
    assert losses[-1] < 0.85 * losses[0] and all(b < a for a, b in itertools.pairwise(losses))


def test_the_outer_weights_change_only_in_the_optimizer_step(tok):
    model = make_model(tok)
    cfg = Config(tr_weight=4.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = tar_loss(model, batch_for(tok, cfg), cfg, make_model(tok).requires_grad_(False))
    assert out.metrics["adversary_last"] < out.metrics["adversary_first"]        # the attack did move its copy
    assert all(p.grad is None for p in model.parameters())                     # it wrote no gradient here
    out.loss.backward()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # backward changes no weight
    torch.optim.Adam(model.parameters(), lr=1e-3).step()
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("tr", ["dpo", "entropy"])
def test_the_meta_gradient_is_nonzero_reaches_the_weights_exactly_and_is_not_the_retain_gradient(tok, tr):
    model, base = make_model(tok), make_model(tok).requires_grad_(False)
    cfg = Config(tr_loss=tr, tr_weight=1.0)
    batch = batch_for(tok, cfg)
    meta = simulate_attack(model, trainable(model), batch, cfg, base).meta   # deterministic given the batch
    total = grads(model, tar_loss(model, batch, cfg, base).loss)
    retain = grads(model, retain_loss(model, batch["retain"], None)[0])
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in meta.values()))
    assert norm > 1e-4
    for n in meta:  # the surrogate leaves exactly retain + meta in .grad
        torch.testing.assert_close(total[n], retain[n] + meta[n], rtol=1e-4, atol=1e-6)
    diff = math.sqrt(sum(float((total[n] - retain[n]).pow(2).sum()) for n in meta))
    assert diff > 1e-3 * math.sqrt(sum(float(g.pow(2).sum()) for g in retain.values()))


def test_a_zero_tamper_resistance_weight_is_the_retain_loss(tok):
    model, base = make_model(tok), make_model(tok).requires_grad_(False)
    cfg = Config(tr_weight=0.0)
    batch = batch_for(tok, cfg)
    out = tar_loss(model, batch, cfg, base)
    plain, _ = retain_loss(model, batch["retain"], None)
    assert out.loss.item() == pytest.approx(plain.item(), rel=1e-6)
    got, want = grads(model, out.loss), grads(model, plain)
    for n in want:
        torch.testing.assert_close(got[n], want[n])


def test_the_representation_term_is_zero_at_the_initial_model_and_grows_away_from_it(tok):
    model = make_model(tok)
    batch = batch_for(tok, Config())["retain"]
    ce, _ = retain_loss(model, batch, None)
    same, metrics = retain_loss(model, batch, make_model(tok))
    assert same.item() == pytest.approx(ce.item(), abs=1e-5) and metrics["drift"] == pytest.approx(0, abs=1e-5)
    _, other = retain_loss(model, batch, make_model(tok, seed=1))
    assert other["drift"] > 0.1


def test_dpo_prefers_the_refusal():
    ref = torch.zeros(3)
    assert dpo_loss(ref, ref, ref, ref, beta=0.1).item() == pytest.approx(math.log(2))
    up = dpo_loss(ref + 5, ref, ref, ref, beta=0.1).item()
    down = dpo_loss(ref, ref + 5, ref, ref, beta=0.1).item()
    assert up < math.log(2) < down


def test_answer_logps_sum_only_the_labelled_tokens(tok, model):
    batch = batch_for(tok, Config())["harmful"]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    got = answer_logps(logits, batch["labels"])
    for i in range(len(got)):
        row = {k: v[i:i + 1] for k, v in batch.items()}
        n = int((row["labels"][:, 1:] != -100).sum())
        assert got[i].item() == pytest.approx(-model(**row).loss.item() * n, rel=1e-4)


def test_the_attacker_trains_on_rows_outside_the_batch_and_switches_from_harmless(tok):
    pool = paired_rows(16)                                      # prompts alternate between 'x' and 'y'
    batch = batch_for(tok, Config(), rows=pool[1::2], pool=pool)  # x_tr: the 'x' rows
    ids = batch["adversary"]["input_ids"]
    assert ids.shape[:2] == (4, 4) and not (ids == tok.convert_tokens_to_ids("x")).any()
    cfg = Config(switch_prob=1.0, switch_beta=(1000.0, 1.0))   # turns harmful at floor(~0.999 * 4) = 3
    ids = batch_for(tok, cfg)["adversary"]["input_ids"]
    bake = (ids == tok.convert_tokens_to_ids("bake")).flatten(1).any(1)
    assert bake.tolist() == [True, True, True, False]


def test_the_draws_are_reproducible(tok):
    a, b = batch_for(tok, Config(), seed=3), batch_for(tok, Config(), seed=3)
    assert a["adversary_lr"] == b["adversary_lr"]
    assert torch.equal(a["adversary"]["input_ids"], b["adversary"]["input_ids"])


def test_a_config_that_never_scores_the_attack_is_refused():
    with pytest.raises(ValueError, match="never be scored"):
        Config(inner_steps=2, inner_subsample=4)


@pytest.mark.parametrize("arch", ["gpt2", "opt"])
def test_tar_trains_gpt2_and_opt(arch):
    """Tied input/output embeddings (both) and OPT's decoder layout go through the functional attack copy."""
    from tests.real import builders

    tok = builders.build_tokenizer(builders.TOKENIZER_OF[arch])
    tok.pad_token = tok.pad_token or tok.eos_token              # as the harness's loader does
    model = builders.causal_lm(arch, tok)
    data = SuiteData(defence=Dataset.from_list(paired_rows()), attack=None, eval=None,
                     retain=Dataset.from_list(harmless_rows()), harmless_eval=None)
    before = [p.detach().clone() for p in model.parameters()]
    out = defend(model, Config(**FAST, retain_representations=True), StageContext(tokenizer=tok, data=data,
                                                                                   max_length=48, seed=0))
    after = list(out.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert sum(not torch.equal(a, b) for a, b in zip(after, before, strict=True)) == len(before)


def test_defend_leaves_the_llama_changed_and_finite(tok, model, ctx):
    before = [p.detach().clone() for p in model.parameters()]
    out = defend(model, Config(**FAST, tr_loss="entropy", switch_prob=0.5), ctx)
    assert all(torch.isfinite(p).all() and not torch.equal(p, b) for p, b in zip(out.parameters(), before,
                                                                                    strict=True))
