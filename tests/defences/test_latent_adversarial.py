"""Targeted LAT (defences/latent_adversarial.py) on a toy batch with a tiny random Llama: the PGD attack stays in
its L2 ball and works without touching the weights, hooks never outlive a call, training makes the refusal robust
to the attack, and the defence trains GPT-2 and OPT too. Its card's switches restore a config that trains."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset

import defences.latent_adversarial as lat
from harness import registry
from harness.plugins import StageContext
from harness.suite import SuiteData
from harness.training.collate import IGNORE, PLAIN
from harness.training.hooks import hook_count
from harness.training.paired_batches import masked_ce
from tests.defences.conftest import harmless_rows, make_model, paired_rows
from tests.real import builders

CARD = Path(lat.__file__).with_name("latent_adversarial.card.yaml")
ASPECTS = {"model", "data", "steps", "lr", "loss terms", "layers", "lora", "clipping", "precision"}


def _params(model):
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def _batch(tok, n=4, perturb="prompt"):
    retain = Dataset.from_list(harmless_rows())
    return lat.LATCollator(tok, 48, PLAIN, perturb, retain, random.Random(0))(paired_rows(n))


def _attacked(model, batch, cfg):
    """The harmful answer's CE and the refusal's CE under a fresh PGD attack (the defence's view of the batch)."""
    modules = lat.perturbed_modules(model, cfg.layers)
    deltas, _ = lat.pgd_attack(model, modules, batch["pair"], batch["where"], cfg)
    return _ces(model, batch, modules, deltas)


def _ces(model, batch, modules, deltas):
    """The harmful answers' CE and the refusals' CE with the perturbations added."""
    pair, n = batch["pair"], batch["where"].size(0)
    with torch.no_grad():
        logits = lat.perturbed_logits(model, modules, pair, deltas)          # (2B, T, V)
    ids, answer = pair["input_ids"], pair["labels"] != IGNORE
    return tuple(float(masked_ce(logits[rows], ids[rows], answer[rows])) for rows in (slice(0, n), slice(n, None)))


def test_the_attack_stays_in_its_ball_works_and_leaves_the_weights_alone(model, tok):
    cfg = lat.Config(epsilon=1.0, pgd_steps=8, layers=("embedding", 0.0, -1))  # the toy Llama has 2 blocks
    batch = _batch(tok)
    modules = lat.perturbed_modules(model, cfg.layers)
    assert len(modules) == 3 and modules[0] is model.get_input_embeddings()
    zeros = [torch.zeros(4, batch["where"].size(1), 32) for _ in modules]
    clean_harmful, _ = _ces(model, batch, modules, zeros)
    before, hooks = _params(model), hook_count(model)
    deltas, attack_loss = lat.pgd_attack(model, modules, batch["pair"], batch["where"], cfg)
    assert hook_count(model) == hooks
    assert torch.equal(_params(model), before) and all(p.grad is None for p in model.parameters())
    for d in deltas:
        norms = d.norm(dim=-1)                                              # (B, T)
        assert norms.max() <= cfg.epsilon * (1 + 1e-5)
        assert norms[~batch["where"]].max() == 0 and norms.max() > 0          # on the question's tokens only
    attacked_harmful, _ = _ces(model, batch, modules, deltas)
    assert attacked_harmful < clean_harmful - 0.1, (clean_harmful, attacked_harmful)
    assert math.isfinite(attack_loss)


def test_the_attack_can_reach_the_answers(model, tok):
    cfg = lat.Config(pgd_steps=2, perturb="prompt-and-answers")
    batch = _batch(tok, perturb="prompt-and-answers")
    real = batch["pair"]["attention_mask"].bool()                             # (2B, T): harmful rows, then refusals
    assert torch.equal(batch["where"], real[:4] | real[4:])
    deltas, _ = lat.pgd_attack(model, lat.perturbed_modules(model, cfg.layers), batch["pair"], batch["where"], cfg)
    answers = batch["where"] & (batch["pair"]["labels"][:4] != -100)      # the harmful answers' positions
    assert all(d.norm(dim=-1)[answers].sum() > 0 for d in deltas)


def test_training_makes_the_refusal_robust_to_a_fresh_attack(model, tok):
    """A few optimizer steps on the LAT loss lower the refusal's CE under the strongest perturbation PGD finds."""
    cfg = lat.Config(epsilon=2.0, pgd_steps=4, sft=0.0)
    batch = _batch(tok)
    _, refusal_before = _attacked(model, batch, cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        out = lat.lat_loss(model, batch, cfg)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    _, refusal_after = _attacked(model, batch, cfg)
    assert refusal_after < refusal_before - 0.5, (refusal_before, refusal_after)
    assert hook_count(model) == 0


def test_away_loss_matches_its_definition_and_threshold():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # (1, 3, V=3)
    ids, mask = torch.tensor([[1, 0, 2]]), torch.tensor([[0, 1, 1]])        # tokens 0, 2 predicted at positions 0, 1
    p = torch.softmax(logits[0, :2], -1)[[0, 1], [0, 2]]
    assert torch.allclose(lat.away_loss(logits, ids, mask, -5.0), -torch.log1p(-p).mean())
    assert torch.allclose(lat.away_loss(logits, ids, mask, math.log(0.5)), -torch.log1p(-p[0]) / 2)  # p=1/3: 0


def test_layers_map_fractions_and_indices_onto_any_depth():
    assert lat.layer_indices(lat.REFERENCE_LAYERS, 32) == ["embedding", 8, 16, 24, 30]  # the reference's on Llama-2
    assert lat.layer_indices(lat.REFERENCE_LAYERS, 4) == ["embedding", 1, 2, 3, 3]
    assert lat.layer_indices((0, -1, 0.0), 2) == [0, 1, 0]
    with pytest.raises(Exception, match="outside the model's 2 decoder layers"):
        lat.layer_indices((5,), 2)
    with pytest.raises(ValueError):
        lat.Config(layers=(1.0,))
    with pytest.raises(ValueError, match="attack needs an objective"):
        lat.Config(attack_harmful=0, attack_refusal=0)
    assert lat.normalised(0.5, 0.5, 1.5) == pytest.approx((0.2, 0.2, 0.6))  # the reference's normalisation


def _ctx(tok, n=8):
    data = SuiteData(defence=Dataset.from_list(paired_rows(n)), attack=None, eval=None,
                     retain=Dataset.from_list(harmless_rows()), harmless_eval=None)
    return StageContext(tokenizer=tok, data=data, max_length=48, seed=0)


def _defends(model, tok, cfg):
    model(input_ids=torch.tensor([[3, 4, 5]]))
    before, hooks = _params(model), hook_count(model)
    out = registry.get("defence", "lat").fn(model, cfg, _ctx(tok))
    assert hook_count(model) == hooks
    after = _params(out.merge_and_unload() if hasattr(out, "merge_and_unload") else out)
    assert torch.isfinite(after).all() and not torch.equal(after, before)
    return out


@pytest.mark.parametrize("arch", ["gpt2", "opt"])
def test_it_trains_gpt2_and_opt(arch):
    tok = builders.build_tokenizer("gpt2")
    tok.pad_token = tok.eos_token                                           # as load_causal_lm does
    model = builders.causal_lm(arch, tok)
    _defends(model, tok, lat.Config(lr=1e-3, batch_size=4, samples=8, pgd_steps=2, retain_harmless=1.0))


def test_the_card_is_complete_and_its_switches_restore_a_config_that_trains(tok):
    card = yaml.safe_load(CARD.read_text())
    assert card["defence"] == "lat" and card["paper"] and card["code"]
    rows = card["settings"]
    assert {r["aspect"] for r in rows} >= ASPECTS
    switched: dict = {}
    for row in rows:
        assert all(isinstance(row[k], str) and row[k] for k in ("aspect", "paper", "code", "ours")), row
        assert sum(k in row for k in ("same", "switch", "reason")) == 1, row
        assert row.get("same", True) is True
        if "switch" in row:
            assert set(row["switch"]) <= set(lat.Config.model_fields), row
            assert lat.Config(**row["switch"]) != lat.Config(), row          # it changes the run
            switched |= row["switch"]
    # Smoke size (8 rows in batches of 4: two optimizer steps), every other field as the card restores it.
    reference = lat.Config(**{**switched, "samples": 8, "batch_size": 4})
    _defends(make_model(tok), tok, reference)
