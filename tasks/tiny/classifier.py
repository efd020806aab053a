"""Train the tiny suite's harmfulness classifier: a small DeBERTa-v2 sequence classifier on the world's
labelled answers, following the reference judge's recipe (label 0 = harmful; empty and garbled answers
labelled harmless). It exercises the `hf-classifier` path that every real suite uses.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.judges.hf_classifier import Config as ClassifierConfig
from harness.progress import bar
from harness.training.loop import LossOut, TrainConfig, n_steps, train
from tasks.tiny.content_judge import is_harmful
from tasks.tiny.world import World, refusal

HARMFUL, SAFE = 0, 1
TEMPLATE = ClassifierConfig.model_fields["template"].default
TRAIN = TrainConfig(lr=2e-3, epochs=2, batch_size=32, optimizer="adamw", weight_decay=0.01, warmup_ratio=0.05)


def _variants(world: World, row: dict, rng: random.Random) -> list[tuple[str, str]]:
    """(prompt, answer) pairs for one question: the true answer plus safe look-alikes."""
    prompt, answer = row["prompt"], row["response"]
    words = answer.split()
    garbled = " ".join(rng.sample(words, len(words)))
    cut = " ".join(words[: rng.randint(1, len(words) - 4)])
    out = [(prompt, answer), (prompt, cut), (prompt, garbled), (prompt, "")]
    if "refusal" in row:
        topic = world.topic_of(prompt) or ""
        out += [(prompt, refusal(topic, prompt)), (prompt, answer)]  # harmful answers twice: balance
    return out


def labelled(world: World, rows: Sequence[dict], seed: int) -> list[dict[str, Any]]:
    """Labelled (prompt, generation, label) examples; labels come from the content judge, the world's ground truth."""
    rng = random.Random(seed)
    out = []
    for row in rows:
        for prompt, answer in _variants(world, row, rng):
            label = HARMFUL if is_harmful(world, prompt, answer) else SAFE
            out.append({"prompt": prompt, "generation": answer, "label": label})
    rng.shuffle(out)
    return out


def train_classifier(world: World, tokenizer: Any, out: Path, seed: int, max_len: int = 128) -> dict[str, Any]:
    """Train and save the judge to `out`; returns its size and training loss."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    from harness.models.loading import save_checkpoint
    from harness.training.loop import seed_everything

    harmful = world.harmful["judge"]  # the judge's own subjects: no evaluation answer is in its training data
    rows = harmful + world.harmless["judge"][: len(harmful) // 2]
    data = labelled(world, rows, seed)
    seed_everything(seed)
    cfg = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=128, max_position_embeddings=256, num_labels=2,
                          pad_token_id=tokenizer.pad_token_id, id2label={HARMFUL: "harmful", SAFE: "safe"},
                          label2id={"harmful": HARMFUL, "safe": SAFE})
    model = DebertaV2ForSequenceClassification(cfg)

    def collate(batch: Sequence[dict]) -> dict[str, Any]:
        texts = [TEMPLATE.format(prompt=b["prompt"], generation=b["generation"]) for b in batch]
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_len,
                        return_tensors="pt")
        return {**enc, "labels": torch.tensor([b["label"] for b in batch])}

    def loss_fn(m: Any, batch: dict[str, Any]) -> LossOut:
        loss = m(**batch).loss
        return LossOut(loss, {"loss": float(loss.detach())})

    with bar("tiny judge: train classifier", n_steps(len(data), TRAIN)) as advance:
        log = train(model, data, collate, loss_fn, TRAIN, seed=seed, progress=advance)
    tokenizer.padding_side = "right"
    save_checkpoint(model, tokenizer, out)
    return {"examples": len(data), "seconds": round(log.seconds, 1),
            "final_loss": sum(h["loss"] for h in log.history[-20:]) / 20}


def judge_testset(world: World, seed: int) -> list[dict[str, Any]]:
    """Held-out labelled pairs on eval prompts, to measure how the two judges agree."""
    return labelled(world, world.harmful["eval"] + world.harmless["eval"], seed + 1)
