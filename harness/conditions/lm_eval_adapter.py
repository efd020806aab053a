"""Stability on real models through lm-evaluation-harness' Python API (optional extra `lm-eval`).

The paper measures stability with lm-eval tasks (TruthfulQA, MMLU, HellaSwag, ...). A suite names the
tasks; local task folders (YAML over local data files) come in through `include_path`, which is also how
this adapter is tested offline. Scores of the defended and the base model are compared by the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

INSTALL = "pip install 'immunization-bench[lm-eval]'"


@dataclass(frozen=True)
class LmEvalProtocol:
    tasks: tuple[str, ...]
    include_path: str | None = None  # a folder of task YAMLs (offline tasks over local files)
    include_defaults: bool = True     # also index lm-eval's built-in tasks (slow: thousands of YAMLs)
    limit: int | None = None          # documents per task (None: all)
    batch_size: int = 8
    num_fewshot: int | None = None


def lm_eval_scores(model_path: Path, protocol: LmEvalProtocol, *, dtype: str = "float32",
                   trust_remote_code: bool = False) -> dict[str, Any]:
    """{task: {metric: value}} plus the task versions, for one checkpoint loaded in `dtype`."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise HarnessError(f"stability via lm-eval needs the lm-eval extra: {INSTALL} (found: not installed)") from None
    from harness.models.loading import torch_device

    manager = TaskManager(include_path=protocol.include_path, include_defaults=protocol.include_defaults)
    unknown = [t for t in protocol.tasks if t not in manager.all_tasks]
    if unknown:
        raise HarnessError(f"unknown lm-eval task(s) {unknown}; check the suite's task names or include_path")
    results = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(model_path), "dtype": dtype, "trust_remote_code": trust_remote_code},
        tasks=list(protocol.tasks),
        task_manager=manager, limit=protocol.limit, batch_size=protocol.batch_size, device=torch_device(),
        num_fewshot=protocol.num_fewshot, log_samples=False, random_seed=0, numpy_random_seed=0,
        torch_random_seed=0, fewshot_random_seed=0)
    scores = {task: {k.split(",")[0]: float(v) for k, v in metrics.items()
                     if isinstance(v, int | float) and not k.split(",")[0].endswith("_stderr")}
              for task, metrics in results["results"].items()}
    return {"scores": scores, "versions": {k: str(v) for k, v in results.get("versions", {}).items()},
            "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "unknown"}
