"""The attention contract every variant implements, and the mask helpers they share.

Tensors are ``(batch, heads, seq, head_dim)``, the layout of ``scaled_dot_product_attention``.
``key_mask`` is ``(batch, seq_k)`` bool with True = a real key that may be attended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class AttentionShape:
    """The sizes of one validated attention call."""

    batch: int
    heads: int
    seq_q: int
    seq_k: int
    head_dim: int
    value_dim: int


class Attention(nn.Module):
    """Base class of every attention backend.

    Subclasses set the class attributes, take their options as keyword-only constructor arguments with
    defaults and type hints (the registry reads them), and implement ``forward`` and ``flops``.
    """

    family: ClassVar[str] = "custom"
    exact: ClassVar[bool] = False
    supports_causal: ClassVar[bool] = True
    supports_cross: ClassVar[bool] = True
    # backward FLOPs as a multiple of forward's: 2 for plain autograd (DESIGN.md: fwd+bwd = 3 × fwd); a
    # variant that recomputes its forward in backward says 3
    backward_flops_factor: ClassVar[float] = 2.0

    spec: str | None = None  # canonical spec, set by create_attention

    def __init__(self, *, head_dim: int, num_heads: int, **options: object) -> None:
        super().__init__()
        if options:
            names = ", ".join(sorted(options))
            raise TypeError(f"{type(self).__name__} got unexpected options: {names}")
        for label, value in (("head_dim", head_dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive int, got {value!r}")
        self.head_dim = head_dim
        self.num_heads = num_heads

    @property
    def default_scale(self) -> float:
        return self.head_dim**-0.5

    def resolve_scale(self, scale: float | None) -> float:
        """A ``scale`` option: None → head_dim ** -0.5; anything but a finite positive number is refused."""
        if scale is None:
            return self.default_scale
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite positive number or none (head_dim ** -0.5), got {scale}")
        return scale

    @classmethod
    def unsupported_reason(cls, *, device: str, backward: bool, causal: bool) -> str | None:
        """Why this variant cannot run this way on ``device`` ("cpu", "cuda", ...); None when it can.

        Asked before anything is built, so a sweep can leave a variant out instead of failing its cells.
        """
        if causal and not cls.supports_causal:
            return f"{cls.__name__} has no causal mode (supports_causal=False)"
        return None

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def flops(self, *, batch: int, seq_q: int, seq_k: int, causal: bool) -> int:
        """Analytic forward FLOPs: matrix multiplies only, 2 per multiply-add."""
        raise NotImplementedError(f"{type(self).__name__} does not report flops()")

    def pattern_mask(self, seq_q: int, seq_k: int, *, causal: bool) -> Tensor | None:
        """Which keys each query may attend, as bool ``(heads or 1, seq_q, seq_k)``; None = all keys.

        For tests and pictures at small n only.
        """
        return None

    def predicted_peak_bytes(
        self, *, batch: int, seq_q: int, seq_k: int, causal: bool, backward: bool, element_size: int
    ) -> int | None:
        """Analytic model of the extra bytes one call allocates beyond q, k, v; None = unknown."""
        return None

    def validate(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool, key_mask: Tensor | None) -> AttentionShape:
        """Check one call against the contract; raise ValueError naming what was passed and what is allowed."""
        name = type(self).__name__
        shape = validate_attention_inputs(
            q,
            k,
            v,
            causal=causal,
            key_mask=key_mask,
            supports_causal=self.supports_causal,
            supports_cross=self.supports_cross,
            name=name,
        )
        if (shape.heads, shape.head_dim) != (self.num_heads, self.head_dim):
            raise ValueError(
                f"{name}: q has shape {tuple(q.shape)}, i.e. {shape.heads} heads of head_dim {shape.head_dim}; "
                f"this module was built for num_heads={self.num_heads}, head_dim={self.head_dim}"
            )
        return shape

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, num_heads={self.num_heads}"


def validate_attention_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool,
    key_mask: Tensor | None,
    supports_causal: bool = True,
    supports_cross: bool = True,
    name: str = "attention",
) -> AttentionShape:
    for label, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(
                f"{name}: {label} has shape {tuple(t.shape)} ({t.dim()} dims); "
                "expected 4 dims (batch, heads, seq, head_dim)"
            )
    b, h, nq, d = q.shape
    if k.shape[:2] != (b, h) or v.shape[:2] != (b, h):
        raise ValueError(
            f"{name}: batch and heads must match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if k.shape[3] != d:
        raise ValueError(f"{name}: q and k head_dim differ: q {tuple(q.shape)}, k {tuple(k.shape)}")
    nk = k.shape[2]
    if v.shape[2] != nk:
        raise ValueError(f"{name}: k and v seq lengths differ: k {tuple(k.shape)}, v {tuple(v.shape)}")
    if causal and not supports_causal:
        raise ValueError(f"{name} does not support causal=True; use a variant whose supports_causal is True")
    if causal and nq != nk:
        raise ValueError(f"{name}: causal=True needs self-attention (seq_q == seq_k), got seq_q={nq}, seq_k={nk}")
    if nq != nk and not supports_cross:
        raise ValueError(
            f"{name} is a self-attention pattern (supports_cross=False) and needs seq_q == seq_k, "
            f"got seq_q={nq}, seq_k={nk}"
        )
    if key_mask is not None:
        if key_mask.dtype != torch.bool:
            raise ValueError(f"{name}: key_mask must be a bool tensor (True = attend), got {key_mask.dtype}")
        if tuple(key_mask.shape) != (b, nk):
            raise ValueError(f"{name}: key_mask has shape {tuple(key_mask.shape)}; expected (batch, seq_k) = {(b, nk)}")
    return AttentionShape(batch=b, heads=h, seq_q=nq, seq_k=nk, head_dim=d, value_dim=v.shape[3])


def causal_pair_count(seq_q: int, seq_k: int, *, causal: bool) -> int:
    """Number of (query, key) pairs a dense variant computes."""
    if not causal:
        return seq_q * seq_k
    return seq_q * (seq_q + 1) // 2


def causal_allowed(seq: int, *, device: torch.device | str | None = None) -> Tensor:
    """Bool ``(seq, seq)``: query i may see key j iff j <= i. Small n only (tests, references)."""
    return torch.ones(seq, seq, dtype=torch.bool, device=device).tril()


def rows_with_keys(key_mask: Tensor, seq_q: int, *, causal: bool) -> Tensor:
    """Bool ``(batch, seq_q)``: whether each query has at least one attendable key.

    O(batch·seq) memory: with ``causal`` a query i has a key iff the first real key is at or before i.
    """
    if not causal:
        return key_mask.any(dim=-1, keepdim=True).expand(-1, seq_q)
    positions = torch.arange(key_mask.shape[-1], device=key_mask.device)
    big = torch.full_like(positions, key_mask.shape[-1])
    first_real = torch.where(key_mask, positions, big).amin(dim=-1, keepdim=True)  # (B, 1)
    return positions[:seq_q].unsqueeze(0) >= first_real
