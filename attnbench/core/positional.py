"""Positional encodings: sinusoidal (the paper's formula), learned, rotary, none."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

PositionalKind = Literal["sinusoidal", "learned", "rotary", "none"]
POSITIONAL_KINDS: tuple[str, ...] = ("sinusoidal", "learned", "rotary", "none")


def sinusoidal_table(seq_len: int, d_model: int, *, base: float = 10000.0) -> Tensor:
    """PE[pos, 2i] = sin(pos / base^(2i/d)), PE[pos, 2i+1] = cos(pos / base^(2i/d)); float32 ``(seq_len, d)``."""
    position = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)  # (N, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (ceil(d/2),)
    angle = position / base ** (two_i / d_model)  # (N, ceil(d/2))
    table = torch.zeros(seq_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table; works at any length (the table grows on demand)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.register_buffer("table", sinusoidal_table(0, d_model), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        needed = offset + x.shape[1]
        if self.table.shape[0] < needed:
            grown = max(needed, 2 * self.table.shape[0])
            self.table = sinusoidal_table(grown, self.d_model).to(x.device)
        return x + self.table[offset:needed].to(x.dtype)


class LearnedPositionalEmbedding(nn.Module):
    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        needed = offset + x.shape[1]
        if needed > self.max_len:
            raise ValueError(
                f"learned positions cover {self.max_len} tokens but the input needs {needed}; "
                "raise max_len in the model config or use sinusoidal/rotary positions"
            )
        positions = torch.arange(offset, needed, device=x.device)
        return x + self.embedding(positions).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer), applied to q and k of shape ``(batch, heads, seq, head_dim)``.

    Rotates pairs (x[i], x[i + d/2]) by angle pos·base^(-2i/d) (the "rotate half" convention).
    """

    def __init__(self, head_dim: int, *, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head_dim, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    def angles(self, seq_len: int, offset: int, device: torch.device) -> tuple[Tensor, Tensor]:
        positions = torch.arange(offset, offset + seq_len, device=device, dtype=torch.float32)
        freqs = torch.outer(positions, self.inv_freq.to(device))  # (N, D/2)
        freqs = torch.cat((freqs, freqs), dim=-1)  # (N, D)
        return freqs.cos(), freqs.sin()

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        cos, sin = self.angles(x.shape[-2], offset, x.device)
        first, second = x.chunk(2, dim=-1)
        rotated = torch.cat((-second, first), dim=-1)
        return (x * cos + rotated * sin).to(x.dtype)


def additive_positional(kind: str, d_model: int, max_len: int) -> nn.Module | None:
    """The module that adds positions to token embeddings, or None for rotary/none."""
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(d_model)
    if kind == "learned":
        return LearnedPositionalEmbedding(d_model, max_len)
    if kind in ("rotary", "none"):
        return None
    raise ValueError(f"unknown positional encoding {kind!r}; choose one of {', '.join(POSITIONAL_KINDS)}")


def embedding_scale(d_model: int) -> float:
    """The paper multiplies token embeddings by sqrt(d_model) before adding positions."""
    return math.sqrt(d_model)
