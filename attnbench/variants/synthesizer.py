"""Synthesizer (Tay et al. 2021): attention weights synthesised without any query–key product.

``dense``: a token's weights over the positions come from a two-layer MLP of its own query,
B_i = W₂ relu(W₁ qᵢ + b₁) + b₂. ``random``: a learned ``max_len × max_len`` matrix R per head, the same for
every input. The weights are softmaxed over the allowed keys and applied to the values. Quadratic by design:
the n×n weights are materialised. Causal is honest here (row i only reads its first i + 1 logits, which do
not depend on the sequence's length), so the default recurrent form of the base class applies.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from attnbench.core.attention import Attention, causal_allowed
from attnbench.core.registry import register_attention
from attnbench.variants.lra_helpers import masked_softmax, require_positive, seeded_generator, tie_unused, uniform_init

Mode = Literal["dense", "random"]
# dense keeps a d × max_len output layer (cheap); random keeps max_len² per head, hence a shorter default
DEFAULT_MAX_LEN: dict[str, int] = {"dense": 16384, "random": 1024}


@register_attention("synthesizer")
class SynthesizerAttention(Attention):
    """Synthesizer: attention weights from an MLP of the token's own query (``dense``) or a learned matrix (``random``).

    Length-tied: the weights are built for ``max_len`` positions (default 16384 for dense, 1024 for random,
    whose per-head R has max_len² entries) and sliced to the call's lengths; a longer call is refused, naming
    the option to raise. Parameters are drawn from ``seed`` (uniform ±1/√fan_in, as ``nn.Linear``). Keys are
    not used (and q neither in ``random``): their gradients are zero.
    """

    family: ClassVar[str] = "synthetic"
    exact: ClassVar[bool] = False
    supports_causal: ClassVar[bool] = True
    supports_cross: ClassVar[bool] = True

    def __init__(
        self,
        *,
        head_dim: int,
        num_heads: int,
        mode: Mode = "dense",
        max_len: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        if mode not in DEFAULT_MAX_LEN:
            raise ValueError(f"synthesizer: mode must be 'dense' or 'random', got {mode!r}")
        max_len = DEFAULT_MAX_LEN[mode] if max_len is None else max_len
        require_positive("synthesizer", "max_len", max_len, f"use e.g. max_len={DEFAULT_MAX_LEN[mode]}")
        self.mode = mode
        self.max_len = max_len
        g = seeded_generator(seed)
        h, d = num_heads, head_dim
        if mode == "dense":
            self.hidden_weight = nn.Parameter(uniform_init((h, d, d), d, g))
            self.hidden_bias = nn.Parameter(uniform_init((h, 1, d), d, g))
            self.position_weight = nn.Parameter(uniform_init((h, d, max_len), d, g))
            self.position_bias = nn.Parameter(uniform_init((h, 1, max_len), d, g))
        else:
            self.random_logits = nn.Parameter(uniform_init((h, max_len, max_len), 1, g))  # U(−1, 1) logits

    def logits(self, q: Tensor, seq_k: int) -> Tensor:
        """``(B or 1, H, Nq, Nk)`` synthesised attention logits."""
        longest = max(q.shape[-2], seq_k)
        if longest > self.max_len:
            raise ValueError(
                f"synthesizer: sequence length {longest} exceeds max_len={self.max_len}; build it with "
                f"synthesizer:mode={self.mode},max_len={longest} (or more)"
            )
        if self.mode == "random":
            return self.random_logits[None, :, : q.shape[-2], :seq_k].to(q.dtype)
        hidden = torch.relu(q @ self.hidden_weight.to(q.dtype) + self.hidden_bias.to(q.dtype))  # (B, H, Nq, D)
        weight, bias = self.position_weight[..., :seq_k], self.position_bias[..., :seq_k]
        return hidden @ weight.to(q.dtype) + bias.to(q.dtype)  # (B, H, Nq, Nk)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        shape = self.validate(q, k, v, causal=causal, key_mask=key_mask)
        allowed = torch.ones(1, 1, 1, shape.seq_k, dtype=torch.bool, device=q.device)
        if causal:
            allowed = causal_allowed(shape.seq_q, device=q.device)[None, None]  # (1, 1, N, N)
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, :]
        weights = masked_softmax(self.logits(q, shape.seq_k), allowed)  # (B, H, Nq, Nk)
        out = weights @ v
        return tie_unused(out, k) if self.mode == "dense" else tie_unused(out, q, k)

    def flops(self, *, batch: int, seq_q: int, seq_k: int, causal: bool) -> int:
        d = self.head_dim
        synthesis = 2 * seq_q * d * d + 2 * seq_q * d * seq_k if self.mode == "dense" else 0
        # every logit is synthesised and every weight multiplies a value, causal or not: the masked half is computed
        return batch * self.num_heads * (synthesis + 2 * seq_q * seq_k * d)

    def predicted_peak_bytes(
        self, *, batch: int, seq_q: int, seq_k: int, causal: bool, backward: bool, element_size: int
    ) -> int:
        """Logits, filled logits and weights (n² each), the allowed mask, the output; backward adds the weight
        and logit gradients and, for ``random``, the full max_len² gradient of R."""
        bh, d = batch * self.num_heads, self.head_dim
        pairs = seq_q * seq_k
        mask = batch * pairs if causal else batch * seq_k
        hidden = 2 * seq_q * d if self.mode == "dense" else 0
        if not backward:
            return (bh * (3 * pairs + seq_q * d + hidden)) * element_size + mask
        parameters = sum(p.numel() for p in self.parameters())
        return (bh * (5 * pairs + 3 * seq_q * d + 2 * seq_k * d + 2 * hidden) + parameters) * element_size + mask

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode}, max_len={self.max_len}"
