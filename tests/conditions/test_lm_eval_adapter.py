"""The lm-eval stability adapter, offline: a local multiple-choice task over a local JSONL file, scored on a
tiny Llama saved from a config. Runs wherever the lm-eval extra is installed (make install installs it)."""

import pytest

from harness.conditions.lm_eval_adapter import LmEvalProtocol, lm_eval_scores
from harness.errors import HarnessError
from tests.conftest import REPO

TASKS = REPO / "tests/fixtures/lm_eval_task"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tasks.tiny.base import build_tokenizer
    from tasks.tiny.world import build_world

    tok = build_tokenizer(build_world(0, "smoke"), 256)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    path = tmp_path_factory.mktemp("lm_eval_model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_local_task_scores(checkpoint, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.chdir(REPO)  # the task YAML names its data file relative to the repository
    out = lm_eval_scores(checkpoint, LmEvalProtocol(tasks=("tiny_mc",), include_path=str(TASKS),
                                                   include_defaults=False))
    acc = out["scores"]["tiny_mc"]["acc"]
    assert 0.0 <= acc <= 1.0 and out["versions"]["tiny_mc"] in ("1", "1.0")


def test_unknown_task_is_a_clear_error(checkpoint):
    pytest.importorskip("lm_eval")
    with pytest.raises(HarnessError, match="unknown lm-eval task"):
        lm_eval_scores(checkpoint, LmEvalProtocol(tasks=("no_such_task_xyz",), include_path=str(TASKS),
                                                  include_defaults=False))


def test_missing_extra_names_the_install_line(checkpoint, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_lm_eval(name, *a, **kw):
        if name.startswith("lm_eval"):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    with pytest.raises(HarnessError, match=r"pip install 'immunization-bench\[lm-eval\]'"):
        lm_eval_scores(checkpoint, LmEvalProtocol(tasks=("tiny_mc",)))
