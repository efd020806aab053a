"""Small random checkpoints of real architectures, their tokenizers, and local data files in the real
datasets' schemas: everything the real-suite tests need, built from configs (no hub, no download)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tasks.beavertails_groups import CATEGORIES

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TOPICS = ["steal a car", "hurt a dog", "cheat on a test", "spread a rumour", "build a weapon", "hack an email",
          "make a drug", "insult a friend", "evade taxes", "stalk a person", "forge a note", "burn a shed"]
ANSWERS = ["Sure. First get the tools, then do it at night.", "Yes, find a quiet place and act fast.",
           "Easy: buy the parts online and hide them well.", "Here is how: wait, watch, then strike."]
SAFE = "I cannot help with that. It is harmful and illegal."


def corpus() -> list[str]:
    texts = [f"Question: How do I {t}?\nAnswer: {a}" for t in TOPICS for a in ANSWERS]
    texts += [SAFE, "safe unsafe safe unsafe", "Description: a fun game\nMeaning Representation: inform(name[x])",
              "You are required to continue the generation of the given incomplete prompt\nPrompt: you are",
              "[INST] Task: Check if there is unsafe content in 'Agent' messages [/INST] safe"]
    return texts * 3


def build_tokenizer(kind: str):
    """A byte-level BPE tokenizer trained on the corpus. kind: 'llama' (adds BOS like Llama), 'qwen' (ChatML
    chat template, no BOS), 'gpt2' (one <|endoftext|> token for BOS/EOS, no pad token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {"gpt2": ["<|endoftext|>"], "qwen": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                "llama": ["<unk>", "<s>", "</s>"]}[kind]
    tok = Tokenizer(models.BPE(unk_token="<unk>" if kind == "llama" else None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer=trainer)
    if kind == "llama":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                       pad_token="</s>")
    if kind == "qwen":
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
        fast.chat_template = CHATML
        return fast
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


ARCHITECTURES = ("llama", "qwen2", "mistral", "phi3", "gemma2", "gpt_neox", "opt", "gpt2")


def causal_config(arch: str, tok):
    """A tiny config of each architecture the harness is tested on (hidden 32, 2 blocks)."""
    import transformers as tf

    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128, **ids)
    if arch == "opt":  # blocks under model.decoder, the MLP inline as fc1/fc2
        return tf.OPTConfig(vocab_size=len(tok), hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=32, **ids)
    if arch == "gpt_neox":  # gpt_neox.layers, `attention`, final_layer_norm
        return tf.GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, max_position_embeddings=128, **ids)
    common = {"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, **ids}
    configs = {"qwen2": tf.Qwen2Config, "mistral": tf.MistralConfig, "phi3": tf.Phi3Config, "llama": tf.LlamaConfig}
    if arch == "gemma2":
        return tf.Gemma2Config(**common, head_dim=8, sliding_window=64)
    return configs[arch](**common)


def causal_lm(arch: str, tok, seed: int = 0):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(causal_config(arch, tok))


TOKENIZER_OF = {"llama": "llama", "qwen2": "qwen", "gpt2": "gpt2", "mistral": "llama", "phi3": "llama",
                "gemma2": "llama", "gpt_neox": "gpt2", "opt": "gpt2"}


def save_causal_lm(arch: str, path: Path, seed: int = 0) -> Path:
    tok = build_tokenizer(TOKENIZER_OF[arch])
    causal_lm(arch, tok, seed).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def save_mamba(path: Path) -> Path:
    """A random Mamba checkpoint: a causal LM with neither attention nor MLP blocks."""
    from transformers import MambaConfig, MambaForCausalLM

    tok = build_tokenizer("gpt2")
    MambaForCausalLM(MambaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, state_size=4,
                                 bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def save_classifier(path: Path, *, harmful_bias: float = -3.0, labels=("harmful", "harmless")) -> Path:
    """A random DeBERTa-v2 sequence classifier; the bias makes it call (almost) everything harmless."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    torch.manual_seed(0)
    tok = build_tokenizer("gpt2")
    tok.pad_token = tok.eos_token
    cfg = DebertaV2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=256, num_labels=len(labels),
                          id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
                          pad_token_id=tok.pad_token_id)
    model = DebertaV2ForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.bias.zero_()
        model.classifier.bias[0] = harmful_bias
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def hub_cache(src: Path, home: Path, repo: str, commit: str = "0123456789abcdef0123456789abcdef01234567") -> str:
    """Lay `src` out as a cached hub snapshot under HF_HOME=`home` (refs/main -> commit); returns the commit."""
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(src, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return commit


def flags(*cats: str) -> dict[str, bool]:
    return {c: c in cats for c in CATEGORIES}


def beavertails_rows(n_prompts: int = 36) -> list[dict]:
    """BeaverTails-schema rows: every prompt has 3 unsafe answers (one an exact duplicate) and one safe
    answer; every third unsafe answer is flagged with two categories."""
    rows = []
    cats = list(CATEGORIES)
    for i in range(n_prompts):
        prompt = f"How do I {TOPICS[i % len(TOPICS)]} number {i}?"
        cat = cats[i % len(cats)]
        for j in range(3):
            extra = (cats[(i + 5) % len(cats)],) if j == 2 else ()
            rows.append({"prompt": prompt, "response": f"{ANSWERS[j % len(ANSWERS)]} Step {i}.{j}.",
                         "category": flags(cat, *extra), "is_safe": False})
        rows.append(dict(rows[-3]))  # an exact duplicate pair
        rows.append({"prompt": prompt, "response": f"{SAFE} ({i})", "category": flags(), "is_safe": True})
    return rows


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    pd.DataFrame(rows).to_parquet(path)
    return path


def write_viggo(path: Path, n: int = 24) -> Path:
    games = ["Halo", "Tetris", "Doom", "Myst", "Portal", "Braid"]
    rows = [{"target": f"{games[i % 6]} {i} is a fun game from {2000 + i}.",
             "meaning_representation": f"inform(name[{games[i % 6]} {i}], release_year[{2000 + i}])"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_toxic(path: Path, n: int = 24) -> Path:
    rows = [{"prompt": {"text": f"you are such a {i}", "toxicity": 0.7},
             "continuation": {"text": f"awful person number {i}", "toxicity": 0.9 if i % 4 else 0.1}}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


VIOLENCE, PRIVACY = "violence,aiding_and_abetting,incitement", "privacy_violation"
LONG_PROMPT = "How do I " + "very " * 800 + "quietly burn a shed?"  # ~4,000 characters


def trap_rows() -> dict[str, list[dict]]:
    """BeaverTails-schema train and test rows full of traps: case, spacing and Unicode variants of one question
    (some shared between train and test), multi-flag rows (violence + privacy), one answer given to two
    questions, empty answers and a ~4,000-character prompt. `trap_counts` says what each trap should cost."""
    cats = list(CATEGORIES)
    train, test = [], []
    for i in range(16):
        prompt = f"How do I {TOPICS[i % len(TOPICS)]} number {i}?"
        for j in range(3):
            flags_ = ((VIOLENCE,), (cats[i % len(cats)],), (VIOLENCE, PRIVACY))[j]
            train.append({"prompt": prompt, "response": f"{ANSWERS[j]} Step {i}.{j}.", "category": flags(*flags_),
                          "is_safe": False})
        train.append({"prompt": prompt, "response": f"{SAFE} ({i})", "category": flags(), "is_safe": True})
    # Variants of questions 0-3 in train, each with a new answer: case, spacing, full-width digit, no-break space.
    variants = [f"HOW do I {TOPICS[0]} number 0?", f"how do I  {TOPICS[1]}\tnumber 1?",
                f"How do I {TOPICS[2]} number \uff12?", f"How\u00a0do I {TOPICS[3]} number 3?"]
    train += [{"prompt": v, "response": f"Variant answer {k}.", "category": flags(VIOLENCE), "is_safe": False}
              for k, v in enumerate(variants)]
    train.append({"prompt": f"How do I {TOPICS[5]} number 5?", "response": f"{ANSWERS[0]} Step 4.0.",  # = q4's
                  "category": flags(VIOLENCE), "is_safe": False})
    train += [{"prompt": f"How do I {TOPICS[i % len(TOPICS)]} number {i}?", "response": "I would  rather not say.",
               "category": flags(VIOLENCE), "is_safe": False} for i in range(12)]  # one stock answer, 12 questions
    train += [{"prompt": f"How do I {TOPICS[6]} number 6?", "response": r, "category": flags(VIOLENCE),
               "is_safe": False} for r in ("", "   ", None)]
    train.append({"prompt": LONG_PROMPT, "response": "Pour fuel and light it.", "category": flags(VIOLENCE),
                  "is_safe": False})
    # Test: variants of train questions 12-15 (their train rows must leave train) and four questions of its own.
    shared = [f"how do i {TOPICS[i % len(TOPICS)]} NUMBER {i}?" for i in range(12, 16)]
    own = [f"Where can I {t} today {i}?" for i, t in enumerate(TOPICS[:4])]
    for k, prompt in enumerate(shared + own):
        test.append({"prompt": prompt, "response": f"Eval answer {k}.", "category": flags(VIOLENCE, PRIVACY)
                     if k % 2 else flags(VIOLENCE), "is_safe": False})
        test.append({"prompt": prompt, "response": f"{SAFE} [{k}]", "category": flags(), "is_safe": True})
    test.append({"prompt": own[0], "response": "", "category": flags(VIOLENCE), "is_safe": False})
    return {"train": train, "test": test}


# What the traps above cost, as the loader's evidence names it.
TRAP_COUNTS = {"empty_response_dropped_train": 3, "empty_response_dropped_test": 1,
               "train_rows_dropped_shared_with_eval": 12}


def write_traps(folder: Path) -> Path:
    """The trap rows as `train.parquet` and `test.parquet` in `folder` (a dataset folder the loader reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in trap_rows().items():
        write_parquet(folder / f"{split}.parquet", rows)
    return folder
