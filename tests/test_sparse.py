"""The sparse family: exactness against the float64 reference, the patterns' meaning, and no n×n buffers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from attnbench import SpecError, create_attention
from attnbench.core.attention import Attention
from attnbench.testing import ATOL, RTOL, AllocationRecorder, check_attention, reference_attention
from attnbench.variants.sparse import bigbird_random_blocks
from attnbench.variants.sparse.patterns import CAUSAL_STRIDE

# small blocks and windows so that n = 20…70 really is sparse
SMALL_SPECS = [
    "window:radius=5,block=8",
    "window:radius=0,block=4",
    "window:radius=13,block=16",
    "strided:stride=6,block=5",
    "strided",
    "strided:stride=100,block=3",  # longer than every test length: no summary positions at all
    "bigbird:block=8,num_random=2,num_global=2",
    "bigbird:block=4,window_blocks=0,num_random=3,num_global=0,seed=3",
    "longformer:radius=4,block=8,global_positions=[0,17,45]",
    "longformer:radius=6,block=16",
]


Fn = Callable[[Tensor, Tensor, Tensor], Tensor]


def _random_shapes(g: torch.Generator, count: int) -> list[tuple[int, int, int, int]]:
    """(batch, heads, n, head_dim) drawn from ``g``; n in 9…80, mostly not a multiple of any block size."""

    def pick(*options: int) -> int:
        return options[int(torch.randint(len(options), (1,), generator=g))]

    return [
        (pick(1, 2), pick(1, 2, 3), int(torch.randint(9, 81, (1,), generator=g)), pick(4, 8, 16)) for _ in range(count)
    ]


def _inputs(g: torch.Generator, b: int, h: int, n: int, d: int, *, masked: bool) -> tuple[Tensor, ...]:
    q, k, v, grad = (torch.randn(b, h, n, d, generator=g) for _ in range(4))
    key_mask = torch.rand(b, n, generator=g) > 0.3 if masked else None
    if key_mask is not None and b > 1:
        key_mask[-1, : n // 3] = False  # causal rows of the last item with no key at all
    return q, k, v, grad, key_mask


def _grads(fn: Fn, q: Tensor, k: Tensor, v: Tensor, grad: Tensor) -> tuple[Tensor, list[Tensor]]:
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = fn(*leaves)
    (out * grad).sum().backward()
    return out.detach(), [t.grad for t in leaves]


def _assert_matches_reference(
    attn: Attention, x: tuple[Tensor, ...], *, causal: bool, key_mask: Tensor | None, what: str
) -> None:
    q, k, v, grad = x
    n = q.shape[-2]
    allowed = attn.pattern_mask(n, n, causal=causal)

    def ours(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return attn(q, k, v, causal=causal, key_mask=key_mask)

    def reference(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return reference_attention(
            q, k, v, allowed=allowed, causal=causal, key_mask=key_mask, scale=attn.head_dim**-0.5
        )

    out, grads = _grads(ours, q, k, v, grad)
    want, want_grads = _grads(reference, q, k, v, grad)
    torch.testing.assert_close(out, want, atol=ATOL, rtol=RTOL, msg=lambda m: f"output, {what}: {m}")
    for name, got, expected in zip("qkv", grads, want_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL, msg=lambda m, x=name: f"d{x}, {what}: {m}")


@pytest.mark.parametrize("spec", SMALL_SPECS)
def test_outputs_and_gradients_equal_the_reference(spec: str) -> None:
    g = torch.Generator().manual_seed(sum(map(ord, spec)))
    for b, h, n, d in [*_random_shapes(g, 3), (2, 2, 64, 8)]:
        attn = create_attention(spec, head_dim=d, num_heads=h)
        for causal in (False, True):
            for masked in (False, True):
                q, k, v, grad, key_mask = _inputs(g, b, h, n, d, masked=masked)
                what = f"{spec} shape={(b, h, n, d)} causal={causal} key_mask={masked}"
                _assert_matches_reference(attn, (q, k, v, grad), causal=causal, key_mask=key_mask, what=what)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_window_covering_the_sequence_is_softmax(causal: bool, masked: bool) -> None:
    g = torch.Generator().manual_seed(11)
    n = 50
    q, k, v, grad, key_mask = _inputs(g, 2, 2, n, 8, masked=masked)
    window = create_attention(f"window:radius={n - 1},block=16", head_dim=8, num_heads=2)
    softmax = create_attention("softmax", head_dim=8, num_heads=2)
    out, grads = _grads(lambda q, k, v: window(q, k, v, causal=causal, key_mask=key_mask), q, k, v, grad)
    want, want_grads = _grads(lambda q, k, v: softmax(q, k, v, causal=causal, key_mask=key_mask), q, k, v, grad)
    torch.testing.assert_close(out, want, atol=ATOL, rtol=RTOL)
    for got, expected in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


# what the patterns mean ------------------------------------------------------------------------------------
def _positions(n: int) -> tuple[Tensor, Tensor]:
    return torch.arange(n)[:, None], torch.arange(n)[None, :]


@pytest.mark.parametrize("causal", [False, True])
def test_window_pattern_is_the_band(causal: bool) -> None:
    i, j = _positions(41)
    mask = create_attention("window:radius=3,block=8", head_dim=4, num_heads=2).pattern_mask(41, 41, causal=causal)
    want = (j - i).abs() <= 3
    assert torch.equal(mask[0], want & (j <= i) if causal else want)


@pytest.mark.parametrize("causal", [False, True])
def test_strided_pattern_is_local_block_plus_summaries(causal: bool) -> None:
    i, j = _positions(40)
    mask = create_attention("strided:stride=5,block=8", head_dim=4, num_heads=2).pattern_mask(40, 40, causal=causal)
    want = (i // 8 == j // 8) | (j % 5 == 4)
    assert torch.equal(mask[0], want & (j <= i) if causal else want)


def test_strided_defaults_to_root_n() -> None:
    layout = create_attention("strided", head_dim=4, num_heads=1).layout(100, causal=False)
    assert layout.block == 10
    assert layout.global_keys.tolist() == list(range(9, 100, 10))


def test_strided_causal_default_is_a_fixed_stride() -> None:
    layout = create_attention("strided", head_dim=4, num_heads=1).layout(300, causal=True)
    assert layout.block == CAUSAL_STRIDE
    assert layout.global_keys.tolist() == list(range(CAUSAL_STRIDE - 1, 300, CAUSAL_STRIDE))


@pytest.mark.parametrize(
    "spec", ["strided", "bigbird:block=4,num_random=2,num_global=1,seed=5", "longformer:radius=3,block=8"]
)
def test_a_causal_pattern_does_not_depend_on_the_total_length(spec: str) -> None:
    # decoding sees only a prefix: query i's keys must be the same whatever comes after it
    attn = create_attention(spec, head_dim=4, num_heads=3)
    long = attn.pattern_mask(203, 203, causal=True)
    for n in (37, 64, 150):
        assert torch.equal(attn.pattern_mask(n, n, causal=True), long[:, :n, :n]), n


@pytest.mark.parametrize("causal", [False, True])
def test_longformer_globals_see_and_are_seen(causal: bool) -> None:
    i, j = _positions(30)
    attn = create_attention("longformer:radius=2,block=8,global_positions=[0,11,99]", head_dim=4, num_heads=2)
    mask = attn.pattern_mask(30, 30, causal=causal)[0]
    is_global = torch.zeros(30, dtype=torch.bool)
    is_global[[0, 11]] = True  # 99 lies beyond the sequence and is ignored
    want = ((j - i).abs() <= 2) | is_global[:, None] | is_global[None, :]
    assert torch.equal(mask, want & (j <= i) if causal else want)


@pytest.mark.parametrize("causal", [False, True])
def test_bigbird_pattern_parts(causal: bool) -> None:
    n, blk, heads, num_global = 64, 4, 3, 3
    attn = create_attention(
        f"bigbird:block={blk},num_random=2,num_global={num_global},seed=7", head_dim=4, num_heads=heads
    )
    mask = attn.pattern_mask(n, n, causal=causal)
    assert mask.shape == (heads, n, n)
    i, j = _positions(n)
    visible = j <= i if causal else torch.ones(n, n, dtype=torch.bool)
    is_global = torch.arange(n) < num_global
    window = (i // blk - j // blk).abs() <= 1
    globals_ = is_global[:, None] | is_global[None, :]
    assert bool((mask | ~(window & visible)).all()), "every window key is allowed"
    assert bool((mask | ~(globals_ & visible)).all()), "global tokens see every key and are seen by every query"
    assert not bool((mask & ~visible).any()), "nothing from the future in causal mode"

    nb = n // blk
    rest = mask & ~globals_  # what is left must be window and random blocks
    block_pairs = rest.view(heads, nb, blk, nb, blk).any(dim=4).any(dim=2)  # (H, nb, nb)
    for h in range(heads):
        for qb in range(nb):
            random = [kb for kb in range(nb) if abs(kb - qb) > 1 and bool(block_pairs[h, qb, kb])]
            candidates = [kb for kb in range(nb) if (kb < qb - 1 if causal else abs(kb - qb) > 1)]
            assert len(random) == min(2, len(candidates)), (h, qb, random)
            assert set(random) <= set(candidates), (h, qb, random)
    assert not torch.equal(block_pairs[0], block_pairs[1]), "each head draws its own random blocks"


def test_bigbird_pattern_is_fixed_by_the_seed_and_ignores_train_eval() -> None:
    spec = "bigbird:block=4,num_random=2,num_global=1,seed=3"
    a = create_attention(spec, head_dim=8, num_heads=2)
    b = create_attention(spec, head_dim=8, num_heads=2)
    other = create_attention(spec.replace("seed=3", "seed=4"), head_dim=8, num_heads=2)
    first = a.pattern_mask(60, 60, causal=False)
    assert torch.equal(a.pattern_mask(60, 60, causal=False), first)
    assert torch.equal(b.pattern_mask(60, 60, causal=False), first)
    assert not torch.equal(other.pattern_mask(60, 60, causal=False), first)
    bigbird_random_blocks.cache_clear()  # recomputed from scratch, still the same
    assert torch.equal(a.pattern_mask(60, 60, causal=False), first)

    g = torch.Generator().manual_seed(0)
    q, k, v, _, key_mask = _inputs(g, 2, 2, 60, 8, masked=True)
    a.train()
    trained = a(q, k, v, key_mask=key_mask)
    a.eval()
    assert torch.equal(a(q, k, v, key_mask=key_mask), trained)


# the conformance kit with sparse options -------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec",
    [
        "window:radius=5,block=8",
        "strided:stride=8,block=16",
        "bigbird:block=8,num_random=2,num_global=2",
        "longformer:radius=5,block=8,global_positions=[0,33]",
    ],
)
def test_sparse_options_pass_the_kit(spec: str) -> None:
    check_attention(spec, seq_len=70).raise_for_failures()


# cost -----------------------------------------------------------------------------------------------------
def _largest_allocation(attn: Attention, n: int, *, causal: bool) -> int:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, 16, generator=g).requires_grad_(True) for _ in range(3))
    key_mask = torch.rand(1, n, generator=g) > 0.1
    with AllocationRecorder() as recorder:
        out = attn(q, k, v, causal=causal, key_mask=key_mask)
        out.backward(torch.ones_like(out))
    return recorder.largest.elements


@pytest.mark.parametrize(
    ("spec", "causal"),
    [
        ("window:radius=128", False),
        ("window:radius=128", True),
        ("longformer:radius=128", False),
        ("bigbird", True),
        ("strided", False),
    ],
)
def test_no_buffer_near_n_squared_forward_or_backward(spec: str, causal: bool) -> None:
    n = 4096
    largest = _largest_allocation(create_attention(spec, head_dim=16, num_heads=2), n, causal=causal)
    assert largest < n * n // 2, f"{spec} allocated a tensor of {largest} elements (n·n/2 = {n * n // 2})"


def test_the_allocation_check_bites_on_dense_attention() -> None:
    n = 4096
    largest = _largest_allocation(create_attention("softmax-naive", head_dim=16, num_heads=2), n, causal=False)
    assert largest >= n * n // 2


def test_flops_count_only_the_computed_strip() -> None:
    attn = create_attention("window:radius=16,block=8", head_dim=4, num_heads=2)
    n, strip = 64, 8 + 2 * 16
    # per query: QKᵀ and PV over the strip, each with the bias feature (head_dim + 1), 2 FLOPs per multiply-add
    assert attn.flops(batch=3, seq_q=n, seq_k=n, causal=False) == 3 * 2 * n * strip * (2 * 5 + 2 * 5)
    assert attn.flops(batch=1, seq_q=4 * n, seq_k=4 * n, causal=False) == 4 * attn.flops(
        batch=1, seq_q=n, seq_k=n, causal=False
    )
    causal = attn.flops(batch=1, seq_q=n, seq_k=n, causal=True)
    assert causal < attn.flops(batch=1, seq_q=n, seq_k=n, causal=False)
    dense = create_attention("softmax", head_dim=4, num_heads=2).flops(batch=1, seq_q=4096, seq_k=4096, causal=False)
    assert attn.flops(batch=1, seq_q=4096, seq_k=4096, causal=False) < dense / 40


@pytest.mark.parametrize("spec", ["window:radius=128", "bigbird", "longformer:radius=128"])
@pytest.mark.parametrize("backward", [False, True])
def test_predicted_bytes_grow_linearly(spec: str, backward: bool) -> None:
    attn = create_attention(spec, head_dim=64, num_heads=4)
    naive = create_attention("softmax-naive", head_dim=64, num_heads=4)

    def predicted(n: int, variant: Attention = attn) -> int:
        peak = variant.predicted_peak_bytes(batch=1, seq_q=n, seq_k=n, causal=False, backward=backward, element_size=4)
        assert peak is not None
        return peak

    assert predicted(16384) - predicted(8192) == pytest.approx(2 * (predicted(8192) - predicted(4096)), rel=0.02)
    assert predicted(16384) < predicted(16384, naive) / 10


def test_strided_time_grows_like_n_to_the_1_5_and_memory_linearly() -> None:
    attn = create_attention("strided", head_dim=64, num_heads=4)
    flops = [attn.flops(batch=1, seq_q=n, seq_k=n, causal=False) for n in (4096, 16384)]
    peak = [
        attn.predicted_peak_bytes(batch=1, seq_q=n, seq_k=n, causal=False, backward=False, element_size=4)
        for n in (4096, 16384)
    ]
    assert flops[1] / flops[0] == pytest.approx(8, rel=0.05)  # (16384 / 4096) ** 1.5
    # n/√n blocks of 2√n gathered keys each: the key sets are O(n), only the work is O(n·√n)
    assert peak[1] / peak[0] == pytest.approx(4, rel=0.05)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("window:radius=-1", "radius must be >= 0"),
        ("window:block=0", "block must be >= 1"),
        ("longformer:global_positions=[-2]", "global_positions must be token positions >= 0"),
        ("strided:stride=0", "stride must be >= 1"),
        ("bigbird:num_random=-1", "pass num_random=0"),
    ],
)
def test_bad_options_name_the_option_and_the_fix(spec: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        create_attention(spec, head_dim=8, num_heads=2)


def test_cross_attention_and_flops_refuse_different_lengths() -> None:
    attn = create_attention("window:radius=4", head_dim=8, num_heads=2)
    q = torch.randn(1, 2, 10, 8)
    kv = torch.randn(1, 2, 12, 8)
    with pytest.raises(ValueError, match="seq_q"):
        attn(q, kv, kv)
    with pytest.raises(ValueError, match="self-attention"):
        attn.flops(batch=1, seq_q=10, seq_k=12, causal=False)
