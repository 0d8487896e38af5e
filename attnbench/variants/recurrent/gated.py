"""Gated linear recurrences — RetNet, GLA, Mamba-2 — in three forms: chunked, naive, and one step.

The recurrence, per head, with a state ``S`` of ``(d_k, d_v)``:

    S_t = diag(exp(g_t)) · S_{t-1} + k_t v_tᵀ        o_t = S_tᵀ q_t

``g_t ≤ 0`` is the log gate: one value per key dimension (GLA, ``(…, d_k)``) or one per token shared by every
dimension (RetNet, Mamba-2, ``(…, 1)``). A masked key has ``g = 0`` and ``k = 0``: it neither decays nor writes.

**Chunked form** (chunks of L tokens; ``b`` is the inclusive cumulative log gate inside a chunk):

- across chunks, the state entering chunk c is read by ``(q_i ⊙ exp(b_i)) · S`` and carried by
  ``S ← exp(b_L) ⊙ S + Σ_j (k_j ⊙ exp(b_L − b_j)) v_jᵀ`` — a Python scan over n/L chunks of small ops;
- inside a chunk, ``o_i += Σ_{j≤i} (q_i ⊙ exp(b_i − b_j)) · k_j v_j``: an L×L matrix per chunk.

Every exponent there is ≤ 0 except in the per-dimension intra-chunk product, which factorises
``exp(b_i − b_j) = exp(b_i − b_m) · exp(b_m − b_j)`` about the chunk's middle token m: the factors stay below
``exp(L/2 · max|g|)``, which the GLA variant bounds (its per-token log gate is in (−1, 0), so L ≤ 128 keeps
them far inside fp32). Time and memory are O(n·L·d + n/L·d_k·d_v), forward and backward: no n×n matrix and no
per-token state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.variants.recurrent.chunks import from_chunks, strictly_future, to_chunks


def chunked_gated_recurrence(
    q: Tensor, k: Tensor, v: Tensor, log_gate: Tensor, *, chunk: int, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(B, H, N, ·)`` inputs, ``log_gate`` ``(B, H, N, d_k or 1)`` → outputs ``(B, H, N, d_v)``, final state."""
    n = q.shape[-2]
    size = min(chunk, n)
    missing = -n % size
    if missing:  # padding tokens come after every real query, write nothing (k = 0) and do not decay (g = 0)
        q, k, v, log_gate = (F.pad(x, (0, 0, 0, missing)) for x in (q, k, v, log_gate))
    qc, kc, vc = to_chunks(q, size), to_chunks(k, size), to_chunks(v, size)  # (B, H, G, L, ·)
    b = to_chunks(log_gate, size).cumsum(dim=-2)  # (B, H, G, L, d_g)
    b_last = b[..., -1:, :]  # (B, H, G, 1, d_g)

    local = (kc * torch.exp(b_last - b)).mT @ vc  # (B, H, G, d_k, d_v): what each chunk writes, decayed to its end
    carry = torch.exp(b_last.squeeze(-2)).unsqueeze(-1)  # (B, H, G, d_g, 1): how a chunk decays what came before
    memory = state if state is not None else q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])
    entering = []
    # unbind, not carry[:, :, c]: each indexing's backward would write a zero tensor of the full (B, H, G, …)
    # shape, G of them in all — O(n²/L) time and memory in the backward
    for chunk_carry, chunk_write in zip(carry.unbind(2), local.unbind(2), strict=True):
        entering.append(memory)
        memory = chunk_carry * memory + chunk_write
    inter = (qc * torch.exp(b)) @ torch.stack(entering, dim=2)  # (B, H, G, L, d_v)

    future = strictly_future(size, q.device)
    if b.shape[-1] == 1:  # a scalar gate: the decay matrix exp(b_i − b_j) directly, future entries exp(−inf) = 0
        decay = torch.exp((b - b.mT).masked_fill(future, float("-inf")))  # (B, H, G, L, L)
        scores = (qc @ kc.mT) * decay
    else:
        middle = b[..., size // 2 : size // 2 + 1, :]
        scores = ((qc * torch.exp(b - middle)) @ (kc * torch.exp(middle - b)).mT).masked_fill(future, 0.0)
    out = from_chunks(inter + scores @ vc)
    return out[:, :, :n], memory


def gated_step(q: Tensor, k: Tensor, v: Tensor, log_gate: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """One token: ``(B, H, d)`` q, k, v and ``(B, H, d_k or 1)`` log gate; ``state`` ``(B, H, d_k, d_v)``."""
    state = torch.exp(log_gate).unsqueeze(-1) * state + k.unsqueeze(-1) * v.unsqueeze(-2)
    return (q.unsqueeze(-2) @ state).squeeze(-2), state


def naive_gated_recurrence(
    q: Tensor, k: Tensor, v: Tensor, log_gate: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The recurrence token by token, as written in the module docstring: the reference for the chunked form."""
    memory = state if state is not None else q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])
    outs = []
    for t in range(q.shape[-2]):
        out, memory = gated_step(q[:, :, t], k[:, :, t], v[:, :, t], log_gate[:, :, t], memory)
        outs.append(out)
    return torch.stack(outs, dim=2), memory
