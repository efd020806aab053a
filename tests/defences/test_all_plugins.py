"""Every registered defence and attack runs two CPU steps on a tiny random Llama: new plugins are tested
automatically. Checks: the result is a model (or None), weights change when a model is returned, no hooks
are left behind, and the loss is finite."""

import math

import pytest
import torch

from harness import registry
from harness.data.views import call_plugin
from harness.training.hooks import hook_count
from harness.training.lora import is_adapter_model
from harness.training.service import ServiceAdapter
from tests.released import naming

FAST = {"epochs": 1, "batch_size": 8, "samples": 16}


def _params(model):
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def _config(plugin, fast, **named):
    fields = plugin.config.model_fields
    return plugin.config(**{k: v for k, v in fast.items() if k in fields}, **named)


@pytest.fixture
def losses(monkeypatch):
    """Every loss value the one training loop logs while a plugin runs."""
    import harness.training.loop

    seen: list[float] = []
    real = harness.training.loop.train

    def logged(*args, **kwargs):
        log = real(*args, **kwargs)
        seen.extend(h["loss"] for h in log.history)
        return log

    monkeypatch.setattr(harness.training.loop, "train", logged)
    return seen


@pytest.mark.parametrize("name", registry.names("defence"))
def test_defence_runs(name, model, tok, ctx, losses, tmp_path):
    plugin = registry.get("defence", name)
    # transformers' own fixed hooks
    model(input_ids=torch.tensor([[3, 4, 5]], device=model.device), output_hidden_states=True)
    before, hooks = _params(model), hook_count(model)
    named, ctx = naming(plugin, model, tok, tmp_path / "released", ctx)  # a checkpoint its config names, if any
    out = call_plugin("defence", plugin, model, _config(plugin, {**FAST, "lr": 1e-3}, **named), ctx)
    assert hook_count(model) == hooks
    assert all(math.isfinite(v) for v in losses), f"{name} logged a non-finite loss"
    if "lr" in plugin.config.model_fields:  # a training defence trains through the one loop
        assert len(losses) == 2
    if isinstance(out, ServiceAdapter):  # kept back for the fine-tuning service; the released model follows
        assert is_adapter_model(out.adapter) and torch.isfinite(_params(out.adapter)).all()
        out = out.model
    if out is not None:
        after = _params(out.merge_and_unload() if is_adapter_model(out) else out)  # an adapter, as stages load it
        assert after.shape == before.shape and torch.isfinite(after).all()
        assert not torch.equal(after, before), f"{name} returned a model but changed nothing"


@pytest.mark.parametrize("name", registry.names("attack"))
def test_attack_runs(name, model, ctx, losses):
    plugin = registry.get("attack", name)
    before = _params(model)
    cfg = _config(plugin, {"samples": 8, "lr": 1e-3, "batch_size": 4, "epochs": 1, "steps": 2, "batch": 4})
    out = plugin.fn(model, cfg, ctx)
    if out is None:  # trains nothing: only an attack that changes how the model is asked may (a query)
        from harness.generation.query import QueryFields

        assert isinstance(cfg, QueryFields) and cfg.query(seed=0) is not None, f"{name} neither trains nor queries"
        assert torch.equal(_params(model), before)
        return
    assert not torch.equal(_params(out), before)
    assert torch.isfinite(_params(out)).all()
    if {"lr", "steps"} & set(plugin.budget):  # a training attack trains through the one loop; an edit trains nothing
        assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    else:
        assert losses == []


def test_registry_covers_the_paper_baselines():
    assert {"none", "repnoise", "adversarial-loss", "gradient-ascent", "safety-training", "random-init",
            "vaccine"} <= set(registry.names("defence"))
