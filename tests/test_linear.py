"""Linear attention (issue 4): the fast forms equal the naive quadratic form, memory stays O(n), numerics hold."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from attnbench import SpecError, available_attention, create_attention
from attnbench.testing import AllocationRecorder, check_attention, reference_attention, relative_error
from attnbench.variants.linear import LinearAttention, ops

VARIANTS = ["linear", "linear-relu", "performer", "taylor"]
Grads = tuple[Tensor, Tensor, Tensor]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # small tensors gain nothing from a second thread, and on a shared machine its barriers cost dearly
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream in blocks of 16 tokens so short sequences cross block boundaries too."""
    monkeypatch.setattr(ops, "BLOCK_TOKENS", 16)


def _linear(spec: str, *, head_dim: int = 8, num_heads: int = 2) -> LinearAttention:
    attn = create_attention(spec, head_dim=head_dim, num_heads=num_heads)
    assert isinstance(attn, LinearAttention)
    return attn


def _inputs(
    n: int, *, n_k: int | None = None, batch: int = 2, heads: int = 2, head_dim: int = 8, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n_k = n if n_k is None else n_k
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, n, head_dim, generator=g)
    k, v = (torch.randn(batch, heads, n_k, head_dim, generator=g) for _ in range(2))
    key_mask = torch.rand(batch, n_k, generator=g) > 0.3
    key_mask[-1, :9] = False  # the first queries of the last item see no key, across a chunk boundary
    return q, k, v, key_mask


def _with_grads(
    fn: Callable[[Tensor, Tensor, Tensor], Tensor], q: Tensor, k: Tensor, v: Tensor
) -> tuple[Tensor, Grads]:
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = fn(*leaves)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(99)).to(out.dtype)
    grads = torch.autograd.grad(out, leaves, grad_out)
    return out.detach(), (grads[0], grads[1], grads[2])


def _assert_matches_quadratic_form(
    attn: LinearAttention, q: Tensor, k: Tensor, v: Tensor, *, causal: bool, key_mask: Tensor | None
) -> None:
    reference = copy.deepcopy(attn).double()  # the same features, through the n×n form, in float64
    out, grads = _with_grads(lambda q, k, v: attn(q, k, v, causal=causal, key_mask=key_mask), q, k, v)
    want, want_grads = _with_grads(
        lambda q, k, v: reference.reference(q, k, v, causal=causal, key_mask=key_mask),
        q.double(),
        k.double(),
        v.double(),
    )
    torch.testing.assert_close(out, want.float(), atol=1e-4, rtol=1e-4)
    for name, got, expected in zip("qkv", grads, want_grads, strict=True):
        torch.testing.assert_close(got, expected.float(), atol=1e-4, rtol=1e-4, msg=lambda m, n=name: f"d{n}: {m}")


# equal to the naive quadratic form ------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
@pytest.mark.parametrize("name", VARIANTS)
def test_causal_chunked_equals_quadratic_form(name: str, chunk: int, small_blocks: None) -> None:
    attn = _linear(f"{name}:chunk={chunk}")
    q, k, v, key_mask = _inputs(37)  # 37 is not a multiple of any chunk, nor of the 16-token blocks
    for mask in (None, key_mask):
        _assert_matches_quadratic_form(attn, q, k, v, causal=True, key_mask=mask)


@pytest.mark.parametrize("name", VARIANTS)
def test_noncausal_equals_quadratic_form(name: str, small_blocks: None) -> None:
    attn = _linear(name)
    for n, n_k in ((37, 37), (23, 41)):  # self and cross attention
        q, k, v, key_mask = _inputs(n, n_k=n_k)
        for mask in (None, key_mask):
            _assert_matches_quadratic_form(attn, q, k, v, causal=False, key_mask=mask)


@pytest.mark.parametrize("name", VARIANTS)
def test_chunk_size_does_not_change_outputs(name: str) -> None:
    q, k, v, key_mask = _inputs(150)
    base = _linear(f"{name}:chunk=64")(q, k, v, causal=True, key_mask=key_mask)
    for chunk in (1, 3, 16, 150, 500):
        out = _linear(f"{name}:chunk={chunk}")(q, k, v, causal=True, key_mask=key_mask)
        torch.testing.assert_close(out, base, atol=1e-5, rtol=1e-4, msg=lambda m, c=chunk: f"chunk={c}: {m}")


@pytest.mark.parametrize("name", VARIANTS)
def test_recurrent_step_equals_causal_form(name: str) -> None:
    attn = _linear(f"{name}:chunk=8")
    q, k, v, key_mask = _inputs(29)
    parallel = attn(q, k, v, causal=True, key_mask=key_mask)
    state = attn.init_state(batch=2)
    outs = []
    for t in range(q.shape[-2]):
        token = (x[:, :, t : t + 1] for x in (q, k, v))  # (B, H, 1, D): forward's layout
        out, state = attn.step(*token, state, key_valid=key_mask[:, t])
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=2), parallel, atol=1e-5, rtol=1e-4)
    assert state.kv.shape == (2, 2, attn.features, 9)  # O(m·d) whatever the length
    assert state.kv.dtype == torch.float32
    assert attn.state_bytes(state) == 4 * (2 * 2 * attn.features * 9 + 2 * 2)


@pytest.mark.parametrize("name", VARIANTS)
def test_prefill_state_continues_like_the_step_loop(name: str, small_blocks: None) -> None:
    attn = _linear(f"{name}:chunk=4")
    q, k, v, key_mask = _inputs(37)
    parallel = attn(q, k, v, causal=True, key_mask=key_mask)
    out, state = attn.prefill(q[:, :, :20], k[:, :, :20], v[:, :, :20], key_mask=key_mask[:, :20])
    torch.testing.assert_close(out, parallel[:, :, :20], atol=1e-5, rtol=1e-4)
    for t in range(20, 37):
        out, state = attn.step(
            q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state, key_valid=key_mask[:, t]
        )
        torch.testing.assert_close(out, parallel[:, :, t : t + 1], atol=1e-5, rtol=1e-4)


def test_step_rejects_a_sequence() -> None:
    attn = _linear("linear")
    q, k, v, _ = _inputs(4)
    with pytest.raises(ValueError, match="one token per call"):
        attn.step(q, k, v, attn.init_state(batch=2))
    with pytest.raises(ValueError, match="one token per call"):
        attn.step(q[:, :, 0], k[:, :, 0], v[:, :, 0], attn.init_state(batch=2))  # the old (B, H, D) layout


# the conformance kit, across chunk and block boundaries ----------------------------------------------------------
@pytest.mark.parametrize("spec", ["performer:features=32,chunk=4", "taylor:feature_dim=4,chunk=3"])
def test_kit_passes_across_chunks_and_blocks(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # blocks of 8 tokens: the kit's gradcheck (n = 9) spans two; FAVOR+ takes the running-reference path,
    # Taylor the plain one
    monkeypatch.setattr(ops, "BLOCK_TOKENS", 8)
    report = check_attention(spec)
    report.raise_for_failures()
    assert report["causal_invariance"].status == "passed"
    assert report["gradcheck"].status == "passed"


@pytest.mark.parametrize("seed", [1, 3, 4])
def test_performer_gradients_are_exact_for_every_seed(seed: int) -> None:
    # the row stabiliser is taken without gradient: only an exactly scale-free normalisation keeps that right
    report = check_attention("performer", seed=seed)  # 256 features: a small normaliser per feature
    assert report["gradcheck"].status == "passed", report["gradcheck"].detail


def test_every_linear_variant_is_registered() -> None:
    assert set(available_attention(family="linear")) >= set(VARIANTS)
    for name in VARIANTS:
        attn = _linear(name)
        assert (attn.family, attn.exact, attn.supports_causal, attn.supports_cross) == ("linear", False, True, True)


# Performer -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_performer_error_shrinks_as_features_grow(causal: bool) -> None:
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 2, 64, 16, generator=g) * 0.5 for _ in range(2))
    v = torch.randn(2, 2, 64, 16, generator=g)
    exact = reference_attention(q, k, v, causal=causal)
    errors = []
    for features in (16, 64, 256, 1024):
        per_seed = [
            relative_error(
                _linear(f"performer:features={features},seed={seed}", head_dim=16)(q, k, v, causal=causal), exact
            )
            for seed in range(4)
        ]
        errors.append(sum(per_seed) / len(per_seed))
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < errors[0] / 4, errors  # random-feature error falls like 1/√m: 8× over 16 → 1024


def test_performer_stabiliser_survives_huge_logits_without_leaking_the_future() -> None:
    attn = _linear("performer:chunk=16", head_dim=64)
    q, k, v, key_mask = _inputs(80, head_dim=64)
    q, k = q * 6, k * 6  # ω·x' − |x'|²/2 ≈ −90: the unscaled features would underflow to 0 in float32
    reference = copy.deepcopy(attn).double()
    for causal in (False, True):
        out = attn(q, k, v, causal=causal, key_mask=key_mask)
        assert torch.isfinite(out).all()
        want = reference.reference(q.double(), k.double(), v.double(), causal=causal, key_mask=key_mask)
        torch.testing.assert_close(out, want.float(), atol=1e-4, rtol=1e-4)
    # later keys (in t's chunk and after) set to a feature direction: the largest log scale a key can have, so
    # a reference that looked ahead would push every earlier weight below float32's range
    t = 40
    k2 = k.clone()
    k2[:, :, t + 1 :] = attn.feature_map.projection[0] / attn.scale**0.5
    before = attn(q, k, v, causal=True, key_mask=key_mask)[:, :, : t + 1]
    after = attn(q, k2, v, causal=True, key_mask=key_mask)[:, :, : t + 1]
    torch.testing.assert_close(after, before, atol=1e-6, rtol=1e-5)


def test_performer_redraws_only_when_asked_and_training() -> None:
    q, k, v, _ = _inputs(20)
    fixed = _linear("performer:features=16")
    assert torch.equal(fixed(q, k, v), fixed(q, k, v))
    redraw = _linear("performer:features=16,redraw=true")
    first = redraw(q, k, v)
    assert not torch.equal(redraw(q, k, v), first)
    redraw.eval()
    assert torch.equal(redraw(q, k, v), redraw(q, k, v))
    twin = _linear("performer:features=16,redraw=true")
    assert torch.equal(twin(q, k, v), first)  # the draws follow the seed
    assert not torch.equal(_linear("performer:features=16,seed=1")(q, k, v), fixed(q, k, v))


def test_redraw_before_backward_keeps_the_gradient_of_the_first_draw() -> None:
    # backward recomputes each block's features: it must use the draw the forward used
    q, k, v, _ = _inputs(40)
    first_only = _linear("performer:features=16,redraw=true")
    _, want = _with_grads(lambda q, k, v: first_only(q, k, v, causal=True), q, k, v)
    attn = _linear("performer:features=16,redraw=true")

    def forward_then_another(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out = attn(q, k, v, causal=True)
        attn(q.detach(), k.detach(), v.detach())  # draws new features before the first backward
        return out

    _, got = _with_grads(forward_then_another, q, k, v)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_favor_projection_rows_are_orthogonal_in_blocks() -> None:
    projection = _linear("performer:features=20").feature_map.projection  # head_dim 8: blocks of 8, 8, 4
    for block in projection.split(8):
        gram = block @ block.T
        torch.testing.assert_close(gram - torch.diag(torch.diagonal(gram)), torch.zeros_like(gram), atol=1e-5, rtol=0)


# Taylor ----------------------------------------------------------------------------------------------------------
def test_taylor_features_give_the_second_order_expansion_of_exp() -> None:
    attn = _linear("taylor", head_dim=64, num_heads=2)
    assert attn.features == 1 + 16 + 136
    x = torch.randn(1, 2, 5, 64)
    y = torch.randn(1, 2, 5, 64)
    phi_x, phi_y = attn.feature_map(x).values, attn.feature_map(y).values
    projection = attn.feature_map.projection.detach()
    t = torch.einsum("bhnf,bhnf->bhn", x @ projection, y @ projection) * attn.scale  # (B, H, N)
    torch.testing.assert_close((phi_x * phi_y).sum(-1), 1 + t + t**2 / 2, atol=1e-4, rtol=1e-4)


# memory: never the n·m·d tensor ----------------------------------------------------------------------------------
def _outer_product_then_cumsum(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The formulation issue 4 forbids: one m×d outer product per token, then a cumsum over them."""
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    states = torch.einsum("bhnm,bhnd->bhnmd", phi_k, v).cumsum(dim=2)  # (B, H, N, m, d)
    numerator = torch.einsum("bhnm,bhnmd->bhnd", phi_q, states)
    normaliser = torch.einsum("bhnm,bhnm->bhn", phi_q, phi_k.cumsum(dim=2))
    return numerator / normaliser.unsqueeze(-1)


def _largest_allocation(fn: Callable[[Tensor, Tensor, Tensor], Tensor], n: int, head_dim: int) -> int:
    q, k, v = (torch.randn(1, 2, n, head_dim, requires_grad=True) for _ in range(3))
    with AllocationRecorder() as recorder:
        fn(q, k, v).sum().backward()
    return recorder.largest.elements


@pytest.mark.parametrize("name", VARIANTS)
def test_causal_memory_never_holds_an_n_by_m_by_d_tensor(name: str) -> None:
    n, head_dim = 8192, 16
    attn = _linear(name, head_dim=head_dim)
    largest = _largest_allocation(lambda q, k, v: attn(q, k, v, causal=True), n, head_dim)
    assert largest < n * attn.features * head_dim // 4
    assert largest < n * n // 2


def test_the_memory_test_catches_outer_product_then_cumsum() -> None:
    n, head_dim = 8192, 16
    assert _largest_allocation(_outer_product_then_cumsum, n, head_dim) >= n * head_dim * head_dim // 4


@pytest.mark.parametrize("causal", [False, True])
def test_predicted_peak_bytes_lies_between_the_largest_and_the_sum_of_allocations(causal: bool) -> None:
    for name in VARIANTS:
        attn = _linear(name, head_dim=16)
        q, k, v = (torch.randn(1, 2, 2048, 16, requires_grad=True) for _ in range(3))
        with AllocationRecorder() as recorder:
            attn(q, k, v, causal=causal).sum().backward()
        predicted = attn.predicted_peak_bytes(
            batch=1, seq_q=2048, seq_k=2048, causal=causal, backward=True, element_size=4
        )
        assert recorder.largest.nbytes <= predicted <= sum(a.nbytes for a in recorder.allocations), name


# numerics --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VARIANTS)
def test_long_sequence_is_finite(name: str) -> None:
    attn = _linear(name, head_dim=16, num_heads=1)
    q, k, v = (torch.randn(1, 1, 65536, 16, requires_grad=True) for _ in range(3))
    for causal in (True, False):
        out = attn(q, k, v, causal=causal)
        grads = torch.autograd.grad(out.square().mean(), (q, k, v))
        assert torch.isfinite(out).all()
        assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ["linear", "performer"])
def test_bf16_inputs_accumulate_in_fp32(name: str) -> None:
    attn = _linear(name, head_dim=16)
    q, k, v = (x.bfloat16() for x in _inputs(4096, head_dim=16)[:3])
    with AllocationRecorder() as recorder:
        out = attn(q, k, v, causal=True)
    assert out.dtype == torch.bfloat16
    low_precision = [a for a in recorder.allocations if a.nbytes == a.elements * 2]
    assert [a.shape for a in low_precision] == [tuple(out.shape)]  # only the result is cast back to bf16
    want = attn(q.float(), k.float(), v.float(), causal=True)
    torch.testing.assert_close(out.float(), want, atol=1e-2, rtol=1e-2)  # bf16's rounding of the output only


# options and cost model ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "option"),
    [
        ("linear:chunk=0", "chunk"),
        ("linear-relu:chunk=-3", "chunk"),
        ("performer:features=0", "features"),
        ("taylor:feature_dim=0", "feature_dim"),
        ("performer:scale=-1.0", "scale"),
        ("taylor:scale=nan", "scale"),
        ("performer:scale=inf", "scale"),
    ],
)
def test_bad_options_name_the_option_and_the_fix(spec: str, option: str) -> None:
    with pytest.raises(SpecError, match=rf"{option} must be .*(use e\.g\.|or none)"):
        create_attention(spec, head_dim=8, num_heads=2)


@pytest.mark.parametrize("name", VARIANTS)
def test_flops_count_every_matmul(name: str, small_blocks: None) -> None:
    attn = _linear(f"{name}:chunk=5")
    for causal, n, n_k in ((True, 37, 37), (False, 23, 41), (True, 3, 3)):
        q, k, v, _ = _inputs(n, n_k=n_k)
        with FlopCounterMode(display=False) as counter:
            attn(q, k, v, causal=causal)
        assert attn.flops(batch=2, seq_q=n, seq_k=n_k, causal=causal) == counter.get_total_flops()


def test_flops_grow_linearly_with_length() -> None:
    attn = _linear("performer", head_dim=64, num_heads=4)
    for causal in (False, True):
        small, large = (attn.flops(batch=1, seq_q=n, seq_k=n, causal=causal) for n in (4096, 8192))
        assert large == 2 * small
