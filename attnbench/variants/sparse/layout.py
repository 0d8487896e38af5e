"""What a block-sparse pattern is, for one sequence length: the keys each query block attends.

A pattern never produces an n×n object for the engine. It produces a :class:`BlockLayout` — a band of keys per
query block, optional random key blocks, global key and global query positions — whose size is O(n/block).
The dense rendering (:func:`dense_pattern`, for tests and pictures) and the FLOP count live here too, so the
picture, the count and the engine all read the same description.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


def _no_positions() -> Tensor:
    return torch.empty(0, dtype=torch.long)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def round_up(a: int, multiple: int) -> int:
    return ceil_div(a, multiple) * multiple


@dataclass(frozen=True, eq=False)
class BlockLayout:
    """The keys every query block of one length-``seq_len`` sequence attends.

    Queries are cut into blocks of ``block`` rows (the last block padded). Query block ``i`` attends

    - its **band**: the ``band_width`` consecutive keys starting at ``i·block − band_left``, further limited to
      ``|key − query| ≤ band_radius`` when that is set;
    - its **random key blocks** ``random_blocks[h, i, :]`` (head ``h``; -1 marks an empty slot);
    - every **global key** position;

    and every **global query** row attends all keys. With ``causal`` only keys at or before the query count.
    Positions beyond ``seq_len`` (the padding) are never attended.
    """

    seq_len: int
    block: int
    causal: bool
    band_left: int
    band_width: int
    band_radius: int | None = None
    random_blocks: Tensor | None = None  # (heads, num_blocks, slots) int64, -1 = empty slot
    global_keys: Tensor = field(default_factory=_no_positions)  # (G,) int64, sorted, < seq_len
    global_queries: Tensor = field(default_factory=_no_positions)  # (Gq,) int64, sorted, < seq_len
    _derived: dict[Hashable, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.seq_len < 1 or self.block < 1:
            raise ValueError(f"layout needs seq_len >= 1 and block >= 1, got {self.seq_len} and {self.block}")
        if self.band_left < 0 or self.band_width < 1:
            raise ValueError(
                f"layout band needs band_left >= 0 and band_width >= 1, got {self.band_left}, {self.band_width}"
            )
        if self.random_blocks is not None and (
            self.random_blocks.dim() != 3 or self.random_blocks.shape[1] != self.num_blocks
        ):
            raise ValueError(
                f"random_blocks must be (heads, num_blocks={self.num_blocks}, slots), "
                f"got {tuple(self.random_blocks.shape)}"
            )

    def derived(self, key: Hashable, build: Callable[[], T]) -> T:
        """Memoise something computed from this (immutable) layout — a mask, a bias on some device.

        Small calls are dominated by such constants; a variant reuses its layout, so they are built once.
        """
        if key not in self._derived:
            with torch.inference_mode(False):  # constants built inside inference mode must still serve autograd
                self._derived[key] = build()
        return self._derived[key]

    @property
    def num_blocks(self) -> int:
        return ceil_div(self.seq_len, self.block)

    @property
    def padded_len(self) -> int:
        return self.num_blocks * self.block

    @property
    def random_width(self) -> int:
        """Keys per query block from random blocks (empty slots included: they are computed, then masked)."""
        return 0 if self.random_blocks is None else self.random_blocks.shape[-1] * self.block

    @property
    def keys_per_query_block(self) -> int:
        """Width of the score strip of one query block: band + random blocks + global keys."""
        return self.band_width + self.random_width + len(self.global_keys)

    def band_allowed(self, device: torch.device | str = "cpu") -> Tensor | None:
        """Bool ``(block, band_width)``: which strip columns each row of a query block may see; None = all.

        Strip column ``c`` of row ``r`` is key ``i·block − band_left + c`` for query ``i·block + r``, so the
        offset key − query is ``c − band_left − r`` in every block: one small mask serves all of them.
        """
        if self.band_radius is None and not self.causal:
            return None
        return self.derived(("band_allowed", str(device)), lambda: self._band_allowed(device))

    def _band_allowed(self, device: torch.device | str) -> Tensor:
        offset = torch.arange(self.band_width, device=device) - self.band_left
        offset = offset[None, :] - torch.arange(self.block, device=device)[:, None]  # (block, band_width)
        allowed = torch.ones_like(offset, dtype=torch.bool)
        if self.band_radius is not None:
            allowed &= offset.abs() <= self.band_radius
        if self.causal:
            allowed &= offset <= 0
        return allowed

    def on(self, name: str, device: torch.device | str) -> Tensor:
        """One of the layout's index tensors (``global_keys``, ``global_queries``, ``random_blocks``) on ``device``."""
        return self.derived((name, str(device)), lambda: getattr(self, name).to(device))


def dense_pattern(layout: BlockLayout) -> Tensor:
    """Bool ``(heads or 1, n, n)`` rendering of ``layout``: True = query i may attend key j. Small n only."""
    n, blk = layout.seq_len, layout.block
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    start = (i // blk) * blk - layout.band_left
    allowed = (j >= start) & (j < start + layout.band_width)
    if layout.band_radius is not None:
        allowed &= (j - i).abs() <= layout.band_radius
    allowed = allowed.unsqueeze(0)  # (1, n, n)
    if layout.random_blocks is not None:
        slots = layout.random_blocks[:, (i // blk).squeeze(1), :]  # (H, n, slots)
        hit = slots.unsqueeze(-1) == (j // blk).view(1, 1, 1, n)  # (H, n, slots, n)
        allowed = allowed | hit.any(dim=2)
    is_global_key = torch.zeros(n, dtype=torch.bool)
    is_global_key[layout.global_keys] = True
    is_global_query = torch.zeros(n, dtype=torch.bool)
    is_global_query[layout.global_queries] = True
    allowed = allowed | is_global_key[None, None, :] | is_global_query[None, :, None]
    if layout.causal:
        allowed = allowed & (j <= i)
    return allowed


def layout_flops(layout: BlockLayout, *, batch: int, heads: int, head_dim: int) -> int:
    """Forward FLOPs of what the engine computes: 2 per multiply-add, matmuls only.

    Every query block computes its whole key set (band, every random slot, every global key), padding rows
    included, in QKᵀ and PV with one extra feature each (the mask bias; see the engine). Global query rows add
    a dense row each.
    """
    per_query = 4 * (head_dim + 1) * layout.keys_per_query_block
    dense_rows = len(layout.global_queries) * layout.seq_len * 4 * head_dim
    return batch * heads * (layout.padded_len * per_query + dense_rows)
