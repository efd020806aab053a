"""Session fixtures for the real-suite tests: random checkpoints of real architectures (Llama, Qwen2, Mistral,
Phi-3, Gemma-2, GPT-NeoX, OPT and GPT-2 causal LMs; a DeBERTa-v2 classifier), local data files in the real
datasets' schemas, and a temporary Hugging Face cache holding one checkpoint under a hub id."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.real import builders

ARCHS = builders.ARCHITECTURES
HUB_ID = "tiny-org/tiny-qwen"


@pytest.fixture(scope="session")
def real_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real")


@pytest.fixture(scope="session")
def ckpts(real_root: Path) -> dict[str, Path]:
    from harness.models.loading import quiet_hf

    quiet_hf()
    return {arch: builders.save_causal_lm(arch, real_root / arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def judge_ckpt(real_root: Path) -> Path:
    return builders.save_classifier(real_root / "deberta")


@pytest.fixture(scope="session")
def files(real_root: Path) -> dict[str, Path]:
    return {"beavertails": builders.write_parquet(real_root / "bt.parquet", builders.beavertails_rows()),
            "viggo": builders.write_viggo(real_root / "viggo.jsonl"),
            "toxic": builders.write_toxic(real_root / "toxic.jsonl")}


@pytest.fixture(scope="session")
def hf_home(real_root: Path, ckpts: dict[str, Path]) -> tuple[Path, str]:
    """HF_HOME with `tiny-org/tiny-qwen` cached (refs/main -> the commit returned)."""
    home = real_root / "hf_home"
    return home, builders.hub_cache(ckpts["qwen2"], home, HUB_ID)


def suite_sets(files: dict[str, Path], judge: Path, *, second_judge: Path | None = None) -> list[str]:
    """`--set` items that point a BeaverTails suite at the local files and shrink it to seconds."""
    values = {"dataset": files["beavertails"], "eval_size": 8, "defence_candidates": 16, "defence_size": 8,
              "attack_size": 8, "harmless_size": 4, "n_eval": 8, "n_harmless": 4, "max_new_tokens": 6,
              "refusal_max_new_tokens": 6, "eval_batch_size": 8, "curve_every": 1, "max_length": 48,
              "lm_eval_tasks": "[]", "trainability_dataset": files["viggo"], "trainability_train": 8,
              "trainability_test": 4, "trainability_attack_samples": 4, "judge": judge, "backend": "hf"}
    if second_judge is not None:
        values |= {"second_judge": second_judge, "second_judge_format": "template"}
    sets = [f"suite.{k}={v}" for k, v in values.items()]
    return [*sets, "attack.samples=8"]
