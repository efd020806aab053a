"""RepNoise: the MMD, the mask, the ascent sign, and scoped hooks."""

import pytest
import torch

from defences.repnoise import Config, ascent_ce, defend, mmd, repnoise_loss
from harness.training.hooks import hook_count
from harness.training.paired_batches import PairedCollator, masked_ce
from tests.defences.conftest import paired_rows


def test_mmd_near_zero_for_same_distribution_and_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 16, generator=g), torch.randn(256, 16, generator=g)
    same = mmd(x, y).item()
    shifts = [mmd(x + s, y).item() for s in (0.5, 1.0, 2.0)]
    assert abs(same) < 0.03  # the biased estimate (diagonal included) is O(1/n) above 0
    assert same < shifts[0] / 3 and shifts[0] < shifts[1] < shifts[2]


def test_mmd_bandwidth_carries_no_gradient():
    x = torch.randn(8, 4, requires_grad=True)
    mmd(x + 1, torch.randn(8, 4)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_mask_covers_exactly_the_differing_answer_tokens(tok):
    rows = paired_rows(2)
    batch = PairedCollator(tok, 48)(rows)
    h, r = batch["harmful"]["input_ids"][0], batch["refusal"]["input_ids"][0]
    n_prompt = len(tok("Question: " + rows[0]["prompt"] + "\nAnswer:", add_special_tokens=False)["input_ids"])
    mask = batch["harmful_mask"][0]
    assert not mask[:n_prompt].any()                                  # the question is never targeted
    expected = (h != r) & batch["harmful"]["attention_mask"][0].bool()
    assert torch.equal(mask, expected)
    assert mask.sum() == batch["harmful"]["attention_mask"][0].sum() - n_prompt  # every answer token differs here
    # padding of the shorter refusal is not in the refusal mask
    assert not batch["refusal_mask"][0][~batch["refusal"]["attention_mask"][0].bool()].any()


def test_no_mask_ablation_targets_the_prompt_too(tok):
    batch = PairedCollator(tok, 48, mask_answers=False)(paired_rows(2))
    assert torch.equal(batch["harmful_mask"], batch["harmful"]["attention_mask"].bool())


def test_reference_ascent_normalisation(tok, model):
    batch = PairedCollator(tok, 48)(paired_rows(4))
    out = model(**batch["harmful"], output_hidden_states=True)
    ids, mask = batch["harmful"]["input_ids"], batch["harmful_mask"]
    ref = ascent_ce(model, out, ids, mask, Config()).item()
    mean = ascent_ce(model, out, ids, mask, Config(ascent_norm="mean")).item()
    n_layers = model.config.num_hidden_layers
    # reference: (L+2 terms)/(L+1) + 1 ; mean: (L+2 terms)/(L+2)
    assert ref == pytest.approx(mean * (n_layers + 2) / (n_layers + 1) + 1, rel=1e-5)


def test_ascent_makes_harmful_ce_rise(tok, model, ctx):
    batch = PairedCollator(tok, 48)(paired_rows(8))

    def harmful_ce():
        with torch.no_grad():
            return masked_ce(model(**batch["harmful"]).logits, batch["harmful"]["input_ids"],
                             batch["harmful_mask"]).item()

    before = harmful_ce()
    defend(model, Config(lr=1e-2, epochs=3, batch_size=8, noise=False, warmup_ratio=0), ctx)
    assert harmful_ce() > 1.1 * before


def test_hooks_do_not_accumulate(tok, model, ctx):
    """Our hooks are removed after every step. (transformers installs a fixed set of its own output-capturing
    hooks on the first forward with output_hidden_states; those do not grow.)"""
    model(**PairedCollator(tok, 48)(paired_rows(2))["harmful"], output_hidden_states=True)
    baseline = hook_count(model)
    defend(model, Config(lr=1e-3, epochs=1, batch_size=4), ctx)
    assert hook_count(model) == baseline
    defend(model, Config(lr=1e-3, epochs=2, batch_size=4), ctx)
    assert hook_count(model) == baseline


@pytest.mark.parametrize("ablation", [{}, {"noise": False}, {"ascent": False}, {"mask": False},
                                      {"layerwise": False}, {"mask_logits": False}])
def test_every_ablation_gives_a_finite_loss_with_its_terms(tok, model, ctx, ablation):
    cfg = Config(**ablation)
    collate = PairedCollator(tok, 48, mask_answers=cfg.mask)
    out = repnoise_loss(model, collate(paired_rows(4)), cfg)
    assert torch.isfinite(out.loss)
    assert ("mmd" in out.metrics) == cfg.noise and ("ascent_ce" in out.metrics) == cfg.ascent


def test_masked_logits_make_the_first_answer_token_a_constant(tok, model):
    """The reference's masked_token_ce_loss: the first masked token is predicted from zeroed logits, so its loss
    is log V whatever the model, and it carries no gradient."""
    import math

    from harness.training.paired_batches import masked_ce

    batch = PairedCollator(tok, 48)(paired_rows(2))
    ids, mask = batch["harmful"]["input_ids"], batch["harmful_mask"]
    first = mask.int().argmax(dim=1)                                 # first masked position per row
    only_first = torch.zeros_like(mask)
    only_first[torch.arange(len(first)), first] = True
    logits = model(**batch["harmful"]).logits
    ref = masked_ce(logits, ids, only_first, mask_logits=True)
    assert ref.item() == pytest.approx(math.log(logits.size(-1)), rel=1e-5)
    plain = masked_ce(logits, ids, only_first, mask_logits=False)
    assert plain.item() != pytest.approx(ref.item())


def test_architecture_lookups_cover_gpt2():
    """RepNoise's hooks work beyond Llama: GPT-2 blocks, MLPs and final norm are found."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from harness.models.architecture import ArchitectureError, decoder_layers, final_norm, mlp_modules

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=32, n_positions=32))
    assert len(decoder_layers(gpt2)) == 2 and len(mlp_modules(gpt2)) == 2
    assert final_norm(gpt2) is gpt2.transformer.ln_f
    with pytest.raises(ArchitectureError, match="cannot find the decoder layers"):
        decoder_layers(torch.nn.Linear(2, 2))
