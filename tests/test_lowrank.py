"""Issue 17, the low-rank family: Linformer and Nyströmformer in the limits where they are exact, and padding."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from attnbench import create_attention
from attnbench.testing import reference_attention
from attnbench.variants import nystrom as nystrom_module
from attnbench.variants.linformer import LinformerAttention
from attnbench.variants.nystrom import NystromAttention, iterative_pinv, segment_means

Grads = tuple[Tensor, Tensor, Tensor]


def _inputs(n: int, *, batch: int = 2, heads: int = 2, head_dim: int = 8, seed: int = 0) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, n, head_dim, generator=g, dtype=torch.float64) for _ in range(3))
    key_mask = torch.rand(batch, n, generator=g) > 0.3
    key_mask[:, 0] = True
    return q, k, v, key_mask


def _with_grads(
    fn: Callable[[Tensor, Tensor, Tensor], Tensor], q: Tensor, k: Tensor, v: Tensor
) -> tuple[Tensor, Grads]:
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = fn(*leaves)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=out.dtype)
    dq, dk, dv = torch.autograd.grad(out, leaves, grad_out)
    return out.detach(), (dq, dk, dv)


def _max_difference(
    fn: Callable[[Tensor, Tensor, Tensor], Tensor], want: Callable[[Tensor, Tensor, Tensor], Tensor], *x: Tensor
) -> float:
    """Largest absolute difference between two functions' outputs and their gradients wrt q, k, v."""
    out, grads = _with_grads(fn, *x)
    ref, ref_grads = _with_grads(want, *x)
    return max(float((a - b).abs().max()) for a, b in zip((out, *grads), (ref, *ref_grads), strict=True))


# Linformer ---------------------------------------------------------------------------------------------------------
def _identity_linformer(n: int) -> LinformerAttention:
    attn = create_attention(f"linformer:k={n},max_len={n}", head_dim=8, num_heads=2).double()
    assert isinstance(attn, LinformerAttention)
    with torch.no_grad():  # a call over n keys scales the parameters by n^-1/2: E = F = identity
        attn.key_projection.copy_(torch.eye(n, dtype=torch.float64) * n**0.5)
        assert attn.value_projection is not None
        attn.value_projection.copy_(torch.eye(n, dtype=torch.float64) * n**0.5)
    return attn


def test_linformer_with_k_equal_n_and_identity_projections_is_softmax() -> None:
    n = 13
    attn = _identity_linformer(n)
    q, k, v, _ = _inputs(n)
    assert _max_difference(lambda q, k, v: attn(q, k, v), reference_attention, q, k, v) < 1e-12


def test_linformer_equals_its_explicit_sum_reference_with_padding_and_cross_lengths() -> None:
    attn = create_attention("linformer:k=5,share_heads=false", head_dim=8, num_heads=2).double()
    assert isinstance(attn, LinformerAttention)
    q = _inputs(9)[0]
    _, k, v, key_mask = _inputs(14, seed=1)
    assert (
        _max_difference(
            lambda q, k, v: attn(q, k, v, key_mask=key_mask),
            lambda q, k, v: attn.reference(q, k, v, key_mask=key_mask),
            q,
            k,
            v,
        )
        < 1e-12
    )


def _masked_tokens_matter(attn: LinformerAttention) -> float:
    """How much changing masked keys and values moves the output (0 for honest padding)."""
    q, k, v, key_mask = _inputs(20)
    noise = 10 * torch.randn(k.shape, generator=torch.Generator().manual_seed(3), dtype=k.dtype)
    masked = ~key_mask[:, None, :, None]
    a = attn(q, k, v, key_mask=key_mask)
    b = attn(q, torch.where(masked, k + noise, k), torch.where(masked, v - noise, v), key_mask=key_mask)
    return float((a - b).abs().max().detach())


class _LinformerProjectingPadding(LinformerAttention):
    """Broken on purpose: projects masked keys and values instead of zeroing them."""

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        return super().forward(q, k, v, causal=causal, key_mask=None)


def test_linformer_padding_is_zeroed_before_the_projection_and_a_broken_copy_is_caught() -> None:
    honest = create_attention("linformer:k=6", head_dim=8, num_heads=2).double()
    assert isinstance(honest, LinformerAttention)
    broken = _LinformerProjectingPadding(head_dim=8, num_heads=2, k=6).double()
    assert _masked_tokens_matter(honest) < 1e-12
    assert _masked_tokens_matter(broken) > 1e-3


def test_linformer_shared_projections_are_one_tensor() -> None:
    attn = create_attention("linformer:share_kv=true,k=8", head_dim=8, num_heads=2)
    assert isinstance(attn, LinformerAttention) and attn.value_projection is None
    e, f = attn.projections(10)
    assert e is f and e.shape == (1, 8, 10)


# Nyströmformer ------------------------------------------------------------------------------------------------------
def _nystrom(spec: str) -> NystromAttention:
    attn = create_attention(spec, head_dim=8, num_heads=2).double()
    assert isinstance(attn, NystromAttention)
    return attn


def _well_conditioned_inputs(n: int) -> tuple[Tensor, ...]:
    """Keys near the queries, so F₂ = softmax(QKᵀ) is diagonally dominant and well conditioned.

    The limit holds for any invertible F₂, but an ill-conditioned one (random q, k can give cond 1e5) makes
    even float64 gradients of its inverse lose digits: the test would measure rounding, not the algorithm.
    """
    q, k, v, key_mask = _inputs(n)
    return q, q + 0.5 * k, v, key_mask


@pytest.mark.parametrize(("n", "landmarks"), [(12, 12), (13, 16)])
@pytest.mark.parametrize("masked", [False, True])
def test_nystrom_with_a_landmark_per_token_and_an_exact_inverse_is_softmax(
    n: int, landmarks: int, masked: bool
) -> None:
    attn = _nystrom(f"nystrom:landmarks={landmarks},pinv=exact")
    q, k, v, key_mask = _well_conditioned_inputs(n)
    mask = key_mask if masked else None
    error = _max_difference(
        lambda q, k, v: attn(q, k, v, key_mask=mask),
        lambda q, k, v: reference_attention(q, k, v, key_mask=mask),
        q,
        k,
        v,
    )
    assert error < 1e-10


def test_nystrom_iterative_inverse_converges_to_the_exact_limit() -> None:
    attn = _nystrom("nystrom:landmarks=12,pinv_iterations=20")
    q, k, v, key_mask = _well_conditioned_inputs(12)
    error = _max_difference(
        lambda q, k, v: attn(q, k, v, key_mask=key_mask),
        lambda q, k, v: reference_attention(q, k, v, key_mask=key_mask),
        q,
        k,
        v,
    )
    assert error < 1e-10


def test_nystrom_with_the_inverse_replaced_by_the_identity_fails_the_exact_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attn = _nystrom("nystrom:landmarks=12,pinv=exact")
    q, k, v, _ = _well_conditioned_inputs(12)
    eye = torch.eye(12, dtype=torch.float64)
    monkeypatch.setattr(NystromAttention, "pseudo_inverse", lambda self, a: eye.expand_as(a))
    assert float((attn(q, k, v) - reference_attention(q, k, v)).abs().max()) > 1e-3


@pytest.mark.parametrize("zero_rows", [False, True])
def test_iterative_pinv_matches_the_svd_pseudo_inverse(zero_rows: bool) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(3, 6, 6, generator=g, dtype=torch.float64), dim=-1)
    if zero_rows:  # absent landmarks: zero rows and columns, a singular matrix
        a[:, 4:, :] = 0
        a[:, :, 4:] = 0
    torch.testing.assert_close(iterative_pinv(a, 25), torch.linalg.pinv(a), atol=1e-8, rtol=1e-8)
    assert float((iterative_pinv(a, 1) - torch.linalg.pinv(a)).abs().max()) > 1e-3  # the iterations do the work


def test_segment_means_pad_uneven_lengths_and_skip_masked_tokens() -> None:
    x = torch.arange(10, dtype=torch.float64).view(1, 1, 10, 1)
    real = torch.ones(1, 10, dtype=torch.bool)
    real[0, 1] = False
    real[0, 3:6] = False
    means, present = segment_means(x, real, size=3)  # segments [0,1,2] [3,4,5] [6,7,8] [9]+padding
    assert present.tolist() == [[True, False, True, True]]
    assert means.flatten().tolist() == [1.0, 0.0, 7.0, 9.0]


def test_nystrom_landmark_count_and_flops_follow_the_padding() -> None:
    attn = _nystrom("nystrom:landmarks=4")
    assert nystrom_module.segment_size(10, 4) == 3
    assert attn._landmark_counts(10, 16) == (4, 4)
    assert attn._landmark_counts(9, 9) == (3, 3)  # 9 tokens in segments of 3: three landmarks, none empty


def test_nystrom_padding_keeps_real_outputs_independent_of_padded_queries() -> None:
    attn = _nystrom("nystrom:landmarks=4")
    q, k, v, key_mask = _inputs(16)
    q2 = torch.where(~key_mask[:, None, :, None], q + 5, q)  # padded tokens' queries change too
    a, b = attn(q, k, v, key_mask=key_mask), attn(q2, k, v, key_mask=key_mask)
    real_rows = key_mask[:, None, :, None].expand_as(a)
    torch.testing.assert_close(a[real_rows], b[real_rows], atol=1e-12, rtol=0)


def test_nystrom_convolution_skip_adds_a_depthwise_convolution_of_the_masked_values() -> None:
    plain, with_skip = _nystrom("nystrom:landmarks=4"), _nystrom("nystrom:landmarks=4,conv_kernel=3")
    q, k, v, key_mask = _inputs(10)
    assert with_skip.conv_weight is not None
    w = with_skip.conv_weight[:, 0, :, 0]  # (H, 3)
    v_real = v * key_mask[:, None, :, None]
    padded = torch.nn.functional.pad(v_real, (0, 0, 1, 1))
    skip = sum(w[None, :, j, None, None] * padded[:, :, j : j + 10] for j in range(3))
    torch.testing.assert_close(
        with_skip(q, k, v, key_mask=key_mask), plain(q, k, v, key_mask=key_mask) + skip, atol=1e-12, rtol=0
    )
    with pytest.raises(ValueError, match="seq_q"):
        with_skip(q[:, :, :7], k, v)
