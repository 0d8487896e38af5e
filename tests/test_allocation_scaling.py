"""Sub-quadratic variants allocate O(n) in all, forward and backward — not only no single n×n buffer.

The largest-allocation checks elsewhere miss work that is quadratic in many small pieces: e.g. a chunk scan
that indexes ``x[:, :, c]`` gets, in the backward, one zero gradient of x's full size per chunk (n/L buffers
of n·d each). The total elements allocated are deterministic, so their growth with n is a fair unit test.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from attnbench import create_attention
from attnbench.testing import AllocationRecorder

SHORT, LONG = 512, 2048
# a linear method's total allocations grow like n (measured 0.99–1.01 for the linear and recurrent families,
# 1.09–1.13 before their chunk scans stopped indexing); constant-size parts only lower the exponent
MAX_EXPONENT = 1.05

LINEAR_IN_N = [
    ("window", False),
    ("window", True),
    ("longformer", False),
    ("longformer", True),
    ("bigbird", False),
    ("bigbird", True),
    ("linear", False),
    ("linear", True),
    ("linear-relu", True),
    ("performer", False),
    ("performer", True),
    ("taylor", True),
    ("nystrom", False),
    ("linformer", False),
    ("retnet", True),
    ("gla", True),
    ("deltanet", True),
    ("gated-deltanet", True),
    ("mamba2", True),
]


def _allocation_exponent(run, short: int = SHORT, long: int = LONG) -> float:
    totals = []
    for n in (short, long):
        q, k, v = (torch.randn(1, 1, n, 16, requires_grad=True) for _ in range(3))
        with AllocationRecorder() as rec:
            run(q, k, v).sum().backward()
        totals.append(rec.total_elements)
    return math.log(totals[1] / totals[0]) / math.log(long / short)


@pytest.mark.parametrize(
    ("spec", "causal"), LINEAR_IN_N, ids=[f"{s}-{'causal' if c else 'full'}" for s, c in LINEAR_IN_N]
)
def test_total_allocations_grow_linearly(spec: str, causal: bool) -> None:
    torch.manual_seed(0)
    attn = create_attention(spec, head_dim=16, num_heads=1)
    exponent = _allocation_exponent(lambda q, k, v: attn(q, k, v, causal=causal))
    assert exponent <= MAX_EXPONENT, f"{spec} (causal={causal}) allocates ~n^{exponent:.2f} in all"


def _scan_by_indexing(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """A chunked causal linear attention whose scan indexes the chunk axis — the bug the check exists for."""
    size = 64
    qc, kc, vc = (x.reshape(1, 1, -1, size, 16) for x in (q, k, v))  # (B, H, G, L, d)
    writes = kc.mT @ vc  # (B, H, G, d, d)
    memory = q.new_zeros(1, 1, 16, 16)
    outs = []
    for c in range(qc.shape[2]):
        outs.append(qc[:, :, c] @ memory)
        memory = memory + writes[:, :, c]
    return torch.stack(outs, dim=2)


def _scan_by_unbind(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    size = 64
    qc, kc, vc = (x.reshape(1, 1, -1, size, 16) for x in (q, k, v))  # (B, H, G, L, d)
    memory = q.new_zeros(1, 1, 16, 16)
    outs = []
    for q_c, write in zip(qc.unbind(2), (kc.mT @ vc).unbind(2), strict=True):
        outs.append(q_c @ memory)
        memory = memory + write
    return torch.stack(outs, dim=2)


def test_the_check_catches_quadratic_work_in_small_pieces() -> None:
    assert _allocation_exponent(_scan_by_indexing) > MAX_EXPONENT + 0.1
    assert _allocation_exponent(_scan_by_unbind) <= MAX_EXPONENT
