"""Keep `import transformers` from importing scikit-learn, which the harness never uses through it.

transformers imports `sklearn.metrics` (and with it scipy.stats) when scikit-learn is installed, only for assisted
generation's dynamic speculation threshold (`transformers.generation.candidate_generator`). lm-eval installs
scikit-learn, so every harness process (the CLI, each plugin process, each vLLM worker) paid for it: about a fifth of
the CPU time of `from transformers import LlamaForCausalLM` on the 2-core machine (benchmarks/import_cost.py).
`install()` adds a finder that, just before that one module is imported, tells transformers scikit-learn is absent.
Assisted generation with a confidence threshold then raises transformers' own "requires scikit-learn" error; the
harness never asks for it. A process that imports sklearn itself still can.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any

TARGET = "transformers.generation.candidate_generator"


class _WithoutSklearn(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == TARGET:
            utils = sys.modules.get("transformers.utils")
            if utils is not None:
                utils.is_sklearn_available = lambda: False  # what candidate_generator reads at its import
        return None  # the normal finders load the module


def install() -> None:
    """Idempotent; call before transformers is imported (harness/__init__ does)."""
    if not any(isinstance(f, _WithoutSklearn) for f in sys.meta_path):
        sys.meta_path.insert(0, _WithoutSklearn())
