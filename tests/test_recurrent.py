"""The gated/delta recurrences (issue 16): chunked form = naive recurrence = step loop, O(n) memory, masking."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from attnbench import create_attention
from attnbench.testing import AllocationRecorder, check_attention
from attnbench.variants.recurrent import GLAAttention, Mamba2Attention, RecurrentAttention

VARIANTS = ["retnet", "gla", "deltanet", "gated-deltanet", "mamba2"]


def _recurrent(spec: str, *, head_dim: int = 8, num_heads: int = 2) -> RecurrentAttention:
    attn = create_attention(spec, head_dim=head_dim, num_heads=num_heads)
    assert isinstance(attn, RecurrentAttention)
    return attn


def _inputs(n: int, *, dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 2, n, 8, generator=g, dtype=dtype) for _ in range(3))
    key_mask = torch.rand(2, n, generator=g) > 0.3
    key_mask[-1, :3] = False  # the first queries of the last item see no real key
    return q, k, v, key_mask


def _step_loop(attn: RecurrentAttention, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor) -> Tensor:
    state = attn.init_state(batch=q.shape[0], dtype=q.dtype)
    outs = []
    for t in range(q.shape[-2]):
        out, state = attn.step(
            q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state, key_valid=key_mask[:, t]
        )
        outs.append(out)
    return torch.cat(outs, dim=2)


def _output_and_grads(
    attn: RecurrentAttention, fn: Callable[[Tensor, Tensor, Tensor], Tensor], q: Tensor, k: Tensor, v: Tensor
) -> list[Tensor]:
    attn.zero_grad()
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = fn(*leaves)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype)
    (out * grad_out).sum().backward()
    params = [p.grad.clone() for p in attn.parameters() if p.grad is not None]
    return [out.detach(), *(t.grad for t in leaves), *params]  # type: ignore[list-item]


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("n", [1, 13, 29])
def test_chunked_equals_naive_and_step_loop_outputs_and_gradients(name: str, n: int) -> None:
    attn = _recurrent(f"{name}:chunk=8")  # 13 and 29 are not multiples of the chunk
    q, k, v, key_mask = _inputs(n)
    chunked = _output_and_grads(attn, lambda q, k, v: attn(q, k, v, causal=True, key_mask=key_mask), q, k, v)
    naive = _output_and_grads(attn, lambda q, k, v: attn.reference(q, k, v, key_mask=key_mask), q, k, v)
    stepped = _output_and_grads(attn, lambda q, k, v: _step_loop(attn, q, k, v, key_mask), q, k, v)
    has_parameters = any(True for _ in attn.parameters())
    assert len(chunked) == 4 + has_parameters * len(list(attn.parameters()))
    for what, other in (("naive", naive), ("step loop", stepped)):
        assert len(other) == len(chunked)
        for i, (a, b) in enumerate(zip(chunked, other, strict=True)):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=lambda m, i=i, w=what: f"{w}, tensor {i}: {m}")


@pytest.mark.parametrize("name", VARIANTS)
def test_float64_gradcheck(name: str) -> None:
    attn = _recurrent(f"{name}:chunk=3").double()
    q, k, v, key_mask = _inputs(7, dtype=torch.float64)
    leaves = tuple(t[:1].clone().requires_grad_(True) for t in (q, k, v))

    def fn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return attn(q, k, v, causal=True, key_mask=key_mask[:1])

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", VARIANTS)
def test_chunk_size_does_not_change_outputs(name: str) -> None:
    q, k, v, key_mask = _inputs(45)
    base = _recurrent(f"{name}:chunk=64")(q, k, v, causal=True, key_mask=key_mask)
    for chunk in (1, 4, 16, 45, 100):
        out = _recurrent(f"{name}:chunk={chunk}")(q, k, v, causal=True, key_mask=key_mask)
        torch.testing.assert_close(out, base, atol=2e-5, rtol=1e-4, msg=lambda m, c=chunk: f"chunk={c}: {m}")


@pytest.mark.parametrize("name", VARIANTS)
def test_a_masked_key_neither_writes_nor_decays_the_state(name: str) -> None:
    attn = _recurrent(name)
    q, k, v, _ = _inputs(6)
    _, state = attn.prefill(q, k, v)
    assert float(state.detach().abs().max()) > 0
    token = (x[:, :, :1] * 3 for x in (q, k, v))
    _, after = attn.step(*token, state, key_valid=torch.tensor([False, True]))
    torch.testing.assert_close(after[0], state[0], atol=0, rtol=0)  # item 0: masked, untouched
    assert not torch.equal(after[1], state[1])  # item 1: a real key changes it


@pytest.mark.parametrize("name", VARIANTS)
def test_prefill_then_steps_continue_the_forward(name: str) -> None:
    attn = _recurrent(f"{name}:chunk=4")
    q, k, v, key_mask = _inputs(23)
    full = attn(q, k, v, causal=True, key_mask=key_mask)
    out, state = attn.prefill(q[:, :, :10], k[:, :, :10], v[:, :, :10], key_mask=key_mask[:, :10])
    torch.testing.assert_close(out, full[:, :, :10])
    rest = _step_loop_from(attn, state, q[:, :, 10:], k[:, :, 10:], v[:, :, 10:], key_mask[:, 10:])
    torch.testing.assert_close(rest, full[:, :, 10:], atol=2e-5, rtol=1e-4)
    assert state.shape == (2, 2, 8, 8)  # fixed size whatever the prompt
    assert attn.state_bytes(state) == 2 * 2 * 8 * 8 * 4


def _step_loop_from(
    attn: RecurrentAttention, state: Tensor, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor
) -> Tensor:
    outs = []
    for t in range(q.shape[-2]):
        token = (x[:, :, t : t + 1] for x in (q, k, v))
        out, state = attn.step(*token, state, key_valid=key_mask[:, t])
        outs.append(out)
    return torch.cat(outs, dim=2)


@pytest.mark.parametrize("name", VARIANTS)
def test_causal_only_and_self_only(name: str) -> None:
    attn = _recurrent(name)
    q, k, v, _ = _inputs(5)
    with pytest.raises(ValueError, match="causal-only"):
        attn(q, k, v)
    with pytest.raises(ValueError, match="seq_q == seq_k"):
        attn(q, k[:, :, :3], v[:, :, :3], causal=True)
    assert type(attn).unsupported_reason(device="cpu", backward=True, causal=False) is not None


@pytest.mark.parametrize("name", VARIANTS)
def test_kit_passes_across_chunks(name: str) -> None:
    report = check_attention(f"{name}:chunk=16")  # the kit's n = 70 and 73 span several chunks
    report.raise_for_failures()
    assert report["decode"].status == "passed"
    assert report["noncausal_rejected"].status == "passed"


@pytest.mark.parametrize("name", VARIANTS)
def test_no_quadratic_tensor_and_no_per_token_state_at_8192(name: str) -> None:
    n, d = 8192, 16
    attn = _recurrent(name, head_dim=d, num_heads=1)
    q, k, v = (torch.randn(1, 1, n, d, requires_grad=True) for _ in range(3))
    with AllocationRecorder() as rec:
        attn(q, k, v, causal=True).sum().backward()
    largest = rec.largest
    # a per-token state would be n·d_k·d_v elements, an n×n matrix n²; the chunked form holds n·chunk at most
    assert largest.elements < n * d * d // 2, largest
    assert largest.elements <= n * attn.chunk, largest
    assert q.grad is not None and k.grad is not None and v.grad is not None


def test_gla_stays_exact_at_the_strongest_gates() -> None:
    attn = _recurrent("gla:chunk=128").double()
    with torch.no_grad():
        attn.gate_bias.fill_(30.0)  # every gate at its bound: e⁻¹ per token, e⁻¹²⁸ across a chunk
    q, k, v, key_mask = _inputs(200, dtype=torch.float64)
    out = attn(q, k, v, causal=True, key_mask=key_mask)
    torch.testing.assert_close(out, attn.reference(q, k, v, key_mask=key_mask))
    single = _recurrent("gla:chunk=128")
    single.load_state_dict(attn.float().state_dict())
    out32 = single(q.float(), k.float(), v.float(), causal=True, key_mask=key_mask)
    assert bool(torch.isfinite(out32).all())
    torch.testing.assert_close(out32, out.float(), atol=1e-5, rtol=1e-4)


def test_mamba2_large_steps_stay_finite() -> None:
    attn = _recurrent("mamba2:chunk=32")
    assert isinstance(attn, Mamba2Attention)
    with torch.no_grad():
        attn.step_bias.fill_(50.0)  # Δ ≈ 50: decays of e⁻⁸⁰⁰ and more per token
    q, k, v, key_mask = _inputs(70)
    out = attn(q, k, v, causal=True, key_mask=key_mask)
    assert bool(torch.isfinite(out).all())
    torch.testing.assert_close(out, attn.reference(q, k, v, key_mask=key_mask), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [("retnet:chunk=0", "chunk must be a positive int"), ("gla:chunk=256", "chunk must be <= 128")],
)
def test_bad_options_name_the_fix(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        create_attention(spec, head_dim=8, num_heads=2)


def test_gates_are_learned_from_the_keys() -> None:
    attn = _recurrent("gla")
    assert isinstance(attn, GLAAttention)
    q, k, v, _ = _inputs(9)
    attn(q, k, v, causal=True).sum().backward()
    assert attn.gate_weight.grad is not None and float(attn.gate_weight.grad.abs().max()) > 0
