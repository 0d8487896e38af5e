"""Reshapes shared by the chunked recurrences."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor


def to_chunks(x: Tensor, size: int) -> Tensor:
    return rearrange(x, "b h (g l) ... -> b h g l ...", l=size)  # (B, H, G, L, …)


def from_chunks(x: Tensor) -> Tensor:
    return rearrange(x, "b h g l e -> b h (g l) e")  # (B, H, N, e)


def strictly_future(size: int, device: torch.device) -> Tensor:
    return torch.ones(size, size, dtype=torch.bool, device=device).triu(1)  # (L, L): key j after query i
