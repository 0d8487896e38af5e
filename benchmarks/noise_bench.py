"""Issue 12's benchmark: the same small sweep quietly, then beside a busy process pinned to one core.

    .venv/bin/python benchmarks/noise_bench.py                        # softmax, window, linear, bigbird; 256..4096
    .venv/bin/python benchmarks/noise_bench.py --variant softmax --variant linear --seq-len 64..256   # a smoke run

Prints each cell's median time quiet and loud, the ratio loud/quiet, whether the loud run flagged it
(re-measured, and whether it ended stable), then each variant's time exponent in both runs with its 95%
interval and the drift. The goal: every cell the loud run did not mark unstable within 1.5× of its quiet
value, and every exponent stated without an instability mark within ±0.15 of the quiet run's. Both run
directories are kept (``--out``) so that ``attnbench report``/``compare`` can read them.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import time
from pathlib import Path

import pandas as pd

from attnbench.execution.local import LocalExecutor
from attnbench.reporting.analysis import scaling_exponents, stable_mask
from attnbench.runs.rundir import RunDir
from attnbench.runs.schema import COMPLEXITY_COLUMNS, COMPLEXITY_CSV
from attnbench.sweeps.complexity import ComplexityConfig, run_sweep
from attnbench.sweeps.options import parse_lengths

DEFAULT_VARIANTS = ["softmax", "window", "linear", "bigbird"]
CELL_GOAL = 1.5  # an unflagged loud cell within this factor of its quiet value
EXPONENT_GOAL = 0.15  # an exponent stated without an instability mark within this of the quiet one


def spin(core: int) -> None:
    """The noisy neighbour: one process, pinned to one core, busy until it is killed."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2**31


def measure(config: ComplexityConfig, out: Path) -> pd.DataFrame:
    run_dir = RunDir.create("complexity", out=out)
    run_dir.write_manifest({"command": "complexity", "complexity": config.to_dict()})
    started = time.perf_counter()
    run_sweep(config, run_dir, LocalExecutor(), machine_peak_gflops=None)
    print(f"  {out.name}: {time.perf_counter() - started:.0f} s")
    return run_dir.rows(COMPLEXITY_CSV, COMPLEXITY_COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", help=f"repeatable; default {', '.join(DEFAULT_VARIANTS)}")
    parser.add_argument("--seq-len", action="append", help="length or doubling range a..b; default 256..4096")
    parser.add_argument("--pass", dest="pass_", default="fwd+bwd", choices=["fwd", "fwd+bwd"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads per cell (default 2)")
    parser.add_argument("--busy-core", type=int, default=None, help="core the busy process is pinned to (last)")
    parser.add_argument("--remeasure", type=int, default=None, help="re-measures per suspect cell (default: 2)")
    parser.add_argument("--out", type=Path, default=None, help="folder for both runs (default results/noise-<time>)")
    args = parser.parse_args()

    lengths = parse_lengths(args.seq_len or ["256..4096"])
    stability = {} if args.remeasure is None else {"remeasure": args.remeasure}
    config = ComplexityConfig(variants=args.variant or DEFAULT_VARIANTS, seq_lens=lengths, passes=[args.pass_],
                              threads=args.threads, stability=stability)  # fmt: skip
    out = args.out or Path("results") / time.strftime("noise-%Y%m%d-%H%M%S")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    core = cores[-1] if args.busy_core is None else args.busy_core
    print(f"{len(config.variants)} variants × n={lengths} × {args.pass_}, {args.threads} threads; "
          f"{len(cores)} cores, busy process on core {core}; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    quiet = measure(config, out / "quiet")
    busy = mp.get_context("spawn").Process(target=spin, args=(core,), daemon=True)
    busy.start()
    try:
        loud = measure(config, out / "loud")
    finally:
        busy.kill()
        busy.join()

    key = ["spec", "seq_len"]
    merged = pd.merge(quiet.assign(stable=stable_mask(quiet)), loud.assign(stable=stable_mask(loud)), on=key,
                      suffixes=("_quiet", "_loud"))  # fmt: skip
    print(f"\n{'cell':<28}{'quiet':>10}{'loud':>10}{'loud/quiet':>12}  flagged")
    misses = 0
    for _, r in merged.sort_values(key).iterrows():
        if r["status_quiet"] != "ok" or r["status_loud"] != "ok":
            print(f"{r['spec'] + ' n=' + str(r['seq_len']):<28}{r['status_quiet']:>10}{r['status_loud']:>10}")
            continue
        ratio = r["time_median_s_loud"] / r["time_median_s_quiet"]
        attempts = int(r["attempts_loud"]) if pd.notna(r["attempts_loud"]) else 1
        flagged = "unstable" if not r["stable_loud"] else ("re-measured, stable" if attempts > 1 else "no")
        miss = bool(r["stable_loud"]) and not (1 / CELL_GOAL <= ratio <= CELL_GOAL)
        misses += miss
        cell = f"{r['spec']} n={r['seq_len']}"
        times = f"{r['time_median_s_quiet'] * 1e3:>8.2f}ms{r['time_median_s_loud'] * 1e3:>8.2f}ms"
        print(f"{cell:<28}{times}{ratio:>11.2f}×  {flagged}{'  << MISS' if miss else ''}")

    def exponents(frame: pd.DataFrame) -> pd.DataFrame:
        return scaling_exponents(frame, metrics=("time_median_s",)).set_index("spec")

    eq, el = exponents(quiet), exponents(loud)
    print(f"\n{'variant':<16}{'quiet exponent':>26}{'loud exponent':>26}{'drift':>8}")
    drifts = 0
    for spec in eq.index.intersection(el.index):
        q, lo = eq.loc[spec], el.loc[spec]

        def text(e: pd.Series) -> str:
            if math.isnan(e["exponent"]):
                return "-"
            return f"{e['exponent']:.2f} [{e['exponent_low']:.2f}, {e['exponent_high']:.2f}]"

        drift = lo["exponent"] - q["exponent"]
        marked = bool(lo["uses_unstable"])
        miss = not marked and not math.isnan(drift) and abs(drift) > EXPONENT_GOAL
        drifts += miss
        mark = " (loud fit uses unstable cells)" if marked else ""
        mark += " (quiet fit uses unstable cells)" if bool(q["uses_unstable"]) else ""
        print(f"{spec:<16}{text(q):>26}{text(lo):>26}{drift:>+8.2f}{mark}{'  << MISS' if miss else ''}")
    print(f"\nunflagged cells beyond {CELL_GOAL}×: {misses}; unmarked exponents beyond ±{EXPONENT_GOAL}: {drifts}")
    print(f"runs: {out / 'quiet'} and {out / 'loud'} (attnbench compare {out / 'quiet'} {out / 'loud'})")


if __name__ == "__main__":
    main()
