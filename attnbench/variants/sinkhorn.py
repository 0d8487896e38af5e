"""Sparse Sinkhorn attention (Tay et al. 2020): each query block attends its own block and a softly sorted one.

The sequence is cut into blocks of ``block_size``. A learned block-sorting matrix — block affinities made doubly
stochastic by Sinkhorn iterations at a temperature — mixes the key and value blocks into one "sorted" block per
query block. Each query then attends the 2·block keys of its own block and its sorted block. O(n·block +
(n/block)²·block) time and memory, forward and backward; bidirectional and self-attention only.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from attnbench.core.attention import Attention
from attnbench.core.registry import register_attention
from attnbench.variants.lra_helpers import (
    masked_logsumexp,
    masked_softmax,
    require_positive,
    require_positive_float,
    seeded_generator,
)

DEFAULT_BLOCK = 64
DEFAULT_TEMPERATURE = 0.75  # the paper's best
DEFAULT_ITERATIONS = 7  # the paper's best


def sinkhorn(logits: Tensor, block_real: Tensor, iterations: int) -> Tensor:
    """Doubly stochastic ``(B, H, M, M)`` matrix from log-space Sinkhorn normalisation of ``logits``.

    Only blocks with a real token (``block_real`` ``(B, M)``) take part: rows and columns of empty blocks are
    zero, and the normalisation runs on the square submatrix of the others (rows then columns, alternately).
    """
    pair = block_real[:, None, :, None] & block_real[:, None, None, :]  # (B, 1, M, M)
    log_s = logits
    for _ in range(iterations):
        log_s = log_s - masked_logsumexp(log_s, pair, dim=-1)
        log_s = log_s - masked_logsumexp(log_s, pair, dim=-2)
    return torch.exp(log_s.masked_fill(~pair, -math.inf))


@register_attention("sinkhorn")
class SinkhornAttention(Attention):
    """Sparse Sinkhorn attention: a query block attends its own block and a learned soft sort of the others.

    **Sorting.** Block summaries are means of the block's real queries and keys; the block affinity is
    (Q̄ᵢ W)·K̄ⱼ · scale with a learned per-head ``W`` (initialised to the identity: the sort starts as
    query–key block affinity). Sinkhorn normalisation of affinity / ``temperature`` gives S; with
    ``gumbel=true`` a training-mode call adds Gumbel noise first, from a generator seeded by ``seed`` (a
    rebuilt module replays the same noise; evaluation mode has none). The paper feeds the block embeddings of
    the layer input to an MLP; the attention contract only sees q, k, v, hence the bilinear form.
    **Sorted block.** Slot t of query block i holds Σⱼ Sᵢⱼ Kⱼₜ over the real keys at slot t of every block,
    divided by their total weight (a masked key is zeroed and carries no weight, so padding shrinks nothing);
    a slot no real key reaches is masked. With one block (``block_size ≥ n``) S = [1], the sorted block is
    the block itself, and the result is softmax attention. n is padded to a multiple of ``block_size``.
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
        block_size: int = DEFAULT_BLOCK,
        temperature: float = DEFAULT_TEMPERATURE,
        iterations: int = DEFAULT_ITERATIONS,
        gumbel: bool = False,
        seed: int = 0,
        scale: float | None = None,
    ) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        require_positive("sinkhorn", "block_size", block_size, f"use e.g. block_size={DEFAULT_BLOCK}")
        require_positive("sinkhorn", "iterations", iterations, f"use e.g. iterations={DEFAULT_ITERATIONS}")
        require_positive_float("sinkhorn", "temperature", temperature, f"use e.g. temperature={DEFAULT_TEMPERATURE}")
        self.block_size = block_size
        self.temperature = float(temperature)
        self.iterations = iterations
        self.gumbel = gumbel
        self.scale = self.resolve_scale(scale)
        self.sort_weight = nn.Parameter(torch.eye(head_dim).repeat(num_heads, 1, 1))  # (H, D, D)
        self._noise = seeded_generator(seed)

    @classmethod
    def unsupported_reason(cls, *, device: str, backward: bool, causal: bool) -> str | None:
        if causal:
            return "sinkhorn is bidirectional only: the sorted block mixes key blocks from anywhere in the sequence"
        return None

    def blocks(self, seq_len: int) -> tuple[int, int]:
        """(tokens per block, number of blocks)."""
        size = min(self.block_size, seq_len)
        return size, math.ceil(seq_len / size)

    def sorting_matrix(self, q: Tensor, k: Tensor, real: Tensor) -> Tensor:
        """``(B, H, M, M)`` doubly stochastic block-sorting matrix from ``(B, H, M, W, D)`` blocks of q and k."""
        weight = real.to(q.dtype)[:, None, :, :, None]  # (B, 1, M, W, 1)
        count = real.sum(-1).clamp_min(1).to(q.dtype)[:, None, :, None]  # (B, 1, M, 1)
        q_mean, k_mean = (q * weight).sum(-2) / count, (k * weight).sum(-2) / count  # (B, H, M, D)
        affinity = torch.einsum("bhid,hde,bhje->bhij", q_mean, self.sort_weight.to(q.dtype), k_mean) * self.scale
        if self.gumbel and self.training:
            uniform = torch.rand(affinity.shape, generator=self._noise).to(affinity.device, affinity.dtype)
            affinity = affinity - torch.log(-torch.log(uniform.clamp(1e-9, 1 - 1e-9)))
        return sinkhorn(affinity / self.temperature, real.any(-1), self.iterations)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        shape = self.validate(q, k, v, causal=causal, key_mask=key_mask)
        n = shape.seq_q
        size, count = self.blocks(n)
        pad = size * count - n
        real = torch.ones(shape.batch, n, dtype=torch.bool, device=q.device) if key_mask is None else key_mask
        real = rearrange(F.pad(real, (0, pad), value=False), "b (m w) -> b m w", w=size)  # (B, M, W)

        def blocked(x: Tensor) -> Tensor:  # (B, H, N, E) → (B, H, M, W, E), zero-padded
            return rearrange(F.pad(x, (0, 0, 0, pad)), "b h (m w) e -> b h m w e", w=size)

        queries = blocked(q)  # a padded token's query still gets an output (dropped or ignored by the caller)
        keys, values = (blocked(x).masked_fill(~real[:, None, :, :, None], 0.0) for x in (k, v))
        s = self.sorting_matrix(queries, keys, real)  # (B, H, M, M)
        weight = torch.einsum("bhij,bjt->bhit", s, real.to(s.dtype))  # (B, H, M, W): real weight per slot
        sorted_real = weight > 0
        divisor = torch.where(sorted_real, weight, 1.0)[..., None]
        sorted_keys = torch.einsum("bhij,bhjte->bhite", s, keys) / divisor
        sorted_values = torch.einsum("bhij,bhjte->bhite", s, values) / divisor
        window_keys = torch.cat([keys, sorted_keys], dim=3)  # (B, H, M, 2W, D)
        window_values = torch.cat([values, sorted_values], dim=3)
        window_real = torch.cat([real[:, None].expand_as(sorted_real), sorted_real], dim=3)  # (B, H, M, 2W)
        scores = torch.einsum("bhmid,bhmjd->bhmij", queries, window_keys) * self.scale  # (B, H, M, W, 2W)
        weights = masked_softmax(scores, window_real[:, :, :, None, :])
        out = torch.einsum("bhmij,bhmje->bhmie", weights, window_values)
        return rearrange(out, "b h m w e -> b h (m w) e")[:, :, :n]

    def reference(self, q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None) -> Tensor:
        """Dense float64 form: every query's 2·block keys built token by token from S. Small n only."""
        b, h, n, d = q.shape
        size, count = self.blocks(n)
        real = torch.ones(b, n, dtype=torch.bool) if key_mask is None else key_mask
        padded = torch.zeros(b, size * count, dtype=torch.bool)
        padded[:, :n] = real
        qd, kd, vd = (torch.zeros(b, h, size * count, x.shape[-1], dtype=torch.float64) for x in (q, k, v))
        qd[:, :, :n] = q.double()
        for dst, src in ((kd, k), (vd, v)):
            dst[:, :, :n] = src.double() * real[:, None, :, None]
        block_of = torch.arange(size * count) // size
        blocks_real = padded.view(b, count, size)
        s = self.sorting_matrix(qd.view(b, h, count, size, d), kd.view(b, h, count, size, d), blocks_real)
        out = torch.zeros(b, h, n, v.shape[-1], dtype=torch.float64)
        for bi in range(b):
            for hi in range(h):
                for i in range(n):
                    own = [j for j in range(size * count) if block_of[j] == block_of[i] and padded[bi, j]]
                    keys = [kd[bi, hi, j] for j in own]
                    values = [vd[bi, hi, j] for j in own]
                    for t in range(size):
                        mass = sum(s[bi, hi, block_of[i], m] * padded[bi, m * size + t] for m in range(count))
                        if mass > 0:
                            mix = [s[bi, hi, block_of[i], m] * padded[bi, m * size + t] for m in range(count)]
                            keys.append(sum(w * kd[bi, hi, m * size + t] for m, w in enumerate(mix)) / mass)
                            values.append(sum(w * vd[bi, hi, m * size + t] for m, w in enumerate(mix)) / mass)
                    if keys:
                        scores = torch.stack(keys) @ qd[bi, hi, i] * self.scale
                        out[bi, hi, i] = torch.softmax(scores, 0) @ torch.stack(values)
        return out

    def flops(self, *, batch: int, seq_q: int, seq_k: int, causal: bool) -> int:
        size, count = self.blocks(seq_q)
        d, slots = self.head_dim, size * count
        sorting = 2 * count * d * d + 2 * count * count * d  # Q̄W, then (Q̄W)K̄ᵀ
        mixing = 2 * count * count * size * (2 * d + 1)  # S times the key blocks, value blocks and real counts
        attention = 4 * slots * 2 * size * d  # scores and weights·values over 2·block keys
        return batch * self.num_heads * (sorting + mixing + attention)

    def predicted_peak_bytes(
        self, *, batch: int, seq_q: int, seq_k: int, causal: bool, backward: bool, element_size: int
    ) -> int:
        """Blocked copies of q, k, v, the sorted and windowed keys and values (n·d each), scores and weights
        (n·2·block), S and its Sinkhorn iterates (M²); backward adds the gradients of all of them."""
        size, count = self.blocks(seq_q)
        slots, d = size * count, self.head_dim
        tokens = slots * d * 8 + seq_q * d  # blocked q, k, v; sorted k, v; windowed k, v (2×); the output
        pairs = slots * 2 * size * 3  # scores, filled scores, weights
        sinkhorn_iterates = count * count * (4 * self.iterations + 4)
        elements = tokens + pairs + sinkhorn_iterates
        if backward:
            elements = 2 * elements + 3 * seq_q * d
        return batch * self.num_heads * elements * element_size

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, block_size={self.block_size}, temperature={self.temperature:g}, "
            f"iterations={self.iterations}, gumbel={self.gumbel}, scale={self.scale:.4g}"
        )
