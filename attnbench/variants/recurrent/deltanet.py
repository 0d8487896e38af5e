"""DeltaNet (Schlag et al. 2021; chunked by Yang et al. 2024) and Gated DeltaNet (Yang et al. 2024b).

The delta rule with a learned write strength; the gated variant adds Mamba-2's scalar, data-dependent decay.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.core.registry import register_attention
from attnbench.variants.recurrent.base import DEFAULT_CHUNK, DeltaRuleAttention, RecurrenceInputs


@register_attention("deltanet")
class DeltaNetAttention(DeltaRuleAttention):
    """DeltaNet: ``S_t = S_{t-1} + β_t k̂_t (v_t − S_{t-1}ᵀ k̂_t)ᵀ``, ``o_t = S_tᵀ q̂_t·scale``.

    q̂, k̂ are L2-normalised (so ``I − β k̂ k̂ᵀ`` is a contraction and the state stays bounded). The write
    strength ``β_t = sigmoid(k_t·w_h + c_h)`` comes from the raw key (in DeltaNet, a projection of the layer
    input); it starts near 0.5. A masked key has β = 0 and writes nothing. Causal only; decoding keeps one
    d×d state per head.
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
        self.beta_weight = nn.Parameter(torch.randn(num_heads, head_dim, generator=generator) * (0.1 / head_dim**0.5))
        self.beta_bias = nn.Parameter(torch.zeros(num_heads))

    def recurrence_inputs(self, q: Tensor, k: Tensor, v: Tensor, valid: Tensor) -> RecurrenceInputs:
        logits = torch.einsum("bhnd,hd->bhn", k, self.beta_weight.to(k.dtype)) + self.beta_bias.to(k.dtype)[:, None]
        beta = torch.sigmoid(logits) * valid[:, None, :].to(k.dtype)  # (B, H, N): 0 for a masked key
        q_hat = F.normalize(q, dim=-1, eps=1e-6) * self.scale
        return RecurrenceInputs(q=q_hat, k=F.normalize(k, dim=-1, eps=1e-6), v=v, beta=beta)


@register_attention("gated-deltanet")
class GatedDeltaNetAttention(DeltaNetAttention):
    """Gated DeltaNet: ``S_t = α_t (I − β_t k̂_t k̂_tᵀ) S_{t-1} + β_t k̂_t v_tᵀ``, ``o_t = S_tᵀ q̂_t·scale``.

    As ``deltanet``, plus a per-head decay ``α_t = exp(−A_h·softplus(k_t·u_h + c_h))`` from the key (Mamba-2's
    parameterisation: ``A_h`` starts in [1, 16], the softplus around 0.001–0.1). A masked key has β = 0 and
    α = 1. Causal only; decoding keeps one d×d state per head.
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
        super().__init__(head_dim=head_dim, num_heads=num_heads, chunk=chunk, scale=scale, seed=seed)
        generator = torch.Generator().manual_seed(seed + 1)
        self.log_rate = nn.Parameter(torch.empty(num_heads).uniform_(1.0, 16.0, generator=generator).log())
        self.decay_weight = nn.Parameter(torch.randn(num_heads, head_dim, generator=generator) * (0.1 / head_dim**0.5))
        log_step = torch.empty(num_heads).uniform_(math.log(1e-3), math.log(1e-1), generator=generator)
        self.decay_bias = nn.Parameter(log_step.exp().expm1().log())  # softplus⁻¹ of the initial step

    def recurrence_inputs(self, q: Tensor, k: Tensor, v: Tensor, valid: Tensor) -> RecurrenceInputs:
        x = super().recurrence_inputs(q, k, v, valid)
        logits = torch.einsum("bhnd,hd->bhn", k, self.decay_weight.to(k.dtype)) + self.decay_bias.to(k.dtype)[:, None]
        step = F.softplus(logits) * valid[:, None, :].to(k.dtype)  # (B, H, N): 0 for a masked key
        log_gate = -self.log_rate.to(k.dtype).exp()[None, :, None] * step
        return RecurrenceInputs(q=x.q, k=x.k, v=x.v, beta=x.beta, log_gate=log_gate)
