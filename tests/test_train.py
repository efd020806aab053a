"""The one training loop: schedule, accumulation, seeding, callbacks."""

import itertools
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.train import TrainConfig, lm_loss, lr_at, train


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32))


def rows(n=8):
    g = torch.Generator().manual_seed(1)
    return [{"ids": torch.randint(3, 32, (6,), generator=g).tolist()} for _ in range(n)]


def collate(batch):
    ids = torch.tensor([b["ids"] for b in batch])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def test_cosine_schedule_with_warmup():
    cfg = TrainConfig(lr=1.0, warmup_ratio=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    mid = 10 + 45
    assert lrs[mid] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))


def test_gradient_accumulation_matches_one_big_batch():
    """4 examples in one batch and 2x2 accumulated give the same update (equal-length rows)."""
    params = []
    for accum in (1, 2):
        model = tiny_llama()
        train(model, rows(4), collate, lm_loss, TrainConfig(lr=1e-2, batch_size=4, grad_accum=accum,
                                                            max_grad_norm=None, warmup_ratio=0), seed=0)
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(params[0], params[1], atol=1e-6)


def test_same_seed_same_model_different_seed_differs():
    out = []
    for seed in (0, 0, 1):
        model = tiny_llama()
        train(model, rows(), collate, lm_loss, TrainConfig(lr=1e-2, batch_size=2), seed=seed)
        out.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])


def test_loss_falls_and_callback_sees_start_every_k_and_end():
    model = tiny_llama()
    seen = []
    log = train(model, rows(8) * 4, collate, lm_loss, TrainConfig(lr=1e-2, batch_size=4, epochs=2), seed=0,
                callback=lambda step, m: seen.append(step), every=5)
    assert log.steps == 16 and len(log.history) == 16
    assert seen == [0, 5, 10, 15, 16]
    assert log.history[-1]["loss"] < log.history[0]["loss"]
    assert not model.training


def test_indivisible_accumulation_is_rejected():
    with pytest.raises(ValueError, match="not divisible"):
        train(tiny_llama(), rows(), collate, lm_loss, TrainConfig(lr=1e-3, batch_size=3, grad_accum=2), seed=0)

