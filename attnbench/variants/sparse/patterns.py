"""The sparse patterns — window, strided, bigbird, longformer — as registered variants on one engine.

Each variant turns its options (a frozen config dataclass, validated on construction) into a
:class:`BlockLayout` for the sequence length at hand; forward, ``flops``, ``pattern_mask`` and
``predicted_peak_bytes`` all read that one layout.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnbench.core.attention import Attention
from attnbench.core.registry import register_attention
from attnbench.core.window_cache import RingState, ring_prefill, ring_step
from attnbench.variants.sparse.engine import block_sparse_attention, peak_bytes
from attnbench.variants.sparse.layout import BlockLayout, dense_pattern, layout_flops
from attnbench.variants.sparse.longformer_state import (
    BandGlobalState,
    band_global_empty,
    band_global_prefill,
    band_global_step,
)


def _require(ok: bool, variant: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{variant}: {message}")


def _check_block(variant: str, block: int) -> None:
    _require(block >= 1, variant, f"block must be >= 1 (rows per query block), got {block}; e.g. block=64")


def _band(seq_len: int, block: int, radius: int, *, causal: bool) -> dict[str, int | None]:
    """Band fields of a token-level window: keys within ``radius`` of the query (the past only if causal)."""
    radius = min(radius, seq_len - 1)  # a wider window sees the same keys
    return {
        "band_left": radius,
        "band_width": block + radius if causal else block + 2 * radius,
        # a window reaching the whole sequence needs no shape mask (the strip then covers every key)
        "band_radius": None if radius == seq_len - 1 else radius,
    }


class BlockSparseAttention(Attention):
    """Exact softmax over a block-sparse pattern; subclasses describe the pattern in :meth:`build_layout`."""

    family: ClassVar[str] = "sparse"
    exact: ClassVar[bool] = True
    supports_causal: ClassVar[bool] = True
    supports_cross: ClassVar[bool] = False

    _LAYOUTS_KEPT: ClassVar[int] = 16

    def __init__(self, *, head_dim: int, num_heads: int) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        self.scale = self.default_scale
        self._layouts: dict[tuple[int, bool], BlockLayout] = {}

    def build_layout(self, seq_len: int, *, causal: bool) -> BlockLayout:
        raise NotImplementedError(f"{type(self).__name__} must implement build_layout()")

    def layout(self, seq_len: int, *, causal: bool) -> BlockLayout:
        """The pattern at this length, built once: a layout also memoises its masks and biases."""
        key = (seq_len, causal)
        if key not in self._layouts:
            if len(self._layouts) >= self._LAYOUTS_KEPT:
                self._layouts.pop(next(iter(self._layouts)))
            with torch.inference_mode(False):  # a layout built in inference mode is reused under autograd
                self._layouts[key] = self.build_layout(seq_len, causal=causal)
        return self._layouts[key]

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        layout = self.layout(q.shape[-2], causal=causal)  # the base class has validated the call
        return block_sparse_attention(q, k, v, layout, scale=self.scale, key_mask=key_mask)

    def _self_layout(self, seq_q: int, seq_k: int, causal: bool) -> BlockLayout:
        if seq_q != seq_k:
            raise ValueError(
                f"{type(self).__name__} is a self-attention pattern: seq_q must equal seq_k, got {seq_q} and {seq_k}"
            )
        return self.layout(seq_q, causal=causal)

    def flops(self, *, batch: int, seq_q: int, seq_k: int, causal: bool) -> int:
        layout = self._self_layout(seq_q, seq_k, causal)
        return layout_flops(layout, batch=batch, heads=self.num_heads, head_dim=self.head_dim)

    def pattern_mask(self, seq_q: int, seq_k: int, *, causal: bool) -> Tensor:
        return dense_pattern(self._self_layout(seq_q, seq_k, causal))

    def predicted_peak_bytes(
        self, *, batch: int, seq_q: int, seq_k: int, causal: bool, backward: bool, element_size: int
    ) -> int:
        layout = self._self_layout(seq_q, seq_k, causal)
        return peak_bytes(
            layout,
            batch=batch,
            heads=self.num_heads,
            head_dim=self.head_dim,
            backward=backward,
            element_size=element_size,
        )


# window ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowConfig:
    radius: int
    block: int

    def __post_init__(self) -> None:
        _require(
            self.radius >= 0,
            "window",
            f"radius must be >= 0 (keys on each side of the query), got {self.radius}; radius=0 attends only itself",
        )
        _check_block("window", self.block)


@register_attention("window")
class WindowAttention(BlockSparseAttention):
    """Sliding window (local attention, Longformer's band): query i sees keys j with |i − j| ≤ radius.

    Causal: the previous ``radius`` keys and itself. ``block`` only tunes speed, never the pattern.
    Decoding keeps a ring buffer of the last ``radius + 1`` keys and values: O(radius) state and work per token.
    """

    def __init__(self, *, head_dim: int, num_heads: int, radius: int = 128, block: int = 64) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        self.config = WindowConfig(radius=radius, block=block)

    def build_layout(self, seq_len: int, *, causal: bool) -> BlockLayout:
        block = min(self.config.block, seq_len)
        return BlockLayout(
            seq_len=seq_len, block=block, causal=causal, **_band(seq_len, block, self.config.radius, causal=causal)
        )

    def init_state(
        self, *, batch: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> RingState:
        return RingState.empty(batch, self.num_heads, self.config.radius + 1, self.head_dim, device=device, dtype=dtype)

    def prefill(self, q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None) -> tuple[Tensor, RingState]:
        out = self(q, k, v, causal=True, key_mask=key_mask)
        return out, ring_prefill(k, v, key_mask, slots=self.config.radius + 1)

    def step(
        self, q: Tensor, k: Tensor, v: Tensor, state: RingState, *, key_valid: Tensor | None = None
    ) -> tuple[Tensor, RingState]:
        return ring_step(q, k, v, state, key_valid, scale=self.scale)

    def state_bytes(self, state: RingState) -> int:
        return state.bytes_in_use()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, radius={self.config.radius}, block={self.config.block}"


# longformer --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LongformerConfig:
    radius: int
    block: int
    global_positions: tuple[int, ...]

    def __post_init__(self) -> None:
        _require(
            self.radius >= 0,
            "longformer",
            f"radius must be >= 0 (keys on each side of the query), got {self.radius}; radius=0 attends only itself",
        )
        _check_block("longformer", self.block)
        bad = [p for p in self.global_positions if p < 0]
        _require(
            not bad,
            "longformer",
            f"global_positions must be token positions >= 0, got {bad}; e.g. global_positions=[0] for the first token",
        )


@register_attention("longformer")
class LongformerAttention(BlockSparseAttention):
    """Longformer: a sliding window plus global tokens that attend every key and are attended by every query.

    ``global_positions`` are token positions; positions beyond the sequence are ignored. Causal: a global
    token sees only the keys before it and is seen only by later queries.
    Decoding keeps a ring of the last ``radius + 1`` keys and the tokens up to the last global position
    (see :mod:`~attnbench.variants.sparse.longformer_state`): a state whose size the options fix, not t.
    """

    def __init__(
        self,
        *,
        head_dim: int,
        num_heads: int,
        radius: int = 128,
        global_positions: list[int] = [0],  # noqa: B006 -- the registry reads defaults off the signature; never mutated
        block: int = 64,
    ) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        self.config = LongformerConfig(
            radius=radius, block=block, global_positions=tuple(sorted(set(global_positions)))
        )

    def build_layout(self, seq_len: int, *, causal: bool) -> BlockLayout:
        block = min(self.config.block, seq_len)
        positions = torch.tensor([p for p in self.config.global_positions if p < seq_len], dtype=torch.long)
        return BlockLayout(
            seq_len=seq_len,
            block=block,
            causal=causal,
            global_keys=positions,
            global_queries=positions,
            **_band(seq_len, block, self.config.radius, causal=causal),
        )

    def init_state(
        self, *, batch: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> BandGlobalState:
        return band_global_empty(
            batch, self.num_heads, self.head_dim, radius=self.config.radius, device=device, dtype=dtype
        )

    def prefill(
        self, q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None
    ) -> tuple[Tensor, BandGlobalState]:
        out = self(q, k, v, causal=True, key_mask=key_mask)
        c = self.config
        return out, band_global_prefill(k, v, key_mask, radius=c.radius, global_positions=c.global_positions)

    def step(
        self, q: Tensor, k: Tensor, v: Tensor, state: BandGlobalState, *, key_valid: Tensor | None = None
    ) -> tuple[Tensor, BandGlobalState]:
        c = self.config
        return band_global_step(
            q, k, v, state, key_valid, radius=c.radius, global_positions=c.global_positions, scale=self.scale
        )

    def state_bytes(self, state: BandGlobalState) -> int:
        return state.bytes_in_use()

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"{super().extra_repr()}, radius={c.radius}, global_positions={list(c.global_positions)}, block={c.block}"
        )


# strided -----------------------------------------------------------------------------------------------------
# the causal default stride: a causal pattern may not depend on the total length (decoding must equal the
# forward), so ⌈√n⌉ is non-causal only; 64 is ⌈√n⌉ at n = 4096
CAUSAL_STRIDE = 64


@dataclass(frozen=True)
class StridedConfig:
    stride: int | None
    block: int | None

    def __post_init__(self) -> None:
        _require(
            self.stride is None or self.stride >= 1,
            "strided",
            f"stride must be >= 1 (or none: ⌈√n⌉ non-causal, {CAUSAL_STRIDE} causal), got {self.stride}",
        )
        _require(
            self.block is None or self.block >= 1,
            "strided",
            f"block must be >= 1 (or none for the stride), got {self.block}",
        )

    def resolve(self, seq_len: int, *, causal: bool = False) -> tuple[int, int]:
        """(stride, block) at this length."""
        default = CAUSAL_STRIDE if causal else math.isqrt(seq_len - 1) + 1  # ⌈√n⌉
        stride = self.stride if self.stride is not None else default
        return stride, self.block if self.block is not None else stride


@register_attention("strided")
class StridedAttention(BlockSparseAttention):
    """Sparse Transformer's fixed pattern: a query sees its own block of ``block`` positions and every
    ``stride``-th "summary" position (those with j mod stride = stride − 1). Causal: only those at or before it.

    Cost O(n·(block + n/stride)): O(n·√n) with the defaults (stride = block = ⌈√n⌉). Causal, the default stride
    (and block) is fixed at 64 whatever n, so that decoding token by token equals the forward: causal cost is
    then O(n·(64 + n/64)).
    """

    def __init__(self, *, head_dim: int, num_heads: int, stride: int | None = None, block: int | None = None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        self.config = StridedConfig(stride=stride, block=block)

    def build_layout(self, seq_len: int, *, causal: bool) -> BlockLayout:
        stride, block = self.config.resolve(seq_len, causal=causal)
        return BlockLayout(
            seq_len=seq_len,
            block=block,
            causal=causal,
            band_left=0,
            band_width=block,
            global_keys=torch.arange(stride - 1, max(seq_len, stride - 1), stride),  # none when stride > n
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, stride={self.config.stride}, block={self.config.block}"


# bigbird -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BigBirdConfig:
    block: int
    window_blocks: int
    num_global: int
    num_random: int
    seed: int

    def __post_init__(self) -> None:
        _check_block("bigbird", self.block)
        for name in ("window_blocks", "num_global", "num_random"):
            value = getattr(self, name)
            _require(value >= 0, "bigbird", f"{name} must be >= 0, got {value}; pass {name}=0 to switch it off")


@functools.lru_cache(maxsize=64)
def bigbird_random_blocks(
    num_blocks: int, window_blocks: int, num_random: int, *, heads: int, causal: bool, seed: int
) -> Tensor:
    """``(heads, num_blocks, num_random)`` key blocks, -1 = empty slot; a pure function of its arguments.

    Query block i draws, without replacement, from the blocks outside its window (causal: before it), so a
    random block never repeats a window key. Where fewer candidates exist the remaining slots are empty.
    Each (seed, head, query block) has its own generator, so a causal query block's draw does not depend on
    how many blocks follow it: decoding token by token sees the pattern the forward used.
    """
    out = torch.full((heads, num_blocks, num_random), -1, dtype=torch.long)
    blocks = torch.arange(num_blocks)
    for h in range(heads):
        for i in range(num_blocks):
            outside_window = (blocks < i - window_blocks) | (blocks > i + window_blocks)
            candidates = blocks[outside_window & (blocks < i)] if causal else blocks[outside_window]
            generator = torch.Generator().manual_seed(_block_seed(seed, h, i))
            chosen = candidates[torch.randperm(len(candidates), generator=generator)[:num_random]]
            out[h, i, : len(chosen)] = chosen.sort().values
    return out


def _block_seed(seed: int, head: int, query_block: int) -> int:
    digest = hashlib.blake2b(f"bigbird:{seed}:{head}:{query_block}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) >> 1  # a non-negative 63-bit seed


@register_attention("bigbird")
class BigBirdAttention(BlockSparseAttention):
    """BigBird: window blocks, ``num_global`` global tokens (the first positions) and ``num_random`` random key
    blocks per query block, per head.

    The random blocks are a fixed function of ``seed``, the head and the query block (causal: not of the
    sequence length, so decoding equals the forward): the same in training and in evaluation (reference
    implementations switch them off in eval; here the model is evaluated on the pattern it was trained on).
    Causal: window blocks up to the query's own, random blocks only from the past. Decoding keeps the
    default KV cache: a query block's random blocks may be any earlier block, so a state would hold every key.
    """

    def __init__(
        self,
        *,
        head_dim: int,
        num_heads: int,
        block: int = 64,
        window_blocks: int = 1,
        num_global: int = 2,
        num_random: int = 3,
        seed: int = 0,
    ) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        self.config = BigBirdConfig(
            block=block, window_blocks=window_blocks, num_global=num_global, num_random=num_random, seed=seed
        )

    def build_layout(self, seq_len: int, *, causal: bool) -> BlockLayout:
        c = self.config
        num_blocks = -(-seq_len // c.block)
        window = min(c.window_blocks, num_blocks - 1)
        random = None
        if c.num_random > 0:
            random = bigbird_random_blocks(
                num_blocks, window, c.num_random, heads=self.num_heads, causal=causal, seed=c.seed
            )
            if not bool((random >= 0).any()):
                random = None  # short sequences: every block is already in the window
        positions = torch.arange(min(c.num_global, seq_len))
        return BlockLayout(
            seq_len=seq_len,
            block=c.block,
            causal=causal,
            band_left=window * c.block,
            band_width=(window + 1 if causal else 2 * window + 1) * c.block,
            random_blocks=random,
            global_keys=positions,
            global_queries=positions,
        )

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"{super().extra_repr()}, block={c.block}, window_blocks={c.window_blocks}, "
            f"num_global={c.num_global}, num_random={c.num_random}, seed={c.seed}"
        )
