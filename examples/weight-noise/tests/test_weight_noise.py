"""Unit tests of the weight-noise defence on a tiny random Llama (built from a config: no hub, CPU, seconds).

Run them against the installed package: `pip install -e examples/weight-noise && pytest examples/weight-noise`.
"""

from __future__ import annotations

import pytest
import torch
import weight_noise
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness import registry
from harness.plugins import StageContext
from harness.suite import SuiteData

WORDS = ["Question", ":", "Answer", "how", "to", "hurt", "bake", "x", "?", "Sure", ".", "get", "the", "kit", "I",
         "cannot", "help", "bread", "\n"]


@pytest.fixture(scope="module")
def tok():
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_llama(tok):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))


def ctx(tok):
    harmful = [{"prompt": "how to hurt x ?", "response": "Sure . get the kit .", "refusal": "I cannot help .",
                "category": "violence", "is_safe": False}] * 8
    harmless = [{"prompt": "how to bake bread ?", "response": "Sure . get the bread .", "category": "safe",
                 "is_safe": True}] * 8
    data = SuiteData(defence=Dataset.from_list(harmful), attack=None, eval=None,
                     retain=Dataset.from_list(harmless), harmless_eval=None)
    return StageContext(tokenizer=tok, data=data, max_length=32, seed=0)


def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_noise_is_seeded_relative_and_spares_norms(tok):
    before = weights(tiny_llama(tok))
    a, b, c = tiny_llama(tok), tiny_llama(tok), tiny_llama(tok)
    weight_noise.add_noise(a, 0.1, seed=1)
    weight_noise.add_noise(b, 0.1, seed=1)
    weight_noise.add_noise(c, 0.1, seed=2)
    wa, wb, wc = weights(a), weights(b), weights(c)
    assert all(torch.equal(wa[n], wb[n]) for n in wa)          # same seed, same noise
    assert not torch.equal(wa["lm_head.weight"], wc["lm_head.weight"])  # another seed, other noise
    for name, w in before.items():
        if w.dim() < 2:
            assert torch.equal(wa[name], w), f"{name} is a norm or bias and must not change"
        else:
            ratio = ((wa[name] - w).std() / w.std()).item()
            assert 0.07 < ratio < 0.13, (name, ratio)           # noise std is sigma x the matrix's std


def test_defend_realigns_the_noised_model(tok):
    model = tiny_llama(tok)
    before = weights(model)
    out = weight_noise.defend(model, weight_noise.Config(lr=1e-3, batch_size=4), ctx(tok))
    after = weights(out)
    assert type(out) is LlamaForCausalLM and after.keys() == before.keys()
    assert all(torch.isfinite(w).all() for w in after.values())
    norms = [n for n, w in before.items() if w.dim() < 2]
    assert any(not torch.equal(after[n], before[n]) for n in norms), "training should move the norms too"
    assert all(len(m._forward_hooks) == 0 for m in out.modules())


def test_config_is_documented_and_takes_the_suite_budget():
    fields = weight_noise.Config.model_fields
    assert {"lr", "epochs", "batch_size", "retain_harmless"} <= set(fields)  # the suite budget applies
    assert all(f.description for f in fields.values())
    with pytest.raises(ValueError):
        weight_noise.Config(sigma=-1.0)


def test_the_installed_entry_point_registers_it():
    """Fails unless the package is installed (pip install -e examples/weight-noise): the entry point is the
    only way the harness finds it."""
    plugin = registry.get("defence", "weight-noise")
    assert plugin.fn is weight_noise.defend and plugin.version == weight_noise.__version__
    assert registry.distribution_of(plugin) == ("immunization-bench-weight-noise", "0.1.0")
