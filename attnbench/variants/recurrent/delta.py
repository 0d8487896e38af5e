"""The delta rule (DeltaNet) in three forms: chunked (WY form), naive, and one step.

Per head, with a state ``S`` of ``(d_k, d_v)`` and a write strength ``β_t ∈ [0, 1]``:

    S_t = (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ  =  S_{t-1} + k_t δ_tᵀ,   δ_t = β_t (v_t − S_{t-1}ᵀ k_t)
    o_t = S_tᵀ q_t

A masked key has β = 0: it writes nothing, and the delta rule has no decay to skip.

**Chunked form** (Yang et al. 2024, the WY representation): inside a chunk with entering state S₀, the
corrections satisfy ``(I + diag(β)·strictly_lower(K Kᵀ)) Δ = diag(β)(V − K S₀)``. With the unit lower-triangular
``A = I + diag(β)·strictly_lower(K Kᵀ)``, ``W = A⁻¹ diag(β) K`` and ``U = A⁻¹ diag(β) V`` depend on the chunk
alone (one batched triangular solve for all chunks), and then

    Δ = U − W S₀,   O = Q S₀ + lower(Q Kᵀ) Δ,   S_end = S₀ + Kᵀ Δ

— a scan over n/L chunks. Time and memory O(n·L·d + n/L·d_k·d_v), forward and backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.variants.recurrent.chunks import from_chunks, strictly_future, to_chunks


def chunked_delta_rule(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, *, chunk: int, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(B, H, N, ·)`` inputs, ``beta`` ``(B, H, N)`` → outputs ``(B, H, N, d_v)`` and the final state."""
    n = q.shape[-2]
    size = min(chunk, n)
    missing = -n % size
    if missing:  # padding tokens come after every real query and write nothing (β = 0)
        q, k, v = (F.pad(x, (0, 0, 0, missing)) for x in (q, k, v))
        beta = F.pad(beta, (0, missing))
    qc, kc, vc = to_chunks(q, size), to_chunks(k, size), to_chunks(v, size)  # (B, H, G, L, ·)
    bc = to_chunks(beta, size).unsqueeze(-1)  # (B, H, G, L, 1)

    future_or_self = ~strictly_future(size, q.device).T  # (L, L): True on and above the diagonal
    lower = (bc * (kc @ kc.mT)).masked_fill(future_or_self, 0.0)  # (B, H, G, L, L): β_i k_i·k_j for j < i
    unit_lower = lower + torch.eye(size, dtype=q.dtype, device=q.device)
    w = torch.linalg.solve_triangular(unit_lower, bc * kc, upper=False, unitriangular=True)  # (B, H, G, L, d_k)
    u = torch.linalg.solve_triangular(unit_lower, bc * vc, upper=False, unitriangular=True)  # (B, H, G, L, d_v)
    scores = (qc @ kc.mT).masked_fill(strictly_future(size, q.device), 0.0)  # (B, H, G, L, L), diagonal kept

    memory = state if state is not None else q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])
    outs = []
    for c in range(qc.shape[2]):
        delta = u[:, :, c] - w[:, :, c] @ memory  # (B, H, L, d_v)
        outs.append(qc[:, :, c] @ memory + scores[:, :, c] @ delta)
        memory = memory + kc[:, :, c].mT @ delta
    out = from_chunks(torch.stack(outs, dim=2))
    return out[:, :, :n], memory


def delta_step(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """One token: ``(B, H, d)`` q, k, v, ``(B, H)`` β; ``state`` ``(B, H, d_k, d_v)``."""
    delta = beta.unsqueeze(-1) * (v - (k.unsqueeze(-2) @ state).squeeze(-2))  # (B, H, d_v)
    state = state + k.unsqueeze(-1) * delta.unsqueeze(-2)
    return (q.unsqueeze(-2) @ state).squeeze(-2), state


def naive_delta_rule(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The delta rule token by token, as in the module docstring: the reference for the chunked form."""
    memory = state if state is not None else q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])
    outs = []
    for t in range(q.shape[-2]):
        out, memory = delta_step(q[:, :, t], k[:, :, t], v[:, :, t], beta[:, :, t], memory)
        outs.append(out)
    return torch.stack(outs, dim=2), memory
