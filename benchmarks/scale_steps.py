"""SFT, LoRA and RepNoise training steps side by side on a random-init Llama: tokens/s, peak memory, and
step time against its FLOP floor. Each variant trains through the harness's one loop (`harness.training.loop.train`,
the run's precision and checkpointing options) in its own process, so its peak memory is its own.

Default size: ~1.1B parameters (hidden 2048, 20 layers, MLP 5504, vocab 32000; a GPU). On a CPU with
little memory pass a smaller size (`--hidden 512 --layers 8 --intermediate 1536 --vocab 8192`).

FLOPs per step (matmuls only, N = matmul parameters per token, T = tokens): SFT 6NT (forward 2NT, backward
4NT); LoRA ~4NT (the frozen weights need input gradients, not weight gradients); RepNoise 2 x 6NT (harmful
and refusal passes) + L x 6HVT (one LM-head lens pass per layer). The floor of a step's time is its FLOPs
over the device's matmul peak, measured here with a large matmul in the training dtype. Peak memory of
the measured steps (weights, optimizer state, gradients, activations): the CUDA allocator's peak, or on CPU
the process's peak resident set (which also holds Python and torch, ~0.5 GiB). The reference's RepNoise /
SFT peak-memory ratio is 26.37 / 20.81 = 1.27 (Llama-2-7b, batch 4).

    python benchmarks/scale_steps.py [--steps 5] [--batch 4] [--seq 128] [--precision autocast-bf16]
                                     [--gradient-checkpointing] [--hidden 2048 --layers 20 ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

VARIANTS = ("sft", "lora", "repnoise")


def sizes(args: argparse.Namespace) -> dict:
    return dict(hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                num_attention_heads=max(1, args.hidden // 128), vocab_size=args.vocab)


def matmul_params(cfg: dict) -> tuple[int, int]:
    """(N, H*V): matmul parameters per token (attention + MLP + LM head), and the LM head alone."""
    h, m, n_layers, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    return n_layers * (4 * h * h + 3 * h * m) + h * v, h * v


def step_flops(variant: str, cfg: dict, tokens: int) -> float:
    n, head = matmul_params(cfg)
    per_token = {"sft": 6 * n, "lora": 4 * n, "repnoise": 12 * n + cfg["num_hidden_layers"] * 6 * head}[variant]
    return float(per_token * tokens)


def matmul_peak(device: str, dtype: str) -> float:
    """Measured FLOP/s of a large matmul in the training dtype (the step's floor uses it)."""
    import torch

    n = 4096 if device == "cuda" else 1024
    dt = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
    for _ in range(2):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    reps, start = 10 if device == "cuda" else 3, time.perf_counter()
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def worker(args: argparse.Namespace) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from defences.repnoise import Config as RepNoise
    from defences.repnoise import repnoise_loss
    from harness.models.memory import memory_kind, peak_mb, reset_peak
    from harness.training.loop import TrainConfig, lm_loss, train
    from harness.training.lora import LoraFields, build_lora

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = sizes(args)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**cfg, num_key_value_heads=cfg["num_attention_heads"],
                                             max_position_embeddings=2 * args.seq, tie_word_embeddings=False))
    if args.precision == "model" and device == "cuda":
        model.to(torch.bfloat16)  # 'model' precision on a GPU: the run's bf16 weights
    if args.worker == "lora":
        model = build_lora(model, LoraFields(rank=16))
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(3, cfg["vocab_size"], (args.seq,), generator=g) for _ in range(args.batch * (args.steps + 1))]

    def collate_sft(batch: list) -> dict:
        ids = torch.stack(batch)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    def collate_paired(batch: list) -> dict:
        ids = torch.stack(batch)
        refusal = ids.clone()
        refusal[:, args.seq // 3:] = (ids[:, args.seq // 3:] + 1) % cfg["vocab_size"]
        mask = ids != refusal
        ones = torch.ones_like(ids)
        return {"harmful": {"input_ids": ids, "attention_mask": ones},
                "refusal": {"input_ids": refusal, "attention_mask": ones}, "harmful_mask": mask, "refusal_mask": mask}

    rn = RepNoise()
    loss_fn = (lambda m, b: repnoise_loss(m, b, rn)) if args.worker == "repnoise" else lm_loss
    collate = collate_paired if args.worker == "repnoise" else collate_sft
    tc = TrainConfig(lr=1e-5, batch_size=args.batch, max_grad_norm=None, warmup_ratio=0, schedule="constant",
                     precision=args.precision, gradient_checkpointing=args.gradient_checkpointing)
    train(model, rows[:args.batch], collate, loss_fn, tc, seed=0)  # warm-up step: allocator, optimizer state
    model.train()
    if device == "cuda":
        torch.cuda.synchronize()
    reset_peak()  # the measured window: weights, optimizer state, gradients, activations (as the reference)
    log = train(model, rows[args.batch:], collate, loss_fn, tc, seed=0)
    if device == "cuda":
        torch.cuda.synchronize()
    peak = peak_mb()
    dtype = "bfloat16" if args.precision != "model" or device == "cuda" else "float32"
    tokens = args.batch * args.seq * (2 if args.worker == "repnoise" else 1)
    print(json.dumps({"step_s": log.seconds / log.steps, "tokens_s": args.batch * args.seq * log.steps / log.seconds,
                      "peak_mib": peak, "memory": memory_kind(), "device": device,
                      "params": sum(p.numel() for p in model.parameters()), "tokens_per_step": tokens,
                      "peak_flops": matmul_peak(device, dtype), "gpu": torch.cuda.get_device_name(0)
                      if device == "cuda" else ""}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--intermediate", type=int, default=5504)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--precision", choices=["model", "autocast-bf16", "bf16-master"], default="model")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    out = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", variant]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{variant} failed:\n{proc.stderr[-2000:]}")
        out[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    cfg, first = sizes(args), out["sft"]
    print(f"random Llama {first['params'] / 1e9:.2f}B params (hidden {args.hidden}, {args.layers} layers, MLP "
          f"{args.intermediate}, vocab {args.vocab}); batch {args.batch} x seq {args.seq}; precision "
          f"{args.precision}{', gradient checkpointing' if args.gradient_checkpointing else ''}; "
          f"{args.steps} steps; device {first['device']} {first['gpu']}")
    print(f"matmul peak measured: {first['peak_flops'] / 1e12:.2f} TFLOP/s; memory: {first['memory']}")
    print(f"{'':10}{'step s':>9}{'tokens/s':>10}{'peak MiB':>10}{'FLOP floor s':>14}{'step/floor':>11}")
    for v in VARIANTS:
        r = out[v]
        floor = step_flops(v, cfg, args.batch * args.seq) / r["peak_flops"]
        print(f"{v:10}{r['step_s']:>9.3f}{r['tokens_s']:>10.0f}{r['peak_mib']:>10.0f}{floor:>14.3f}"
              f"{r['step_s'] / floor:>11.2f}")
    ratio = out["repnoise"]["peak_mib"] / out["sft"]["peak_mib"]
    print(f"RepNoise / SFT peak memory: {ratio:.2f} (reference 26.37 / 20.81 = 1.27 at batch 4); "
          f"RepNoise / SFT step time: {out['repnoise']['step_s'] / out['sft']['step_s']:.2f}; "
          f"LoRA / SFT peak memory: {out['lora']['peak_mib'] / out['sft']['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
