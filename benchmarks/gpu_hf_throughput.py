"""hf generation throughput on a GPU, on a ~0.9B-parameter random-init Llama in bf16 (no hub, no tokenizer).

The model is built from a `LlamaConfig` (hidden 2048, 16 layers, 16 heads / 8 KV heads, MLP 5504, vocab
32000: 0.87B parameters) with random weights; prompts are random token ids of `--prompt-len`; every
prompt generates exactly `--new-tokens` tokens (greedy, EOS disabled), so tokens/s is exact. For each
batch size: seconds per batch, prompts/s and generated tokens/s (median of `--repeats`, after a warm-up).

    python benchmarks/gpu_hf_throughput.py [--batch-sizes 1,8,32,64,128] [--new-tokens 64] [--repeats 3]

Needs a CUDA GPU: without one it exits with a message (`--allow-cpu --layers 2` only checks the code path).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any


def build_model(layers: int, device: str) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5504, num_hidden_layers=layers,
                         num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=2048,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if device == "cuda" else torch.float32)
    return model.eval()


def time_batch(model: Any, batch_size: int, prompt_len: int, new_tokens: int) -> float:
    import torch

    device = next(model.parameters()).device
    ids = torch.randint(3, model.config.vocab_size, (batch_size, prompt_len), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    assert out.shape == (batch_size, prompt_len + new_tokens), out.shape
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", default="1,8,32,64,128")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layers", type=int, default=16, help="16: 0.87B parameters")
    ap.add_argument("--allow-cpu", action="store_true", help="run on CPU in float32 (a code-path check only)")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        sys.exit("gpu_hf_throughput.py needs a CUDA GPU and none is visible (torch.cuda.is_available() is False, "
                 f"torch {torch.__version__}); run it on a GPU machine")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    model = build_model(args.layers, device)
    params = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    print(f"random Llama, {params / 1e9:.2f}B parameters, {next(model.parameters()).dtype}, on {name}; "
          f"built in {time.perf_counter() - start:.1f} s; prompt {args.prompt_len} tokens, {args.new_tokens} new "
          f"tokens (greedy); median of {args.repeats}")
    time_batch(model, 2, args.prompt_len, 4)  # warm-up: kernels, allocator
    print(f"{'batch':>6}{'s/batch':>10}{'prompts/s':>11}{'tokens/s':>10}{'peak GiB':>10}")
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = statistics.median(time_batch(model, bs, args.prompt_len, args.new_tokens)
                                    for _ in range(args.repeats))
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
        print(f"{bs:>6}{seconds:>10.3f}{bs / seconds:>11.1f}{bs * args.new_tokens / seconds:>10.0f}{peak:>10.2f}")


if __name__ == "__main__":
    main()
