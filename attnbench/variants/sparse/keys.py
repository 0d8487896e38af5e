"""The keys each query block attends — its band, its random blocks, the global keys — one set per kind.

Input is the engine's padded buffers ``(B·H, L, D+1)``: every sequence with masked rows before and after
it, keys carrying a bias feature that is 0 for an attendable key and a large negative number otherwise.
Output is ``(B·H, nb, W_part, D+1)`` keys and values per kind (the band a view, the others gathered), and the
additive masks that still have to go with them: the band's shape (window radius, causal) and, in causal mode,
which global keys a query may not see yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnbench.variants.sparse.layout import BlockLayout, round_up


@dataclass(frozen=True)
class Padding:
    """Rows around each sequence in the engine's buffers: ``front`` + padded sequence + ``back``."""

    front: int  # the band of block 0 reaches band_left keys back
    back: int  # the band of the last block reaches past the end; then one all-masked block for empty slots
    length: int  # front + padded_len + back, a whole number of blocks

    @classmethod
    def of(cls, layout: BlockLayout) -> Padding:
        blk = layout.block
        reach = max(0, layout.band_width - blk - layout.band_left)  # band keys after the block's last query
        front = round_up(layout.band_left, blk)
        back = round_up(reach, blk) + (blk if layout.random_blocks is not None else 0)
        return cls(front=front, back=back, length=front + layout.padded_len + back)


def _bias(allowed: Tensor, neg: float, dtype: torch.dtype) -> Tensor:
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, neg)


def band(rows: Tensor, layout: BlockLayout, padding: Padding) -> Tensor:
    """``(B·H, nb, W, F)`` strided view: the ``W`` keys of every query block's band, nothing copied."""
    start = padding.front - layout.band_left
    span = rows[:, start : start + (layout.num_blocks - 1) * layout.block + layout.band_width]
    return span.unfold(1, layout.band_width, layout.block).transpose(2, 3)  # (B·H, nb, F, W) -> (B·H, nb, W, F)


def random_blocks(rows: Tensor, layout: BlockLayout, padding: Padding, *, batch: int, slot: int) -> Tensor:
    """``(B·H, nb, blk, F)``: each query block's random key block number ``slot``, gathered whole; an empty
    slot gets the all-masked block.

    One slot at a time: the engine gives every slot its own fused pass, so no gathered set is larger than the
    padded keys themselves (on glibc, a fresh buffer above 32 MiB is mapped anew on every call, and touching
    its pages cost as much as the gather)."""
    blk, heads = layout.block, layout.random_blocks.shape[0]  # type: ignore[union-attr]
    width = rows.shape[-1]
    blocks = rows.view(batch * heads * (padding.length // blk), blk * width)  # one row per key block
    index = layout.derived(
        ("random_rows", batch, str(rows.device)), lambda: _random_rows(layout, padding, batch, rows.device)
    )
    picked = blocks.index_select(
        0, index[..., slot].reshape(-1)
    )  # (B·H·nb, blk·F): whole blocks, no per-element gather
    return picked.view(batch * heads, layout.num_blocks, blk, width)


def _random_rows(layout: BlockLayout, padding: Padding, batch: int, device: torch.device) -> Tensor:
    """Row of each (batch, head, query block, slot)'s random key block in the blocks view, ``(B, H, nb, R)``."""
    per_sequence = padding.length // layout.block
    slots = _random_index(layout, padding, device)  # (H, nb, R), block within the sequence
    heads = slots.shape[0]
    sequence = torch.arange(batch * heads, device=device).view(batch, heads, 1, 1) * per_sequence
    return sequence + slots[None]


def _random_index(layout: BlockLayout, padding: Padding, device: torch.device) -> Tensor:
    slots = layout.on("random_blocks", device)  # (H, nb, R), -1 = empty
    empty = padding.length // layout.block - 1
    return torch.where(slots >= 0, slots + padding.front // layout.block, empty)


def global_keys(x: Tensor, layout: BlockLayout, bias: Tensor | None) -> Tensor:
    """``(B·H, 1, G, D+1)``: the global positions of ``x`` ``(B, H, n, D)`` with the bias feature appended
    (``bias`` ``(B, G)``; None appends zeros — for values)."""
    B, H, _, D = x.shape
    picked = x[:, :, layout.on("global_keys", x.device)]  # (B, H, G, D)
    extra = picked.new_zeros(B, 1, picked.shape[2], 1) if bias is None else bias[:, None, :, None]
    out = torch.cat([picked, extra.expand(B, H, -1, 1)], dim=-1)
    return out.view(B * H, 1, -1, D + 1)


def global_key_bias(layout: BlockLayout, key_mask: Tensor | None, neg: float, dtype: torch.dtype) -> Tensor | None:
    """``(B, G)``: 0 for an attendable global key, ``neg`` for a masked one; None without a key mask."""
    if key_mask is None:
        return None
    return _bias(key_mask[:, layout.on("global_keys", key_mask.device)], neg, dtype)


def mask_varies_per_block(layout: BlockLayout) -> bool:
    """Causal mode with a global key after some query: which global keys a query sees depends on its block."""
    return layout.causal and len(layout.global_keys) > 0 and int(layout.global_keys.max()) > 0


def band_mask(layout: BlockLayout, neg: float, dtype: torch.dtype, device: torch.device) -> Tensor | None:
    """Additive ``(1, 1, blk, W)`` mask for the band's shape (window radius, causal); None if it needs none."""
    allowed = layout.band_allowed(device)
    return None if allowed is None else _bias(allowed, neg, dtype)[None, None]


def global_mask(layout: BlockLayout, neg: float, dtype: torch.dtype, device: torch.device) -> Tensor | None:
    """Additive ``(1, nb, blk, G)`` mask of the global keys a query may not see yet; None unless causal with a
    global key after some query. (Random blocks need none: wholly outside the band, in the past when causal.)"""
    if not mask_varies_per_block(layout):
        return None
    query = torch.arange(layout.padded_len, device=device).view(layout.num_blocks, layout.block, 1)
    return _bias(layout.global_keys.to(device).view(1, 1, -1) <= query, neg, dtype)[None]  # (1, nb, blk, G)
