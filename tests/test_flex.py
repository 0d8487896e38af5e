"""flex-window: its BlockMask is the window, it says clearly what CPU cannot do, and (compiled, slow) it is exact."""

from __future__ import annotations

import pytest
import torch

from attnbench import SpecError, available_attention, create_attention
from attnbench.testing import ATOL, RTOL, reference_attention

flex = pytest.importorskip("attnbench.variants.flex")
pytestmark = pytest.mark.skipif(
    "flex-window" not in available_attention(), reason="this torch has no torch.nn.attention.flex_attention"
)


@pytest.mark.parametrize(("n", "radius", "block"), [(70, 5, 16), (64, 0, 8), (100, 40, 16), (33, 200, 16)])
@pytest.mark.parametrize("causal", [False, True])
def test_block_lists_cover_the_window_and_full_blocks_are_inside(n: int, radius: int, block: int, causal: bool) -> None:
    blocks = flex.WindowBlocks.of(n, radius, block, causal=causal, allow_full=True)
    attn = create_attention(f"flex-window:radius={radius},block={block}", head_dim=8, num_heads=1)
    allowed = attn.pattern_mask(n, n, causal=causal)[0]
    covered = torch.zeros(n, n, dtype=torch.bool)
    for i, (partial, full) in enumerate(zip(blocks.partial, blocks.full, strict=True)):
        rows = slice(i * block, (i + 1) * block)
        assert not set(partial) & set(full)
        for j in partial + full:
            covered[rows, j * block : (j + 1) * block] = True
        for j in full:
            assert bool(allowed[rows, j * block : (j + 1) * block].all()), f"block ({i}, {j}) is marked full"
    assert bool((covered | ~allowed).all()), "an allowed pair lies outside every listed block"


def test_without_full_blocks_everything_is_partial() -> None:
    blocks = flex.WindowBlocks.of(64, 20, 8, causal=False, allow_full=False)
    assert all(not row for row in blocks.full)


def test_cpu_backward_is_refused_with_a_pointer_to_window() -> None:
    attn = create_attention("flex-window:radius=4,block=16", head_dim=8, num_heads=2)
    q, k, v = (torch.randn(1, 2, 20, 8, requires_grad=True) for _ in range(3))
    with pytest.raises(NotImplementedError, match=r"forward-only.*'window'"):
        attn(q, k, v)


def test_bad_options_name_the_fix() -> None:
    with pytest.raises(SpecError, match="radius must be >= 0"):
        create_attention("flex-window:radius=-3", head_dim=8, num_heads=2)
    with pytest.raises(SpecError, match="block must be >= 1"):
        create_attention("flex-window:block=0", head_dim=8, num_heads=2)


@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True])
def test_compiled_flex_equals_the_reference_and_the_sparse_engine(causal: bool) -> None:
    g = torch.Generator().manual_seed(0)
    n = 75
    q, k, v = (torch.randn(2, 2, n, 16, generator=g) for _ in range(3))
    key_mask = torch.rand(2, n, generator=g) > 0.3
    key_mask[1] = False  # a batch item with nothing to attend: zeros
    flex_window = create_attention("flex-window:radius=6,block=16", head_dim=16, num_heads=2)
    window = create_attention("window:radius=6,block=16", head_dim=16, num_heads=2)
    allowed = flex_window.pattern_mask(n, n, causal=causal)
    for mask in (None, key_mask):
        with torch.no_grad():
            out = flex_window(q, k, v, causal=causal, key_mask=mask)
            want = reference_attention(q, k, v, allowed=allowed, causal=causal, key_mask=mask)
            torch.testing.assert_close(out, want, atol=ATOL, rtol=RTOL)
            torch.testing.assert_close(out, window(q, k, v, causal=causal, key_mask=mask), atol=ATOL, rtol=RTOL)
    with torch.no_grad():
        assert bool((flex_window(q, k, v, causal=causal, key_mask=key_mask)[1] == 0).all())
