"""What runs inside a benchmark worker: build one cell's workload, time it, or meter its peak memory.

Timing uses ``torch.utils.benchmark.Timer`` (explicit ``num_threads``, adaptive autorange, median and IQR)
after the first call, which is timed apart (it includes lazy initialisation and any ``torch.compile``).
Peak memory on CPU is the resident-set high-water mark of the measured region: reset with
``/proc/self/clear_refs``, read ``VmHWM``, minus the resident size with the inputs already allocated.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils import benchmark

from attnbench.core.attention import Attention
from attnbench.core.registry import create_attention, load_plugin
from attnbench.core.skeleton import EncoderLayer, TransformerConfig

Scope = Literal["attention", "layer"]
Pass = Literal["fwd", "fwd+bwd"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# glibc: allocations of at least this many bytes use mmap and go back to the OS when freed, so the
# resident set tracks live buffers (the effect of MALLOC_MMAP_THRESHOLD_=65536 at process start)
MMAP_THRESHOLD_BYTES = 65536
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
SLOW_CALL_S = 0.25  # a call slower than this is timed a few times one by one instead of by autorange
VERY_SLOW_CALL_S = 1.0  # ... one slower than this only twice
GLACIAL_CALL_S = 4.0  # ... and one slower than this once more (its first call already took that long)
SMALL_WARMUP_SEQ = 128


@dataclass(frozen=True)
class CellSpec:
    """Everything a worker needs to rebuild one measurement (plain data: it crosses a process boundary)."""

    spec: str
    scope: Scope
    pass_: Pass
    batch: int
    heads: int
    head_dim: int
    seq_len: int
    causal: bool
    dtype: str
    device: str
    threads: int
    compile: bool = False
    plugins: tuple[str, ...] = ()
    seed: int = 0
    min_run_time: float = 0.05
    max_run_time: float = 0.3
    time_budget_s: float = 120.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def backward(self) -> bool:
        return self.pass_ == "fwd+bwd"


# building the workload -----------------------------------------------------------------------------------
def build_attention(cell: CellSpec) -> Attention:
    return create_attention(cell.spec, head_dim=cell.head_dim, num_heads=cell.heads)


def layer_config(cell: CellSpec) -> TransformerConfig:
    return TransformerConfig(
        vocab_size=1, d_model=cell.heads * cell.head_dim, num_heads=cell.heads, num_layers=1, dropout=0.0
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_workload(cell: CellSpec, seq_len: int | None = None) -> Callable[[], None]:
    """A zero-argument function running one forward (under inference_mode) or one forward+backward."""
    n = cell.seq_len if seq_len is None else seq_len
    device = torch.device(cell.device)
    dtype = DTYPES[cell.dtype]
    gen = torch.Generator(device="cpu").manual_seed(cell.seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype).requires_grad_(cell.backward)

    attention = build_attention(cell).to(device=device, dtype=dtype)
    if cell.scope == "attention":
        module: torch.nn.Module = attention
        inputs = [randn(cell.batch, cell.heads, n, cell.head_dim) for _ in range(3)]
        call_kwargs: dict[str, Any] = {"causal": cell.causal}
    else:
        module = EncoderLayer(layer_config(cell), attention, rotary=None).to(device=device, dtype=dtype)
        inputs = [randn(cell.batch, n, cell.heads * cell.head_dim)]
        call_kwargs = {"causal": cell.causal}
    runner = torch.compile(module) if cell.compile else module
    wrt = [*inputs, *(p for p in module.parameters() if p.requires_grad)] if cell.backward else []

    def forward() -> None:
        with torch.inference_mode():
            runner(*inputs, **call_kwargs)
        _synchronize(device)

    def forward_backward() -> None:
        out = runner(*inputs, **call_kwargs)
        torch.autograd.grad(out, wrt, torch.ones_like(out))
        _synchronize(device)

    return forward_backward if cell.backward else forward


# timing ----------------------------------------------------------------------------------------------------
def time_cell(cell: CellSpec) -> dict[str, Any]:
    """First call apart, then the median and IQR of the steady state, and every raw per-run time."""
    torch.set_num_threads(cell.threads)
    fn = build_workload(cell)
    start = time.perf_counter()
    fn()
    first_call = time.perf_counter() - start
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=cell.threads)
    if first_call >= SLOW_CALL_S:
        # autorange would need many seconds per block: a few single runs, as many as the budget allows
        remaining = cell.time_budget_s - 2 * first_call
        most = 1 if first_call >= GLACIAL_CALL_S else 2 if first_call >= VERY_SLOW_CALL_S else 3
        repeats = int(max(1, min(most, remaining // max(first_call, 1e-9))))
        blocks = [float(timer.timeit(number=1).times[0]) for _ in range(repeats)]
        runs_per_block = 1
    else:
        fn()  # one more warm-up: allocator and kernel caches settle after the first call
        measurement = timer.adaptive_autorange(
            threshold=0.1, min_run_time=cell.min_run_time, max_run_time=cell.max_run_time
        )
        blocks = [float(t) for t in measurement.times]
        runs_per_block = int(measurement.number_per_run)
    return {
        "first_call_s": first_call,
        "time_median_s": statistics.median(blocks),
        "time_iqr_s": _iqr(blocks),
        "raw_times_s": blocks,
        "runs_per_block": runs_per_block,
    }


def _iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


# peak memory -----------------------------------------------------------------------------------------------
def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {key}")


def _fix_mmap_threshold() -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    return ok and libc.mallopt(_M_TRIM_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1


def _reset_high_water_mark() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def memory_cell(cell: CellSpec, *, warmup_full: bool = True) -> dict[str, Any]:
    """Peak bytes allocated by one call beyond its inputs, in a fresh worker process."""
    torch.set_num_threads(cell.threads)
    device = torch.device(cell.device)
    notes = []
    if device.type == "cpu" and not _fix_mmap_threshold():
        notes.append("mallopt unavailable: freed buffers may stay resident and hide part of the peak")
    fn = build_workload(cell)
    if warmup_full:
        fn()  # at the measured shape: kernels, compiled graphs and caches for it are built before the reading
    else:
        build_workload(cell, seq_len=min(cell.seq_len, SMALL_WARMUP_SEQ))()  # lazy state only: a call is slow
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        fn()
        peak = torch.cuda.max_memory_allocated(device) - baseline
        return {"peak_mem_bytes": int(peak), "memory_method": "cuda max_memory_allocated", "notes": notes}
    if _reset_high_water_mark():
        baseline = _status_bytes("VmRSS:")
        fn()
        peak = _status_bytes("VmHWM:") - baseline
        method = "VmHWM after clear_refs"
    else:
        baseline = _status_bytes("VmRSS:")
        fn()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
        method = "ru_maxrss"
        notes.append("/proc/self/clear_refs not writable: peak from ru_maxrss of a fresh worker (an upper bound)")
    return {"peak_mem_bytes": max(0, int(peak)), "memory_method": method, "notes": notes}


# the machine's matmul peak ---------------------------------------------------------------------------------
def matmul_peak_gflops(device: str = "cpu", dtype: str = "float32", threads: int = 1, size: int = 2048) -> float:
    """Best achieved GFLOP/s of a large square matmul: the ceiling each cell's throughput is read against."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    a = torch.randn(size, size, device=dev, dtype=DTYPES[dtype])
    b = torch.randn(size, size, device=dev, dtype=DTYPES[dtype])

    def matmul() -> None:
        torch.mm(a, b)
        _synchronize(dev)

    matmul()
    measurement = benchmark.Timer(stmt="fn()", globals={"fn": matmul}, num_threads=threads).blocked_autorange(
        min_run_time=0.5
    )
    best = min(measurement.times)
    return 2 * size**3 / best / 1e9


# approximation error -------------------------------------------------------------------------------------
def approximation_cell(cell: CellSpec) -> dict[str, Any]:
    """Relative L2 error of the variant's output against exact softmax on random inputs (float64 norms)."""
    torch.set_num_threads(cell.threads)
    device = torch.device(cell.device)
    dtype = DTYPES[cell.dtype]
    gen = torch.Generator(device="cpu").manual_seed(cell.seed)
    q, k, v = (
        torch.randn(cell.batch, cell.heads, cell.seq_len, cell.head_dim, generator=gen).to(device, dtype)
        for _ in range(3)
    )
    variant = build_attention(cell).to(device=device, dtype=dtype)
    reference = create_attention("softmax", head_dim=cell.head_dim, num_heads=cell.heads)
    with torch.inference_mode():
        out = variant(q, k, v, causal=cell.causal).double()
        exact = reference(q, k, v, causal=cell.causal).double()
    return {"rel_error": float((out - exact).norm() / exact.norm().clamp_min(1e-300))}


WORKER_FUNCTIONS: dict[str, Callable[..., dict[str, Any] | float]] = {
    "time": time_cell,
    "memory": memory_cell,
    "approximation": approximation_cell,
}


def run_in_worker(kind: str, payload: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> Any:
    """Entry point inside a worker process: load plugins, then run one measurement or training cell."""
    torch.set_flush_denormal(True)
    for plugin in payload.get("plugins", ()):
        load_plugin(plugin)
    if kind == "matmul_peak":
        return matmul_peak_gflops(**payload["args"])
    if kind == "accuracy":
        from attnbench.bench.accuracy_sweep import run_cell_in_worker

        return run_cell_in_worker(payload, report)
    options = {k: payload[k] for k in ("warmup_full",) if k in payload}
    cell = CellSpec(**{k: (tuple(v) if k == "plugins" else v) for k, v in payload.items() if k not in options})
    return WORKER_FUNCTIONS[kind](cell, **options)
