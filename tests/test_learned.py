"""Issue 17, the learned-pattern family: Reformer (LSH buckets) and Sinkhorn (learned block sort)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench import create_attention
from attnbench.testing import reference_attention
from attnbench.variants import sinkhorn as sinkhorn_module
from attnbench.variants.reformer import Chunking, ReformerAttention
from attnbench.variants.sinkhorn import SinkhornAttention

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
    dq, dk, dv = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    return out.detach(), (dq, torch.zeros_like(k) if dk is None else dk, dv)


def _max_difference(
    fn: Callable[[Tensor, Tensor, Tensor], Tensor], want: Callable[[Tensor, Tensor, Tensor], Tensor], *x: Tensor
) -> float:
    out, grads = _with_grads(fn, *x)
    ref, ref_grads = _with_grads(want, *x)
    return max(float((a - b).abs().max()) for a, b in zip((out, *grads), (ref, *ref_grads), strict=True))


# Reformer ----------------------------------------------------------------------------------------------------------
def _reformer(spec: str) -> ReformerAttention:
    attn = create_attention(spec, head_dim=8, num_heads=2).double()
    assert isinstance(attn, ReformerAttention)
    return attn


class _ReformerAttendingItself(ReformerAttention):
    """Broken on purpose: a token may attend itself even when it has other keys."""

    @staticmethod
    def allowed_keys(real_key: Tensor, is_self: Tensor) -> Tensor:
        return real_key.expand(is_self.shape)


def _one_bucket_reference(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Softmax with keys = normalised queries, every token but itself (each row has another key here)."""
    n = q.shape[-2]
    return reference_attention(q, F.normalize(q, dim=-1), v, allowed=~torch.eye(n, dtype=torch.bool)[None])


def test_reformer_with_one_bucket_is_softmax_over_normalised_queries_without_self() -> None:
    attn = _reformer("reformer:bucket_size=16")
    q, k, v, _ = _inputs(13)
    assert _max_difference(lambda q, k, v: attn(q, k, v), _one_bucket_reference, q, k, v) < 1e-12


def test_reformer_letting_a_token_attend_itself_fails_the_one_bucket_limit() -> None:
    broken = _ReformerAttendingItself(head_dim=8, num_heads=2, bucket_size=16).double()
    q, k, v, _ = _inputs(13)
    assert float((broken(q, k, v) - _one_bucket_reference(q, k, v)).abs().max()) > 1e-3


@pytest.mark.parametrize("masked", [False, True])
def test_reformer_with_many_buckets_equals_its_dense_pattern_reference(masked: bool) -> None:
    attn = _reformer("reformer:bucket_size=4,n_hashes=3")
    q, k, v, key_mask = _inputs(23)
    mask = key_mask if masked else None
    assert attn.sort_order(q, mask, Chunking.of(23, attn.bucket_size)).shape == (2, 2, 3, 23)
    error = _max_difference(
        lambda q, k, v: attn(q, k, v, key_mask=mask), lambda q, k, v: attn.reference(q, v, key_mask=mask), q, k, v
    )
    assert error < 1e-12


def test_reformer_self_rule_gives_a_lone_token_itself() -> None:
    attn = _reformer("reformer:bucket_size=4")
    q, k, v, _ = _inputs(12, batch=1)
    key_mask = torch.zeros(1, 12, dtype=torch.bool)
    key_mask[0, 5] = True  # one real token: it has nothing but itself
    out = attn(q, k, v, key_mask=key_mask)
    torch.testing.assert_close(out[0, :, 5], v[0, :, 5], atol=1e-12, rtol=0)


def test_reformer_hashes_are_seeded_per_module() -> None:
    q, k, v, key_mask = _inputs(40)
    a, b = _reformer("reformer:bucket_size=4"), _reformer("reformer:bucket_size=4")
    other = _reformer("reformer:bucket_size=4,seed=1")
    torch.manual_seed(123)  # the global RNG plays no part
    chunking = Chunking.of(40, a.bucket_size)
    assert torch.equal(a.buckets(q, key_mask, chunking), b.buckets(q, key_mask, chunking))
    assert not torch.equal(a.buckets(q, key_mask, chunking), other.buckets(q, key_mask, chunking))
    assert torch.equal(a(q, k, v, key_mask=key_mask), a(q, k, v, key_mask=key_mask))


def test_reformer_padding_keeps_real_outputs_independent_of_padded_queries() -> None:
    attn = _reformer("reformer:bucket_size=4")
    q, k, v, key_mask = _inputs(24)
    q2 = torch.where(~key_mask[:, None, :, None], 3 * q.flip(-1), q)  # padded tokens hash elsewhere
    a, b = attn(q, k, v, key_mask=key_mask), attn(q2, k, v, key_mask=key_mask)
    real_rows = key_mask[:, None, :, None].expand_as(a)
    torch.testing.assert_close(a[real_rows], b[real_rows], atol=1e-12, rtol=0)


def test_reformer_keys_argument_is_unused_and_gets_a_zero_gradient() -> None:
    attn = _reformer("reformer:bucket_size=4")
    q, k, v, _ = _inputs(12)
    k = k.requires_grad_(True)
    out = attn(q, k, v)
    torch.testing.assert_close(out, attn(q, torch.randn_like(k), v), atol=0, rtol=0)
    (dk,) = torch.autograd.grad(out.sum(), k)
    assert torch.equal(dk, torch.zeros_like(k))


# Sinkhorn ----------------------------------------------------------------------------------------------------------
def _sinkhorn(spec: str, *, perturb: bool = True) -> SinkhornAttention:
    attn = create_attention(spec, head_dim=8, num_heads=2).double()
    assert isinstance(attn, SinkhornAttention)
    if perturb:  # a trained-looking sort, not the identity initialisation
        g = torch.Generator().manual_seed(4)
        with torch.no_grad():
            attn.sort_weight.add_(torch.randn(attn.sort_weight.shape, generator=g, dtype=torch.float64))
    return attn


@pytest.mark.parametrize("masked", [False, True])
def test_sinkhorn_with_one_block_is_softmax(masked: bool) -> None:
    attn = _sinkhorn("sinkhorn:block_size=16")
    q, k, v, key_mask = _inputs(13)
    mask = key_mask if masked else None
    error = _max_difference(
        lambda q, k, v: attn(q, k, v, key_mask=mask),
        lambda q, k, v: reference_attention(q, k, v, key_mask=mask),
        q,
        k,
        v,
    )
    assert error < 1e-12


@pytest.mark.parametrize("masked", [False, True])
def test_sinkhorn_with_many_blocks_equals_its_token_by_token_reference(masked: bool) -> None:
    attn = _sinkhorn("sinkhorn:block_size=3")
    q, k, v, key_mask = _inputs(11)
    mask = key_mask if masked else None
    torch.testing.assert_close(attn(q, k, v, key_mask=mask), attn.reference(q, k, v, key_mask=mask), atol=1e-12, rtol=0)


def _doubly_stochastic_error(attn: SinkhornAttention) -> float:
    q, k, _, key_mask = _inputs(20)
    key_mask[1, 8:] = False  # item 1: blocks 2..4 have no real token and take no part
    size, count = attn.blocks(20)
    real = key_mask.view(2, count, size)
    with torch.no_grad():
        s = attn.sorting_matrix(q.view(2, 2, count, size, 8), k.view(2, 2, count, size, 8), real)
    present = real.any(-1)  # (B, M)
    assert torch.equal(s == 0, ~(present[:, None, :, None] & present[:, None, None, :]).expand_as(s))
    rows, cols = s.sum(-1), s.sum(-2)
    want = present[:, None, :].to(s.dtype).expand_as(rows)
    return float(max((rows - want).abs().max(), (cols - want).abs().max()))


def _rows_only(logits: Tensor, block_real: Tensor, iterations: int) -> Tensor:
    """Broken on purpose: normalises rows only (a softmax), so columns do not sum to one."""
    pair = block_real[:, None, :, None] & block_real[:, None, None, :]
    return torch.softmax(logits.masked_fill(~pair, -torch.inf), dim=-1).nan_to_num(0.0)


def test_sinkhorn_sort_is_doubly_stochastic_over_real_blocks_and_a_row_softmax_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attn = _sinkhorn("sinkhorn:block_size=4,iterations=50")
    assert _doubly_stochastic_error(attn) < 1e-6
    monkeypatch.setattr(sinkhorn_module, "sinkhorn", _rows_only)
    assert _doubly_stochastic_error(attn) > 1e-2


def test_sinkhorn_gumbel_noise_is_seeded_and_training_only() -> None:
    q, k, v, _ = _inputs(16)
    a, b = _sinkhorn("sinkhorn:block_size=4,gumbel=true"), _sinkhorn("sinkhorn:block_size=4,gumbel=true")
    plain = _sinkhorn("sinkhorn:block_size=4")
    first, again = a(q, k, v), a(q, k, v)
    assert not torch.equal(first, again)  # fresh noise per training call
    torch.testing.assert_close(b(q, k, v), first, atol=0, rtol=0)  # a rebuilt module replays it
    a.eval()
    torch.testing.assert_close(a(q, k, v), plain(q, k, v), atol=0, rtol=0)  # none in evaluation
