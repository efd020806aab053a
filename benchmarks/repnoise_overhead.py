"""RepNoise's cost over plain SFT at the same batch: step time, peak memory, and the FLOP floor.

RepNoise's step runs two forward/backward passes (harmful and refusal sequences) plus one LM-head pass per
layer for the logit-lens ascent term; plain SFT runs one. Counting matmul FLOPs (6 per parameter per
token for forward+backward), the floor of the ratio is

    floor = 2 + n_lens * (H * V) / N        N = matmul parameters, H*V = LM head, n_lens = L lens passes

(the last hidden state's lens is the final logits, computed once). The reference reports peak memory
26.37 / 20.81 GB = 1.27 on Llama-2-7b at batch 4 (papers.md App. L). Each variant runs in its own process
so its peak RSS (CPU) or peak CUDA memory is its own. Models are random-init Llamas built from a config.

    python benchmarks/repnoise_overhead.py [--steps 20] [--batch 8] [--seq 64] [--size tiny|small]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

SIZES = {"tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                      vocab_size=1024),
         "small": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                       vocab_size=8192)}


def matmul_params(cfg: dict) -> tuple[int, int]:
    """(N, H*V): matmul parameters per token (attention + MLP + LM head), and the LM head alone."""
    h, m, n_layers, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    per_layer = 4 * h * h + 3 * h * m
    return n_layers * per_layer + h * v, h * v


def worker(variant: str, size: str, steps: int, batch: int, seq: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from defences.repnoise import Config, repnoise_loss
    from harness.training.loop import lm_loss

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = SIZES[size]
    model = LlamaForCausalLM(LlamaConfig(**cfg, num_key_value_heads=cfg["num_attention_heads"],
                                         max_position_embeddings=2 * seq)).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    ids = torch.randint(3, cfg["vocab_size"], (batch, seq), device=device)
    refusal = ids.clone()
    refusal[:, seq // 3:] = torch.randint(3, cfg["vocab_size"], (batch, seq - seq // 3), device=device)
    ones = torch.ones_like(ids)
    paired = {"harmful": {"input_ids": ids, "attention_mask": ones}, "refusal": {"input_ids": refusal,
              "attention_mask": ones}, "harmful_mask": ids != refusal, "refusal_mask": ids != refusal}
    sft = {"input_ids": ids, "attention_mask": ones, "labels": ids}
    rn_cfg = Config()

    def step() -> None:
        out = repnoise_loss(model, paired, rn_cfg) if variant == "repnoise" else lm_loss(model, sft)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, before any step
    step()  # warm up (allocator, kernels, optimizer state)
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    # CPU: peak resident memory above the built model (activations, gradients, optimizer state);
    # CUDA: peak allocated memory (the reference's measure).
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_model) / 1024)
    print(json.dumps({"median_s": statistics.median(times), "peak_mib": peak, "device": device}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--size", choices=list(SIZES), default="tiny")
    ap.add_argument("--worker", choices=["sft", "repnoise"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.size, args.steps, args.batch, args.seq)
    results = {}
    for variant in ("sft", "repnoise"):  # side by side, same process layout
        cmd = [sys.executable, __file__, "--worker", variant, "--size", args.size, "--steps", str(args.steps),
               "--batch", str(args.batch), "--seq", str(args.seq)]
        results[variant] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    cfg = SIZES[args.size]
    n, head = matmul_params(cfg)
    floor = 2 + cfg["num_hidden_layers"] * head / n
    sft, rn = results["sft"], results["repnoise"]
    print(f"RepNoise vs plain SFT, {args.size} Llama (L={cfg['num_hidden_layers']}, H={cfg['hidden_size']}, "
          f"V={cfg['vocab_size']}), batch {args.batch} x {args.seq} tokens, median of {args.steps} steps, "
          f"device {sft['device']}")
    print(f"{'':22}{'SFT':>10}{'RepNoise':>10}{'ratio':>8}")
    print(f"{'step time (ms)':22}{sft['median_s'] * 1e3:>10.1f}{rn['median_s'] * 1e3:>10.1f}"
          f"{rn['median_s'] / sft['median_s']:>8.2f}")
    mem = "peak memory (MiB)" if sft["device"] == "cuda" else "peak RSS above model"
    print(f"{mem:22}{sft['peak_mib']:>10.1f}{rn['peak_mib']:>10.1f}{rn['peak_mib'] / sft['peak_mib']:>8.2f}")
    print(f"FLOP floor of the time ratio: 2 + L*H*V/N = 2 + {cfg['num_hidden_layers']}*{head}/{n} = {floor:.2f}; "
          f"measured / floor = {rn['median_s'] / sft['median_s'] / floor:.2f}")
    ref_n, ref_head = matmul_params(dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                         vocab_size=32000))
    print(f"(Llama-2-7b floor: {2 + 32 * ref_head / ref_n:.2f}; reference peak-memory ratio 26.37/20.81 = 1.27)")


if __name__ == "__main__":
    main()
