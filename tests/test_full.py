"""softmax (SDPA fast path) and softmax-naive against the float64 reference, outputs and gradients."""

import pytest
import torch

from attnbench import create_attention
from attnbench.testing import AllocationRecorder, reference_attention

VARIANTS = ["softmax", "softmax-naive"]


def _qkv(b: int, h: int, nq: int, nk: int, d: int) -> list[torch.Tensor]:
    return [torch.randn(b, h, n, d, requires_grad=True) for n in (nq, nk, nk)]


def _key_mask(b: int, n: int, *, fully_masked_item: bool) -> torch.Tensor:
    mask = torch.rand(b, n) > 0.4
    mask[:, 0] = True
    if fully_masked_item:
        mask[-1] = False
    return mask


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("masking", ["none", "partial", "fully_masked_item"])
@pytest.mark.parametrize(("nq", "nk", "causal"), [(17, 17, False), (17, 17, True), (9, 21, False)])
def test_equals_reference_outputs_and_gradients(name: str, causal: bool, masking: str, nq: int, nk: int) -> None:
    attn = create_attention(name, head_dim=8, num_heads=3)
    q, k, v = _qkv(3, 3, nq, nk, 8)
    key_mask = None if masking == "none" else _key_mask(3, nk, fully_masked_item=masking == "fully_masked_item")
    out = attn(q, k, v, causal=causal, key_mask=key_mask)
    ref = reference_attention(q, k, v, causal=causal, key_mask=key_mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    if masking == "fully_masked_item":
        assert torch.equal(out[-1], torch.zeros_like(out[-1]))
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for g, w in zip(got, want, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", VARIANTS)
def test_causal_rows_before_the_first_real_key_are_zero(name: str) -> None:
    attn = create_attention(name, head_dim=4, num_heads=1)
    q, k, v = _qkv(1, 1, 6, 6, 4)
    key_mask = torch.tensor([[False, False, True, True, False, True]])
    out = attn(q, k, v, causal=True, key_mask=key_mask)
    assert torch.equal(out[0, 0, :2], torch.zeros(2, 4))
    torch.testing.assert_close(out, reference_attention(q, k, v, causal=True, key_mask=key_mask))


@pytest.mark.parametrize("name", VARIANTS)
def test_scale_option(name: str) -> None:
    attn = create_attention(f"{name}:scale=0.1", head_dim=8, num_heads=2)
    q, k, v = _qkv(1, 2, 5, 5, 8)
    torch.testing.assert_close(attn(q, k, v), reference_attention(q, k, v, scale=0.1), atol=1e-5, rtol=1e-4)


def test_sdpa_causal_fast_path_builds_no_n_by_n_mask() -> None:
    n = 512
    attn = create_attention("softmax", head_dim=8, num_heads=2)
    q, k, v = _qkv(1, 2, n, n, 8)
    with AllocationRecorder() as rec:
        attn(q, k, v, causal=True).sum().backward()
    assert rec.largest.elements < n * n // 2, rec.largest
    naive = create_attention("softmax-naive", head_dim=8, num_heads=2)
    with AllocationRecorder() as rec:  # the recorder bites: the naive form does materialise n×n scores
        naive(q, k, v, causal=True).sum().backward()
    assert rec.largest.elements >= n * n


def test_key_mask_alone_is_passed_as_a_broadcast_mask() -> None:
    n = 512
    attn = create_attention("softmax", head_dim=8, num_heads=2)
    q, k, v = _qkv(2, 2, n, n, 8)
    with AllocationRecorder() as rec:
        attn(q, k, v, key_mask=_key_mask(2, n, fully_masked_item=True))
    assert rec.largest.elements < n * n // 2, rec.largest


@pytest.mark.parametrize("name", VARIANTS)
def test_analytic_flops(name: str) -> None:
    attn = create_attention(name, head_dim=64, num_heads=4)
    assert attn.flops(batch=2, seq_q=128, seq_k=128, causal=False) == 4 * 2 * 4 * 128 * 128 * 64
    assert attn.flops(batch=1, seq_q=10, seq_k=10, causal=True) == 4 * 4 * 64 * (10 * 11 // 2)
    assert attn.flops(batch=1, seq_q=10, seq_k=30, causal=False) == 4 * 4 * 64 * 300


def test_flops_agree_with_flop_counter_mode() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    attn = create_attention("softmax-naive", head_dim=16, num_heads=2)
    q, k, v = (torch.randn(1, 2, 64, 16) for _ in range(3))
    with FlopCounterMode(display=False) as counter:
        attn(q, k, v)
    assert counter.get_total_flops() == attn.flops(batch=1, seq_q=64, seq_k=64, causal=False)


@pytest.mark.parametrize(
    ("shapes", "kwargs", "message"),
    [
        (((2, 8, 4), (1, 2, 8, 4), (1, 2, 8, 4)), {}, r"q has shape \(2, 8, 4\) \(3 dims\); expected 4 dims"),
        (((1, 2, 8, 4), (1, 2, 8, 4), (1, 2, 7, 4)), {}, "k and v seq lengths differ"),
        (((1, 2, 8, 4), (1, 3, 8, 4), (1, 3, 8, 4)), {}, "batch and heads must match"),
        (((1, 2, 8, 4), (1, 2, 8, 5), (1, 2, 8, 4)), {}, "q and k head_dim differ"),
        (((1, 2, 8, 4), (1, 2, 6, 4), (1, 2, 6, 4)), {"causal": True}, "causal=True needs self-attention"),
        (((1, 3, 8, 4), (1, 3, 8, 4), (1, 3, 8, 4)), {}, r"3 heads of head_dim 4; .* built for num_heads=2"),
        (((1, 2, 8, 8), (1, 2, 8, 8), (1, 2, 8, 8)), {}, r"2 heads of head_dim 8; .* head_dim=4"),
    ],
)
def test_bad_shapes_raise_value_errors_naming_what_was_passed(shapes: tuple, kwargs: dict, message: str) -> None:
    attn = create_attention("softmax", head_dim=4, num_heads=2)
    q, k, v = (torch.randn(*s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        attn(q, k, v, **kwargs)


def test_key_mask_must_be_bool_of_batch_by_seq_k() -> None:
    attn = create_attention("softmax", head_dim=4, num_heads=2)
    q = torch.randn(2, 2, 5, 4)
    with pytest.raises(ValueError, match="key_mask must be a bool tensor"):
        attn(q, q, q, key_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"expected \(batch, seq_k\) = \(2, 5\)"):
        attn(q, q, q, key_mask=torch.ones(5, dtype=torch.bool))
