"""Reformer LSH attention (Kitaev et al. 2020): shared query–key, angular hashing, sorted chunks.

Keys are the normalised queries (``k`` is not used: its gradient is zero). Each of ``n_hashes`` rounds hashes
every token with a random rotation into one of ``n_buckets`` buckets, sorts tokens by (bucket, position),
cuts the sorted order into chunks of ``bucket_size`` and lets each chunk attend itself and the chunk before
(cyclically). The rounds are merged by their log-sum-exps. O(n log n) time for the sort and
O(n_hashes · n · bucket_size) memory: no n×n object exists, forward or backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from attnbench.core.attention import Attention
from attnbench.core.registry import register_attention
from attnbench.variants.lra_helpers import require_positive, seeded_generator, tie_unused

DEFAULT_BUCKET_SIZE = 32  # LRA's chunk length
DEFAULT_HASHES = 2  # LRA's


@dataclass(frozen=True)
class Chunking:
    """How a sequence of ``seq_len`` tokens is hashed and chunked."""

    seq_len: int
    buckets: int  # hash buckets (1: no hashing, the sort is by position)
    chunk: int  # tokens per chunk
    chunks: int

    @property
    def window(self) -> int:
        """Keys per query: its chunk, and the one before when there is another."""
        return 2 * self.chunk if self.chunks > 1 else self.chunk

    @classmethod
    def of(cls, seq_len: int, bucket_size: int) -> Chunking:
        chunk = min(bucket_size, seq_len)
        buckets = 1 if seq_len <= bucket_size else 2 * math.ceil(seq_len / (2 * bucket_size))  # even: ±rotations
        return cls(seq_len=seq_len, buckets=buckets, chunk=chunk, chunks=math.ceil(seq_len / chunk))


@register_attention("reformer")
class ReformerAttention(Attention):
    """Reformer LSH attention: keys = normalised queries, hashed into buckets, attention within sorted chunks.

    ``n_buckets`` ≈ n / ``bucket_size`` (even; one bucket when ``bucket_size ≥ n``, which makes it softmax over
    normalised-query keys with the self rule). Rotations are drawn from ``seed`` and the bucket count, so
    repeated calls and rebuilt modules hash identically. A token attends itself only when nothing else in
    its window is attendable. Masked tokens sort after every real one (their hash is ignored), so padding
    never changes which chunk a real token lands in. Rounds are merged by their log-sum-exps; a key met in
    two rounds counts twice, as in the paper's default. Bidirectional, self-attention only.
    """

    family: ClassVar[str] = "learned"
    exact: ClassVar[bool] = False
    supports_causal: ClassVar[bool] = False
    supports_cross: ClassVar[bool] = False
    supports_decode = False

    def __init__(
        self,
        *,
        head_dim: int,
        num_heads: int,
        bucket_size: int = DEFAULT_BUCKET_SIZE,
        n_hashes: int = DEFAULT_HASHES,
        seed: int = 0,
        scale: float | None = None,
    ) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        require_positive("reformer", "bucket_size", bucket_size, f"use e.g. bucket_size={DEFAULT_BUCKET_SIZE}")
        require_positive("reformer", "n_hashes", n_hashes, f"use e.g. n_hashes={DEFAULT_HASHES} (hash rounds)")
        self.bucket_size = bucket_size
        self.n_hashes = n_hashes
        self.seed = seed
        self.scale = self.resolve_scale(scale)

    @classmethod
    def unsupported_reason(cls, *, device: str, backward: bool, causal: bool) -> str | None:
        if causal:
            return (
                "reformer is bidirectional only: after the bucket sort a token's chunk depends on later tokens' "
                "hashes, so no causal form keeps the past independent of the future"
            )
        return None

    # hashing ---------------------------------------------------------------------------------------------------
    def rotations(self, buckets: int, *, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``(H, n_hashes, D, buckets / 2)`` Gaussian rotations, fixed by ``seed`` and the bucket count."""
        shape = (self.num_heads, self.n_hashes, self.head_dim, buckets // 2)
        return torch.randn(shape, generator=seeded_generator(self.seed, buckets)).to(device, dtype)

    @torch.no_grad()
    def buckets(self, q: Tensor, key_mask: Tensor | None, chunking: Chunking) -> Tensor:
        """``(B, H, R, N)`` bucket of every token per round; masked tokens get ``buckets`` (sorted last)."""
        b, h, n, _ = q.shape
        if chunking.buckets == 1:
            ids = torch.zeros(b, h, self.n_hashes, n, dtype=torch.long, device=q.device)
        else:
            rotations = self.rotations(chunking.buckets, device=q.device, dtype=q.dtype)
            rotated = torch.einsum("bhnd,hrdk->bhrnk", q, rotations)
            ids = torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)  # (B, H, R, N): angular LSH
        if key_mask is not None:
            ids = ids.masked_fill(~key_mask[:, None, None, :], chunking.buckets)
        return ids

    @torch.no_grad()
    def sort_order(self, q: Tensor, key_mask: Tensor | None, chunking: Chunking) -> Tensor:
        """``(B, H, R, N)`` token index at each sorted slot: by bucket, then by position."""
        n = q.shape[-2]
        ids = self.buckets(q, key_mask, chunking)
        return torch.argsort(ids * n + torch.arange(n, device=q.device), dim=-1)

    # attention --------------------------------------------------------------------------------------------------
    @staticmethod
    def allowed_keys(real_key: Tensor, is_self: Tensor) -> Tensor:
        """The self rule: a token attends itself only when no other real key is in its window."""
        others = real_key & ~is_self
        return torch.where(others.any(dim=-1, keepdim=True), others, real_key & is_self)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        shape = self.validate(q, k, v, causal=causal, key_mask=key_mask)
        b, h, n, dv = shape.batch, shape.heads, shape.seq_q, shape.value_dim
        chunking = Chunking.of(n, self.bucket_size)
        order = self.sort_order(q, key_mask, chunking)  # (B, H, R, N)
        real = torch.ones(b, n, dtype=torch.bool, device=q.device) if key_mask is None else key_mask
        pad = chunking.chunks * chunking.chunk - n

        def sort(x: Tensor) -> Tensor:  # (B, H, N, E) → (B, H, R, C, W, E), padded slots zero
            index = order[..., None].expand(-1, -1, -1, -1, x.shape[-1])
            gathered = x[:, :, None].expand(-1, -1, self.n_hashes, -1, -1).gather(3, index)
            return rearrange(F.pad(gathered, (0, 0, 0, pad)), "b h r (c w) e -> b h r c w e", w=chunking.chunk)

        queries = sort(q)
        keys = F.normalize(queries, dim=-1)  # shared QK: the key of a token is its unit-norm query
        values = sort(v)
        position = rearrange(F.pad(order, (0, pad), value=-1), "b h r (c w) -> b h r c w", w=chunking.chunk)
        key_real = real[:, None, None, :].expand(-1, h, self.n_hashes, -1).gather(3, order)
        key_real = rearrange(F.pad(key_real, (0, pad), value=False), "b h r (c w) -> b h r c w", w=chunking.chunk)
        if chunking.chunks > 1:  # each chunk also sees the one before it (the first sees the last)

            def look_back(x: Tensor) -> Tensor:
                return torch.cat([x.roll(1, dims=3), x], dim=4)

            keys, values, key_position, key_real = (look_back(x) for x in (keys, values, position, key_real))
        else:
            key_position = position
        scores = torch.einsum("bhrcid,bhrcjd->bhrcij", queries, keys) * self.scale  # (B, H, R, C, W, 2W)
        real_key = key_real[..., None, :]  # (B, H, R, C, 1, 2W)
        is_self = position[..., :, None] == key_position[..., None, :]
        allowed = self.allowed_keys(real_key, is_self)
        has_key = allowed.any(dim=-1)  # (B, H, R, C, W)
        scores = scores.masked_fill(~allowed, -math.inf).masked_fill(~has_key[..., None], 0.0)
        lse = torch.logsumexp(scores, dim=-1)  # (B, H, R, C, W)
        weights = torch.exp(scores - lse[..., None]).masked_fill(~has_key[..., None], 0.0)
        out = torch.einsum("bhrcij,bhrcje->bhrcie", weights, values)  # (B, H, R, C, W, Dv)
        out = rearrange(out, "b h r c w e -> b h r (c w) e")[:, :, :, :n]
        lse = rearrange(lse.masked_fill(~has_key, -math.inf), "b h r c w -> b h r (c w)")[..., :n]
        # back to token order: slot s holds token order[s], so token t sits at slot inverse[t]
        inverse = torch.argsort(order, dim=-1)
        out = out.gather(3, inverse[..., None].expand(-1, -1, -1, -1, dv))  # (B, H, R, N, Dv)
        lse = lse.gather(3, inverse)  # (B, H, R, N)
        return tie_unused(merge_rounds(out, lse), k)

    def reference(self, q: Tensor, v: Tensor, *, key_mask: Tensor | None = None) -> Tensor:
        """The same hashes, with every round's pattern as a dense n×n mask, in float64. Small n only."""
        b, n = q.shape[0], q.shape[-2]
        chunking = Chunking.of(n, self.bucket_size)
        order = self.sort_order(q, key_mask, chunking)
        slot = torch.argsort(order, dim=-1)  # (B, H, R, N): where each token sits in the sorted order
        chunk = slot // chunking.chunk
        same = chunk[..., :, None] == chunk[..., None, :]
        before = (chunk[..., :, None] - 1) % chunking.chunks == chunk[..., None, :]
        window = same | before if chunking.chunks > 1 else same  # (B, H, R, N, N)
        real = torch.ones(b, n, dtype=torch.bool) if key_mask is None else key_mask
        eye = torch.eye(n, dtype=torch.bool)
        candidates = window & real[:, None, None, None, :]
        others = candidates & ~eye
        allowed = torch.where(others.any(-1, keepdim=True), others, candidates & eye)
        qd = q.double()
        keys = qd / qd.norm(dim=-1, keepdim=True)
        scores = torch.einsum("bhid,bhjd->bhij", qd, keys)[:, :, None] * self.scale  # (B, H, 1, N, N)
        scores = scores.masked_fill(~allowed, -math.inf)
        has_key = allowed.any(-1)
        lse = torch.logsumexp(scores.masked_fill(~has_key[..., None], 0.0), dim=-1).masked_fill(~has_key, -math.inf)
        weights = torch.softmax(scores.masked_fill(~has_key[..., None], 0.0), dim=-1) * has_key[..., None]
        out = torch.einsum("bhrij,bhje->bhrie", weights, v.double())
        return merge_rounds(out, lse)

    # cost models ---------------------------------------------------------------------------------------------
    def flops(self, *, batch: int, seq_q: int, seq_k: int, causal: bool) -> int:
        c = Chunking.of(seq_q, self.bucket_size)
        slots = c.chunks * c.chunk
        hashing = 2 * seq_q * self.head_dim * (c.buckets // 2) if c.buckets > 1 else 0
        attention = 4 * slots * c.window * self.head_dim  # scores and weights·values, per round
        return batch * self.num_heads * self.n_hashes * (hashing + attention)

    def predicted_peak_bytes(
        self, *, batch: int, seq_q: int, seq_k: int, causal: bool, backward: bool, element_size: int
    ) -> int:
        """Per round: sorted queries, keys and values with their look-back copies (n·d), scores, masks and
        weights (n·window), the round outputs; backward adds the gradients of the sorted tensors and scores."""
        c = Chunking.of(seq_q, self.bucket_size)
        slots, d = c.chunks * c.chunk, self.head_dim
        per_round_tokens = slots * d * (3 + 2 * (c.chunks > 1)) + 2 * seq_q * d  # sorted, looked back, unsorted
        per_round_pairs = slots * c.window  # scores / weights, in the compute dtype; masks are bytes
        index = 8 * 4 * seq_q  # int64 orders, slots and positions
        forward = element_size * (per_round_tokens + 3 * per_round_pairs) + 4 * per_round_pairs + index
        if not backward:
            return batch * self.num_heads * self.n_hashes * forward
        backward_extra = element_size * (per_round_tokens + 3 * per_round_pairs) + element_size * 3 * seq_q * d
        return batch * self.num_heads * self.n_hashes * (forward + backward_extra)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, bucket_size={self.bucket_size}, n_hashes={self.n_hashes}, scale={self.scale:.4g}"
        )


def merge_rounds(out: Tensor, lse: Tensor) -> Tensor:
    """``(B, H, R, N, E)`` round outputs and ``(B, H, R, N)`` log-sum-exps (−inf: no key) → ``(B, H, N, E)``.

    Each round is weighted by its share of the total exp-mass; a token no round gave a key gets zeros.
    """
    has_key = torch.isfinite(lse)
    any_round = has_key.any(dim=2, keepdim=True)
    lse = lse.masked_fill(~any_round, 0.0)  # all-−inf tokens: finite, then zeroed (no NaN in the gradient)
    share = torch.softmax(lse, dim=2).masked_fill(~any_round, 0.0)  # (B, H, R, N)
    return torch.einsum("bhrn,bhrne->bhne", share, out)
