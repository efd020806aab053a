"""Keep `import transformers` from importing scikit-learn and SciPy, which the harness never uses through it.

Every harness process (the CLI, each plugin process, each vLLM worker) is a new interpreter that imports
transformers' modelling code, and transformers imports two optional backends there that only other model families
use:

- `sklearn.metrics` (and with it scipy.stats), when scikit-learn is installed (lm-eval installs it), for assisted
  generation's dynamic speculation threshold (`transformers.generation.candidate_generator`): about a fifth of
  the CPU time of `from transformers import LlamaForCausalLM`;
- `scipy.optimize`, when SciPy is installed, for the Hungarian matching of the object-detection losses, which
  `transformers.loss.loss_utils` imports for every model (`benchmarks/import_cost.py` measures both).

`install()` adds a finder that runs just those modules' imports with transformers told the backend is absent
(the module keeps that answer; the rest of transformers sees the real one again). Assisted generation with a
confidence threshold and the object-detection losses then raise transformers' own "requires ..." or a NameError;
the harness uses neither. A process that imports sklearn or scipy itself still can.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any

# module -> the `transformers.utils` availability check that module reads as it is imported
HIDDEN = {"transformers.generation.candidate_generator": "is_sklearn_available",
          "transformers.loss.loss_utils": "is_scipy_available"}


class _Hiding(importlib.abc.Loader):
    """Executes a module with one availability check of `transformers.utils` answering False meanwhile."""

    def __init__(self, loader: Any, check: str):
        self.loader, self.check = loader, check

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        utils = sys.modules["transformers.utils"]
        real = getattr(utils, self.check)
        setattr(utils, self.check, lambda: False)
        try:
            self.loader.exec_module(module)
        finally:
            setattr(utils, self.check, real)


class _WithoutOptionalBackends(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        check = HIDDEN.get(name)
        if check is None or "transformers.utils" not in sys.modules:
            return None  # the normal finders load the module
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Hiding(spec.loader, check)
        return spec


def install() -> None:
    """Idempotent; call before transformers is imported (harness/__init__ does)."""
    if not any(isinstance(f, _WithoutOptionalBackends) for f in sys.meta_path):
        sys.meta_path.insert(0, _WithoutOptionalBackends())
