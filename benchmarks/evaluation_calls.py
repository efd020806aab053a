"""One evaluation's generations: one backend call for the greedy answers and every forced opening, or one call per
prompt format (as before protocol 3's prefills were grouped). Prints, side by side in one process, the median wall
time of each way and their ratio, for the hf backend and (where installed) vLLM, whose every call is an engine start.

The model is the smoke-size tiny suite's base (built in a temporary store, or found in --home); the prompt sets are
the suite's: the held-out harmful prompts, the harmless ones and the in-distribution ones, greedy, and the harmful
ones once per prefill. Usage:

    python benchmarks/evaluation_calls.py [--backends hf vllm] [--repeats 3] [--home DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def prepared(home: Path) -> None:
    env = {**os.environ, "HARNESS_HOME": str(home)}
    cmd = [sys.executable, "-m", "harness.cli", "prepare", "tiny", "--set", "suite.size=smoke"]
    if subprocess.run(cmd, capture_output=True, text=True, env=env, check=False).returncode:
        sys.exit("harness prepare tiny --set suite.size=smoke failed")


def groups(store_dir: Path, model: Path, backend: str) -> tuple:
    """The tiny smoke suite's evaluation groups of its base model, on a fresh store (nothing cached)."""
    from harness.generation.outputs import ModelOutputs
    from harness.stages import Stages
    from harness.store.artifacts import Store
    from tasks.tiny.suite import Config, data, tiny

    suite, split = tiny(Config(size="smoke")), data(Config(size="smoke"))
    spec = suite.eval.model_copy(update={"backend": backend})
    sets = {"harmful": list(split.eval["prompt"][:spec.n_prompts]),
            "harmless": list(split.harmless_eval["prompt"][:spec.n_harmless]),
            "visible": list(split.eval_visible["prompt"][:spec.n_prompts])}
    stages = Stages(Store(store_dir))
    stages.bind("base", model)
    greedy = ModelOutputs(stages, eval_spec=spec, base=suite.model, template=suite.prompt, remote_code=False,
                          prompt_sets=sets)
    forced = [(ModelOutputs(stages, eval_spec=spec, base=suite.model, remote_code=False, prompt_sets={
        "harmful": sets["harmful"]}, template=suite.prompt.model_copy(update={"prefill": p})), f"base.forced{i}")
        for i, p in enumerate(spec.prefills)]
    return greedy, forced, sum(map(len, sets.values())) + len(forced) * len(sets["harmful"])


def timed(way: str, root: Path, model: Path, backend: str) -> float:
    greedy, forced, _ = groups(root, model, backend)
    start = time.perf_counter()
    if way == "grouped":
        greedy.generate_with("base", "base", forced)
    else:
        greedy.generate("base", "base")
        for outputs, name in forced:
            outputs.generate("base", name)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=["hf", "vllm"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--home", type=Path, default=None, help="a store with the smoke suite built (else built now)")
    args = ap.parse_args()
    from harness.generation.vllm_engine import installed_version
    from tasks.tiny.suite import Config, build_key

    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        if args.home is None:
            prepared(home)
        model = home / "suites" / build_key(Config(size="smoke")) / "base"
        _, forced, n = groups(Path(tmp) / "probe", model, "hf")
        print(f"tiny smoke base; one evaluation: {n} prompts in {1 + len(forced)} prompt formats; "
              f"median of {args.repeats}, the two ways interleaved")
        print(f"{'backend':<8}{'one call per format s':>24}{'one call s':>12}{'ratio':>8}")
        for backend in args.backends:
            if backend == "vllm" and installed_version() is None:
                print(f"{backend:<8}{'(not installed)':>24}")
                continue
            times: dict[str, list[float]] = {"per-format": [], "grouped": []}
            for r in range(args.repeats):
                for way in times:
                    times[way].append(timed(way, Path(tmp) / f"{backend}-{way}-{r}", model, backend))
            per, one = statistics.median(times["per-format"]), statistics.median(times["grouped"])
            print(f"{backend:<8}{per:>24.2f}{one:>12.2f}{one / per:>8.2f}")


if __name__ == "__main__":
    main()
