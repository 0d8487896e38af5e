"""RetNet's retention (Sun et al. 2023): a gated recurrence with a fixed, per-head exponential decay."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnbench.core.registry import register_attention
from attnbench.variants.recurrent.base import DEFAULT_CHUNK, GatedRecurrentAttention, RecurrenceInputs


def retention_decays(num_heads: int) -> Tensor:
    """``(H,)`` log γ_h with γ_h = 1 − 2^(−5−h): head h forgets over about 2^(5+h) tokens (RetNet's choice)."""
    return torch.tensor([math.log1p(-(2.0 ** (-5 - h))) for h in range(num_heads)], dtype=torch.float64)


@register_attention("retnet")
class RetNetAttention(GatedRecurrentAttention):
    """Retention: ``S_t = γ_h S_{t-1} + k_t v_tᵀ``, ``o_t = S_tᵀ q_t·scale``, γ_h = 1 − 2^(−5−h) fixed per head.

    No learned gate: the decay depends on the head only, never on the data (a masked key skips it). The
    output is not normalised (RetNet applies a GroupNorm after retention; here that belongs to the model).
    Causal only. Decoding keeps one d×d state per head.
    """

    log_decay: Tensor

    def __init__(
        self, *, head_dim: int, num_heads: int, chunk: int = DEFAULT_CHUNK, scale: float | None = None
    ) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, chunk=chunk, scale=scale)
        self.register_buffer("log_decay", retention_decays(num_heads).float(), persistent=False)

    def recurrence_inputs(self, q: Tensor, k: Tensor, v: Tensor, valid: Tensor) -> RecurrenceInputs:
        keep = valid[:, None, :, None].to(q.dtype)  # (B, 1, N, 1)
        log_gate = self.log_decay.to(q.dtype)[None, :, None, None] * keep  # (B, H, N, 1)
        return RecurrenceInputs(q=q * self.scale, k=k * keep, v=v, log_gate=log_gate)
