"""The block-sparse attention engine: exact softmax over the keys a :class:`BlockLayout` allows, in O(n·w).

How one call runs (B batch, H heads, nb query blocks of ``blk`` rows, D head_dim):

1. q, k, v are copied once into padded buffers ``(B·H, L, D+1)``: each sequence with masked rows before and
   after it, so the band of every query block — ``W`` consecutive keys — is a strided *view* (``unfold``) and
   never reads another sequence. Random key blocks are gathered block-wise, global keys appended (``keys.py``).
2. Masking rides the dot product: keys carry one extra feature holding 0 (attendable) or a large negative
   number (padding, ``key_mask`` False, a global key that its own slot already covers), queries carry a 1
   there, so ``q·k`` already includes the key mask. Values carry a 0 there. What is left is the band's
   ``(blk, W)`` shape — the same for every block — and, in causal mode, a per-block mask for global keys.
3. Fused attention over ``(B·H, nb)`` as (batch, heads): each query block against its own key set. The band
   alone is one ``scaled_dot_product_attention`` call on the view — on CPU the fused flash kernel (blocked
   matmuls, online softmax, no score matrix kept), with its backward. With random blocks or global keys, each
   of those sets gets its own fused pass and the passes are merged by their log-sum-exp (``merge.py``), so
   the band is never copied; elsewhere SDPA picks its backend, at worst materialising ``(blk, W)`` per block.
4. Global query rows (which attend every key) are computed densely, O(Gq·n), and replace those rows.

Nothing of size n×n is ever allocated, forward or backward. Masked scores are a large *finite* negative
number, so a query with no attendable key gets uniform weights instead of NaN; such rows (possible only with
a ``key_mask``) are zeroed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnbench.variants.sparse import keys
from attnbench.variants.sparse.layout import BlockLayout
from attnbench.variants.sparse.merge import KeyPart, attention_over_parts
from attnbench.variants.sparse.rows import global_query_rows, rows_with_keys


def masked_score(dtype: torch.dtype) -> float:
    """A score that softmaxes to exactly 0 next to any real score, and stays finite when a few are summed."""
    return -torch.finfo(dtype).max / 8


def block_sparse_attention(
    q: Tensor, k: Tensor, v: Tensor, layout: BlockLayout, *, scale: float, key_mask: Tensor | None = None
) -> Tensor:
    """Softmax attention of ``(B, H, n, D)`` q, k, v over the keys ``layout`` allows (self-attention only)."""
    B, H, n, D = q.shape
    if n != layout.seq_len or k.shape[2] != n:
        raise ValueError(f"layout is for seq_len={layout.seq_len}, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    neg = masked_score(q.dtype)
    padding = keys.Padding.of(layout)
    local_ok, key_bias = _local_keys(layout, key_mask, batch=B, dtype=q.dtype, device=q.device, neg=neg)

    queries = _queries(q, scale, layout)  # (B·H, nb, blk, D+1)
    key_rows = _padded_rows(k, layout, padding, bias=key_bias, neg=neg)  # (B·H, L, D+1)
    value_rows = _padded_rows(v, layout, padding)  # (B·H, L, D+1)
    band_mask, global_mask = _part_masks(layout, neg, q.dtype, q.device)
    parts = [KeyPart(keys.band(key_rows, layout, padding), keys.band(value_rows, layout, padding), band_mask)]
    for slot in range(layout.random_blocks.shape[-1] if layout.random_blocks is not None else 0):
        parts.append(
            KeyPart(
                keys.random_blocks(key_rows, layout, padding, batch=B, slot=slot),
                keys.random_blocks(value_rows, layout, padding, batch=B, slot=slot),
                None,
            )
        )
    if len(layout.global_keys):
        global_bias = keys.global_key_bias(layout, key_mask, neg, q.dtype)
        parts.append(
            KeyPart(
                keys.global_keys(k, layout, global_bias).expand(-1, layout.num_blocks, -1, -1),
                keys.global_keys(v, layout, None).expand(-1, layout.num_blocks, -1, -1),
                global_mask,
            )
        )

    out = attention_over_parts(queries, parts)  # (B·H, nb, blk, D+1)
    out = out.view(B, H, layout.padded_len, D + 1)[:, :, :n, :D]  # a view: the bias feature and padding dropped

    if key_mask is not None:
        out = out * rows_with_keys(layout, local_ok, key_mask, heads=H).unsqueeze(-1)
    if len(layout.global_queries):
        rows = layout.on("global_queries", q.device)
        out = out.index_copy(2, rows, global_query_rows(q, k, v, rows, layout, key_mask, scale, neg))
    return out


def _part_masks(
    layout: BlockLayout, neg: float, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor | None, Tensor | None]:
    """The band's additive mask (the same for every block, kept with the layout) and the global keys' (causal
    with a global key after some query: per block, rebuilt per call rather than kept alive)."""
    band = layout.derived(("band_mask", dtype, str(device)), lambda: keys.band_mask(layout, neg, dtype, device))
    return band, keys.global_mask(layout, neg, dtype, device)


def _local_keys(
    layout: BlockLayout, key_mask: Tensor | None, *, batch: int, dtype: torch.dtype, device: torch.device, neg: float
) -> tuple[Tensor, Tensor]:
    """Bool ``(B, Np)`` keys the band and random blocks may use (real, unmasked, not a global key), and the
    matching bias feature (0 or ``neg``). Without a key mask both are constants of the layout."""
    if key_mask is None:
        ok, bias = layout.derived(
            ("local_keys", batch, dtype, str(device)), lambda: _local_keys_of(layout, None, batch, dtype, device, neg)
        )
        return ok, bias
    return _local_keys_of(layout, key_mask, batch, dtype, device, neg)


def _local_keys_of(
    layout: BlockLayout, key_mask: Tensor | None, batch: int, dtype: torch.dtype, device: torch.device, neg: float
) -> tuple[Tensor, Tensor]:
    ok = torch.zeros(batch, layout.padded_len, dtype=torch.bool, device=device)
    ok[:, : layout.seq_len] = True if key_mask is None else key_mask
    if len(layout.global_keys):
        ok[:, layout.on("global_keys", device)] = False  # the global slots attend them, exactly once
    return ok, torch.zeros(ok.shape, dtype=dtype, device=device).masked_fill_(~ok, neg)


def _queries(q: Tensor, scale: float, layout: BlockLayout) -> Tensor:
    """``[q·scale, 1]`` padded to whole blocks: ``(B·H, nb, blk, D+1)``."""
    B, H, n, D = q.shape
    out = q.new_zeros(B, H, layout.padded_len, D + 1)
    out[:, :, :n, :D] = q
    out.mul_(scale)  # in place: ``q * scale`` would be one more n·D buffer to fault in
    out[..., D] = 1.0
    return out.view(B * H, layout.num_blocks, layout.block, D + 1)


def _padded_rows(
    x: Tensor, layout: BlockLayout, padding: keys.Padding, *, bias: Tensor | None = None, neg: float = 0.0
) -> Tensor:
    """``(B·H, L, D+1)``: each sequence of ``x`` between masked rows, plus the bias feature (``bias``
    ``(B, Np)`` for keys, rows outside the sequence get ``neg``; zeros for values)."""
    B, H, n, D = x.shape
    rows = x.new_zeros(B, H, padding.length, D + 1)
    if bias is not None:
        rows[..., D] = neg
        rows[:, :, padding.front : padding.front + layout.padded_len, D] = bias[:, None, :]
    rows[:, :, padding.front : padding.front + n, :D] = x
    return rows.view(B * H, padding.length, D + 1)


def peak_bytes(layout: BlockLayout, *, batch: int, heads: int, head_dim: int, backward: bool, element_size: int) -> int:
    """Analytic model of the extra bytes one call holds at its peak (beyond q, k, v).

    Forward: the padded copies of q, k, v (with the bias feature), the gathered random-block and global key and
    value sets (the band is a view, never copied), the running merged output and the part being folded in,
    the mask, and the output. SDPA's fused kernel keeps no score matrix. Backward adds the gradients of those copies
    and of every key/value set, the band's included (its gradient has the view's shape).
    """
    bh, F_ = batch * heads, head_dim + 1
    padding = keys.Padding.of(layout)
    copies = bh * (layout.padded_len + 2 * padding.length) * F_ * element_size
    per_block = 2 * bh * layout.num_blocks * F_ * element_size  # a key and a value row for every query block
    # random blocks are copied per query block; the global keys are one broadcast view (materialised by backward)
    gathered = per_block * layout.random_width + 2 * bh * len(layout.global_keys) * F_ * element_size
    key_sets = per_block * layout.keys_per_query_block
    joined = layout.random_blocks is not None or len(layout.global_keys) > 0
    out = bh * layout.padded_len * ((2 if joined else 1) * F_ + 2 * head_dim) * element_size
    dense_rows = 2 * bh * len(layout.global_queries) * layout.seq_len * element_size
    if not backward:
        return copies + gathered + out + dense_rows
    return 2 * copies + gathered + key_sets + 2 * out + 2 * dense_rows
