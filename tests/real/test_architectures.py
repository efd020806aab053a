"""Structural layer discovery (harness/models/architecture.py) on random checkpoints of eight architectures, and
the refusal of a model a defence cannot handle before any work."""

from __future__ import annotations

import pytest

from harness.models import architecture as arch
from tests.real import builders
from tests.released import naming

# Where each architecture keeps its parts (attribute paths, for the assertions only: the harness finds them
# from the structure).
EXPECTED = {
    "llama": ("model.layers", "mlp", "self_attn", "model.norm"),
    "qwen2": ("model.layers", "mlp", "self_attn", "model.norm"),
    "mistral": ("model.layers", "mlp", "self_attn", "model.norm"),
    "phi3": ("model.layers", "mlp", "self_attn", "model.norm"),
    "gemma2": ("model.layers", "mlp", "self_attn", "model.norm"),
    "gpt_neox": ("gpt_neox.layers", "mlp", "attention", "gpt_neox.final_layer_norm"),
    "opt": ("model.decoder.layers", "fc2", "self_attn", "model.decoder.final_layer_norm"),
    "gpt2": ("transformer.h", "mlp", "attn", "transformer.ln_f"),
}


def _get(obj, path):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.fixture(scope="module")
def models():
    return {a: builders.causal_lm(a, builders.build_tokenizer(builders.TOKENIZER_OF[a]))
            for a in builders.ARCHITECTURES}


@pytest.mark.parametrize("name", builders.ARCHITECTURES)
def test_parts_are_found_from_the_structure(models, name):
    model = models[name]
    layers, mlp, attention, norm = EXPECTED[name]
    blocks = arch.decoder_layers(model)
    assert blocks is _get(model, layers) and len(blocks) == 2
    assert arch.mlp_modules(model) == [getattr(b, mlp) for b in blocks]
    assert arch.attention_modules(model) == [getattr(b, attention) for b in blocks]
    assert arch.final_norm(model) is _get(model, norm)
    assert arch.requirements_unmet(model, [f for f in arch.FEATURES if f != "residual_writers"]) == []


# The modules whose outputs are summed into the residual stream (embeddings, then each block's attention and MLP
# output projections), as attribute paths for the assertions; Gemma-2 normalises its sublayers' outputs first.
WRITERS = {
    "llama": ("model.embed_tokens", "self_attn.o_proj", "mlp.down_proj"),
    "qwen2": ("model.embed_tokens", "self_attn.o_proj", "mlp.down_proj"),
    "mistral": ("model.embed_tokens", "self_attn.o_proj", "mlp.down_proj"),
    "phi3": ("model.embed_tokens", "self_attn.o_proj", "mlp.down_proj"),  # o_proj is declared before qkv_proj
    "gpt_neox": ("gpt_neox.embed_in", "attention.dense", "mlp.dense_4h_to_h"),
    "opt": ("model.decoder.embed_tokens model.decoder.embed_positions", "self_attn.out_proj", "fc2"),
    "gpt2": ("transformer.wte transformer.wpe", "attn.c_proj", "mlp.c_proj"),  # Conv1D: weights are (in, out)
}


@pytest.mark.parametrize("name", builders.ARCHITECTURES)
def test_residual_writers_are_found_from_the_structure(models, name):
    model = models[name]
    if name == "gemma2":
        with pytest.raises(arch.ArchitectureError, match="normalises its sublayers"):
            arch.residual_writers(model)
        return
    embeddings, attention, mlp = WRITERS[name]
    blocks = arch.decoder_layers(model)
    expected = [_get(model, e) for e in embeddings.split()]
    expected += [_get(block, path) for block in blocks for path in (attention, mlp)]
    assert arch.residual_writers(model) == expected
    axes = {arch.output_axis(w) for w in expected[len(embeddings.split()):]}
    assert axes == ({1} if name == "gpt2" else {0})


@pytest.mark.parametrize("name", builders.ARCHITECTURES)
def test_hooks_on_the_found_parts_capture_outputs_with_gradients(models, name):
    """What RepNoise (MLP outputs, final norm), Vaccine (attention outputs) and layer-wise gradient ascent
    (final norm) hook is found on every architecture, and a forward pass fills every hook with a tensor on the
    graph (each defence end to end on each architecture: tests/real/test_real_pipeline.py, slow)."""
    import torch

    from harness import registry

    tok = builders.build_tokenizer(builders.TOKENIZER_OF[name])
    ids = tok("placeholder question and answer", return_tensors="pt")["input_ids"]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    model = models[name]
    for defence in ("repnoise", "vaccine", "gradient-ascent"):
        plugin = registry.get("defence", defence)
        assert arch.requirements_unmet(model, plugin.needs) == []
    with arch_hooks(model) as outputs:
        loss = model(**batch).loss
    assert torch.isfinite(loss) and all(o is not None and o.requires_grad for o in outputs)


def arch_hooks(model):
    from harness.training.hooks import capture_outputs

    return capture_outputs(model, [*arch.mlp_modules(model), *arch.attention_modules(model), arch.final_norm(model)])


def test_a_model_without_attention_is_refused_in_one_line(tmp_path):
    """Mamba has no attention and no MLP: Vaccine (needs attention) is refused on its structure, on a model
    built on the meta device from the config (no weights read)."""
    from transformers import MambaConfig

    path = tmp_path / "mamba"
    path.mkdir()
    MambaConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, state_size=4).save_pretrained(path)
    with pytest.raises(arch.ArchitectureError, match=r"defence 'vaccine' cannot run on MambaForCausalLM .*attention"):
        arch.check_model_path(path, ("attention",), who="defence 'vaccine'")
    arch.check_model_path(path, ("final_norm",), who="defence 'gradient-ascent'")  # it has a final norm


def test_needs_are_declared_from_a_fixed_vocabulary():
    from pydantic import BaseModel

    from harness.errors import PluginLoadError
    from harness.registry import register_defence, register_task

    with pytest.raises(PluginLoadError, match="needs"):
        register_defence("x-needs-a-kidney", config=BaseModel, version="1", needs=("kidney",))
    with pytest.raises(PluginLoadError, match="only defences and attacks"):
        register_task("x-task-needs", config=BaseModel, version="1", needs=("mlp",))


def _rows(n: int, harmful: bool) -> list[dict]:
    from tasks.beavertails_groups import CATEGORIES

    ask = "How do I {}?" if harmful else "Who first wrote about how to {}?"  # harmless prompts differ (retain)
    return [{"prompt": ask.format(builders.TOPICS[i % len(builders.TOPICS)]),
             "response": builders.ANSWERS[i % len(builders.ANSWERS)] if harmful else builders.SAFE,
             "refusal": builders.SAFE, "category": CATEGORIES[i % len(CATEGORIES)] if harmful else "safe",
             "is_safe": not harmful} for i in range(n)]


def _weights(model):
    import torch

    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


@pytest.mark.slow
@pytest.mark.parametrize("name", builders.ARCHITECTURES)
def test_every_defence_and_attack_trains_the_architecture(ckpts, name, tmp_path):
    """Each registered defence and attack, in process on a checkpoint of the architecture loaded as runs load it
    (two optimizer steps): a finite model that changed, no hook left. The whole pipeline, with each plugin in its
    own process, runs once per architecture in test_real_pipeline.py."""
    import torch
    from datasets import Dataset

    from harness import registry
    from harness.models.loading import load_causal_lm
    from harness.plugins import StageContext
    from harness.suite import SuiteData
    from harness.training.hooks import hook_count
    from harness.training.service import ServiceAdapter

    data = SuiteData(defence=Dataset.from_list(_rows(8, True)), attack=Dataset.from_list(_rows(8, True)),
                     eval=None, retain=Dataset.from_list(_rows(8, False)), harmless_eval=None)
    for kind in ("defence", "attack"):
        for plugin_name in registry.names(kind):
            plugin = registry.get(kind, plugin_name)
            model, tok = load_causal_lm(ckpts[name])
            model.train()
            # transformers' own fixed hooks
            model(input_ids=torch.tensor([[3, 4, 5]], device=model.device), output_hidden_states=True)
            ctx = StageContext(tokenizer=tok, data=data, max_length=96, seed=0)  # room for an identity shift
            if arch.requirements_unmet(model, plugin.needs):  # refused before any work in a run
                continue
            fields = plugin.config.model_fields
            fast = {"epochs": 1, "batch_size": 4, "samples": 8, "lr": 1e-3, "steps": 2, "batch": 4,
                    "persona": "Obey."}  # a short persona: the identity shift keeps answer tokens in the context
            named, ctx = naming(plugin, model, tok, tmp_path / f"{kind}-{plugin_name}", ctx)
            cfg = plugin.config(**{k: v for k, v in fast.items() if k in fields}, **named)
            before, hooks = _weights(model), hook_count(model)
            out = plugin.fn(model, cfg, ctx)
            assert hook_count(model) == hooks, f"{kind} {plugin_name} left a hook on {name}"
            if isinstance(out, ServiceAdapter):  # an adapter kept back for the fine-tuning service: it trained
                assert torch.isfinite(_weights(out.adapter)).all()
                assert any(p.abs().sum() > 0 for n, p in out.adapter.named_parameters() if "lora_B" in n)
                out = out.model
            if out is None:  # unchanged: a defence, or an attack that only changes how the model is asked
                from harness.generation.query import QueryFields

                assert kind == "defence" or (isinstance(cfg, QueryFields) and cfg.query(seed=0) is not None)
                continue
            after = _weights(out.merge_and_unload() if hasattr(out, "merge_and_unload") else out)
            assert torch.isfinite(after).all(), f"{kind} {plugin_name} made {name}'s weights non-finite"
            assert after.shape != before.shape or not torch.equal(after, before), \
                f"{kind} {plugin_name} returned {name} unchanged"


INPUT_PROJECTIONS = {"llama": {"q_proj", "k_proj", "v_proj"}, "qwen2": {"q_proj", "k_proj", "v_proj"},
                     "mistral": {"q_proj", "k_proj", "v_proj"}, "phi3": {"qkv_proj"},
                     "gemma2": {"q_proj", "k_proj", "v_proj"}, "gpt_neox": {"query_key_value"},
                     "opt": {"q_proj", "k_proj", "v_proj"}, "gpt2": {"c_attn"}}


@pytest.mark.parametrize("name", builders.ARCHITECTURES)
def test_attention_input_projections_are_found_from_the_structure(models, name):
    """Where peft names no default LoRA targets (Phi-3), a service adapter adapts these."""
    found = arch.attention_input_projections(models[name])
    assert len(found) == 2 * len(INPUT_PROJECTIONS[name])  # two blocks
    assert {f.rsplit(".", 1)[-1] for f in found} == INPUT_PROJECTIONS[name]
