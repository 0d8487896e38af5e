"""Mamba-2's state-space duality (Dao & Gu 2024) in attention form: a scalar, data-dependent decay per head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.core.registry import register_attention
from attnbench.variants.recurrent.base import DEFAULT_CHUNK, GatedRecurrentAttention, RecurrenceInputs


@register_attention("mamba2")
class Mamba2Attention(GatedRecurrentAttention):
    """SSD: ``S_t = exp(−A_h Δ_t) S_{t-1} + Δ_t k_t v_tᵀ``, ``o_t = S_tᵀ q_t·scale`` (C = q, B = k, x = v).

    The step size ``Δ_t = softplus(k_t·w_h + c_h)`` comes from the key (in Mamba-2 it is a projection of the
    layer input); it sets both the decay and the write strength, so a masked key has Δ = 0: no decay, no
    write. ``A_h`` starts in [1, 16] and Δ around 0.001–0.1, Mamba-2's initialisation. Causal only;
    decoding keeps one d×d state per head.
    """

    def __init__(
        self,
        *,
        head_dim: int,
        num_heads: int,
        chunk: int = DEFAULT_CHUNK,
        scale: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads, chunk=chunk, scale=scale)
        generator = torch.Generator().manual_seed(seed)
        self.log_rate = nn.Parameter(torch.empty(num_heads).uniform_(1.0, 16.0, generator=generator).log())
        self.step_weight = nn.Parameter(torch.randn(num_heads, head_dim, generator=generator) * (0.1 / head_dim**0.5))
        log_step = torch.empty(num_heads).uniform_(math.log(1e-3), math.log(1e-1), generator=generator)
        self.step_bias = nn.Parameter(log_step.exp().expm1().log())  # softplus⁻¹ of the initial Δ

    def recurrence_inputs(self, q: Tensor, k: Tensor, v: Tensor, valid: Tensor) -> RecurrenceInputs:
        logits = torch.einsum("bhnd,hd->bhn", k, self.step_weight.to(k.dtype)) + self.step_bias.to(k.dtype)[:, None]
        step = F.softplus(logits) * valid[:, None, :].to(k.dtype)  # (B, H, N): 0 for a masked key
        log_gate = -self.log_rate.to(k.dtype).exp()[None, :, None] * step
        return RecurrenceInputs(q=q * self.scale, k=k * step.unsqueeze(-1), v=v, log_gate=log_gate.unsqueeze(-1))
