"""Full softmax attention: the SDPA fast path and the naive reference that materialises the scores."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.core.attention import Attention, KVCache, causal_pair_count, rows_with_keys
from attnbench.core.registry import register_attention


class _FullAttention(Attention):
    family: ClassVar[str] = "full"
    exact: ClassVar[bool] = True
    supports_causal: ClassVar[bool] = True
    supports_cross: ClassVar[bool] = True

    def __init__(self, *, head_dim: int, num_heads: int, scale: float | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        self.scale = self.resolve_scale(scale)

    def flops(self, *, batch: int, seq_q: int, seq_k: int, causal: bool) -> int:
        # QKᵀ and PV: two multiply-adds of head_dim per allowed (query, key) pair, per head
        return 4 * batch * self.num_heads * self.head_dim * causal_pair_count(seq_q, seq_k, causal=causal)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale:.4g}"


@register_attention("softmax")
class SoftmaxAttention(_FullAttention):
    """Exact softmax attention on ``F.scaled_dot_product_attention`` (flash/efficient kernels where available).

    The causal-only case uses ``is_causal`` and never builds a mask; a key mask alone is passed as a
    broadcastable ``(batch, 1, 1, seq_k)`` mask. Only causal *with* a key mask needs a dense mask.
    """

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        shape = self.validate(q, k, v, causal=causal, key_mask=key_mask)
        if key_mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=self.scale)
        has_key = rows_with_keys(key_mask, shape.seq_q, causal=causal)  # (B, Nq)
        if causal:
            tril = torch.ones(shape.seq_q, shape.seq_k, dtype=torch.bool, device=q.device).tril()
            allowed = tril & key_mask[:, None, None, :]  # (B, 1, Nq, Nk)
            # rows with no key would softmax over nothing (NaN); give them the causal row, zero them below
            allowed = allowed | (~has_key[:, None, :, None] & tril)
        else:
            # (B, 1, 1, Nk); a batch item with no keys at all attends everything, then is zeroed
            allowed = (key_mask | ~has_key[:, :1])[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scale)
        return out.masked_fill(~has_key[:, None, :, None], 0.0)

    # a KV cache proper: keys and values only, and one query against them per step (O(t), not the default's
    # causal forward over every token so far)
    def prefill(self, q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None) -> tuple[Tensor, KVCache]:
        out = self(q, k, v, causal=True, key_mask=key_mask)
        return out, KVCache(q=q[:, :, :0], k=k, v=v, key_mask=key_mask)

    def step(
        self, q: Tensor, k: Tensor, v: Tensor, state: KVCache, *, key_valid: Tensor | None = None
    ) -> tuple[Tensor, KVCache]:
        key_mask = state.key_mask
        if key_valid is not None or key_mask is not None:
            t, b = state.k.shape[2], q.shape[0]
            past = key_mask if key_mask is not None else torch.ones(b, t, dtype=torch.bool, device=q.device)
            now = key_valid if key_valid is not None else torch.ones(b, dtype=torch.bool, device=q.device)
            key_mask = torch.cat([past, now[:, None]], dim=1)  # (B, t + 1)
        keys, values = torch.cat([state.k, k], dim=2), torch.cat([state.v, v], dim=2)  # (B, H, t + 1, D)
        # the newest query may see every cached key: the last row of the causal forward, without its mask
        out = self(q, keys, values, causal=False, key_mask=key_mask)
        return out, KVCache(q=state.q, k=keys, v=values, key_mask=key_mask)

    def predicted_peak_bytes(
        self, *, batch: int, seq_q: int, seq_k: int, causal: bool, backward: bool, element_size: int
    ) -> int:
        bh = batch * self.num_heads
        out = bh * seq_q * self.head_dim * element_size
        lse = bh * seq_q * 4
        if not backward:
            return out + lse
        grads = bh * (seq_q + 2 * seq_k) * self.head_dim * element_size
        return 2 * out + lse + grads


@register_attention("softmax-naive")
class NaiveSoftmaxAttention(_FullAttention):
    """The textbook form: S = QKᵀ·scale, P = softmax(S) over allowed keys, O = PV. Materialises n×n scores."""

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        shape = self.validate(q, k, v, causal=causal, key_mask=key_mask)
        scores = torch.einsum("bhid,bhjd->bhij", q, k) * self.scale  # (B, H, Nq, Nk)
        allowed = torch.ones(1, 1, shape.seq_q, shape.seq_k, dtype=torch.bool, device=q.device)
        if causal:
            allowed = allowed.tril()
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, :]  # (B, 1, Nq, Nk)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        # a fully masked row softmaxes to uniform over `min`; zeroing disallowed weights makes it all-zero
        weights = torch.softmax(scores, dim=-1).masked_fill(~allowed, 0.0)
        return torch.einsum("bhij,bhjd->bhid", weights, v)

    def predicted_peak_bytes(
        self, *, batch: int, seq_q: int, seq_k: int, causal: bool, backward: bool, element_size: int
    ) -> int:
        bh = batch * self.num_heads
        scores = bh * seq_q * seq_k * element_size
        mask = batch * seq_q * seq_k  # bool allowed-mask, one byte per pair
        out = bh * seq_q * self.head_dim * element_size
        # forward keeps scores and weights alive together; backward adds their gradients
        return (4 if backward else 2) * scores + mask + out
