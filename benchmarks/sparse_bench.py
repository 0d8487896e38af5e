"""Sparse attention performance: time and peak memory vs n, scaling slopes, FlexAttention and SDPA baselines.

    .venv/bin/python benchmarks/sparse_bench.py                    # the issue's figures (several minutes)
    .venv/bin/python benchmarks/sparse_bench.py --quick            # n = 1024…4096, a smoke run

Setting: fp32, batch 1, 4 heads, head_dim 64, CPU, non-causal, no key mask. Variants: ``window:radius=256``,
``bigbird`` (defaults: block 64, ±1 window block, 2 global tokens, 3 random blocks), ``longformer:radius=256``
(global token 0) and ``strided`` (stride = block = ⌈√n⌉), against ``softmax`` (SDPA, full attention),
SDPA with a dense boolean window mask of radius 256, and compiled FlexAttention (``flex-window:radius=256``,
forward only: FlexAttention has no CPU backward).

Time: ``torch.utils.benchmark.Timer`` with explicit ``num_threads``, ``blocked_autorange``, median; forward
under ``torch.inference_mode()``, forward+backward with a random output gradient. The first call (which
includes FlexAttention's compile) is excluded. Every cell is timed once per round over ``--rounds`` rounds and
keeps its best round's median: on a shared machine, load only ever slows a run down.
Memory: the resident-set high-water mark of one call, measured in a separate process per variant in which
glibc returns every buffer of 64 KiB or more to the OS when freed (``mallopt(M_MMAP_THRESHOLD)``), so the
resident set follows live tensors: reset with ``/proc/self/clear_refs``, read ``VmHWM``, minus the resident
size just before the call (inputs already allocated). Reported next to the analytic ``predicted_peak_bytes``.
Slopes: least-squares fit of log(value) on log(n) over n = 2048…16384. Crossover: the n (log-interpolated)
beyond which a variant is faster than SDPA. The window-vs-baselines comparison at the largest n is timed head
to head, in alternating rounds, since on a shared machine the load drifts between sequential measurements.

Before timing, each variant is checked against SDPA with the same dense mask at n = 1000; a variant that
fails is reported as such and not timed (no speedups for wrong answers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils import benchmark

from attnbench import create_attention
from attnbench.core.attention import Attention
from attnbench.measure.memory import RssMeter, fix_mmap_threshold
from attnbench.reporting.analysis import crossover_n, fit_power_law

BATCH, HEADS, HEAD_DIM, RADIUS = 1, 4, 64, 256
SPARSE = {
    "window": f"window:radius={RADIUS}",
    "bigbird": "bigbird",
    "longformer": f"longformer:radius={RADIUS}",
    "strided": "strided",
}
BASELINES = {"sdpa": "softmax", "sdpa+mask": "dense-window-mask", "flex": f"flex-window:radius={RADIUS}"}
FORWARD_ONLY = {"flex"}  # FlexAttention has no CPU backward
SLOPE_RANGE = (2048, 16384)


# the SDPA + dense window mask baseline ---------------------------------------------------------------------
class DenseWindowMask(Attention):
    """SDPA with an explicit n×n boolean band: what a window costs when done by masking full attention."""

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        n = q.shape[-2]
        i = torch.arange(n, device=q.device)
        band = (i[:, None] - i[None, :]).abs() <= RADIUS  # (n, n)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=band)

    def pattern_mask(self, seq_q: int, seq_k: int, *, causal: bool) -> Tensor:
        i = torch.arange(seq_q)
        return ((i[:, None] - i[None, :]).abs() <= RADIUS).unsqueeze(0)


def build(name: str) -> Attention:
    spec = {**SPARSE, **BASELINES}[name]
    if spec == "dense-window-mask":
        return DenseWindowMask(head_dim=HEAD_DIM, num_heads=HEADS)
    return create_attention(spec, head_dim=HEAD_DIM, num_heads=HEADS)


def inputs(n: int, *, grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(n)
    q, k, v, dout = (torch.randn(BATCH, HEADS, n, HEAD_DIM, generator=g) for _ in range(4))
    if grad:
        q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    return q, k, v, dout


def workload(attn: Attention, n: int, pass_: str) -> Callable[[], object]:
    q, k, v, dout = inputs(n, grad=pass_ == "fwd+bwd")
    if pass_ == "fwd":

        def forward() -> object:
            with torch.inference_mode():
                return attn(q, k, v)

        return forward

    def forward_backward() -> object:
        out = attn(q, k, v)
        out.backward(dout)
        return None

    return forward_backward


# correctness gate --------------------------------------------------------------------------------------------
def agrees_with_sdpa(name: str, n: int = 1000) -> str | None:
    """None if ``name`` equals SDPA with its own pattern as a dense mask (fp32 tolerance), else why not."""
    attn = build(name)
    q, k, v, _ = inputs(n, grad=False)
    allowed = attn.pattern_mask(n, n, causal=False)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed if allowed is not None else None)
    with torch.inference_mode():
        got = attn(q, k, v)
    if not torch.allclose(got, want, atol=1e-5, rtol=1e-4):
        return f"differs from SDPA by up to {float((got - want).abs().max()):.3g}"
    return None


# timing ----------------------------------------------------------------------------------------------------
def time_median(fn: Callable[[], object], *, threads: int, min_run_time: float) -> float:
    fn()  # first call: lazy init, compile
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median


# memory (runs in a child process) ------------------------------------------------------------------------------
def peak_bytes_of_one_call(fn: Callable[[], object]) -> int:
    fn()  # warm-up: compile, lazy init, allocator pools
    with RssMeter() as meter:
        fn()
    return meter.peak_bytes


def memory_child(name: str, cells: list[tuple[int, str]], threads: int) -> None:
    fix_mmap_threshold()  # freed buffers go back to the OS: the resident set follows live tensors
    torch.set_num_threads(threads)
    attn = build(name)
    out = [{"n": n, "pass": pass_, "peak": peak_bytes_of_one_call(workload(attn, n, pass_))} for n, pass_ in cells]
    print(json.dumps(out))


def measure_memory(name: str, cells: list[tuple[int, str]], threads: int) -> dict[tuple[int, str], int]:
    cmd = [sys.executable, __file__, "--memory-child", name, "--cells", json.dumps(cells), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        print(f"  memory of {name} failed: {tail[0]}", file=sys.stderr)
        return {}
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    return {(r["n"], r["pass"]): r["peak"] for r in rows}


def head_to_head(names: list[str], n: int, *, rounds: int, threads: int, min_run_time: float) -> dict[str, float]:
    """Forward medians taken in alternation, so a change in machine load hits every contender alike."""
    fns = {name: workload(build(name), n, "fwd") for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(time_median(fn, threads=threads, min_run_time=min_run_time))
    return {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}


# analysis --------------------------------------------------------------------------------------------------
def loglog_slope(points: dict[int, float]) -> float | None:
    fitted = {n: y for n, y in points.items() if SLOPE_RANGE[0] <= n <= SLOPE_RANGE[1]}
    return fit_power_law(list(fitted), list(fitted.values()))[0] if len(fitted) >= 2 else None


def crossover(ours: dict[int, float], sdpa: dict[int, float]) -> str:
    """Smallest n beyond which ``ours`` is faster than ``sdpa`` for every measured larger n (log-interpolated)."""
    n, how = crossover_n(ours, sdpa)
    sizes = sorted(set(ours) & set(sdpa))
    if how == "no data":
        return "n/a"
    if how == "always":
        return f"< {sizes[0]} (faster at every n)"
    if how == "never":
        return f"> {sizes[-1]} (never faster)"
    return f"≈ {n:.0f}"


@dataclass
class Row:
    name: str
    n: int
    pass_: str
    time_s: float | None = None
    peak_bytes: int | None = None
    predicted_bytes: int | None = None


def fmt_time(t: float | None) -> str:
    return "-" if t is None else f"{t * 1e3:9.1f}"


def fmt_mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:8.1f}"


def fmt_slope(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f}"


# the run ---------------------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="n = 1024…4096 and short timings")
    p.add_argument("--threads", type=int, default=min(2, torch.get_num_threads()))
    p.add_argument("--min-run-time", type=float, default=0.5, help="seconds per blocked_autorange")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds over all cells; each cell keeps its best")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--no-flex", action="store_true", help="skip compiled FlexAttention")
    p.add_argument("--dense-max-n", type=int, default=16384, help="largest n for SDPA with a dense mask")
    p.add_argument("--json", help="also write every row to this file")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    p.add_argument("--cells", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, [(n, pass_) for n, pass_ in json.loads(args.cells)], args.threads)
        return

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    scaling = [1024, 2048, 4096] if args.quick else [2048, 4096, 8192, 16384]
    small = [] if args.quick else [256, 512, 1024]  # only to locate crossovers with SDPA
    names = (
        list(SPARSE) + ["sdpa", "sdpa+mask"] + ([] if args.no_flex or "flex-window" not in _registered() else ["flex"])
    )
    print(
        f"# sparse_bench: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, fp32, B={BATCH} H={HEADS} D={HEAD_DIM}, window radius {RADIUS}; "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )

    failed = {name: why for name in names if name != "sdpa" and (why := agrees_with_sdpa(name)) is not None}
    for name, why in failed.items():
        print(f"# {name}: NOT TIMED, {why}")
    names = [name for name in names if name not in failed]

    rows = time_all(names, scaling, small, args)
    if not args.no_memory:
        for name in names:
            memory_cells = [
                cell for cell in _cells(name, scaling, small, dense_max_n=args.dense_max_n) if cell[0] in scaling
            ]
            for (n, pass_), peak in measure_memory(name, memory_cells, args.threads).items():
                rows[name, n, pass_].peak_bytes = peak
    contenders = [name for name in ("window", "flex", "sdpa+mask") if name in names]
    duel = head_to_head(contenders, scaling[-1], rounds=3, threads=args.threads, min_run_time=args.min_run_time)
    report(rows, names, scaling, duel)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows.values()], f, indent=1)


def time_all(
    names: list[str], scaling: list[int], small: list[int], args: argparse.Namespace
) -> dict[tuple[str, int, str], Row]:
    """Every cell once per round, ``--rounds`` rounds; a cell's time is its best round's median.

    Contention on a shared machine only ever slows a run down, and it drifts over minutes: a round sweeps every
    n and variant, so a busy spell hits one round of every cell instead of all rounds of some, and the best
    round discards it — which keeps the fitted slopes from being bent by load drift.
    """
    cells = {name: _cells(name, scaling, small, dense_max_n=args.dense_max_n) for name in names}
    modules = {name: build(name) for name in names}
    rows: dict[tuple[str, int, str], Row] = {}
    for _ in range(args.rounds):
        for n in sorted({n for c in cells.values() for n, _ in c}):
            for name in names:
                for pass_ in [p for m, p in cells[name] if m == n]:
                    fn = workload(modules[name], n, pass_)
                    t = time_median(fn, threads=args.threads, min_run_time=args.min_run_time)
                    row = rows.setdefault((name, n, pass_), Row(name, n, pass_))
                    row.time_s = t if row.time_s is None else min(row.time_s, t)
                    print(f"  {name:10s} n={n:6d} {pass_:7s} {t * 1e3:9.1f} ms", file=sys.stderr, flush=True)
    for (name, n, pass_), row in rows.items():
        row.predicted_bytes = modules[name].predicted_peak_bytes(
            batch=BATCH, seq_q=n, seq_k=n, causal=False, backward=pass_ == "fwd+bwd", element_size=4
        )
    return rows


def _cells(name: str, scaling: list[int], small: list[int], *, dense_max_n: int) -> list[tuple[int, str]]:
    """The (n, pass) cells measured for one variant."""
    sizes = sorted(set(scaling + (small if name in (*SPARSE, "sdpa") else [])))
    cells = []
    for n in sizes:
        for pass_ in ("fwd",) if name in FORWARD_ONLY else ("fwd", "fwd+bwd"):
            if name == "sdpa+mask" and (n > dense_max_n or (pass_ == "fwd+bwd" and n > 4096)):
                continue  # the n×n backward of a masked SDPA: minutes and gigabytes, and not the question
            cells.append((n, pass_))
    return cells


def _registered() -> list[str]:
    from attnbench import available_attention

    return available_attention()


def report(rows: dict[tuple[str, int, str], Row], names: list[str], scaling: list[int], duel: dict[str, float]) -> None:
    def series(name: str, pass_: str, attr: str) -> dict[int, float]:
        return {
            n: getattr(r, attr)
            for (nm, n, ps), r in rows.items()
            if nm == name and ps == pass_ and getattr(r, attr) is not None
        }

    for pass_ in ("fwd", "fwd+bwd"):
        print(f"\n## {pass_}: median time (ms) and peak memory (MiB; measured RSS / predicted)")
        print(f"{'variant':12s}" + "".join(f"{n:>24d}" for n in scaling) + "   slope(t)  slope(mem)")
        for name in names:
            if (name, scaling[0], pass_) not in rows and (name, scaling[-1], pass_) not in rows:
                continue
            cells = []
            for n in scaling:
                r = rows.get((name, n, pass_))
                if r is None:
                    cells.append(f"{'-':>24s}")
                    continue
                mem = f"{fmt_mib(r.peak_bytes).strip()}/{fmt_mib(r.predicted_bytes).strip()}"
                cells.append(f"{fmt_time(r.time_s).strip():>10s} {mem:>13s}")
            slope_t = loglog_slope(series(name, pass_, "time_s"))
            slope_m = loglog_slope({n: float(b) for n, b in series(name, pass_, "peak_bytes").items()})
            print(f"{name:12s}" + "".join(cells) + f"   {fmt_slope(slope_t):>8s}  {fmt_slope(slope_m):>10s}")

    big = scaling[-1]
    print(f"\n## n={big}, forward, head to head (medians of 3 alternating rounds)")
    for name, t in duel.items():
        ratio = "" if name == "window" else f"  ->  window is {t / duel['window']:.2f}x faster"
        print(f"{name:10s} {t * 1e3:9.1f} ms{ratio}")

    print("\n## crossover with SDPA (full attention): sparse faster for n beyond")
    for pass_ in ("fwd", "fwd+bwd"):
        sdpa = series("sdpa", pass_, "time_s")
        for name in SPARSE:
            if name in names:
                print(f"{name:12s} {pass_:8s} {crossover(series(name, pass_, 'time_s'), sdpa)}")
    print(f"\n# load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
