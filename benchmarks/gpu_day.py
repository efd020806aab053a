"""A GPU day, prepared: the paper's protocol point at reduced size on Qwen1.5-0.5B-Chat, end to end.

Given a CUDA GPU and a model hub, one command runs, through the real CLI and the `beavertails-qwen-0.5b` suite:
refusal pairing (`harness prepare`), then `none x sft-1k` and `repnoise x sft-1k` at lr 3e-5 (the first column
of the RepNoise paper's Table 1 / Table 22) with vLLM generation and the judge panel, and prints per-stage
seconds and peak memory (from the records' provenance), the panel's agreement, and the paper's numbers beside
ours. Reduced size: 1k attack rows as in the paper, but `--n-eval` held-out prompts (default 100, paper 300) and a
`--defence-size` defence split (default 2,000, paper 10k).

    python benchmarks/gpu_day.py --judge-revision <deberta commit>   # a GPU and a hub (HF_TOKEN for gated judges)
    python benchmarks/gpu_day.py --tiny-cpu                          # the same commands on a random Qwen2 on CPU

Expected on one H100/H200 (not yet measured here: no GPU was lent): pairing ~2 min (2k greedy answers), RepNoise
~3 min (2k paired rows of a 0.5B model), each attack under 1 min, each evaluation well under a minute with vLLM,
the panel's 1B-8B judges 1-3 min each: about 15-20 minutes in all, the model and judges downloaded once first.
The DeBERTa reference judge has no published commit: pass the revision you pin (`--judge-revision`).
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
SUITE = "beavertails-qwen-0.5b"
# RepNoise paper, Table 22, Qwen-0.5B: harmfulness before the attack and after 3e-5@1k (papers.md).
PAPER = {"none": {"pre": 0.00, "3e-5@1k": 0.50}, "repnoise": {"pre": 0.06, "3e-5@1k": 0.07}}
PANEL = ("llama-guard-3-1b", "harmbench-cls")


def suite_sets(args: argparse.Namespace, root: Path) -> list[str]:
    """`--set` items of the reduced protocol point (real data from the hub, or local files for --tiny-cpu)."""
    values: dict[str, object] = {"n_eval": args.n_eval, "defence_size": args.defence_size,
                                 "defence_candidates": 2 * args.defence_size, "backend": args.backend}
    if args.tiny_cpu:
        from tests.real import builders

        values |= {"dataset": builders.write_parquet(root / "bt.parquet", builders.beavertails_rows(n_prompts=160)),
                   "judge": builders.save_classifier(root / "judge"), "eval_size": 16, "attack_size": 96,
                   "harmless_size": 8, "n_harmless": 8, "max_new_tokens": 8, "refusal_max_new_tokens": 8,
                   "lm_eval_tasks": "[]", "trainability_dataset": "null", "max_length": 96}
    else:
        values |= {"judge_revision": args.judge_revision, "panel": json.dumps(list(args.panel))}
    return [f"suite.{k}={v}" for k, v in values.items()]


def harness(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env=env)
    if proc.returncode:
        sys.exit(f"harness {' '.join(args[:6])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def stage_table(record: dict) -> list[str]:
    lines = [f"  {'stage':44}{'seconds':>9}{'peak MiB':>10}{'cached':>8}"]
    for name, info in record["provenance"]["stages"].items():
        lines.append(f"  {name:44}{info['seconds']:>9.2f}{info.get('peak_mb') or 0:>10.0f}{info['cached']!s:>8}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="hub id or folder (default: the suite's, Qwen/Qwen1.5-0.5B-Chat)")
    ap.add_argument("--judge-revision", default=None, help="commit of the DeBERTa reference judge (required on a GPU)")
    ap.add_argument("--panel", nargs="*", default=list(PANEL), help="judge presets beside the primary")
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--defence-size", type=int, default=2000)
    ap.add_argument("--backend", default="vllm", choices=("vllm", "hf"))
    ap.add_argument("--tiny-cpu", action="store_true", help="random Qwen2 and local files on CPU: the code path")
    args = ap.parse_args()
    import torch

    if args.tiny_cpu:
        args.n_eval, args.defence_size, args.backend = 8, 8, "hf"
    elif not torch.cuda.is_available():
        sys.exit("no CUDA GPU: run with --tiny-cpu to check the code path")
    elif not args.judge_revision:
        sys.exit("--judge-revision is required: the DeBERTa reference judge has no published commit to pin")
    with tempfile.TemporaryDirectory(prefix="gpu-day-") as tmp:
        root = Path(tmp)
        model = args.model
        if args.tiny_cpu:
            from tests.real import builders

            model = str(builders.save_causal_lm("qwen2", root / "qwen2"))
        env = {**os.environ, "HARNESS_HOME": str(root / "home")}
        sets = [x for item in suite_sets(args, root) for x in ("--set", item)]
        model_args = ["--model", model] if model else []
        prepared = harness("prepare", SUITE, *model_args, *sets, "--json", env=env)
        pairing = json.loads(prepared.stdout[prepared.stdout.index("{"):]).get("pairing", {})
        print(f"prepared: refusal pairing {pairing}")
        records = {}
        for defence in ("none", "repnoise"):
            extra = ["--set", "attack.samples=96"] if args.tiny_cpu else []
            proc = harness("run", "--suite", SUITE, *model_args, "--defence", defence, "--attack", "sft-1k",
                           "--set", "attack.lr=3e-5", *sets, *extra, "--results-dir", str(root / "runs"), "--json",
                           env=env)
            records[defence] = json.loads(proc.stdout[proc.stdout.index("{"):proc.stdout.rindex("}") + 1])
        device = records["none"]["provenance"]["device"]
        print(f"{SUITE} on {device}, backend {args.backend}, n_eval {args.n_eval}, defence split "
              f"{args.defence_size}")
        for defence, rec in records.items():
            m = rec["metrics"]
            print(f"\n{defence} x sft-1k @ 3e-5 (run {rec['run_id']}): harmfulness pre "
                  f"{m['pre_attack']['harmfulness']['mean']:.2f}, post {m['post_attack']['harmfulness']['mean']:.2f} "
                  f"(paper Table 22: pre {PAPER[defence]['pre']:.2f}, post {PAPER[defence]['3e-5@1k']:.2f}); "
                  f"verdict {m['verdict']}")
            panel = m["post_attack"].get("panel")
            for pair in (panel or {}).get("pairs", []):
                print(f"  panel {pair['a']} vs {pair['b']}: agreement {pair['agreement']:.2f}, kappa "
                      f"{pair['kappa']:.2f} (n {pair['n']})")
            print("\n".join(stage_table(rec)))


if __name__ == "__main__":
    main()
