"""`import harness` keeps transformers from importing scikit-learn and SciPy (harness/lean_imports.py); generation
works, and the rest of transformers still sees the backends installed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

PROGRAM = """
import sys
import harness
import torch
from transformers import LlamaConfig, LlamaForCausalLM
import transformers.utils
from transformers.generation import candidate_generator
from transformers.loss import loss_for_object_detection
assert "sklearn" not in sys.modules, "transformers imported scikit-learn"
assert "scipy" not in sys.modules, "transformers imported SciPy"
assert candidate_generator.is_sklearn_available() is False
assert loss_for_object_detection.is_scipy_available() is False
assert transformers.utils.is_scipy_available() is True  # only the modules that import it lazily were told so
cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=2, max_position_embeddings=16, pad_token_id=0, eos_token_id=1, bos_token_id=2)
model = LlamaForCausalLM(cfg).eval()
out = model.generate(torch.tensor([[2, 5, 6]]), max_new_tokens=4, min_new_tokens=4, do_sample=False)
assert out.shape == (1, 7), out.shape
import sklearn.metrics  # a process that wants scikit-learn or SciPy itself still gets it
import scipy.optimize
print("ok")
"""


@pytest.mark.slow  # two new interpreters importing transformers (~10 s)
def test_transformers_imports_without_sklearn_after_harness():
    proc = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
