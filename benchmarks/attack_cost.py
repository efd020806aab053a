"""What does each attack kind cost, and what does a tuned-attacker search cost? Prints, for every attack the
suite's tuned attacker searches (`TuningProtocol.attacks`), the wall time of one cell's attack stage and of the
attacked model's evaluation (every `post_attack.*` stage: greedy and forced generations, judges, gold NLL), from
the record's own stage times; then the search's cost: the attacker's trial budget (`attacker_trials`, else the
defender's `trials`) times the median cost of a trial (attack + evaluation), and with `--search` the wall time of a
real `harness tune-attack` (which also runs the chosen attack and the next best on the test data).

Every cell attacks the same defended model (`--defence`, default none) at one attack seed (`--attack-seed`), so its
defence, base and pre-attack stages are computed once, by the first cell, and left out of the table. Usage:

    python benchmarks/attack_cost.py [--size smoke|default] [--defence none] [--home DIR] [--search]

`--home` reuses a store whose suite is built (else a temporary one: the world is built first, ~1.5 min at smoke
size, ~6 min at default size on two cores); run one process at a time with OMP_NUM_THREADS=1 as the sweeps do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cli(home: Path, *args: str, refused_ok: bool = False) -> tuple[float, subprocess.CompletedProcess]:
    """Run the CLI; exit 2 (bad input: an attack whose budget the split cannot hold) is returned where
    `refused_ok`, any other failure ends the benchmark."""
    env = {**os.environ, "HARNESS_HOME": str(home), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                          check=False)
    wall = time.perf_counter() - start
    if proc.returncode and not (refused_ok and proc.returncode == 2):
        sys.exit(f"harness {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return wall, proc


def attacks_searched(size: str) -> tuple[list[str], int]:
    """The tuned attacker's attack kinds and its trial budget, as the suite declares them."""
    from harness.resolve import load_suite

    _, suite = load_suite("tiny", {"size": size})
    protocol = suite.tuning
    if protocol is None:
        sys.exit("the tiny suite declares no tuning protocol")
    return list(protocol.attacks), protocol.attacker_trials or protocol.trials


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="smoke", choices=["smoke", "default"])
    ap.add_argument("--defence", default="none")
    ap.add_argument("--home", type=Path, default=None, help="artifact store (default: a temporary one)")
    ap.add_argument("--search", action="store_true", help="also time a real `harness tune-attack DEFENCE`")
    ap.add_argument("--attack-seed", type=int, default=101, help="attack seed of the cells (one a store is unlikely "
                    "to hold already: a cached attack stage is shown as such)")
    args = ap.parse_args()
    attacks, trials = attacks_searched(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        results = Path(tmp) / "results"
        rows, skipped = [], []
        for attack in attacks:
            wall, proc = cli(home, "run", "--defence", args.defence, "--attack", attack, "--set",
                             f"suite.size={args.size}", "--results-dir", str(results), "--json",
                             "--attack-seed", str(args.attack_seed), refused_ok=True)
            if proc.returncode:  # as the tuned attacker does: a kind none of whose points fits is left out
                skipped.append(f"{attack} ({proc.stderr.strip().splitlines()[-1].removeprefix('error: ')})")
                continue
            stages = json.loads(proc.stdout)["provenance"]["stages"]
            if stages["attack"]["cached"]:
                skipped.append(f"{attack} (its attack stage was already in the store: nothing measured)")
                continue
            attack_s = stages["attack"]["seconds"]
            eval_s = sum(v["seconds"] for k, v in stages.items() if k.startswith("post_attack."))
            rows.append((attack, attack_s, eval_s, wall))
        search = cli(home, "tune-attack", args.defence, "--set", f"suite.size={args.size}", "--results-dir",
                     str(results))[0] if args.search else None
    print(f"tiny suite ({args.size}), attacks on defence {args.defence}, attack seed {args.attack_seed}; one cell each "
          "(the attack and the attacked model's evaluation computed; the rest cached after the first cell; the "
          "attack stage includes starting its plugin process, which a sweep's jobs share)")
    print(f"{'attack':<22}{'attack s':>10}{'eval s':>10}{'trial s':>10}{'cell wall s':>13}")
    for attack, attack_s, eval_s, wall in rows:
        print(f"{attack:<22}{attack_s:>10.1f}{eval_s:>10.1f}{attack_s + eval_s:>10.1f}{wall:>13.1f}")
    for line in skipped:
        print(f"left out: {line}")
    per_trial = statistics.median(a + e for _, a, e, _ in rows)
    print(f"tuned attacker: {trials} trials x median trial {per_trial:.1f} s = {trials * per_trial / 60:.1f} min of "
          "compute per defended model (one worker; validation data, so each trial evaluates fewer prompts)")
    if search is not None:
        print(f"harness tune-attack {args.defence} (measured, wall, incl. the test runs of the chosen attacks): "
              f"{search / 60:.1f} min")


if __name__ == "__main__":
    main()
