"""Loss masking and padding: the mechanics every attack and defence shares."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from harness.training.collate import IGNORE, SFTCollator, encode_sft, format_prompt, pad_batch


@pytest.fixture(scope="module")
def tok():
    words = ["Question", ":", "Answer", "how", "do", "I", "x", "?", "Sure", ".", "yes", "\n", "Ġ"]
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *words])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def test_answer_loss_masks_exactly_the_prompt(tok):
    n_prompt = len(tok(format_prompt("how do I x ?"), add_special_tokens=False)["input_ids"])
    enc = encode_sft(tok, "how do I x ?", "Sure . yes", max_length=64, loss_on="answer")
    assert enc["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert enc["labels"][n_prompt:] == enc["input_ids"][n_prompt:]
    assert enc["input_ids"][-1] == tok.eos_token_id  # EOS is trained on: the model learns to stop


def test_sequence_loss_covers_every_token(tok):
    enc = encode_sft(tok, "how do I x ?", "Sure . yes", max_length=64, loss_on="sequence")
    assert enc["labels"] == enc["input_ids"]


def test_truncation_keeps_labels_aligned(tok):
    enc = encode_sft(tok, "how do I x ?", "Sure . yes", max_length=5, loss_on="answer")
    assert len(enc["input_ids"]) == len(enc["labels"]) == 5


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_is_never_in_the_loss(tok, side):
    rows = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [5], "labels": [5]}]
    batch = pad_batch(rows, pad_id=0, side=side)
    assert batch["input_ids"].shape == (2, 3)
    short = batch["labels"][1].tolist()
    assert short.count(IGNORE) == 2 and batch["attention_mask"][1].sum() == 1
    assert (short[0] == IGNORE) == (side == "left")


def test_collator_builds_tensors(tok):
    batch = SFTCollator(tok, 32, loss_on="answer")([{"prompt": "x ?", "response": "yes"},
                                                    {"prompt": "how do I x ?", "response": "Sure . yes"}])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["labels"].shape == batch["input_ids"].shape
