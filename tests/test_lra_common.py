"""Issue 17, what the five LRA families share: memory without n×n tensors, cost models, options, seeding, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from attnbench import SpecError, available_attention, create_attention
from attnbench.core.attention import Attention
from attnbench.core.registry import attention_class
from attnbench.testing import AllocationRecorder, check_attention

SUB_QUADRATIC = ["linformer", "nystrom", "reformer", "sinkhorn"]
ALL = [*SUB_QUADRATIC, "synthesizer"]
BIDIRECTIONAL = SUB_QUADRATIC


def _qkv(n: int, *, head_dim: int = 16, heads: int = 2, batch: int = 1, seed: int = 0, **kw: object) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, head_dim, generator=g, **kw) for _ in range(3)]  # type: ignore[call-overload]


def _largest_forward_and_backward(spec: str, n: int) -> tuple[int, int]:
    """Largest new buffer of the forward and of the backward, parameter gradients aside.

    A length-tied parameter (Linformer's k × max_len projections) gets a gradient of its full size whatever n
    is: a constant, not a tensor that grows with n.
    """
    attn = create_attention(spec, head_dim=16, num_heads=2)
    q, k, v = (t.requires_grad_(True) for t in _qkv(n))
    key_mask = torch.rand(1, n, generator=torch.Generator().manual_seed(1)) > 0.2
    with AllocationRecorder() as forward:
        out = attn(q, k, v, key_mask=key_mask)
    with AllocationRecorder() as backward:
        out.sum().backward()
    parameter_shapes = {tuple(p.shape) for p in attn.parameters()}
    grown = [a.elements for a in backward.allocations if a.shape not in parameter_shapes]
    return forward.largest.elements, max(grown)


@pytest.mark.parametrize("spec", SUB_QUADRATIC)
def test_no_n_by_n_tensor_forward_or_backward(spec: str) -> None:
    n = 4096
    forward, backward = _largest_forward_and_backward(spec, n)
    # the largest buffers are O(n·k), O(n·m) or O(n·bucket) over both heads: far below one head's n²
    assert forward < n * n // 4, forward
    assert backward < n * n // 4, backward


def test_the_allocation_check_catches_a_quadratic_variant() -> None:
    n = 1024
    forward, backward = _largest_forward_and_backward("synthesizer", n)
    assert forward >= n * n and backward >= n * n


@pytest.mark.parametrize("spec", ALL)
@pytest.mark.parametrize("backward", [False, True])
def test_predicted_peak_bytes_lies_between_the_largest_and_the_sum_of_allocations(spec: str, backward: bool) -> None:
    n = 1024
    attn = create_attention(spec, head_dim=16, num_heads=2)
    q, k, v = (t.requires_grad_(backward) for t in _qkv(n))
    with AllocationRecorder() as recorder:
        out = attn(q, k, v)
        if backward:
            out.sum().backward()
    predicted = attn.predicted_peak_bytes(batch=1, seq_q=n, seq_k=n, causal=False, backward=backward, element_size=4)
    assert recorder.largest.nbytes <= predicted <= sum(a.nbytes for a in recorder.allocations)


@pytest.mark.parametrize("spec", ALL)
def test_flops_match_the_counted_matmuls_within_a_few_percent(spec: str) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    n = 512
    attn = create_attention(spec, head_dim=16, num_heads=2)
    q, k, v = _qkv(n)
    with FlopCounterMode(display=False) as counter:
        attn(q, k, v)
    counted = counter.get_total_flops()
    analytic = attn.flops(batch=1, seq_q=n, seq_k=n, causal=False)
    assert 0.9 * counted <= analytic <= 1.1 * counted, (counted, analytic)


def test_families_group_the_five() -> None:
    assert available_attention("lowrank") == ["linformer", "nystrom"]
    assert available_attention("learned") == ["reformer", "sinkhorn"]
    assert available_attention("synthetic") == ["synthesizer"]


@pytest.mark.parametrize("spec", BIDIRECTIONAL)
def test_bidirectional_variants_say_why_they_refuse_causal(spec: str) -> None:
    cls = attention_class(spec)
    reason = cls.unsupported_reason(device="cpu", backward=True, causal=True)
    assert reason is not None and "bidirectional" in reason
    assert cls.unsupported_reason(device="cpu", backward=True, causal=False) is None
    attn = create_attention(spec, head_dim=16, num_heads=2)
    with pytest.raises(ValueError, match="causal"):
        attn(*_qkv(8), causal=True)


def test_synthesizer_has_a_causal_form() -> None:
    assert attention_class("synthesizer").unsupported_reason(device="cpu", backward=True, causal=True) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("linformer:k=0", "k must be a positive int"),
        ("nystrom:conv_kernel=4", "conv_kernel must be odd"),
        ("nystrom:pinv=svd", "pinv"),
        ("reformer:n_hashes=0", "n_hashes must be a positive int"),
        ("sinkhorn:temperature=0", "temperature must be a finite positive number"),
        ("synthesizer:mode=factorized", "mode"),
    ],
)
def test_bad_options_are_refused_with_the_fix(spec: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        create_attention(spec, head_dim=16, num_heads=2)


@pytest.mark.parametrize(("spec", "n"), [("linformer:max_len=64", 65), ("synthesizer:max_len=64", 65)])
def test_length_tied_variants_refuse_a_longer_call_naming_max_len(spec: str, n: int) -> None:
    attn = create_attention(spec, head_dim=16, num_heads=2)
    with pytest.raises(ValueError, match=f"max_len={n}"):
        attn(*_qkv(n))


@pytest.mark.parametrize("spec", ["linformer", "nystrom:conv_kernel=3", "synthesizer", "synthesizer:mode=random"])
def test_parameters_come_from_the_seed_option_not_the_global_rng(spec: str) -> None:
    torch.manual_seed(1)
    a = create_attention(spec, head_dim=8, num_heads=2)
    torch.manual_seed(2)
    b = create_attention(spec, head_dim=8, num_heads=2)
    other = create_attention(f"{spec}{',' if ':' in spec else ':'}seed=5", head_dim=8, num_heads=2)
    for (name, pa), pb, po in zip(a.named_parameters(), b.parameters(), other.parameters(), strict=True):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, po), name


@pytest.mark.parametrize(
    "spec",
    ["nystrom:landmarks=8,conv_kernel=3", "reformer:bucket_size=4", "sinkhorn:block_size=8,gumbel=true"],
)
def test_the_kit_passes_off_the_defaults_too(spec: str) -> None:
    # the kit's defaults hit one landmark per token, one bucket and one block at its gradcheck length; Gumbel
    # noise is drawn afresh by each training-mode call by design, so the module is checked in evaluation mode
    def make() -> Attention:
        return create_attention(spec, head_dim=8, num_heads=2).eval()

    check_attention(make).raise_for_failures()


@pytest.mark.parametrize(
    "spec",
    [
        "linformer:k=4,share_heads=false",
        "nystrom:landmarks=3,conv_kernel=3",
        "reformer:bucket_size=2",
        "sinkhorn:block_size=3",
        "synthesizer",
        "synthesizer:mode=random",
    ],
)
def test_float64_gradients_match_finite_differences_with_several_blocks(spec: str) -> None:
    attn = create_attention(spec, head_dim=4, num_heads=2).double()
    if hasattr(attn, "sort_weight"):  # move the sort off the identity, so S depends on W in a general way
        with torch.no_grad():
            attn.sort_weight.add_(torch.randn(attn.sort_weight.shape, dtype=torch.float64))
    n = 10
    q, k, v = (t.requires_grad_(True) for t in _qkv(n, head_dim=4, dtype=torch.float64))
    key_mask = torch.ones(1, n, dtype=torch.bool)
    key_mask[0, [2, 7]] = False
    causal = attn.supports_causal

    def fn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return attn(q, k, v, causal=causal, key_mask=key_mask)

    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-5, rtol=1e-3)
