"""What a fresh harness process pays to import transformers, with and without `harness.lean_imports`.

Every `harness` command, plugin process and vLLM worker is a new interpreter that imports torch and transformers.
This measures, side by side and interleaved (so load changes hit both alike), the CPU seconds (user + sys of the
child) and wall seconds of `from transformers import LlamaForCausalLM` in a new interpreter: plain, and after
`import harness` (which keeps scikit-learn and SciPy out). Prints medians and their ratio.

    python benchmarks/import_cost.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

REPORT = "import sys; print(*(m in sys.modules for m in ('sklearn', 'scipy')), sep=' / ')"
PROGRAMS = {
    "plain": f"from transformers import LlamaForCausalLM; {REPORT}",
    "after import harness": f"import harness; from transformers import LlamaForCausalLM; {REPORT}",
}


def once(code: str) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float, str]]] = {name: [] for name in PROGRAMS}
    for _ in range(args.repeats):
        for name, code in PROGRAMS.items():
            runs[name].append(once(code))
    print(f"| import ({args.repeats} runs, interleaved) | CPU s (median) | wall s (median) "
          "| sklearn / scipy imported |")
    print("|---|---|---|---|")
    for name, rs in runs.items():
        print(f"| {name} | {statistics.median(r[0] for r in rs):.2f} | {statistics.median(r[1] for r in rs):.2f} "
              f"| {rs[0][2]} |")
    plain, lean = (statistics.median(r[0] for r in runs[n]) for n in PROGRAMS)
    print(f"\nCPU ratio (after import harness / plain): {lean / plain:.2f}")


if __name__ == "__main__":
    main()
