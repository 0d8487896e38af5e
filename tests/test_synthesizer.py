"""Issue 17, the Synthesizer: weights without a query–key product, exact against softmax(R)·V, honest causality."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from attnbench import create_attention
from attnbench.variants.synthesizer import SynthesizerAttention


def _inputs(n: int, *, n_k: int | None = None, seed: int = 0) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    n_k = n if n_k is None else n_k
    q = torch.randn(2, 2, n, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 2, n_k, 8, generator=g, dtype=torch.float64) for _ in range(2))
    key_mask = torch.rand(2, n_k, generator=g) > 0.3
    key_mask[:, 0] = True
    return q, k, v, key_mask


def _random(n: int) -> tuple[SynthesizerAttention, Tensor]:
    attn = create_attention(f"synthesizer:mode=random,max_len={n}", head_dim=8, num_heads=2).double()
    assert isinstance(attn, SynthesizerAttention)
    r = torch.randn(2, n, n, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        attn.random_logits.copy_(r)
    return attn, r


def _softmax_r_v(r: Tensor, v: Tensor, *, causal: bool, key_mask: Tensor) -> Tensor:
    """softmax(R)·V over the allowed keys, written out densely in float64."""
    n = r.shape[-1]
    allowed = key_mask[:, None, None, :] & (torch.ones(n, n, dtype=torch.bool).tril() if causal else True)
    weights = torch.exp(r - r.amax(-1, keepdim=True))[None] * allowed
    return (weights / weights.sum(-1, keepdim=True)) @ v


class _LeakySynthesizer(SynthesizerAttention):
    """Broken on purpose: ignores ``causal``, so a token reads the weights of later positions."""

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        return super().forward(q, k, v, causal=False, key_mask=key_mask)


@pytest.mark.parametrize("causal", [False, True])
def test_random_synthesizer_with_a_fixed_matrix_is_softmax_of_it_times_v(causal: bool) -> None:
    n = 11
    attn, r = _random(n)
    q, k, v, key_mask = _inputs(n)
    v = v.requires_grad_(True)
    r_leaf = r.clone().requires_grad_(True)
    out = attn(q, k, v, causal=causal, key_mask=key_mask)
    want = _softmax_r_v(r_leaf, v, causal=causal, key_mask=key_mask)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    dv, dr = torch.autograd.grad(out, (v, attn.random_logits), grad_out)
    dv_want, dr_want = torch.autograd.grad(want, (v, r_leaf), grad_out)
    torch.testing.assert_close(dv, dv_want, atol=1e-12, rtol=0)
    torch.testing.assert_close(dr, dr_want, atol=1e-12, rtol=0)


def test_a_synthesizer_that_ignores_causal_fails_the_causal_limit() -> None:
    n = 11
    honest, r = _random(n)
    leaky = _LeakySynthesizer(head_dim=8, num_heads=2, mode="random", max_len=n).double()
    leaky.load_state_dict(honest.state_dict())
    q, k, v, key_mask = _inputs(n)
    want = _softmax_r_v(r, v, causal=True, key_mask=key_mask)
    with torch.no_grad():
        assert float((leaky(q, k, v, causal=True, key_mask=key_mask) - want).abs().max()) > 1e-3


def test_dense_weights_come_from_each_token_alone_with_no_query_key_product() -> None:
    attn = create_attention("synthesizer", head_dim=8, num_heads=2).double()
    q, k, v, key_mask = _inputs(10)
    out = attn(q, k, v, key_mask=key_mask)
    torch.testing.assert_close(attn(q, 5 * k + 1, v, key_mask=key_mask), out, atol=0, rtol=0)  # keys play no part
    q2 = q.clone()
    q2[:, :, 7] += 3.0  # another token's query changes only that token's row
    changed = attn(q2, k, v, key_mask=key_mask)
    unchanged_rows = torch.ones(10, dtype=torch.bool)
    unchanged_rows[7] = False
    torch.testing.assert_close(changed[:, :, unchanged_rows], out[:, :, unchanged_rows], atol=0, rtol=0)
    assert not torch.allclose(changed[:, :, 7], out[:, :, 7])


def test_causal_rows_do_not_depend_on_the_total_length() -> None:
    # what makes the base class's recurrent form (recompute the causal prefix) valid for the synthesizer
    for spec in ("synthesizer", "synthesizer:mode=random"):
        attn = create_attention(spec, head_dim=8, num_heads=2).double()
        q, k, v, key_mask = _inputs(12)
        full = attn(q, k, v, causal=True, key_mask=key_mask)
        prefix = attn(q[:, :, :7], k[:, :, :7], v[:, :, :7], causal=True, key_mask=key_mask[:, :7])
        torch.testing.assert_close(prefix, full[:, :, :7], atol=1e-12, rtol=0)


def test_cross_lengths_slice_the_length_tied_weights() -> None:
    attn, r = _random(11)
    q, k, v, key_mask = _inputs(6, n_k=11)
    out = attn(q, k, v, key_mask=key_mask)
    torch.testing.assert_close(out, _softmax_r_v(r[:, :6], v, causal=False, key_mask=key_mask), atol=1e-12, rtol=0)
