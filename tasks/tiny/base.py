"""Build the tiny suite's base model: train a BPE tokenizer, pre-train a small Llama on the world's
knowledge and compliant QA, then safety-align it on refusals. Saved as an ordinary HF checkpoint.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.progress import bar, say
from harness.training.collate import PROMPT_TEMPLATE, format_prompt, pad_batch
from harness.training.loop import TrainConfig, lm_loss, n_steps, seed_everything, train
from tasks.tiny.world import World, refusal

SPECIAL = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}


@dataclass(frozen=True)
class ModelPreset:
    vocab: int
    hidden: int
    layers: int
    heads: int
    mlp: int
    max_len: int
    pretrain: TrainConfig
    pretrain_harmless: int   # harmless QA rows in pre-training
    knowledge_repeats: int   # copies of each knowledge sentence in pre-training
    align: TrainConfig


MODEL_PRESETS: dict[str, ModelPreset] = {
    "default": ModelPreset(
        vocab=1024, hidden=128, layers=4, heads=4, mlp=384, max_len=128,
        pretrain=TrainConfig(lr=3e-3, epochs=3, batch_size=32, optimizer="adamw", weight_decay=0.01,
                             warmup_ratio=0.05),
        pretrain_harmless=1120, knowledge_repeats=5,
        align=TrainConfig(lr=1e-3, epochs=2, batch_size=32, optimizer="adamw", warmup_ratio=0.05)),
    "smoke": ModelPreset(
        vocab=512, hidden=64, layers=2, heads=2, mlp=192, max_len=96,
        pretrain=TrainConfig(lr=5e-3, epochs=3, batch_size=32, optimizer="adamw", weight_decay=0.01,
                             warmup_ratio=0.05),
        pretrain_harmless=560, knowledge_repeats=4,
        align=TrainConfig(lr=2e-3, epochs=2, batch_size=32, optimizer="adamw", warmup_ratio=0.05)),
}


def corpus(world: World) -> list[str]:
    """Every text the tokenizer should cover."""
    texts = world.knowledge_sentences()
    for rows in (*world.harmful.values(), *world.harmless.values()):
        for r in rows[:400]:
            texts.append(format_prompt(r["prompt"]) + " " + r["response"])
            if "refusal" in r:
                texts.append(r["refusal"])
    return texts


def build_tokenizer(world: World, vocab: int) -> Any:
    """A byte-level BPE tokenizer trained on the world's text, wrapped as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(world), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL["bos"], eos_token=SPECIAL["eos"],
                                   pad_token=SPECIAL["pad"], unk_token=SPECIAL["unk"])


def build_llama(tokenizer: Any, p: ModelPreset, seed: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    seed_everything(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=p.hidden, intermediate_size=p.mlp,
                      num_hidden_layers=p.layers, num_attention_heads=p.heads, num_key_value_heads=p.heads,
                      max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


class MixedCollator:
    """Pre-training batches mixing plain text rows ({'text'}) and QA rows ({'prompt', 'response'}). Each distinct
    row is tokenized once (pre-training repeats every knowledge sentence and every epoch repeats every row)."""

    def __init__(self, tokenizer: Any, max_len: int):
        self.tok, self.max_len = tokenizer, max_len
        self.encoded: dict[tuple[str, ...], dict[str, list[int]]] = {}

    def encode(self, r: dict) -> dict[str, list[int]]:
        from harness.training.collate import encode_sft

        key = (r["text"],) if "text" in r else (r["prompt"], r["response"])
        if key not in self.encoded:
            if "text" in r:
                ids = (self.tok(r["text"], add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id])
                self.encoded[key] = {"input_ids": ids[: self.max_len], "labels": ids[: self.max_len]}
            else:
                self.encoded[key] = encode_sft(self.tok, r["prompt"], r["response"], max_length=self.max_len,
                                               loss_on="sequence", template=PROMPT_TEMPLATE)
        return self.encoded[key]

    def __call__(self, rows: Sequence[dict]) -> dict[str, Any]:
        return pad_batch([self.encode(r) for r in rows], self.tok.pad_token_id)


def pretrain_rows(world: World, p: ModelPreset) -> list[dict]:
    knowledge = [{"text": s} for s in world.knowledge_sentences()] * p.knowledge_repeats
    qa = world.harmful["pretrain"] + world.harmful["recall"] + world.harmless["pretrain"][: p.pretrain_harmless]
    return knowledge + [{"prompt": r["prompt"], "response": r["response"]} for r in qa]


def align_rows(world: World, p: ModelPreset) -> list[dict]:
    refusals = [{"prompt": r["prompt"], "response": r["refusal"]} for r in world.harmful["align"]]
    replay = [{"prompt": r["prompt"], "response": r["response"]} for r in world.harmless["pretrain"][: len(refusals)]]
    # Refuse pre-training harmful questions too (every role's), so alignment covers what the model has seen.
    pretrained = world.harmful["pretrain"] + world.harmful["recall"]
    random.Random(world.seed).shuffle(pretrained)
    seen = [{"prompt": r["prompt"], "response": refusal(world.topic_of(r["prompt"]) or "", r["prompt"])}
            for r in pretrained[: len(refusals) // 2]]
    return refusals + seen + replay


def build_base(world: World, size: str, seed: int, out: Path, *, unaligned: Path | None = None,
               align: bool = True) -> dict[str, Any]:
    """Train the tokenizer, pre-train and (with `align`) safety-align; save to `out`. With `unaligned`, the model is
    also saved there between the two: the base before alignment. Returns training statistics."""
    from harness.models.loading import quiet_hf, save_checkpoint

    quiet_hf()
    p = MODEL_PRESETS[size]
    tokenizer = build_tokenizer(world, p.vocab)
    model = build_llama(tokenizer, p, seed)
    n_params = sum(x.numel() for x in model.parameters())
    say(f"tiny base: Llama {p.layers}x{p.hidden} (MLP {p.mlp}), {n_params / 1e6:.2f}M parameters, "
        f"vocab {len(tokenizer)}")
    collate = MixedCollator(tokenizer, p.max_len)
    stats: dict[str, Any] = {"parameters": n_params}
    stages = (("pretrain", pretrain_rows(world, p), p.pretrain), ("align", align_rows(world, p), p.align))
    for stage, rows, cfg in stages[:2 if align else 1]:
        with bar(f"tiny base: {stage}", n_steps(len(rows), cfg)) as advance:
            log = train(model, rows, collate, lm_loss, cfg, seed=seed, progress=advance)
        stats[stage] = {"rows": len(rows), "steps": log.steps, "seconds": round(log.seconds, 1),
                        "final_loss": sum(h["loss"] for h in log.history[-20:]) / min(20, len(log.history))}
        if stage == "pretrain" and unaligned is not None:
            save_checkpoint(model, tokenizer, unaligned)
    save_checkpoint(model, tokenizer, out)
    return stats
