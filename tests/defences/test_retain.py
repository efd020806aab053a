"""`retain_harmless` (DefenceTrainingFields) adds the same harmless CE to any training defence's loss, through
the one `fit()`: a shared option the suite sets for all defences or none, not one defence's advantage."""

import harness.training.loop
from harness.plugins import DefenceTrainingFields, fit
from harness.training.collate import SFTCollator
from harness.training.loop import lm_loss
from tests.defences.conftest import make_model


def test_retain_term_is_added_and_logged_through_fit(tok, ctx, monkeypatch):
    logs, seen = [], []
    real = harness.training.loop.train
    monkeypatch.setattr(harness.training.loop, "train", lambda *a, **k: logs.append(real(*a, **k)) or logs[-1])

    def loss_fn(model, batch):
        seen.append(set(batch))
        return lm_loss(model, batch)

    collate = SFTCollator(tok, 48, loss_on="answer", target="refusal")
    cfg = DefenceTrainingFields(lr=1e-3, batch_size=4, samples=8, retain_harmless=0.5)
    fit(make_model(tok), ctx, split="defence", cfg=cfg, collate=collate, loss_fn=loss_fn)
    fit(make_model(tok), ctx, split="defence", cfg=cfg.model_copy(update={"retain_harmless": 0.0}),
        collate=collate, loss_fn=loss_fn)
    assert all(h["retain_harmless"] > 0 for h in logs[0].history)  # the term is there and logged
    assert not any("retain_harmless" in h for h in logs[1].history)
    assert seen[0] == {"input_ids", "attention_mask", "labels"}  # the plugin's loss sees its own batch only
