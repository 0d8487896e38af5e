"""Linformer (Wang et al. 2020): keys and values projected along the sequence to ``k`` rows, then softmax.

softmax(Q (E K)ᵀ · scale) (F V) with learned E, F of shape ``k × n``: O(n·k) time and memory, forward and
backward. Bidirectional only: every projected row mixes the whole sequence, so a causal form does not exist.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from attnbench.core.attention import Attention
from attnbench.core.registry import register_attention
from attnbench.variants.lra_helpers import require_positive, seeded_generator

DEFAULT_PROJECTED = 256  # LRA's and the paper's k
DEFAULT_MAX_LEN = 16384  # LRA's longest task (Path-X)


@register_attention("linformer")
class LinformerAttention(Attention):
    """Linformer: softmax attention over ``k`` learned projections of the keys and values along the sequence.

    **Length.** E and F are built for ``max_len`` positions and sliced to the first ``seq_k`` columns, so one
    module serves every length up to ``max_len`` (a longer call is refused, naming the option to raise).
    The parameters are drawn N(0, 1) from ``seed`` and a call over n keys uses their first n columns times
    n^-1/2 (``nn.Linear``'s fan-in scaling, for the length actually used): a projected key or value keeps the
    scale of one token whatever n is, instead of growing as √n.
    **Sharing.** ``share_heads`` (default, the paper's headwise sharing) uses one E, F for all heads;
    ``share_kv`` uses E for values too (key–value sharing). **Padding.** Masked keys and values are zeroed
    before the projection: each projected row then mixes only real tokens, but the softmax still normalises
    over all ``k`` projected rows, so heavy padding shrinks the projected keys towards 0 and flattens the
    weights instead of removing rows. A batch item with no real key projects to zeros and returns zeros.
    """

    family: ClassVar[str] = "lowrank"
    exact: ClassVar[bool] = False
    supports_causal: ClassVar[bool] = False
    supports_cross: ClassVar[bool] = True
    supports_decode = False

    def __init__(
        self,
        *,
        head_dim: int,
        num_heads: int,
        k: int = DEFAULT_PROJECTED,
        max_len: int = DEFAULT_MAX_LEN,
        share_heads: bool = True,
        share_kv: bool = False,
        seed: int = 0,
        scale: float | None = None,
    ) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        require_positive("linformer", "k", k, f"use e.g. k={DEFAULT_PROJECTED} (projected length)")
        require_positive("linformer", "max_len", max_len, f"use e.g. max_len={DEFAULT_MAX_LEN} (longest seq_k)")
        self.projected = k
        self.max_len = max_len
        self.share_heads = share_heads
        self.share_kv = share_kv
        self.scale = self.resolve_scale(scale)
        generator = seeded_generator(seed)
        shape = (1 if share_heads else num_heads, k, max_len)
        self.key_projection = nn.Parameter(torch.randn(shape, generator=generator))
        self.value_projection = None if share_kv else nn.Parameter(torch.randn(shape, generator=generator))

    @classmethod
    def unsupported_reason(cls, *, device: str, backward: bool, causal: bool) -> str | None:
        if causal:
            return "linformer is bidirectional only: each projected key mixes every position, future ones included"
        return None

    def projections(self, seq_k: int) -> tuple[Tensor, Tensor]:
        """E and F for ``seq_k`` keys, ``(heads or 1, k, seq_k)``: the first ``seq_k`` columns times seq_k^-1/2."""
        if seq_k > self.max_len:
            raise ValueError(
                f"linformer: seq_k={seq_k} exceeds max_len={self.max_len}; build it with "
                f"linformer:max_len={seq_k} (or more)"
            )
        e = self.key_projection[..., :seq_k] * seq_k**-0.5
        f = e if self.value_projection is None else self.value_projection[..., :seq_k] * seq_k**-0.5
        return e, f

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        shape = self.validate(q, k, v, causal=causal, key_mask=key_mask)
        e, f = (p.to(q.dtype) for p in self.projections(shape.seq_k))
        if key_mask is not None:
            real = key_mask[:, None, :, None]  # (B, 1, Nk, 1)
            k, v = k.masked_fill(~real, 0.0), v.masked_fill(~real, 0.0)
        keys = torch.matmul(e, k)  # (B, H, k, D)
        values = torch.matmul(f, v)  # (B, H, k, Dv)
        weights = torch.softmax(torch.matmul(q, keys.transpose(-1, -2)) * self.scale, dim=-1)  # (B, H, Nq, k)
        out = torch.matmul(weights, values)  # (B, H, Nq, Dv)
        if key_mask is not None:
            out = out.masked_fill(~key_mask.any(dim=-1)[:, None, None, None], 0.0)
        return out

    def reference(self, q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None) -> Tensor:
        """The same maths written with explicit sums over positions, in float64. Small n only."""
        self.validate(q, k, v, causal=False, key_mask=key_mask)
        e, f = (p.double() for p in self.projections(k.shape[-2]))
        q, k, v = q.double(), k.double(), v.double()
        real = torch.ones(k.shape[0], k.shape[-2], dtype=torch.float64) if key_mask is None else key_mask.double()
        keys = torch.einsum("hpn,bn,bhnd->bhpd", e, real, k)
        values = torch.einsum("hpn,bn,bhnd->bhpd", f, real, v)
        weights = torch.softmax(torch.einsum("bhid,bhpd->bhip", q, keys) * self.scale, dim=-1)
        out = torch.einsum("bhip,bhpd->bhid", weights, values)
        return out * (real.sum(-1) > 0)[:, None, None, None]

    def flops(self, *, batch: int, seq_q: int, seq_k: int, causal: bool) -> int:
        d, p = self.head_dim, self.projected
        # E·K and F·V along the sequence, then Q(EK)ᵀ and the weights times FV
        return batch * self.num_heads * (4 * p * seq_k * d + 4 * seq_q * p * d)

    def predicted_peak_bytes(
        self, *, batch: int, seq_q: int, seq_k: int, causal: bool, backward: bool, element_size: int
    ) -> int:
        """Projected keys/values (k·d), scores and weights (n·k), the output; backward adds their gradients,
        the per-head gradient of the sliced projections (k·n before the head sum) and the full-size gradients
        of E and F (k·max_len each: a constant, independent of n)."""
        bh, d, p = batch * self.num_heads, self.head_dim, self.projected
        projected, scores, out = 2 * p * d, seq_q * p, seq_q * d
        if not backward:
            return bh * (projected + 2 * scores + out) * element_size
        per_head = 2 * projected + 3 * scores + 2 * out + 2 * seq_k * d + 2 * p * seq_k
        parameters = (1 if self.value_projection is None else 2) * self.key_projection.numel()
        return (bh * per_head + parameters) * element_size

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, k={self.projected}, max_len={self.max_len}, share_heads={self.share_heads}, "
            f"share_kv={self.share_kv}, scale={self.scale:.4g}"
        )
