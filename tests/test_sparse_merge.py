"""The block engine's merged passes (one fused pass per key set, merged by log-sum-exp) equal one pass over
the joined keys — outputs and gradients — and a merge that gets the backward wrong is caught."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.variants.sparse import merge
from attnbench.variants.sparse.merge import KeyPart, attention_over_parts, joined_attention

NEG = -torch.finfo(torch.float64).max / 8


def _parts(seed: int = 0) -> tuple[Tensor, list[KeyPart], list[Tensor]]:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    queries = rand(3, 5, 4, 9)  # (Bh, nb, blk, F)
    rows = rand(3, 40, 9)  # a padded key buffer; the band is a strided view of it
    band = rows.unfold(1, 12, 7).transpose(2, 3)[:, :5]  # (Bh, 5, 12, F), overlapping windows
    band_values = rand(3, 5, 12, 9)
    band_mask = torch.zeros(1, 1, 4, 12, dtype=torch.float64)
    band_mask[..., 0, 8:] = NEG  # a band shape: the first row sees fewer keys
    random_keys, random_values = rand(3, 5, 6, 9), rand(3, 5, 6, 9)
    global_keys, global_values = rand(3, 1, 2, 9), rand(3, 1, 2, 9)
    global_mask = torch.zeros(1, 5, 4, 2, dtype=torch.float64)
    global_mask[:, :2, :, 1] = NEG  # causal: the second global key is later than the first two blocks
    global_mask[:, 0, 0, :] = NEG  # a row with no global key at all
    parts = [
        KeyPart(band, band_values, band_mask),
        KeyPart(random_keys, random_values, None),
        KeyPart(global_keys.expand(-1, 5, -1, -1), global_values.expand(-1, 5, -1, -1), global_mask),
    ]
    leaves = [queries, rows, band_values, random_keys, random_values, global_keys, global_values]  # 1 + 2 per part
    return queries, parts, leaves


def _grads(fn, queries: Tensor, parts: list[KeyPart], leaves: list[Tensor]) -> tuple[Tensor, tuple[Tensor, ...]]:
    out = fn(queries, parts)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    return out, torch.autograd.grad(out, leaves, grad)


@pytest.mark.parametrize("count", [2, 3])
def test_merged_passes_equal_one_joined_pass(count: int) -> None:
    assert merge._FLASH is not None and merge._FLASH_BACKWARD is not None  # else this compares the reference to itself
    queries, parts, leaves = _parts()
    used = leaves[: 1 + 2 * count]  # the queries, then two leaves per part
    out, grads = _grads(attention_over_parts, queries, parts[:count], used)
    ref, ref_grads = _grads(joined_attention, queries, parts[:count], used)
    torch.testing.assert_close(out, ref)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_a_single_part_is_plain_sdpa() -> None:
    queries, parts, _ = _parts()
    band = parts[0]
    want = F.scaled_dot_product_attention(queries, band.keys, band.values, attn_mask=band.mask, scale=1.0)
    torch.testing.assert_close(attention_over_parts(queries, [band]), want)


def test_a_backward_with_each_parts_own_normaliser_is_caught(monkeypatch) -> None:
    """Broken copy: each part's backward with that part's own log-sum-exp instead of the union's (and, for the
    first part, whose buffer becomes the merged output, the merged output)."""
    real_flash, real_backward = merge._FLASH, merge._FLASH_BACKWARD
    own: dict[int, tuple[Tensor, Tensor]] = {}

    def flash(queries, keys, values, **kwargs):
        out, lse = real_flash(queries, keys, values, **kwargs)
        own[id(keys)] = (out, lse)
        return out, lse

    def backward(grad_out, queries, keys, values, merged, lse, *args, **kwargs):
        out, part_lse = own[id(keys)]
        return real_backward(grad_out, queries, keys, values, out, part_lse, *args, **kwargs)

    monkeypatch.setattr(merge, "_FLASH", flash)
    monkeypatch.setattr(merge, "_FLASH_BACKWARD", backward)
    queries, parts, leaves = _parts()
    out, grads = _grads(attention_over_parts, queries, parts, leaves)
    ref, ref_grads = _grads(joined_attention, queries, parts, leaves)
    torch.testing.assert_close(out, ref)  # the forward is still right
    assert not torch.allclose(grads[0], ref_grads[0], atol=1e-6)
