"""Relative L2 error of a variant's output against exact softmax on random inputs (float64 norms)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from attnbench.core.baseline import BASELINE
from attnbench.core.registry import create_attention
from attnbench.measure.cells import Approximation, CellSpec
from attnbench.measure.output_check import check_output
from attnbench.measure.workload import DTYPES, build_attention


def approximation_cell(cell: CellSpec, report: Callable[[dict[str, Any]], None] | None = None) -> Approximation:
    torch.set_num_threads(cell.threads)
    device = torch.device(cell.device)
    dtype = DTYPES[cell.dtype]
    gen = torch.Generator(device="cpu").manual_seed(cell.seed)
    q, k, v = (
        torch.randn(cell.batch, cell.heads, cell.seq_len, cell.head_dim, generator=gen).to(device, dtype)
        for _ in range(3)
    )  # (B, H, N, D) each
    variant = build_attention(cell).to(device=device, dtype=dtype)
    reference = create_attention(BASELINE, head_dim=cell.head_dim, num_heads=cell.heads)
    with torch.inference_mode():
        out = variant(q, k, v, causal=cell.causal)
        check_output(out, shape=tuple(q.shape), dtype=dtype)
        out = out.double()
        exact = reference(q, k, v, causal=cell.causal).double()
    return Approximation(float((out - exact).norm() / exact.norm().clamp_min(1e-300)))
