"""The one training loop: schedule, accumulation, seeding, callbacks."""

import itertools
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.training.loop import TrainConfig, lm_loss, lr_at, train


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
    # float32 sums the halves in another order; Adam's normalisation can lift that to ~1e-6 on a weight whose
    # gradient is near zero. A wrongly scaled accumulation moves weights by ~lr (1e-2).
    assert torch.allclose(params[0], params[1], atol=1e-5, rtol=0)


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



# ----------------------------------------------------------------------------- per-token accumulation
def ragged_rows(n=8):
    """Rows of unequal lengths (2 to 9 tokens): micro-batches then hold unequal token counts."""
    g = torch.Generator().manual_seed(2)
    return [{"ids": torch.randint(3, 32, (2 + (i * 5) % 8,), generator=g).tolist()} for i in range(n)]


def pad_collate(batch):
    """Right-padded to the longest row; padding is neither attended nor in the loss."""
    from harness.training.collate import IGNORE

    width = max(len(b["ids"]) for b in batch)
    ids = torch.tensor([b["ids"] + [0] * (width - len(b["ids"])) for b in batch])
    mask = torch.tensor([[1] * len(b["ids"]) + [0] * (width - len(b["ids"])) for b in batch])
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, IGNORE)}


def trained(accum, loss_fn=lm_loss, rows_=None, collate_=pad_collate, **cfg):
    model = tiny_llama()
    log = train(model, rows_ or ragged_rows(), collate_, loss_fn,
                TrainConfig(lr=1e-2, batch_size=8, grad_accum=accum, max_grad_norm=None, warmup_ratio=0, **cfg),
                seed=0)
    return torch.cat([p.detach().flatten() for p in model.parameters()]), log


@pytest.mark.parametrize("accum", [2, 4, 8])
def test_accumulation_is_per_token_on_unequal_lengths(accum):
    """k micro-batches of unequal token counts give the update (and the logged loss) of one batch: the sum of
    token losses over the total tokens, not the mean of per-micro-batch means."""
    one, log1 = trained(1)
    many, logk = trained(accum)
    assert torch.allclose(one, many, atol=1e-6)
    assert logk.history[0]["loss"] == pytest.approx(log1.history[0]["loss"], rel=1e-5)


def test_micro_batch_means_would_differ():
    """The test above has teeth: averaging micro-batch means (the old rule) gives another update here."""
    def mean_of_means(model, batch):  # no token count: weighted by rows
        out = lm_loss(model, batch)
        return out._replace(tokens=None)

    one, _ = trained(1)
    means, _ = trained(4, loss_fn=mean_of_means)
    assert not torch.allclose(one, means, atol=1e-6)


def test_a_loss_that_is_no_token_mean_is_weighted_by_rows():
    """A per-row mean without `tokens` (e.g. a batch statistic) accumulates as the mean over rows."""
    def row_loss(model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        per_row = logits.float().pow(2).mean(dim=(1, 2))                     # (B,)
        from harness.training.loop import LossOut
        return LossOut(per_row.mean(), {"loss": float(per_row.mean().detach())})

    one, _ = trained(1, loss_fn=row_loss, rows_=rows(8), collate_=collate)
    many, _ = trained(4, loss_fn=row_loss, rows_=rows(8), collate_=collate)
    assert torch.allclose(one, many, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_update():
    plain, _ = trained(2)
    ckpt, _ = trained(2, gradient_checkpointing=True)
    assert torch.allclose(plain, ckpt, atol=1e-6)


@pytest.mark.parametrize("precision", ["autocast-bf16", "bf16-master"])
def test_bf16_precisions_train(precision):
    model = tiny_llama()
    log = train(model, rows(8) * 4, collate, lm_loss, TrainConfig(lr=1e-2, batch_size=4, precision=precision),
                seed=0)
    dtype = next(model.parameters()).dtype
    assert dtype == (torch.bfloat16 if precision == "bf16-master" else torch.float32)
    assert math.isfinite(log.history[-1]["loss"]) and log.history[-1]["loss"] < log.history[0]["loss"]
    assert log.tokens == 32 * 6


def test_bf16_master_keeps_small_updates_that_bf16_weights_lose():
    """Master weights accumulate updates below bf16's resolution; plain bf16 weights round them away."""
    def run(precision):
        model = tiny_llama().to(torch.bfloat16)
        before = torch.cat([p.detach().float().flatten() for p in model.parameters()])
        train(model, rows(8) * 4, collate, lm_loss,
              TrainConfig(lr=1e-5, batch_size=4, precision=precision, warmup_ratio=0, schedule="constant"), seed=0)
        after = torch.cat([p.detach().float().flatten() for p in model.parameters()])
        return (after != before).float().mean().item()

    assert run("bf16-master") > run("model")

