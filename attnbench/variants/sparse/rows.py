"""Query rows the block engine does not finish by itself: rows with no attendable key, and global rows."""

from __future__ import annotations

import torch
from torch import Tensor

from attnbench.variants.sparse.layout import BlockLayout


def rows_with_keys(layout: BlockLayout, local_ok: Tensor, key_mask: Tensor, *, heads: int) -> Tensor:
    """Bool ``(B, H or 1, n)``: whether each query has at least one attendable key (global rows aside).

    O(B·n): a query's band keys form an interval, counted with a prefix sum of the attendable keys.
    """
    B, nb, blk = local_ok.shape[0], layout.num_blocks, layout.block
    has = _band_has_key(layout, local_ok)[:, None, :]  # (B, 1, Np)
    if layout.random_blocks is not None:
        block_ok = torch.cat([local_ok.view(B, nb, blk).any(dim=-1), local_ok.new_zeros(B, 1)], dim=1)  # (B, nb+1)
        slots = layout.on("random_blocks", local_ok.device)  # (H, nb, R); -1 picks the appended False block
        in_random = block_ok[:, slots].any(dim=-1)  # (B, H, nb)
        has = has | in_random[..., None].expand(B, heads, nb, blk).reshape(B, heads, nb * blk)
    if len(layout.global_keys):
        positions = layout.on("global_keys", key_mask.device)
        visible = key_mask[:, None, positions]  # (B, 1, G)
        if layout.causal:
            query = torch.arange(layout.padded_len, device=key_mask.device)[:, None]
            visible = visible & (positions[None, :] <= query)  # (B, Np, G)
        has = has | visible.any(dim=-1)[:, None, :]
    return has[..., : layout.seq_len]


def _band_has_key(layout: BlockLayout, local_ok: Tensor) -> Tensor:
    """Bool ``(B, Np)``: whether the query's band holds an attendable key."""
    query = torch.arange(layout.padded_len, device=local_ok.device)
    lo = (query // layout.block) * layout.block - layout.band_left  # first key of the query's strip
    hi = lo + layout.band_width - 1  # last key of the strip
    if layout.band_radius is not None:
        lo, hi = torch.maximum(lo, query - layout.band_radius), torch.minimum(hi, query + layout.band_radius)
    if layout.causal:
        hi = torch.minimum(hi, query)
    lo, hi = lo.clamp(0, layout.padded_len), hi.clamp(-1, layout.padded_len - 1)
    counts = torch.nn.functional.pad(local_ok.long().cumsum(dim=1), (1, 0))  # (B, Np+1): attendable keys before j
    return (counts[:, hi + 1] - counts[:, lo]) > 0


def global_query_rows(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rows: Tensor,
    layout: BlockLayout,
    key_mask: Tensor | None,
    scale: float,
    neg: float,
) -> Tensor:
    """The rows that attend every key (causal: every earlier key), computed densely: ``(B, H, Gq, D)``."""
    n = layout.seq_len
    scores = torch.einsum("bhgd,bhjd->bhgj", q[:, :, rows] * scale, k)  # (B, H, Gq, n)
    allowed = torch.ones(1, 1, len(rows), n, dtype=torch.bool, device=q.device)
    if layout.causal:
        allowed = allowed & (torch.arange(n, device=q.device)[None, :] <= rows[:, None])
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :]  # (B, 1, Gq, n)
    probs = torch.softmax(scores.masked_fill(~allowed, neg), dim=-1) * allowed.any(dim=-1, keepdim=True)
    return torch.einsum("bhgj,bhjd->bhgd", probs, v)
