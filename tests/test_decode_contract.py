"""The recurrent contract (issue 16): prefill and step equal the causal forward; the kit's decode check can fail."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from attnbench import Attention, available_attention, create_attention
from attnbench.core.attention import KVCache
from attnbench.core.registry import attention_class, parse_attention_spec
from attnbench.core.window_cache import RingState, ring_prefill
from attnbench.testing import check_attention, reference_attention
from attnbench.variants.sparse import WindowAttention


def _with_default_recurrence(spec: str) -> Attention:
    """The variant ``spec`` with the base class's KV-cache recurrence in place of its own."""
    parsed = parse_attention_spec(spec)
    cls = attention_class(parsed.name)
    default = type(
        f"Default{cls.__name__}",
        (cls,),
        {name: getattr(Attention, name) for name in ("init_state", "prefill", "step", "state_bytes")},
    )
    return default(head_dim=8, num_heads=2, **parsed.options)


def _causal_builtins() -> list:
    names = [n for n in available_attention() if attention_class(n).supports_causal]
    small = {
        "window": "window:radius=5,block=8",
        "longformer": "longformer:radius=3,block=8,global_positions=[0,17]",
        "bigbird": "bigbird:block=8,num_random=2,num_global=1",
        "strided": "strided:stride=6,block=5",
    }
    return [
        pytest.param(small.get(n, n), marks=pytest.mark.slow) if n.startswith("flex-") else small.get(n, n)
        for n in names
    ]


@pytest.mark.parametrize("spec", _causal_builtins())
def test_the_default_kv_cache_path_passes_for_every_builtin_causal_variant(spec: str) -> None:
    report = check_attention(lambda: _with_default_recurrence(spec), seq_len=40, only={"decode"})
    assert [r.name for r in report.results] == ["decode"]
    assert report["decode"].status == "passed", report["decode"]


@pytest.mark.parametrize(
    "spec",
    [
        "window:radius=5,block=8",  # a ring of 6 slots, wrapped many times over 70 tokens
        "window:radius=0",
        "strided",  # the causal default stride is fixed, whatever n
        "bigbird:block=8,num_random=2,num_global=1",  # random blocks per (seed, head, query block)
        "longformer:radius=3,block=8,global_positions=[0,17]",
    ],
)
def test_sparse_variants_decode_like_their_forward(spec: str) -> None:
    report = check_attention(spec)
    report.raise_for_failures()
    assert report["decode"].status == "passed"


class ForgetsTooEarly(WindowAttention):
    """A ring one slot short: the oldest key in the window is overwritten before its last query."""

    def init_state(self, *, batch: int, device=None, dtype=torch.float32) -> RingState:
        return RingState.empty(batch, self.num_heads, self.config.radius, self.head_dim, device=device, dtype=dtype)

    def prefill(self, q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None):
        return self(q, k, v, causal=True, key_mask=key_mask), ring_prefill(k, v, key_mask, slots=self.config.radius)


def test_the_decode_check_catches_a_state_that_forgets_the_oldest_token_too_early() -> None:
    report = check_attention(lambda: ForgetsTooEarly(head_dim=8, num_heads=2, radius=4, block=8))
    assert report["decode"].status == "failed"
    assert "step loop" in report["decode"].detail or "prefill of" in report["decode"].detail
    assert report["causal_invariance"].status == "passed"  # only decoding is wrong: nothing else notices
    honest = check_attention(lambda: WindowAttention(head_dim=8, num_heads=2, radius=4, block=8))
    assert honest["decode"].status == "passed"


def test_the_decode_check_catches_a_prefill_that_returns_no_state() -> None:
    class LosesPrompt(WindowAttention):
        def prefill(self, q, k, v, *, key_mask=None):
            return self(q, k, v, causal=True, key_mask=key_mask), self.init_state(batch=q.shape[0], dtype=q.dtype)

    report = check_attention(lambda: LosesPrompt(head_dim=8, num_heads=2, radius=4, block=8))
    assert report["decode"].status == "failed"
    assert "prefill of 35 tokens, then steps" in report["decode"].detail


def test_a_length_dependent_pattern_must_declare_it_and_is_skipped() -> None:
    class WholeSequence(Attention):
        """Each query sees the first ⌈n/2⌉ keys of the whole sequence: decoding cannot equal this."""

        supports_decode = False

        def __init__(self, *, head_dim: int, num_heads: int) -> None:
            super().__init__(head_dim=head_dim, num_heads=num_heads)

        def forward(self, q, k, v, *, causal=False, key_mask=None):
            n = k.shape[-2]
            allowed = (torch.arange(n) < (n + 1) // 2).expand(q.shape[-2], n).unsqueeze(0)
            return reference_attention(q, k, v, allowed=allowed, causal=causal, key_mask=key_mask)

    report = check_attention(lambda: WholeSequence(head_dim=8, num_heads=2), seq_len=20, cross_seq_len=13)
    assert report.passed, report.failures
    assert report["decode"].status == "skipped"
    assert "supports_decode=False" in report["decode"].detail
    attn = WholeSequence(head_dim=8, num_heads=2)
    q = torch.randn(1, 2, 1, 8)
    with pytest.raises(ValueError, match="supports_decode=False"):
        attn.step(q, q, q, attn.init_state(batch=1))

    class Undeclared(WholeSequence):
        supports_decode = True

    failed = check_attention(lambda: Undeclared(head_dim=8, num_heads=2), seq_len=20, cross_seq_len=13)
    assert failed["decode"].status == "failed"


def test_the_kit_runs_only_the_checks_asked_for() -> None:
    report = check_attention("linear", only={"decode", "softmax_error"})
    assert [r.name for r in report.results] == ["decode", "softmax_error"]
    with pytest.raises(ValueError, match="unknown check"):
        check_attention("linear", only={"decoding"})


def test_step_checks_its_inputs() -> None:
    attn = create_attention("softmax", head_dim=8, num_heads=2)
    state = attn.init_state(batch=2)
    one = torch.randn(2, 2, 1, 8)
    with pytest.raises(ValueError, match="one token per call"):
        attn.step(torch.randn(2, 2, 3, 8), one, one, state)
    with pytest.raises(ValueError, match="one token per call"):
        attn.step(one[:, :, 0], one[:, :, 0], one[:, :, 0], state)
    with pytest.raises(ValueError, match="num_heads=2, head_dim=8"):
        attn.step(one[:, :1], one[:, :1], one[:, :1], state)
    with pytest.raises(ValueError, match="key_valid must be bool"):
        attn.step(one, one, one, state, key_valid=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="causal=True needs self-attention"):
        attn.prefill(torch.randn(2, 2, 4, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8))


def test_state_bytes_count_what_is_in_use() -> None:
    q = torch.randn(1, 2, 9, 8)
    cache_owner = create_attention("softmax-naive", head_dim=8, num_heads=2)
    _, cache = cache_owner.prefill(q, q, q)
    assert isinstance(cache, KVCache)
    assert cache_owner.state_bytes(cache) == 3 * 2 * 9 * 8 * 4  # the default: q, k and v of every token, O(t)
    softmax = create_attention("softmax", head_dim=8, num_heads=2)
    _, cache = softmax.prefill(q, q, q)
    assert softmax.state_bytes(cache) == 2 * 2 * 9 * 8 * 4  # a K/V cache: keys and values only
    _, cache = softmax.step(q[:, :, :1], q[:, :, :1], q[:, :, :1], cache)
    assert softmax.state_bytes(cache) == 2 * 2 * 10 * 8 * 4

    window = create_attention("window:radius=3", head_dim=8, num_heads=2)
    empty = window.init_state(batch=1)
    assert window.state_bytes(empty) == 0  # preallocated slots are not in use
    per_slot = 2 * 2 * 8 * 4 + 1  # k and v of two heads, and the slot's valid flag
    _, state = window.prefill(q[:, :, :2], q[:, :, :2], q[:, :, :2])
    assert window.state_bytes(state) == 2 * per_slot
    _, state = window.prefill(q, q, q)
    assert window.state_bytes(state) == 4 * per_slot  # radius + 1 slots, however long the prompt


def test_decode_continues_a_batch_with_padded_steps() -> None:
    attn = create_attention("window:radius=2,block=4", head_dim=8, num_heads=2)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 12, 8, generator=g) for _ in range(3))
    key_mask = torch.ones(2, 12, dtype=torch.bool)
    key_mask[1, 5:9] = False  # item 1 is padded in the middle: its window may empty out
    full = attn(q, k, v, causal=True, key_mask=key_mask)
    _, state = attn.prefill(q[:, :, :4], k[:, :, :4], v[:, :, :4], key_mask=key_mask[:, :4])
    for t in range(4, 12):
        token = (x[:, :, t : t + 1] for x in (q, k, v))
        out, state = attn.step(*token, state, key_valid=key_mask[:, t])
        torch.testing.assert_close(out, full[:, :, t : t + 1])
    assert float(full[1, :, 7].abs().max()) == 0.0  # no real key within radius 2 of position 7
