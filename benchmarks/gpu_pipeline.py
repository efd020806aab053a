"""`none x sft-1k` and `repnoise x sft-1k` through the real pipeline on a ~1B random-init Llama, in bf16 on a
GPU: per-stage times and peak memory (from the run records' provenance), training tokens/s and MFU against
the GPU's bf16 peak. Reduced size: a local BeaverTails-schema file (tests/real/builders.py), a random
classifier judge, 96 attack rows, 64 defence pairs, 16 eval prompts, no lm-eval.

The model is built from a LlamaConfig (hidden 2048, 24 layers, 16 heads / 8 KV heads, MLP 5504: 1.2B
parameters) with the builders' small BPE tokenizer; it is saved as a local checkpoint and run with
`harness run --suite beavertails-llama2 --model PATH` (suite dtype `auto`: bfloat16 on a CUDA GPU), so
every stage (pairing, defend, evaluate, attack, evaluate, conditions) runs as in a real grid.

MFU = training FLOPs (SFT 6NT; RepNoise 12NT + L x 6HVT, N matmul parameters per token, T tokens) / (stage
seconds x GPU peak). A stage's seconds include loading and saving its checkpoint and the harmfulness curve's
generation, so MFU is a lower bound of the loop's own.

    python benchmarks/gpu_pipeline.py                 # a CUDA GPU (runs unchanged wherever one is lent)
    python benchmarks/gpu_pipeline.py --tiny-cpu      # the same code path at a tiny size on CPU (a check)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# Datasheet bf16 dense peaks (FLOP/s); an unlisted GPU is measured with a large bf16 matmul.
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12,
         "4090": 165e12, "A6000": 155e12}
SIZE = {"hidden_size": 2048, "intermediate_size": 5504, "num_hidden_layers": 24, "num_attention_heads": 16,
        "num_key_value_heads": 8}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2}


def build(root: Path, size: dict) -> tuple[Path, Path, Path]:
    """(checkpoint, BeaverTails-schema parquet, judge) under `root`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.real import builders

    tok = builders.build_tokenizer("llama")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), max_position_embeddings=256, tie_word_embeddings=False,
                                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id, **size))
    ckpt = root / "llama"
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    data = builders.write_parquet(root / "bt.parquet", builders.beavertails_rows(n_prompts=160))
    return ckpt, data, builders.save_classifier(root / "judge")


def gpu_peak() -> tuple[float, str]:
    import torch

    if not torch.cuda.is_available():
        return 0.0, "cpu"
    name = torch.cuda.get_device_name(0)
    for key, peak in PEAKS.items():
        if key in name:
            return peak, name
    from benchmarks.scale_steps import matmul_peak

    return matmul_peak("cuda", "bfloat16"), f"{name} (measured)"


def run(defence: str, ckpt: Path, data: Path, judge: Path, home: Path, results: Path) -> dict:
    sets = {"dataset": data, "judge": judge, "eval_size": 16, "defence_candidates": 96, "defence_size": 64,
            "attack_size": 96, "harmless_size": 8, "n_eval": 16, "n_harmless": 8, "max_new_tokens": 16,
            "refusal_max_new_tokens": 16, "eval_batch_size": 16, "curve_every": 0, "max_length": 128,
            "lm_eval_tasks": "[]", "trainability_dataset": "null", "backend": "hf"}
    items = [f"suite.{k}={v}" for k, v in sets.items()] + ["attack.samples=96"]
    if defence == "repnoise":
        items += ["defence.samples=64", "defence.batch_size=8"]
    cmd = [sys.executable, "-m", "harness.cli", "run", "--suite", "beavertails-llama2", "--model", str(ckpt),
           "--defence", defence, "--attack", "sft-1k", "--results-dir", str(results), "--json",
           *(x for item in items for x in ("--set", item))]
    env = {**os.environ, "HARNESS_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    # the harness's progress lines (stderr) pass through, so a log shows the last stage a slow run reached
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    if proc.returncode:
        sys.exit(f"{defence} x sft-1k failed (exit {proc.returncode}): its last lines are above")
    return json.loads(proc.stdout[proc.stdout.index("{"):proc.stdout.rindex("}") + 1])


def train_tokens(ckpt: Path, data: Path, n: int, paired: bool) -> int:
    """Tokens of the first n harmful rows as the collator sees them (prompt + answer, up to 128); x2 paired."""
    import pandas as pd

    from harness.models.loading import load_tokenizer

    tok = load_tokenizer(ckpt)
    rows = pd.read_parquet(data).query("not is_safe").head(n)
    count = sum(min(128, len(tok(f"Question: {p}\nAnswer: {r}")["input_ids"]) + 1)
                for p, r in zip(rows["prompt"], rows["response"], strict=True))
    return count * (2 if paired else 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny-cpu", action="store_true", help="tiny model on CPU: checks the code path only")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.tiny_cpu:
        sys.exit("no CUDA GPU: run with --tiny-cpu to check the code path")
    size = TINY if args.tiny_cpu else SIZE
    peak, device = gpu_peak()
    with tempfile.TemporaryDirectory(prefix="gpu-pipeline-") as tmp:
        root = Path(tmp)
        ckpt, data, judge = build(root, size)
        records = {d: run(d, ckpt, data, judge, root / "home", root / "results")
                   for d in ("none", "repnoise")}
        from benchmarks.scale_steps import matmul_params

        cfg = {**size, "vocab_size": json.loads((ckpt / "config.json").read_text())["vocab_size"]}
        n, head = matmul_params(cfg)
        params = n + head
        print(f"random Llama {params / 1e9:.2f}B matmul params ({cfg['num_hidden_layers']} layers, hidden "
              f"{cfg['hidden_size']}); device {device}; dtype {records['none']['provenance']['model']['dtype']}; "
              f"peak {peak / 1e12:.0f} TFLOP/s" if peak else "; CPU check (no MFU)")
        for defence, rec in records.items():
            print(f"\n{defence} x sft-1k  (run {rec['run_id']})")
            print(f"  {'stage':34}{'seconds':>9}{'peak MiB':>10}{'cached':>8}")
            for name, info in rec["provenance"]["stages"].items():
                print(f"  {name:34}{info['seconds']:>9.2f}{info.get('peak_mb') or 0:>10.0f}{info['cached']!s:>8}")
            stages = rec["provenance"]["stages"]
            for stage, flops_per_token, tokens in (
                    ("attack", 6 * n, train_tokens(ckpt, data, 96, False)),
                    *((("defend", 6 * n + cfg["num_hidden_layers"] * 3 * head,
                        train_tokens(ckpt, data, 64, True)),) if defence == "repnoise" else ())):
                secs = stages[stage]["seconds"]
                mfu = flops_per_token * tokens / secs / peak if peak else float("nan")
                print(f"  {stage}: {tokens} tokens in {secs:.2f} s = {tokens / secs:.0f} tokens/s, MFU {mfu:.1%}")


if __name__ == "__main__":
    main()
