"""FlexAttention backend for the sliding window: ``flex-window``, registered only where torch has FlexAttention.

The window becomes a ``BlockMask`` built straight from block indices (never from an n×n mask): for each query
block, the key blocks its window touches, the fully covered ones marked *full* so the compiled kernel skips
their mask. ``flex_attention`` runs under ``torch.compile`` (one compile per shape; the first call pays it).

On CPU, FlexAttention is forward-only in the torch versions this was written against: its backward raises.
This backend says so up front with a ``NotImplementedError`` whenever a gradient is needed on CPU; use
``window`` (the block-sparse engine: same pattern, exact, with backward) to train there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from attnbench.core.attention import Attention
from attnbench.core.registry import register_attention
from attnbench.core.window_cache import RingState, ring_prefill, ring_step

try:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
except ImportError:  # torch without FlexAttention: the variant simply does not register
    BlockMask = flex_attention = None  # type: ignore[assignment,misc]


@functools.cache
def _compiled_flex() -> Callable[..., Tensor]:
    return torch.compile(flex_attention, dynamic=False)


@dataclass(frozen=True)
class WindowBlocks:
    """Key blocks of each query block for a window: ``partial`` need the mask, ``full`` are wholly inside."""

    partial: list[list[int]]
    full: list[list[int]]

    @classmethod
    def of(cls, seq_len: int, radius: int, block: int, *, causal: bool, allow_full: bool) -> WindowBlocks:
        num_blocks = -(-seq_len // block)
        ahead = 0 if causal else radius  # keys after the query the window reaches
        partial, full = [], []
        for i in range(num_blocks):
            first_query, last_query = i * block, min(seq_len, (i + 1) * block) - 1
            lo = max(0, first_query - radius) // block
            hi = min(seq_len - 1, last_query + ahead) // block
            row_partial, row_full = [], []
            for j in range(lo, hi + 1):
                first_key, last_key = j * block, min(seq_len, (j + 1) * block) - 1
                inside = last_key - first_query <= ahead and last_query - first_key <= radius
                (row_full if allow_full and inside else row_partial).append(j)
            partial.append(row_partial)
            full.append(row_full)
        return cls(partial, full)

    @staticmethod
    def _tensors(rows: list[list[int]], device: torch.device) -> tuple[Tensor, Tensor]:
        count = torch.tensor([len(r) for r in rows], dtype=torch.int32)
        index = torch.zeros(len(rows), len(rows), dtype=torch.int32)
        for i, r in enumerate(rows):
            index[i, : len(r)] = torch.tensor(r, dtype=torch.int32)
        return count[None, None].to(device), index[None, None].to(device)  # (1, 1, nb), (1, 1, nb, nb)

    def block_mask(self, mask_mod: Callable[..., Tensor], *, seq_len: int, block: int, device: torch.device) -> Any:
        count, index = self._tensors(self.partial, device)
        full_count, full_index = self._tensors(self.full, device)
        return BlockMask.from_kv_blocks(
            count,
            index,
            full_count,
            full_index,
            BLOCK_SIZE=block,
            mask_mod=mask_mod,
            seq_lengths=(seq_len, seq_len),
            compute_q_blocks=device.type != "cpu",  # the transposed indices serve only the backward
        )


@functools.lru_cache(maxsize=32)
def window_blocks(seq_len: int, radius: int, block: int, *, causal: bool, allow_full: bool) -> WindowBlocks:
    """:meth:`WindowBlocks.of`, memoised: a pure function of its arguments, rebuilt per call otherwise."""
    return WindowBlocks.of(seq_len, radius, block, causal=causal, allow_full=allow_full)


def _window_mask_mod(radius: int, ahead: int, key_mask: Tensor | None, device: torch.device) -> Callable[..., Tensor]:
    """``mask_mod`` of the window. The bounds are captured as tensors, not ints, so switching ``causal`` does
    not recompile (captured tensors are graph inputs; captured ints are guarded constants)."""
    behind = torch.tensor(radius, device=device)
    front = torch.tensor(ahead, device=device)
    if key_mask is None:

        def in_window(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return (kv_idx - q_idx >= -behind) & (kv_idx - q_idx <= front)

        return in_window

    def in_window_and_real(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return (kv_idx - q_idx >= -behind) & (kv_idx - q_idx <= front) & key_mask[b, kv_idx]

    return in_window_and_real


CPU_FORWARD_ONLY = (
    "flex-window: FlexAttention on CPU is forward-only (torch has no CPU backward for it); "
    "use 'window' (same pattern, exact, with backward) to train, or call under torch.no_grad()"
)

if flex_attention is not None:

    @register_attention("flex-window")
    class FlexWindowAttention(Attention):
        """Sliding window (|i − j| ≤ radius; causal: the previous radius keys) on compiled FlexAttention.

        Forward-only on CPU (FlexAttention has no CPU backward): a call that needs gradients raises
        ``NotImplementedError``; train with ``window`` instead. ``block`` is the BlockMask tile size.
        """

        family: ClassVar[str] = "sparse"
        exact: ClassVar[bool] = True
        supports_causal: ClassVar[bool] = True
        supports_cross: ClassVar[bool] = False

        def __init__(self, *, head_dim: int, num_heads: int, radius: int = 128, block: int = 128) -> None:
            super().__init__(head_dim=head_dim, num_heads=num_heads)
            if radius < 0:
                raise ValueError(f"flex-window: radius must be >= 0 (keys on each side of the query), got {radius}")
            if block < 1:
                raise ValueError(f"flex-window: block must be >= 1 (BlockMask tile size), got {block}; e.g. block=128")
            self.radius, self.block = radius, block
            self.scale = self.default_scale

        @classmethod
        def unsupported_reason(cls, *, device: str, backward: bool, causal: bool) -> str | None:
            if backward and device.startswith("cpu"):
                return CPU_FORWARD_ONLY
            return super().unsupported_reason(device=device, backward=backward, causal=causal)

        def forward(
            self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
        ) -> Tensor:
            shape = self.validate(q, k, v, causal=causal, key_mask=key_mask)
            needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
            if needs_grad and q.device.type == "cpu":
                raise NotImplementedError(CPU_FORWARD_ONLY)
            n = shape.seq_q
            blocks = window_blocks(n, self.radius, self.block, causal=causal, allow_full=key_mask is None)
            mask_mod = _window_mask_mod(self.radius, 0 if causal else self.radius, key_mask, q.device)
            block_mask = blocks.block_mask(mask_mod, seq_len=n, block=self.block, device=q.device)
            return _compiled_flex()(q, k, v, block_mask=block_mask, scale=self.scale)

        # decoding: a ring of the last radius + 1 keys, as `window` (no compile per prefix length)
        def init_state(
            self, *, batch: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
        ) -> RingState:
            return RingState.empty(batch, self.num_heads, self.radius + 1, self.head_dim, device=device, dtype=dtype)

        def prefill(
            self, q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None
        ) -> tuple[Tensor, RingState]:
            out = self(q, k, v, causal=True, key_mask=key_mask)
            return out, ring_prefill(k, v, key_mask, slots=self.radius + 1)

        def step(
            self, q: Tensor, k: Tensor, v: Tensor, state: RingState, *, key_valid: Tensor | None = None
        ) -> tuple[Tensor, RingState]:
            return ring_step(q, k, v, state, key_valid, scale=self.scale)

        def state_bytes(self, state: RingState) -> int:
            return state.bytes_in_use()

        def pattern_mask(self, seq_q: int, seq_k: int, *, causal: bool) -> Tensor:
            i = torch.arange(seq_q)[:, None]
            j = torch.arange(seq_k)[None, :]
            allowed = (j - i).abs() <= self.radius
            return (allowed & (j <= i) if causal else allowed).unsqueeze(0)

        def flops(self, *, batch: int, seq_q: int, seq_k: int, causal: bool) -> int:
            # every computed tile is block × block pairs, QKᵀ and PV each 2·head_dim per pair
            blocks = window_blocks(seq_q, self.radius, self.block, causal=causal, allow_full=True)
            tiles = sum(len(p) + len(f) for p, f in zip(blocks.partial, blocks.full, strict=True))
            return 4 * batch * self.num_heads * self.head_dim * tiles * self.block * self.block

        def predicted_peak_bytes(
            self, *, batch: int, seq_q: int, seq_k: int, causal: bool, backward: bool, element_size: int
        ) -> int:
            # a fused kernel: the output and a log-sum-exp per row
            bh = batch * self.num_heads
            return bh * seq_q * (self.head_dim * element_size + 4)

        def extra_repr(self) -> str:
            return f"{super().extra_repr()}, radius={self.radius}, block={self.block}"
