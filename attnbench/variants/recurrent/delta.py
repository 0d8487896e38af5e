"""The delta rule (DeltaNet, and Gated DeltaNet) in three forms: chunked (WY form), naive, and one step.

Per head, with a state ``S`` of ``(d_k, d_v)``, a write strength ``β_t ∈ [0, 1]`` and an optional scalar
decay ``α_t = exp(g_t) ∈ (0, 1]`` (Gated DeltaNet; plain DeltaNet has g = 0):

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ  =  α_t S_{t-1} + k_t δ_tᵀ,
    δ_t = β_t (v_t − α_t S_{t-1}ᵀ k_t),        o_t = S_tᵀ q_t

A masked key has β = 0 and g = 0: it neither writes nor decays.

**Chunked form** (Yang et al. 2024, the WY representation): inside a chunk with entering state S₀ and
inclusive cumulative log decay b, ``S_t = e^{b_t} S₀ + Σ_{j≤t} e^{b_t − b_j} k_j δ_jᵀ``, and the corrections
satisfy ``A Δ = diag(β)(V − diag(e^b) K S₀)`` with the unit lower-triangular
``A = I + diag(β)·strictly_lower(K Kᵀ ⊙ Γ)``, ``Γ_ij = e^{b_i − b_j}``. ``W = A⁻¹ diag(β e^b) K`` and
``U = A⁻¹ diag(β) V`` depend on the chunk alone (one batched triangular solve for all chunks), and then

    Δ = U − W S₀,   O = diag(e^b) Q S₀ + lower(Q Kᵀ ⊙ Γ) Δ,   S_end = e^{b_L} S₀ + (K ⊙ e^{b_L − b})ᵀ Δ

— a scan over n/L chunks. Every exponent is ≤ 0. Time and memory O(n·L·d + n/L·d_k·d_v), forward and backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.variants.recurrent.chunks import from_chunks, strictly_future, to_chunks


def chunked_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    *,
    chunk: int,
    log_gate: Tensor | None = None,
    state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(B, H, N, ·)`` inputs, ``beta`` and ``log_gate`` ``(B, H, N)`` → outputs ``(B, H, N, d_v)``, final state."""
    n = q.shape[-2]
    size = min(chunk, n)
    log_gate = torch.zeros_like(beta) if log_gate is None else log_gate
    missing = -n % size
    if missing:  # padding tokens come after every real query, write nothing (β = 0) and do not decay (g = 0)
        q, k, v = (F.pad(x, (0, 0, 0, missing)) for x in (q, k, v))
        beta, log_gate = F.pad(beta, (0, missing)), F.pad(log_gate, (0, missing))
    qc, kc, vc = to_chunks(q, size), to_chunks(k, size), to_chunks(v, size)  # (B, H, G, L, ·)
    bc = to_chunks(beta, size).unsqueeze(-1)  # (B, H, G, L, 1)
    b = to_chunks(log_gate, size).cumsum(dim=-1).unsqueeze(-1)  # (B, H, G, L, 1): inclusive cumulative log decay
    future = strictly_future(size, q.device)
    decay = torch.exp((b - b.mT).masked_fill(future, float("-inf")))  # (B, H, G, L, L): Γ, zero above the diagonal

    lower = (bc * (kc @ kc.mT) * decay).tril(-1)  # (B, H, G, L, L): β_i Γ_ij k_i·k_j for j < i
    unit_lower = lower + torch.eye(size, dtype=q.dtype, device=q.device)
    w = torch.linalg.solve_triangular(unit_lower, bc * b.exp() * kc, upper=False, unitriangular=True)
    u = torch.linalg.solve_triangular(unit_lower, bc * vc, upper=False, unitriangular=True)  # (B, H, G, L, d_v)
    scores = (qc @ kc.mT) * decay  # (B, H, G, L, L), diagonal kept
    q_decayed = qc * b.exp()
    b_last = b[..., -1:, :]  # (B, H, G, 1, 1)
    k_to_end = kc * torch.exp(b_last - b)
    carry = b_last.exp().squeeze(-1)  # (B, H, G, 1, 1) → (B, H, G, 1)

    memory = state if state is not None else q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])
    outs = []
    # per-chunk views by unbind: indexing [:, :, c] would cost a full-size zero gradient per chunk (O(n²/L))
    per_chunk = (t.unbind(2) for t in (u, w, q_decayed, scores, carry[..., None], k_to_end))
    for u_c, w_c, q_c, scores_c, carry_c, k_c in zip(*per_chunk, strict=True):
        delta = u_c - w_c @ memory  # (B, H, L, d_v)
        outs.append(q_c @ memory + scores_c @ delta)
        memory = carry_c * memory + k_c.mT @ delta
    out = from_chunks(torch.stack(outs, dim=2))
    return out[:, :, :n], memory


def delta_step(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, state: Tensor, log_gate: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One token: ``(B, H, d)`` q, k, v, ``(B, H)`` β and log decay; ``state`` ``(B, H, d_k, d_v)``."""
    if log_gate is not None:
        state = torch.exp(log_gate)[..., None, None] * state
    delta = beta.unsqueeze(-1) * (v - (k.unsqueeze(-2) @ state).squeeze(-2))  # (B, H, d_v)
    state = state + k.unsqueeze(-1) * delta.unsqueeze(-2)
    return (q.unsqueeze(-2) @ state).squeeze(-2), state


def naive_delta_rule(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_gate: Tensor | None = None, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The delta rule token by token, as in the module docstring: the reference for the chunked form."""
    memory = state if state is not None else q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])
    outs = []
    for t in range(q.shape[-2]):
        gate = None if log_gate is None else log_gate[:, :, t]
        out, memory = delta_step(q[:, :, t], k[:, :, t], v[:, :, t], beta[:, :, t], memory, gate)
        outs.append(out)
    return torch.stack(outs, dim=2), memory
