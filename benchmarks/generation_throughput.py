"""hf vs vllm generation on the tiny suite's base model, side by side in one run.

For each backend: engine start (hf: loading the checkpoint; vllm: starting the engine process until it is
ready) and, for 64, 512 and 2048 prompts, generation seconds, prompts/s and tokens/s (greedy, the suite's
max_new_tokens). Each size runs `--repeats` times on different prompts (median shown); one vLLM engine serves
every timed set, one after another, as a stage's engine would. Tokens are the outputs re-encoded with the
model's tokenizer, the same count for both backends. `same` is the share of vllm texts identical to hf's.

    python benchmarks/generation_throughput.py [--size default|smoke] [--sizes 64,512,2048] [--repeats 3]

The suite is built in $HARNESS_HOME (or --home) on first use, like `harness prepare tiny`.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path


def base_model(size: str, home: Path | None) -> Path:
    from harness.resolve import resolve
    from harness.store.artifacts import Store, resolve_ref

    store = Store(home)
    _, suite, _ = resolve("tiny", "none", "sft-1k", sets=[f"suite.size={size}"])
    suite.prepare(store, False)
    return Path(resolve_ref(suite.model.id, store))


def prompt_plan(size: str, sizes: list[int], repeats: int) -> tuple[dict[str, list[str]], str]:
    """{'64#0': prompts, ...} for every size and repeat (harmful and harmless questions mixed): disjoint sets
    where the world has enough distinct questions, else each set a random sample of them."""
    from harness import registry

    task = registry.get("task", "tiny-harmful-qa")
    pool = sorted({p for split in task.fn(task.config(seed=0, size=size)).values() for p in split["prompt"]})
    random.Random(0).shuffle(pool)
    if max(sizes) > len(pool):
        sys.exit(f"the {size} world has {len(pool)} distinct questions, fewer than {max(sizes)}: lower --sizes")
    disjoint = 8 + repeats * sum(sizes) <= len(pool)
    plan, at = {"warmup": pool[:8]}, 8
    for n in sizes:
        for r in range(repeats):
            if disjoint:
                plan[f"{n}#{r}"], at = pool[at:at + n], at + n
            else:
                plan[f"{n}#{r}"] = random.Random(n * 1000 + r).sample(pool, n)
    note = "sets disjoint" if disjoint else f"sets sampled from {len(pool)} questions (they overlap)"
    return plan, note


def run_hf(base: Path, plan: dict[str, list[str]], max_new_tokens: int, batch_size: int
           ) -> tuple[float, dict[str, float], dict[str, list[str]], str]:
    from harness.generation.hf import generate_with_model
    from harness.models.loading import load_causal_lm

    start = time.perf_counter()
    model, tok = load_causal_lm(base)
    start_s = time.perf_counter() - start
    seconds, outputs = {}, {}
    for name, prompts in plan.items():
        t0 = time.perf_counter()
        outputs[name] = generate_with_model(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        seconds[name] = time.perf_counter() - t0
    return start_s, seconds, outputs, f"hf: start = loading the checkpoint ({start_s:.2f} s), batch size {batch_size}"


def run_vllm(base: Path, plan: dict[str, list[str]], max_new_tokens: int
             ) -> tuple[float, dict[str, float], dict[str, list[str]], str]:
    from harness.generation.vllm_engine import run_engine
    from harness.training.collate import format_prompt

    formatted = {name: [format_prompt(q) for q in prompts] for name, prompts in plan.items()}
    start = time.perf_counter()
    resp = run_engine(base, formatted, max_new_tokens=max_new_tokens, timed_sets=True)
    wall = time.perf_counter() - start
    note = (f"vllm engine process: {wall:.1f} s wall in all (engine start {resp.engine_start_s:.1f} s, generation "
            f"{resp.generate_s:.1f} s, the rest process start-up and shutdown); vLLM {resp.vllm_version} on "
            f"{resp.platform}")
    return resp.engine_start_s, resp.set_seconds, resp.outputs, note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="default", choices=["default", "smoke"])
    ap.add_argument("--sizes", default="64,512,2048")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64, help="hf batch size (vLLM schedules its own)")
    ap.add_argument("--home", type=Path, default=None)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from harness.generation.vllm_engine import installed_version
    from harness.models.loading import device_name, load_tokenizer

    base = base_model(args.size, args.home)
    plan, plan_note = prompt_plan(args.size, sizes, args.repeats)
    tok = load_tokenizer(base)
    results = {"hf": run_hf(base, plan, args.max_new_tokens, args.batch_size)}
    if installed_version() is None:
        print("vllm: not installed, hf only (make install-vllm)", file=sys.stderr)
    else:
        results["vllm"] = run_vllm(base, plan, args.max_new_tokens)

    def n_tokens(texts: list[str]) -> int:
        return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)

    print(f"tiny base ({args.size}) at {base}; greedy, max_new_tokens {args.max_new_tokens}; device {device_name()}; "
          f"load average {os.getloadavg()[0]:.1f}; median of {args.repeats}; {plan_note}")
    print(f"{'backend':<8}{'start s':>9}{'prompts':>9}{'gen s':>9}{'prompts/s':>11}{'tokens/s':>10}"
          f"{'start+gen s':>13}{'same':>8}")
    for n in sizes:
        for backend, (start_s, seconds, outputs, _) in results.items():
            names = [f"{n}#{r}" for r in range(args.repeats)]
            gen_s = statistics.median(seconds[k] for k in names)
            tokens = statistics.median(n_tokens(outputs[k]) for k in names)
            hf_out = results["hf"][2]
            same = sum(a == b for k in names for a, b in zip(hf_out[k], outputs[k], strict=True)) / (n * len(names))
            print(f"{backend:<8}{start_s:>9.1f}{n:>9}{gen_s:>9.2f}{n / gen_s:>11.1f}{tokens / gen_s:>10.0f}"
                  f"{start_s + gen_s:>13.1f}{same:>8.1%}")
    for *_, note in results.values():
        print(note)


if __name__ == "__main__":
    main()
