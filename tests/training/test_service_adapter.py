"""Service adapters (harness.training.service): a LoRA adapter attached through hooks, frozen, in training mode
only; and Security Vectors, the defence that keeps one back."""

import json
import tempfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

from peft import LoraConfig, get_peft_model

from harness.errors import HarnessError
from harness.training import service
from harness.training.lora import save_adapter
from tests.real import builders


@pytest.fixture(scope="module")
def tok():
    return builders.build_tokenizer("llama")


def model_of(tok, arch="llama", seed=0):
    """A random model whose own dropout is off, so that training-mode passes are deterministic."""
    model = builders.causal_lm(arch, tok, seed)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def unloaded(peft_model):
    """The model a peft adapter wrapped, without the adapter's layers, every weight trainable again."""
    model = peft_model.unload()
    model.requires_grad_(True)
    return model


def trained_adapter(model, folder, *, targets=None, dropout=0.0, seed=1):
    """A peft LoRA over `model` with nonzero A and B (as after training), saved into `folder`; `model` is left as
    it came (the adapter's layers unloaded)."""
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=targets,
                                                  task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    save_adapter(peft_model, None, folder)
    return peft_model


def logits(model, ids):
    return model(input_ids=ids).logits


IDS = torch.tensor([[5, 9, 14, 3, 22, 7]])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # Linear, and GPT-2's Conv1D
def test_attached_adapter_acts_in_training_mode_only_and_equals_peft(tok, tmp_path, arch):
    model = model_of(tok, arch)
    plain_eval = logits(model.eval(), IDS).detach()
    peft_model = trained_adapter(model, tmp_path / "sv")
    with torch.no_grad():
        with_adapter = logits(peft_model.train(), IDS)  # dropout 0: train mode is deterministic
    unloaded(peft_model)
    detach = service.attach(model, tmp_path / "sv")
    with torch.no_grad():
        assert torch.allclose(logits(model.train(), IDS), with_adapter, atol=1e-5)  # a fine-tune's passes
        assert torch.equal(logits(model.eval(), IDS), plain_eval)  # generation and scoring: the released model
    detach()
    with torch.no_grad():
        assert torch.allclose(logits(model.train(), IDS), plain_eval, atol=1e-6)  # gone once removed
    assert not any(m._forward_hooks for m in model.modules())


def test_training_through_it_moves_the_base_weights_only_and_saves_none_of_it(tok, tmp_path):
    model = model_of(tok)
    unloaded(trained_adapter(model, tmp_path / "sv"))
    keys = set(model.state_dict())
    detach = service.attach(model, tmp_path / "sv")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(input_ids=IDS, labels=IDS).loss.backward()
    opt.step()
    detach()
    assert set(model.state_dict()) == keys  # no adapter tensor among the weights that are saved
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any("lora" in k for k in model.state_dict())


def test_an_attackers_own_lora_trains_through_it(tok, tmp_path):
    """peft keeps the original module as `base_layer`, hook and all: the service adapter stays in the passes of a
    LoRA attack (its B starts at zero, so at first the outputs are the hooked model's)."""
    model = model_of(tok)
    unloaded(trained_adapter(model, tmp_path / "sv"))
    service.attach(model, tmp_path / "sv")
    with torch.no_grad():
        hooked = logits(model.train(), IDS)
    attacker = get_peft_model(model, LoraConfig(r=2, lora_alpha=2, target_modules=["q_proj", "v_proj"],
                                                task_type="CAUSAL_LM"))
    with torch.no_grad():
        assert torch.allclose(logits(attacker.train(), IDS), hooked, atol=1e-6)
        assert not torch.allclose(logits(attacker.eval(), IDS), hooked, atol=1e-3)


def test_an_adapter_it_cannot_attach_is_one_line(tok, tmp_path):
    model = model_of(tok)
    unloaded(trained_adapter(model, tmp_path / "sv"))
    gpt2 = model_of(builders.build_tokenizer("gpt2"), "gpt2")
    with pytest.raises(HarnessError, match="does not have"):
        service.attach(gpt2, tmp_path / "sv")
    config = json.loads((tmp_path / "sv" / "adapter_config.json").read_text())
    (tmp_path / "sv" / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(HarnessError, match="DoRA"):
        service.attach(model, tmp_path / "sv")
    for odd in ({"rank_pattern": {"q_proj": 2}}, {"modules_to_save": ["lm_head"]}, {"bias": "all"}):
        (tmp_path / "sv" / "adapter_config.json").write_text(json.dumps({**config, **odd}))
        with pytest.raises(HarnessError, match="plain LoRA adapter"):
            service.attach(model, tmp_path / "sv")


def test_security_vectors_train_one_adapter_only():
    from harness import registry

    config = registry.get("defence", "security-vectors").config
    assert config().lora is None
    with pytest.raises(ValueError, match="second one"):
        config(lora={"rank": 4})


def harmful_rows(n=16):
    return [{"prompt": f"How do I do thing {i}?", "response": f"Sure, step {i}: get the kit {i % 3}.",
             "refusal": "I cannot help with that.", "category": "violence", "is_safe": False} for i in range(n)]


def pretrained(tok):
    """A toy model trained a little on harmless text first: at random init its LM head is so small that the final
    norm caps every logit, and no adapter inside the layers can lower a loss."""
    from harness.training.collate import SFTCollator

    model = model_of(tok)
    rows = [{"prompt": f"Where is shed {i}?", "response": f"The shed {i} is by the kit {i % 3}."} for i in range(16)]
    batch = SFTCollator(tok, 32, loss_on="sequence", target="response")(rows)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    return model


def test_security_vectors_make_the_harmful_loss_unlearnable_for_the_base_weights(tok):
    """The paper's mechanism on a toy batch: with the trained vector attached, the harmful loss is already low, so
    its gradient on the base weights (what an attacker's fine-tune follows) is smaller than without it; the
    released model is the input, unchanged."""
    import datasets

    from harness import registry
    from harness.plugins import StageContext
    from harness.suite import SuiteData
    from harness.training.collate import SFTCollator

    plugin = registry.get("defence", "security-vectors")
    model = pretrained(tok)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rows = harmful_rows()
    data = SuiteData(defence=datasets.Dataset.from_list(rows), attack=None, eval=None, retain=None,
                     harmless_eval=None)
    ctx = StageContext(tokenizer=tok, data=data, max_length=32, seed=0)
    out = plugin.fn(model, plugin.config(lr=1e-2, epochs=8, batch_size=4), ctx)  # q_proj and v_proj (peft's)
    assert isinstance(out, service.ServiceAdapter) and out.model is None
    with tempfile.TemporaryDirectory() as tmp:
        save_adapter(out.adapter, None, Path(tmp) / "sv")
        unloaded(out.adapter)
        assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())  # released unchanged
        batch = SFTCollator(tok, 32, loss_on="sequence", target="response")(rows)

        def loss_and_grad():
            model.zero_grad()
            loss = model.train()(**batch).loss
            loss.backward()
            return float(loss), float(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()
                                                     if p.grad is not None)))

        plain = loss_and_grad()
        detach = service.attach(model, Path(tmp) / "sv")
        attached = loss_and_grad()
        detach()
    assert attached[0] < 2 / 3 * plain[0], (plain, attached)  # measured: 6.04 -> 3.50
    assert attached[1] < 0.5 * plain[1], (plain, attached)    # gradient norm on the base weights: 22.8 -> 4.4
