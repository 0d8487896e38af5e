"""Gated linear attention (Yang et al. 2024): data-dependent decay per key dimension."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnbench.core.registry import register_attention
from attnbench.variants.recurrent.base import DEFAULT_CHUNK, GatedRecurrentAttention, RecurrenceInputs

# the largest decay per token, as −log α: bounds exp(±L/2·MAX_LOG_DECAY) in the chunked form (see ``gated``)
MAX_LOG_DECAY = 1.0
MAX_CHUNK = 128  # exp(64) is far inside fp32; beyond it the factorised intra-chunk product could overflow


@register_attention("gla")
class GLAAttention(GatedRecurrentAttention):
    """GLA: ``S_t = diag(α_t) S_{t-1} + k_t v_tᵀ``, ``o_t = S_tᵀ q_t·scale``, a gate α_t ∈ (0, 1)^d per token.

    The gate comes from the key: ``log α_t = −sigmoid(k_t W_h + b_h)`` with a learned per-head ``W_h``
    (d×d) and ``b_h`` (d). GLA uses ``logsigmoid(·)/16``, unbounded below; bounding the decay per token at
    e⁻¹ keeps the chunked form's factorised exponentials finite (``chunk`` ≤ 128), and still lets a
    dimension forget within a few tokens. ``b`` starts spread over −6…−1, so dimensions begin with memory
    from about 400 down to 4 tokens. Causal only; decoding keeps one d×d state per head.
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
        if chunk > MAX_CHUNK:
            raise ValueError(f"gla: chunk must be <= {MAX_CHUNK} (the gates' range in fp32), got {chunk}")
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(num_heads, head_dim, head_dim, generator=generator) * (0.1 / head_dim**0.5)
        self.gate_weight = nn.Parameter(weight)
        self.gate_bias = nn.Parameter(torch.linspace(-6.0, -1.0, head_dim).repeat(num_heads, 1))  # (H, d)

    def recurrence_inputs(self, q: Tensor, k: Tensor, v: Tensor, valid: Tensor) -> RecurrenceInputs:
        keep = valid[:, None, :, None].to(q.dtype)  # (B, 1, N, 1)
        logits = torch.einsum("bhnd,hde->bhne", k, self.gate_weight.to(k.dtype))  # (B, H, N, d)
        logits = logits + self.gate_bias.to(k.dtype)[None, :, None, :]
        log_gate = -MAX_LOG_DECAY * torch.sigmoid(logits) * keep
        return RecurrenceInputs(q=q * self.scale, k=k * keep, v=v, log_gate=log_gate)
