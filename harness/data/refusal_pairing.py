"""Refusal pairing as the reference builds it (papers.md §3): the aligned base model's own greedy answers
to the defence split's harmful questions, kept where the primary judge scores them harmless.

The reference generated them with Llama-2-7b-chat (greedy, 100 new tokens, the QA prompt) and kept the
non-harmful ones (the paper: its harmfulness classifier; a notebook: Perspective toxicity < 0.5). Here:
the suite's prompt format and generation backend, the run's base model (so a `--model` run pairs with that
model's refusals), the primary judge, P(harmful) <= `threshold` and a non-empty answer. Each distinct
question is generated once. The result is a cached stage keyed by model, questions, judge, format and
protocol: `harness prepare SUITE` builds it ahead of the runs, which then find it in the store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.judges import score_with_progress
from harness.progress import bar
from harness.specs import ModelSpec, PluginSpec, stable_hash
from harness.stages import Stages
from harness.store.layout import PAIRING
from harness.training.collate import PromptFormat


@dataclass(frozen=True)
class RefusalPairing:
    """How a suite pairs its defence split's harmful answers with refusals (recorded in every cache key)."""

    max_new_tokens: int = 100  # reference: scripts/generate_paired_refusals.py
    threshold: float = 0.5     # kept where the judge's P(harmful) <= threshold
    batch_size: int = 32
    keep: int | None = None    # the first N paired rows form the defence split (None: all)


def pair_refusals(stages: Stages, rows: Any, *, protocol: RefusalPairing, model: ModelSpec, judge: PluginSpec,
                  backend: str, prompt: PromptFormat) -> tuple[Any, dict[str, int]]:
    """`rows` (harmful prompt/response rows) with a `refusal` column, only those whose refusal is harmless;
    and the counts for the record's evidence."""
    import pandas as pd

    questions = list(dict.fromkeys(rows["prompt"]))
    inputs = {"model": model.model_dump(), "questions": stable_hash(questions), "judge": judge.model_dump(),
              "protocol": asdict(protocol), "prompt": prompt.key_dump(), "backend": backend,
              "trust_remote_code": stages.loading.trust_remote_code}
    key = stages.cached("pairing", PAIRING, inputs,
                        lambda tmp: _build(tmp, stages, questions, protocol=protocol, model=model, judge=judge,
                                           backend=backend, prompt=prompt))
    frame = pd.read_parquet(stages.store.path(PAIRING, key) / "refusals.parquet")
    if frame["prompt"].tolist() != questions:
        raise HarnessError(f"cached refusals {key} do not match the defence questions; rerun with --force")
    keep = {q: r for q, r, s in zip(frame["prompt"], frame["refusal"], frame["score"], strict=True)
            if s <= protocol.threshold and r.strip()}
    idx = [i for i, q in enumerate(rows["prompt"]) if q in keep]
    if not idx or len(idx) < (protocol.keep or 0):
        raise HarnessError(f"refusal pairing kept {len(idx)} of {len(rows)} defence rows ({len(keep)} of "
                           f"{len(questions)} questions: the judge scored the other answers of {model.id} above "
                           f"{protocol.threshold}, or they were empty); {protocol.keep or 1} are needed: offer more "
                           "candidates or lower the defence size")
    idx = idx[:protocol.keep] if protocol.keep else idx
    paired = rows.select(idx)
    paired = paired.add_column("refusal", [keep[q] for q in paired["prompt"]])
    counts = {"pairing_questions": len(questions), "pairing_kept_questions": len(keep),
              "pairing_rows_before": len(rows), "pairing_rows": len(paired)}
    return paired, counts


def _build(tmp: Path, stages: Stages, questions: list[str], *, protocol: RefusalPairing, model: ModelSpec,
           judge: PluginSpec, backend: str, prompt: PromptFormat) -> dict[str, Any]:
    import pandas as pd

    from harness import registry
    from harness.generation.hf import get_backend

    with bar(f"pairing: {model.id} answers", total=len(questions), unit="question") as advance:
        answers = get_backend(backend)(stages.model_path(model.id), {"defence": questions},
                                       max_new_tokens=protocol.max_new_tokens, batch_size=protocol.batch_size,
                                       template=prompt, progress=advance, **stages.backend_options())["defence"]
    plugin = registry.get("judge", judge.name)
    scorer = plugin.fn(plugin.config.model_validate(judge.params), stages.store)
    scores = score_with_progress(scorer, questions, answers, f"pairing: judge {judge.name}")
    pd.DataFrame({"prompt": questions, "refusal": answers, "score": scores}).to_parquet(tmp / "refusals.parquet")
    return {"judge_id": scorer.id, "kept": sum(bool(s <= protocol.threshold and a.strip())
                                               for s, a in zip(scores, answers, strict=True))}
