"""Issue 6's quality bar: the `quick` accuracy presets on this machine, one cell at a time.

    .venv/bin/python benchmarks/accuracy_quality.py                      # mqar × variants, listops × softmax
    .venv/bin/python benchmarks/accuracy_quality.py --task mqar --variant softmax --variant window:radius=4
    .venv/bin/python benchmarks/accuracy_quality.py --preset quick --seed 0 --seed 1 --threads 2

Prints one line per cell (test accuracy, the test split's majority rate, status, seconds), the accuracy by
key–query distance of every cell that has it, and the machine (threads, load average) the numbers came
from. Variants that are not registered are listed as missing, not run.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from attnbench import available_attention
from attnbench.core.registry import SpecError, parse_attention_spec
from attnbench.training.cell import run_accuracy_cell
from attnbench.training.presets import get_preset
from attnbench.training.settings import AccuracyCellResult

DEFAULT_VARIANTS = {
    "mqar": ["softmax", "window:radius=4", "linear", "performer", "performer:features=64", "bigbird:block=8"],
    "listops": ["softmax"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", action="append", help="task name (repeatable); default: mqar and listops")
    parser.add_argument("--variant", action="append", help="attention spec (repeatable); default per task")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seed", action="append", type=int, help="repeatable; default 0")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tasks = args.task or list(DEFAULT_VARIANTS)
    seeds = args.seed or [0]
    registered = set(available_attention())
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, load average at start {os.getloadavg()[0]:.2f}"
    )
    print(f"{'task':<10} {'variant':<22} {'seed':>4} {'test_acc':>8} {'majority':>8} {'val_acc':>8} "
          f"{'steps':>5} {'best':>5} {'s/step':>7} {'cell_s':>7}  status")  # fmt: skip
    results: list[AccuracyCellResult] = []
    for task in tasks:
        preset = get_preset(task, args.preset)
        for variant in args.variant or DEFAULT_VARIANTS.get(task, ["softmax"]):
            if not _registered(variant, registered):
                print(f"{task:<10} {variant:<22} (not registered: skipped)")
                continue
            for seed in seeds:
                result = run_accuracy_cell(preset.cell(variant, seed=seed, device=args.device))
                results.append(result)
                _print_row(result)
    for result in results:
        if result.by_distance:
            row = result.row
            print(f"\naccuracy by key–query distance: {row['task']} · {row['spec']} · seed {row['seed']}")
            for bucket in result.by_distance:
                print(f"  {bucket['distance_bucket']:>8}  n={bucket['n']:<5} acc={bucket['acc']:.3f}")
    print(f"\n# load average at end {os.getloadavg()[0]:.2f}")


def _registered(spec: str, registered: set[str]) -> bool:
    try:
        return parse_attention_spec(spec).name in registered
    except SpecError:
        return False


def _fmt(value: float | None, width: int = 8, digits: int = 3) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def _print_row(result: AccuracyCellResult) -> None:
    row = result.row
    print(
        f"{row['task'].partition(':')[0]:<10} {row['spec']:<22} {row['seed']:>4} {_fmt(row['test_acc'])} "
        f"{_fmt(row['majority_acc'])} {_fmt(row['val_acc'])} {row['steps']:>5} {row['best_step'] or '-':>5} "
        f"{_fmt(row['time_per_step_s'], 7)} {result.wall_time_s:>7.1f}  {row['status']} {row['message']}",
        flush=True,
    )


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"# total {time.perf_counter() - start:.1f} s")
