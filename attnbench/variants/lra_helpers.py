"""Pieces the Long Range Arena families (linformer, nystrom, reformer, sinkhorn, synthesizer) share.

Masked softmax and log-sum-exp that give zeros (not NaN) for rows with nothing to attend, forward and
backward; seeded parameter initialisation that never touches the global RNG; option checks; and a tie
that gives inputs a design ignores (Reformer's keys, the Synthesizer's queries and keys) zero gradients.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def require_positive(variant: str, name: str, value: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{variant}: {name} must be a positive int, got {value!r}; {fix}")


def require_positive_float(variant: str, name: str, value: float, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{variant}: {name} must be a finite positive number, got {value!r}; {fix}")


def seeded_generator(seed: int, *salt: int) -> torch.Generator:
    """A CPU generator for ``seed`` and a salt (e.g. a bucket count): nothing here draws from the global RNG."""
    mixed = seed
    for s in salt:
        mixed = (mixed * 1_000_003 + s) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def uniform_init(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> Tensor:
    """U(−1/√fan_in, 1/√fan_in), the default of ``nn.Linear``, drawn from ``generator``."""
    bound = fan_in**-0.5
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def masked_softmax(scores: Tensor, allowed: Tensor) -> Tensor:
    """Softmax over the last dim where ``allowed`` (broadcastable bool); rows with nothing allowed give zeros.

    The empty rows are filled with finite scores before the softmax, so neither it nor its gradient is NaN.
    """
    has_any = allowed.any(dim=-1, keepdim=True)
    scores = scores.masked_fill(~allowed, -math.inf).masked_fill(~has_any, 0.0)
    return torch.softmax(scores, dim=-1).masked_fill(~has_any, 0.0)


def masked_logsumexp(x: Tensor, allowed: Tensor, dim: int) -> Tensor:
    """Log-sum-exp over ``dim`` of the allowed entries (keepdim); 0 where none is allowed, with a finite gradient."""
    has_any = allowed.any(dim=dim, keepdim=True)
    x = x.masked_fill(~allowed, -math.inf).masked_fill(~has_any, 0.0)
    return torch.logsumexp(x, dim=dim, keepdim=True).masked_fill(~has_any, 0.0)


class _ZeroGradientTie(torch.autograd.Function):
    """Identity on ``out``; the tied inputs get zero gradients (the output does not depend on them)."""

    @staticmethod
    def forward(ctx: Any, out: Tensor, *unused: Tensor) -> Tensor:
        ctx.shapes = [(u.shape, u.dtype, u.device) for u in unused]
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, ...]:
        return (grad, *(torch.zeros(s, dtype=t, device=d) for s, t, d in ctx.shapes))


def tie_unused(out: Tensor, *unused: Tensor) -> Tensor:
    """Give inputs a variant ignores by design a zero gradient instead of ``None``.

    The attention contract differentiates every variant with respect to q, k and v; an input that receives no
    gradient at all reads as a wiring bug (the kit's ``finite`` check says so). The true derivative is 0.
    """
    if not torch.is_grad_enabled() or not any(u.requires_grad for u in unused):
        return out
    return _ZeroGradientTie.apply(out, *unused)
