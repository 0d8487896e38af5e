"""Issue 4's performance figures for linear attention on the CPU.

    .venv/bin/python benchmarks/linear_bench.py [--threads 2] [--max-seq-len 16384]

fp32, batch 1, 4 heads, head_dim 64, forward + backward:

1. Scaling, causal, n = 2048 … 16384: ``linear``, ``performer`` (256 features) and ``taylor``; log-log slopes
   of time and peak memory; peak memory against the issue's bounds — for ``linear`` the bytes of q, k, v, the
   output and their gradients; for the others n·(m + d) + (n/chunk)·m·d floats per head.
2. Crossover with ``softmax`` (SDPA), causal and not: the length from which each variant is faster.

Time: ``torch.utils.benchmark.Timer`` with explicit ``num_threads``, ``adaptive_autorange``, the median, after a
warm-up call, with denormals flushed. Peak memory: *peak live tensor bytes* — a TorchDispatchMode records every
storage an op creates and polls weak references to see it freed; q, k, v and the output gradient, made before
the call, are added. This counts tensors exactly (no allocator slack, no noise), unlike RSS.

Before measuring, every variant is checked against its naive quadratic form; a mismatch aborts the run (no
figures for a wrong kernel).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.utils.benchmark as benchmark
from torch import Tensor

from attnbench import create_attention
from attnbench.core.attention import Attention
from attnbench.measure.live_bytes import PeakLiveBytes
from attnbench.reporting.analysis import fit_power_law, log_crossing
from attnbench.variants.linear import LinearAttention

BATCH, HEADS, HEAD_DIM = 1, 4, 64
SCALING_LENGTHS = [2048, 4096, 8192, 16384]
SCALING_VARIANTS = ["linear", "performer:features=256", "taylor"]
SLOPE_LIMIT, MEMORY_LIMIT = 1.15, 4.0
FLOAT = 4  # bytes


@dataclass(frozen=True)
class Cell:
    spec: str
    seq_len: int
    causal: bool


@dataclass
class Measurement:
    time_s: float
    peak_bytes: int | None = None  # inputs included
    tracked_bytes: int | None = None  # allocated by the call itself


def inputs(n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(n)
    q, k, v, grad = (torch.randn(BATCH, HEADS, n, HEAD_DIM, generator=g) for _ in range(4))
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), grad


def forward_backward(attn: Attention, cell: Cell) -> Callable[[], object]:
    q, k, v, grad = inputs(cell.seq_len)
    return lambda: torch.autograd.grad(attn(q, k, v, causal=cell.causal), (q, k, v), grad)


def time_cell(cell: Cell, threads: int, max_run_time: float) -> float:
    attn = create_attention(cell.spec, head_dim=HEAD_DIM, num_heads=HEADS)
    run = forward_backward(attn, cell)
    run()  # warm-up
    timer = benchmark.Timer("run()", globals={"run": run}, num_threads=threads)
    return timer.adaptive_autorange(threshold=0.1, min_run_time=0.05, max_run_time=max_run_time).median


def peak_cell(cell: Cell) -> tuple[int, int]:
    attn = create_attention(cell.spec, head_dim=HEAD_DIM, num_heads=HEADS)
    q, k, v, grad = inputs(cell.seq_len)
    with PeakLiveBytes() as meter:
        torch.autograd.grad(attn(q, k, v, causal=cell.causal), (q, k, v), grad)
    before = sum(t.untyped_storage().nbytes() for t in (q, k, v, grad))
    return meter.peak + before, meter.peak


def slope(xs: list[int], ys: list[float]) -> float:
    return fit_power_law(xs, ys)[0]


def memory_bound_bytes(attn: LinearAttention, n: int) -> tuple[int, str]:
    """The issue's reference size for a variant's peak memory."""
    if attn.spec == "linear":
        return 8 * BATCH * HEADS * n * HEAD_DIM * FLOAT, "q,k,v,out + grads"
    m = attn.features
    floats = n * (m + HEAD_DIM) + (n // attn.chunk) * m * HEAD_DIM
    return BATCH * HEADS * floats * FLOAT, "n(m+d)+(n/chunk)md floats/head"


def check_against_quadratic_form(specs: list[str]) -> None:
    for spec in specs:
        attn = create_attention(spec, head_dim=16, num_heads=2)
        assert isinstance(attn, LinearAttention)
        reference = copy.deepcopy(attn).double()
        q, k, v = (torch.randn(2, 2, 300, 16) for _ in range(3))
        for causal in (True, False):
            got = attn(q, k, v, causal=causal)
            want = reference.reference(q.double(), k.double(), v.double(), causal=causal)
            if not torch.allclose(got.double(), want, atol=1e-4, rtol=1e-4):
                raise SystemExit(f"{spec} (causal={causal}) differs from its quadratic form: refusing to benchmark")


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu = models[0] if models else platform.processor() or "unknown CPU"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    return (
        f"torch {torch.__version__}, python {platform.python_version()}, {cpu}, {os.cpu_count()} cores, "
        f"commit {commit or '?'} (+ working tree)"
    )


def load_report(threads: int) -> str:
    """The 1-minute load average; a warning when other work competes for the cores the timer uses."""
    load, _, _ = os.getloadavg()
    free = (os.cpu_count() or 1) - load
    warning = f" — WARNING: fewer than {threads} idle cores, timings include contention" if free < threads else ""
    return f"load average {load:.2f}{warning}"


def doubling(start: int, stop: int) -> Iterator[int]:
    n = start
    while n <= stop:
        yield n
        n *= 2


class Timings:
    def __init__(self, threads: int, max_run_time: float) -> None:
        self.threads, self.max_run_time = threads, max_run_time
        self._cache: dict[Cell, float] = {}

    def __call__(self, cell: Cell) -> float:
        if cell not in self._cache:
            self._cache[cell] = time_cell(cell, self.threads, self.max_run_time)
        return self._cache[cell]


def crossover(spec: str, causal: bool, timings: Timings, max_len: int) -> str:
    """Where the variant's fwd+bwd time drops below softmax's (log-log interpolation of the time ratio)."""
    previous: tuple[int, float] | None = None
    faster_in_a_row, first_faster = 0, None
    rows = []
    for n in doubling(256, max_len):
        ratio = timings(Cell(spec, n, causal)) / timings(Cell("softmax", n, causal))
        rows.append(f"{n}:{ratio:.2f}")
        if ratio < 1:
            if first_faster is None:
                first_faster = n if previous is None else log_crossing(previous, (n, ratio))
            faster_in_a_row += 1
            if faster_in_a_row == 2:
                break
        else:
            faster_in_a_row, first_faster = 0, None
        previous = (n, ratio)
    if first_faster is None:
        where = f"> {max_len}"
    else:
        where = f"≤ {first_faster}" if rows[0].startswith(f"{first_faster}:") else f"≈{first_faster:.0f}"
    return f"{where:>8s}   time ratio vs softmax by n: {' '.join(rows)}"


def _versus(value: float, limit: float) -> str:
    return f"{value:.2f} ≤ {limit} ok" if value <= limit else f"{value:.2f} > {limit} FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-seq-len", type=int, default=16384)
    parser.add_argument("--max-run-time", type=float, default=4.0, help="seconds per timing cell at most")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    started = time.time()
    print(f"# linear attention benchmark — {machine()}")
    print(f"# fp32, batch {BATCH}, heads {HEADS}, head_dim {HEAD_DIM}, forward+backward, threads={args.threads}")
    print(f"# start: {load_report(args.threads)}")
    check_against_quadratic_form(["linear", "linear-relu", "performer", "taylor"])
    print("# kernels equal their quadratic form (outputs, n=300, causal and not)\n")

    timings = Timings(args.threads, args.max_run_time)
    lengths = [n for n in SCALING_LENGTHS if n <= args.max_seq_len]
    verdicts = []
    print("## scaling, causal")
    print(f"{'variant':24s} {'n':>6s} {'time':>9s} {'peak MiB':>9s} {'bound MiB':>10s} {'peak/bound':>10s}", end="")
    print(f" {'predicted/tracked':>17s}")
    for spec in SCALING_VARIANTS:
        attn = create_attention(spec, head_dim=HEAD_DIM, num_heads=HEADS)
        assert isinstance(attn, LinearAttention)
        times, peaks, ratios = [], [], []
        for n in lengths:
            cell = Cell(spec, n, causal=True)
            seconds = timings(cell)
            peak, tracked = peak_cell(cell)
            bound, label = memory_bound_bytes(attn, n)
            predicted = attn.predicted_peak_bytes(
                batch=BATCH, seq_q=n, seq_k=n, causal=True, backward=True, element_size=FLOAT
            )
            times.append(seconds)
            peaks.append(peak)
            ratios.append(peak / bound)
            print(
                f"{attn.spec:24s} {n:6d} {seconds * 1e3:7.1f}ms {peak / 2**20:9.1f} {bound / 2**20:10.1f} "
                f"{peak / bound:10.2f} {predicted / tracked:17.2f}"
            )
        time_slope, memory_slope = slope(lengths, times), slope(lengths, peaks)
        print(f"{attn.spec:24s} slopes: time {time_slope:.2f}, memory {memory_slope:.2f}; bound = {label}\n")
        verdicts.append(
            f"{attn.spec}: time slope {_versus(time_slope, SLOPE_LIMIT)}, memory slope "
            f"{_versus(memory_slope, SLOPE_LIMIT)}, peak/bound at n={lengths[-1]} {_versus(ratios[-1], MEMORY_LIMIT)}"
        )

    print("## crossover with softmax (SDPA), forward+backward")
    for spec in ["linear", "performer:features=256", "taylor"]:
        for causal in (True, False):
            print(f"{spec:24s} causal={causal!s:5s} {crossover(spec, causal, timings, args.max_seq_len)}")

    print("\n## verdicts")
    for line in verdicts:
        print(line)
    print(f"\n# end: {load_report(args.threads)}; {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
