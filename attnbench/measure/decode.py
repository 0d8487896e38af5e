"""Measure decoding at one context length in a worker: prefill over c tokens, then one token at a time.

The cell's prompt is random ``(B, H, c, D)`` queries, keys and values. A short prefill first builds lazy
state (kernels, allocator pools); then the measured prefill over c tokens is timed once, the state it leaves
is sized (:meth:`~attnbench.core.attention.Attention.state_bytes`), a few warm-up steps run, and each of
the timed steps is timed on its own (a step is one token: far too short for a block of them to hide the
cache growing).

Peak memory is read first, in a pass of its own (prefill and two steps: a step's peak is the same at every
step), in the fresh worker: reading it needs glibc's mmap threshold lowered (see :mod:`.memory`). The timed
pass then runs with the threshold raised to glibc's own dynamic ceiling, so a step's buffers are reused
heap memory as in a long-running decoder, not fresh pages whose faults would inflate a KV cache's
per-token time.
"""

from __future__ import annotations

import ctypes
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from attnbench.core.registry import create_attention
from attnbench.measure.memory import RssMeter, fix_mmap_threshold
from attnbench.measure.timing import iqr
from attnbench.measure.workload import DTYPES, synchronize

WARMUP_PREFILL_TOKENS = 64  # a prefill this short builds the lazy state without costing a second long one


@dataclass(frozen=True)
class DecodeCell:
    """One variant × context length × batch of the decode sweep: everything a worker needs to rebuild it."""

    spec: str  # canonical attention spec
    batch: int
    heads: int
    head_dim: int
    context: int  # tokens prefilled before the timed steps
    dtype: str
    device: str
    threads: int
    plugins: tuple[str, ...] = ()
    seed: int = 0
    warmup_steps: int = 4
    steps: int = 32  # timed steps (fewer when they would overrun the step time budget)
    step_time_budget_s: float = 30.0  # seconds of timed steps; at least MIN_TIMED_STEPS run regardless
    time_budget_s: float = 120.0  # the whole cell, enforced by the executor


MIN_TIMED_STEPS = 3
REUSE_BELOW_BYTES = 32 * 2**20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: the dynamic threshold's ceiling
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MEMORY_PASS_STEPS = 2


@dataclass(frozen=True)
class DecodeReading:
    prefill_s: float
    step_times_s: tuple[float, ...]
    decode_median_s: float
    decode_iqr_s: float
    state_bytes: int  # in use after the prefill over ``context`` tokens
    peak_mem_bytes: int
    memory_method: str
    notes: tuple[str, ...] = ()


def decode_cell(cell: DecodeCell, report: Callable[[dict[str, Any]], None] | None = None) -> DecodeReading:
    torch.set_num_threads(cell.threads)
    device = torch.device(cell.device)
    dtype = DTYPES[cell.dtype]
    notes: list[str] = []
    attention = create_attention(cell.spec, head_dim=cell.head_dim, num_heads=cell.heads)
    attention = attention.to(device=device, dtype=dtype).eval()
    gen = torch.Generator(device="cpu").manual_seed(cell.seed)
    tokens = cell.context + cell.warmup_steps + cell.steps

    def randn(n: int) -> torch.Tensor:
        return torch.randn(cell.batch, cell.heads, n, cell.head_dim, generator=gen).to(device=device, dtype=dtype)

    q, k, v = randn(tokens), randn(tokens), randn(tokens)  # (B, H, c + steps, D)
    c = cell.context
    with torch.inference_mode():
        warm = min(c, WARMUP_PREFILL_TOKENS)
        attention.prefill(q[:, :, :warm], k[:, :, :warm], v[:, :, :warm])
        synchronize(device)
        if device.type == "cpu" and not fix_mmap_threshold():
            notes.append("mallopt unavailable: freed buffers may stay resident and hide part of the peak")
        meter = _PeakMeter(device)
        with meter:
            _, state = attention.prefill(q[:, :, :c], k[:, :, :c], v[:, :, :c])
            for i in range(c, min(c + MEMORY_PASS_STEPS, tokens)):
                one = slice(i, i + 1)
                _, state = attention.step(q[:, :, one], k[:, :, one], v[:, :, one], state)
            synchronize(device)
        del state
        if device.type == "cpu":
            _reuse_freed_buffers()
        start = time.perf_counter()
        _, state = attention.prefill(q[:, :, :c], k[:, :, :c], v[:, :, :c])
        synchronize(device)
        prefill_s = time.perf_counter() - start
        state_bytes = attention.state_bytes(state)
        times: list[float] = []
        spent = 0.0
        for i in range(c, tokens):
            one = slice(i, i + 1)
            start = time.perf_counter()
            _, state = attention.step(q[:, :, one], k[:, :, one], v[:, :, one], state)
            synchronize(device)
            elapsed = time.perf_counter() - start
            if i - c < cell.warmup_steps:
                continue
            times.append(elapsed)
            spent += elapsed
            if len(times) >= MIN_TIMED_STEPS and spent > cell.step_time_budget_s:
                notes.append(f"{len(times)} of {cell.steps} timed steps: the step time budget ran out")
                break
    notes += meter.notes
    return DecodeReading(
        prefill_s=prefill_s, step_times_s=tuple(times), decode_median_s=statistics.median(times),
        decode_iqr_s=iqr(times), state_bytes=int(state_bytes), peak_mem_bytes=meter.peak_bytes,
        memory_method=meter.method, notes=tuple(notes),
    )  # fmt: skip


def _reuse_freed_buffers() -> None:
    """glibc's mmap and trim thresholds at its dynamic ceiling: freed buffers up to 32 MiB are reused."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, REUSE_BELOW_BYTES)
    libc.mallopt(_M_TRIM_THRESHOLD, 2 * REUSE_BELOW_BYTES)


class _PeakMeter:
    """Peak bytes of a block beyond what was allocated before it: CUDA's allocator peak, else the RSS meter."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0
        self.method = "cuda max_memory_allocated" if device.type == "cuda" else ""
        self.notes: list[str] = []
        self._rss = RssMeter()
        self._baseline = 0

    def __enter__(self) -> _PeakMeter:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
        else:
            self._rss.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device) - self._baseline)
            return
        self._rss.__exit__(*exc)
        self.peak_bytes, self.method = self._rss.peak_bytes, self._rss.method
        if self.method == "ru_maxrss":
            self.notes.append("/proc/self/clear_refs not writable: peak from ru_maxrss (an upper bound)")
