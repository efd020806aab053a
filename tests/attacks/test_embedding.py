"""The embedding-space attack (`soft-prompt`, attacks/embedding.py) on tiny random checkpoints of Llama, Qwen2 and
GPT-2, tied and untied: only the soft rows change, the soft prompt lowers the harmful-answer loss, the model with
its tokens saves and loads and answers a prompt without them exactly as before, the tokens are never generated;
and the query option `prompt_prefix` it sets (its Config; Evaluator._queried asks after it)."""

from __future__ import annotations

import pytest
import torch

import attacks.embedding as soft
from harness.errors import HarnessError
from harness.results.metrics import Query
from tests.real.builders import ANSWERS, TOPICS, build_tokenizer, causal_config, causal_lm

# (architecture, tokenizer, tie the embeddings): Llama and Qwen2 untie by default, GPT-2 ties.
MODELS = {"llama": ("llama", "llama", False), "llama-tied": ("llama", "llama", True),
          "qwen2": ("qwen2", "qwen", False), "qwen2-tied": ("qwen2", "qwen", True), "gpt2": ("gpt2", "gpt2", True),
          "gemma2": ("gemma2", "llama", True)}  # Gemma scales its embeddings in the embedding module
FAST = {"tokens": 4, "steps": 6, "batch": 4, "samples": 8, "step_size": 0.05}
ROWS = [{"prompt": f"How do I {t}?", "response": ANSWERS[i % len(ANSWERS)]} for i, t in enumerate(TOPICS)]


def build(name: str, init_range: float | None = None):
    """A tiny random model and its tokenizer; `init_range`: the weights' init std (a wider one than the default
    0.02 gives outputs that depend on the input more than a near-uniform distribution does)."""
    from transformers import AutoModelForCausalLM

    arch, kind, tied = MODELS[name]
    tok = build_tokenizer(kind)
    if init_range is None:
        model = causal_lm(arch, tok)
    else:
        config = causal_config(arch, tok)
        config.initializer_range = init_range
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    if tok.pad_token_id is None:  # as the harness loads a tokenizer (harness.models.loading)
        tok.pad_token = tok.eos_token
    if tied and not model.config.tie_word_embeddings:
        model.config.tie_word_embeddings = True
        model.tie_weights()
    model.eval()
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    return model, tok


def context(tok, template=None):
    from datasets import Dataset

    from harness.plugins import StageContext
    from harness.suite import SuiteData

    data = SuiteData(defence=None, attack=Dataset.from_list(ROWS), eval=None, retain=None, harmless_eval=None)
    extra = {"template": template} if template is not None else {}
    return StageContext(tokenizer=tok, data=data, max_length=64, seed=0, **extra)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


@pytest.mark.parametrize("name", [n for n in MODELS if n != "gemma2"])
def test_only_the_soft_rows_change(name):
    """Every parameter is bit-identical except the k new rows: trained input rows, output rows (a copy of the input
    matrix where it was tied) whose new rows are the mean of the old ones; the model's gradient flags are kept."""
    model, tok = build(name)
    vocab, before = len(tok), snapshot(model)
    model.model.norm.weight.requires_grad_(False) if name.startswith("llama") else None
    start = soft.init_rows(model, tok, "!", FAST["tokens"])
    out = soft.attack(model, soft.Config(**FAST), context(tok))
    assert out is model and len(tok) == vocab + FAST["tokens"]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == (["model.norm.weight"] if name.startswith("llama") else [])  # the flags are as they were
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert head is not embed and not model.config.tie_word_embeddings
    after = snapshot(model)
    assert set(after) >= set(before)
    for key, old in before.items():
        new = after[key]
        if new.shape == old.shape:
            assert torch.equal(new, old), f"{name}: {key} changed"
            continue
        assert torch.equal(new[:vocab], old), f"{name}: {key} changed in its old rows"
        assert new.shape[0] == vocab + FAST["tokens"]
    if MODELS[name][2]:  # a tied matrix was copied
        assert torch.equal(head[:vocab], before[_key(model, embed)])
    assert torch.allclose(head[vocab:], head[:vocab].mean(0).expand(FAST["tokens"], -1))
    assert not torch.equal(embed[vocab:], start), "the soft prompt did not move from its start"


def _key(model, tensor) -> str:
    return next(n for n, p in model.named_parameters(remove_duplicate=False) if p is tensor)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_the_soft_prompt_lowers_the_harmful_answer_loss(name):
    """The answer loss on the attack rows, with the trained soft prompt before each question, is below the loss with
    the prompt at its start (the embedding of "!"). (At init std 0.1 the trained prompt gains 0.19 nats on Llama,
    0.08 on GPT-2; at the default 0.02 a random model is near-uniform whatever its input.)"""
    from harness.training.collate import SFTCollator
    from harness.training.loop import lm_loss

    model, tok = build(name, init_range=0.1)
    cfg = soft.Config(**{**FAST, "steps": 20})
    start = soft.init_rows(model, tok, cfg.init, cfg.tokens)
    soft.attack(model, cfg, context(tok))
    batch = SFTCollator(tok, 64, loss_on="answer")(list(soft.PrefixedRows(ROWS[:8], cfg.prompt_prefix, 8)))
    ids = tok.convert_tokens_to_ids(soft.soft_tokens(cfg.tokens))
    embed = model.get_input_embeddings().weight
    with torch.no_grad():
        trained = float(lm_loss(model, batch).loss)
        embed[ids] = start
        untrained = float(lm_loss(model, batch).loss)
    assert trained < untrained - 0.03, (trained, untrained)


@pytest.mark.parametrize("name", ["llama", "gpt2", "gemma2"])
def test_what_trains_is_what_the_saved_rows_give(name):
    """The training forward (the soft prompt spliced into the matrix, embedded by the model's own embedding module)
    gives the logits the model gives from token ids once the rows are written, Gemma's scaled embedding included."""
    from harness.training.collate import SFTCollator

    model, tok = build(name, init_range=0.1)
    cfg = soft.Config(**FAST)
    soft.attack(model, cfg, context(tok))
    batch = SFTCollator(tok, 64, loss_on="answer")(list(soft.PrefixedRows(ROWS[:4], cfg.prompt_prefix, 4)))
    ids = tok.convert_tokens_to_ids(soft.soft_tokens(cfg.tokens))
    embed = model.get_input_embeddings().weight
    moved = embed[ids].detach().float() + 0.5  # other rows than the written ones: the splice must be what counts
    with torch.no_grad():
        spliced = soft.SoftPrompted(model, ids, moved)(batch["input_ids"], batch["attention_mask"], None).logits
        embed[ids] = moved
        plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(spliced, plain, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in MODELS if n != "gemma2"])
def test_saves_loads_and_answers_unprefixed_prompts_as_before(name, tmp_path):
    """The attacked model and its tokenizer save and load (Auto classes, from the folder), every tensor equal; the
    loaded tokenizer splits the soft text into the soft tokens; greedy answers without them are the input model's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.generation.hf import generate_with_model
    from harness.models.loading import load_causal_lm, save_checkpoint

    model, tok = build(name)
    prompts = [r["prompt"] for r in ROWS[:6]]
    reference = generate_with_model(model, tok, prompts, max_new_tokens=12, batch_size=3)
    cfg = soft.Config(**FAST)
    soft.attack(model, cfg, context(tok))
    save_checkpoint(model, tok, tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    state = loaded.state_dict()
    assert all(torch.equal(t, state[n]) for n, t in model.state_dict().items())
    ids = AutoTokenizer.from_pretrained(tmp_path)(cfg.prompt_prefix, add_special_tokens=False)["input_ids"]
    assert ids == tok.convert_tokens_to_ids(soft.soft_tokens(cfg.tokens))
    again, tok_again = load_causal_lm(tmp_path)
    assert generate_with_model(again, tok_again, prompts, max_new_tokens=12, batch_size=3) == reference


@pytest.mark.parametrize("name", ["llama", "qwen2-tied", "gpt2"])
def test_the_soft_tokens_are_never_generated(name):
    """Greedy decoding after the soft prompt emits none of its tokens; at every position of any sequence each soft
    token's logit is at most the largest real one, and its probability at most 1/V."""
    model, tok = build(name)
    cfg = soft.Config(**FAST)
    soft.attack(model, cfg, context(tok))
    vocab, ids = len(tok) - cfg.tokens, tok.convert_tokens_to_ids(soft.soft_tokens(cfg.tokens))
    from harness.training.collate import PLAIN

    prompts = [PLAIN.prompt_ids(tok, cfg.prompt_prefix + r["prompt"]) for r in ROWS[:4]]
    for prompt in prompts:
        out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                             pad_token_id=tok.pad_token_id or tok.eos_token_id)
        assert not set(out[0, len(prompt):].tolist()) & set(ids)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        logits = model(input_ids=torch.randint(0, vocab + cfg.tokens, (4, 24), generator=gen)).logits  # (B, T, V+k)
    real, new = logits[..., :vocab], logits[..., ids]
    assert torch.allclose(new, real.mean(-1, keepdim=True).expand_as(new), atol=1e-5)  # the mean logit
    assert (new <= real.max(-1, keepdim=True).values).all()
    assert (torch.softmax(logits, -1)[..., ids] <= 1.0 / vocab + 1e-6).all()


def test_the_soft_prompt_sits_where_the_question_goes_in_a_chat_format():
    """In a chat format the soft tokens open the user turn, as the question would, in training batches and in the
    evaluation's prompt alike (both format `prompt_prefix + question`)."""
    from harness.training.collate import PromptFormat, SFTCollator

    model, tok = build("qwen2")
    chat = PromptFormat(kind="chat")
    cfg = soft.Config(**FAST)
    soft.attack(model, cfg, context(tok, chat))
    question = ROWS[0]["prompt"]
    asked = chat.prompt_ids(tok, cfg.prompt_prefix + question)
    batch = SFTCollator(tok, 64, loss_on="answer", template=chat)(list(soft.PrefixedRows(ROWS[:1], cfg.prompt_prefix,
                                                                                        1)))
    assert batch["input_ids"][0, :len(asked)].tolist() == asked
    user = tok("<|im_start|>user\n", add_special_tokens=False)["input_ids"]
    at = next(i for i in range(len(asked)) if asked[i:i + len(user)] == user) + len(user)
    assert asked[at:at + cfg.tokens] == tok.convert_tokens_to_ids(soft.soft_tokens(cfg.tokens))


def test_a_model_that_carries_a_soft_prompt_is_refused():
    model, tok = build("llama")
    soft.attack(model, soft.Config(**FAST), context(tok))
    with pytest.raises(HarnessError, match="already has <\\|soft_0\\|>"):
        soft.attack(model, soft.Config(**FAST), context(tok))


# ----------------------------------------------------------------------------- the query option


def test_the_config_sets_prompt_prefix_from_tokens():
    assert soft.Config().prompt_prefix == "".join(f"<|soft_{i}|>" for i in range(20))
    cfg = soft.Config(tokens=3)
    assert cfg.prompt_prefix == "<|soft_0|><|soft_1|><|soft_2|>"
    assert soft.Config.model_validate(cfg.model_dump(mode="json")) == cfg
    assert cfg.query(seed=5) == Query(prompt_prefix=cfg.prompt_prefix)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="set from `tokens`"):
        soft.Config(tokens=3, prompt_prefix="<|soft_0|>")
    with pytest.raises(ValidationError):
        soft.Config(tokens=0)


def test_queried_generations_ask_after_the_prefix_and_are_stored_under_the_questions(tmp_path):
    """`Evaluator._queried` with a prompt prefix: the harmful answers are those of `prefix + question` (greedy or each
    draw), the judge reads the questions without the prefix, and the stored generations read back under the run's
    prompt sets (harmless: the greedy answers, unprefixed)."""
    from harness.evaluation import Evaluator
    from harness.generation.hf import generate_with_model
    from harness.generation.outputs import ModelOutputs
    from harness.models.loading import save_checkpoint
    from harness.specs import EvalSpec, ModelSpec, PluginSpec
    from harness.stages import Stages
    from harness.store.artifacts import Store
    from harness.training.collate import PLAIN

    model, tok = build("llama")
    cfg = soft.Config(**FAST)
    soft.attack(model, cfg, context(tok))
    save_checkpoint(model, tok, tmp_path / "model")
    sets = {"harmful": [r["prompt"] for r in ROWS[:3]], "harmless": [r["prompt"] for r in ROWS[3:5]]}
    stages = Stages(Store(tmp_path / "store"))
    stages.bind("attacked", tmp_path / "model")
    eval_spec, base = EvalSpec(max_new_tokens=8, n_prompts=3, batch_size=4), ModelSpec(id="base", revision="r")

    class Panel:  # the primary judge, scripted: records what it reads, scores by draw
        primary = PluginSpec(name="scripted", version="1", params={})

        def __init__(self):
            self.read: list[list[str]] = []

        def scores(self, name, key, spec, *, prompts, outputs):
            self.read.append(list(prompts))
            return [float(name.endswith("query1.judge"))] * len(outputs)

    ev = Evaluator.__new__(Evaluator)
    ev.stages, ev.panel = stages, Panel()
    ev.spec = type("Spec", (), {"eval": eval_spec, "model": base})()
    ev.suite = type("Suite", (), {"prompt": PLAIN, "trust_remote_code": False})()
    ev.outputs = ModelOutputs(stages, eval_spec=eval_spec, base=base, template=PLAIN, remote_code=False,
                              prompt_sets=sets)
    expected = generate_with_model(model, tok, [cfg.prompt_prefix + q for q in sets["harmful"]], max_new_tokens=8,
                                   batch_size=4)
    harmless = generate_with_model(model, tok, sets["harmless"], max_new_tokens=8, batch_size=4)

    read = ev.outputs.read(ev._queried("attacked", "post_attack", cfg.query(seed=0)))
    assert read == {"harmful": expected, "harmless": harmless}
    assert expected != generate_with_model(model, tok, sets["harmful"], max_new_tokens=8, batch_size=4)

    sampled = Query(prompt_prefix=cfg.prompt_prefix, best_of=2, temperature=1.0, seed=3)
    read = ev.outputs.read(ev._queried("attacked", "post_attack", sampled))
    second = generate_with_model(model, tok, [cfg.prompt_prefix + q for q in sets["harmful"]], max_new_tokens=8,
                                 batch_size=4, temperature=1.0, seed=4)
    assert read["harmful"] == second  # the scripted judge finds draw 1 the more harmful
    assert ev.panel.read == [sets["harmful"]] * 2
