"""Kernel feature maps φ: linear attention replaces exp(q·k·scale) by φ(q)·φ(k).

Every map turns ``(B, H, N, head_dim)`` into :class:`Features` ``(B, H, N, size)``. A map whose features are
exponentials (FAVOR+) returns each row divided by its largest entry and, separately, the log of that entry,
so the attention can combine keys against a running reference instead of overflowing; maps with polynomial
or rectified features have no log scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Features:
    """φ(x) = ``values · exp(log_scale)``; ``log_scale`` None means zero."""

    values: Tensor  # (B, H, N, m)
    log_scale: Tensor | None = None  # (B, H, N), carries no gradient: it only moves the floating-point range


class FeatureMap(nn.Module):
    """The common interface: ``size`` features per token, the same map for queries and keys."""

    size: int
    exponential: ClassVar[bool] = False  # returns a log scale (exponential features need a running reference)

    def forward(self, x: Tensor) -> Features:
        raise NotImplementedError

    def projection_flops(self, tokens: int) -> int:
        """Matmul FLOPs per head to map ``tokens`` vectors (0 for elementwise maps)."""
        return 0

    def scratch_size(self) -> int:
        """Temporary values per token while mapping, beyond the ``size`` features (for the memory model)."""
        return 0

    def resample(self) -> None:
        """Draw fresh random features (maps without randomness ignore this)."""

    def frozen(self) -> Callable[[Tensor], Features]:
        """This map as it is now, for recomputation in backward even if :meth:`resample` runs in between.

        Parameters change only between optimizer steps, after backward, so most maps return themselves.
        """
        return self


class EluFeatureMap(FeatureMap):
    """elu(x) + 1 (Katharopoulos et al., 2020): positive, so every normaliser is positive."""

    def __init__(self, *, head_dim: int) -> None:
        super().__init__()
        self.size = head_dim

    def forward(self, x: Tensor) -> Features:
        return Features(F.elu(x).add_(1))  # in place: elu's backward reads its input


class ReluFeatureMap(FeatureMap):
    """relu(x): a query whose features are all zero attends to nothing and returns zeros."""

    def __init__(self, *, head_dim: int) -> None:
        super().__init__()
        self.size = head_dim

    def forward(self, x: Tensor) -> Features:
        return Features(F.relu(x))


def orthogonal_gaussian_rows(rows: int, dim: int, generator: torch.Generator) -> Tensor:
    """``(rows, dim)``: blocks of ``dim`` mutually orthogonal directions, each with a Gaussian vector's length.

    Orthogonal blocks lower the variance of the random-feature estimate (Performer, Choromanski et al. 2021).
    """
    blocks = []
    for _ in range(math.ceil(rows / dim)):
        gaussian = torch.randn(dim, dim, generator=generator)
        basis, triangular = torch.linalg.qr(gaussian)
        # fixing the signs by R's diagonal makes the basis Haar-distributed
        blocks.append((basis * torch.sign(torch.diagonal(triangular))).T)
    directions = torch.cat(blocks)[:rows]
    lengths = torch.randn(rows, dim, generator=generator).norm(dim=-1, keepdim=True)
    return directions * lengths


class FavorFeatureMap(FeatureMap):
    """FAVOR+ positive random features: φ(x) = exp(ωᵀx' − |x'|²/2), x' = x·√scale, so E[φ(q)·φ(k)] ∝ exp(q·k·scale).

    Each row is divided by its own maximum (returned as the log scale): a query's constant cancels between
    numerator and normaliser; a key's is reconciled by the attention against a causal running maximum.
    """

    exponential: ClassVar[bool] = True
    projection: Tensor

    def __init__(self, *, head_dim: int, features: int, scale: float, seed: int) -> None:
        super().__init__()
        self.size = features
        self.head_dim = head_dim
        self.scale = scale
        self._generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", orthogonal_gaussian_rows(features, head_dim, self._generator))

    def resample(self) -> None:
        fresh = orthogonal_gaussian_rows(self.size, self.head_dim, self._generator)
        # a new tensor, not copy_: a graph from the previous call may still hold the old one for backward
        self.projection = fresh.to(self.projection)

    def forward(self, x: Tensor) -> Features:
        return favor_features(self.projection, self.scale, x)

    def frozen(self) -> Callable[[Tensor], Features]:
        return partial(favor_features, self.projection, self.scale)  # holds this draw, not the attribute

    def projection_flops(self, tokens: int) -> int:
        return 2 * tokens * self.head_dim * self.size

    def scratch_size(self) -> int:
        return self.size  # the logits beside the features

    def extra_repr(self) -> str:
        return f"features={self.size}, scale={self.scale:.4g}"


def favor_features(projection: Tensor, scale: float, x: Tensor) -> Features:
    """FAVOR+ features of ``x`` ``(B, H, N, d)`` for random rows ``projection`` ``(m, d)``, each row over its max."""
    x = x * scale**0.5
    logits = x @ projection.to(x.dtype).T  # (B, H, N, m)
    # in place: matmul's backward needs its inputs, not its output, and this saves two n·m buffers
    logits.sub_(x.square().sum(dim=-1, keepdim=True) / 2)
    with torch.no_grad():
        log_scale = logits.amax(dim=-1)  # (B, H, N)
    logits.sub_(log_scale.unsqueeze(-1))
    return Features(torch.exp(logits), log_scale)


class TaylorFeatureMap(FeatureMap):
    """Second-order Taylor features of exp (Based, Arora et al. 2024): φ(q)·φ(k) = 1 + t + t²/2 > 0.

    q and k are first projected per head to ``feature_dim`` dims (a learnable map, initialised so that
    t ≈ q·k·scale), and only the upper triangle of z⊗z is kept: 1 + f + f(f+1)/2 features (153 at f = 16).
    """

    pair_index: Tensor
    pair_weight: Tensor

    def __init__(self, *, head_dim: int, num_heads: int, feature_dim: int, scale: float, seed: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.feature_dim = feature_dim
        self.scale = scale
        self.size = 1 + feature_dim + feature_dim * (feature_dim + 1) // 2
        generator = torch.Generator().manual_seed(seed)
        # entries N(0, 1/f): E[(Wᵀq)·(Wᵀk)] = q·k, the Johnson–Lindenstrauss scaling
        init = torch.randn(num_heads, head_dim, feature_dim, generator=generator) / feature_dim**0.5
        self.projection = nn.Parameter(init)
        rows, cols = torch.triu_indices(feature_dim, feature_dim)
        self.register_buffer("pair_index", rows * feature_dim + cols, persistent=False)
        # t²/2 = Σ_a z_a²w_a²/2 + Σ_{a<b} z_a z_b w_a w_b: diagonal terms carry 1/√2, off-diagonal ones 1
        self.register_buffer("pair_weight", torch.where(rows == cols, 0.5**0.5, 1.0), persistent=False)

    def forward(self, x: Tensor) -> Features:
        z = torch.einsum("bhnd,hdf->bhnf", x, self.projection.to(x.dtype)) * self.scale**0.5  # (B, H, N, f)
        pairs = (z.unsqueeze(-1) * z.unsqueeze(-2)).flatten(-2)  # (B, H, N, f·f)
        quadratic = pairs[..., self.pair_index] * self.pair_weight.to(x.dtype)  # (B, H, N, f(f+1)/2)
        return Features(torch.cat([torch.ones_like(z[..., :1]), z, quadratic], dim=-1))

    def projection_flops(self, tokens: int) -> int:
        return 2 * tokens * self.head_dim * self.feature_dim

    def scratch_size(self) -> int:
        return self.feature_dim**2 + self.size  # the full z⊗z, and the weighted upper triangle before the cat

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, size={self.size}, scale={self.scale:.4g}"
