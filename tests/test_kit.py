"""The conformance kit can fail: each deliberately broken variant is caught by the check named for its fault."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from attnbench import Attention
from attnbench.testing import CheckReport, check_attention, reference_attention


class Honest(Attention):
    """A correct exact variant (the float64 reference, cast back)."""

    exact = True

    def __init__(self, *, head_dim: int, num_heads: int) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, causal: bool, key_mask: Tensor | None) -> Tensor:
        return reference_attention(q, k, v, causal=causal, key_mask=key_mask)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None):
        self.validate(q, k, v, causal=causal, key_mask=key_mask)
        return self.attend(q, k, v, causal, key_mask)


class LeaksFuture(Honest):
    def attend(self, q, k, v, causal, key_mask):
        return reference_attention(q, k, v, causal=False, key_mask=key_mask)


class IgnoresKeyMask(Honest):
    def attend(self, q, k, v, causal, key_mask):
        return reference_attention(q, k, v, causal=causal, key_mask=None)


class NaNOnFullyMaskedRows(Honest):
    def attend(self, q, k, v, causal, key_mask):
        scores = q @ k.transpose(-1, -2) * self.default_scale
        if causal:
            scores = scores.masked_fill(~torch.ones_like(scores, dtype=torch.bool).tril(), float("-inf"))
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        return torch.softmax(scores, dim=-1) @ v


class WrongScale(Honest):
    def attend(self, q, k, v, causal, key_mask):
        return reference_attention(q, k, v, causal=causal, key_mask=key_mask, scale=1.0 / q.shape[-1])


class _DoubledGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return 2 * grad


class WrongGradient(Honest):
    def attend(self, q, k, v, causal, key_mask):
        return reference_attention(_DoubledGradient.apply(q), k, v, causal=causal, key_mask=key_mask)


def _check(cls: type[Attention]) -> CheckReport:
    return check_attention(lambda: cls(head_dim=8, num_heads=2), seq_len=20, cross_seq_len=13)


def test_a_correct_variant_passes_every_check() -> None:
    report = _check(Honest)
    assert report.passed, report.failures
    assert {r.name for r in report.results} >= {
        "shape_dtype", "finite", "rejects_bad_shapes", "key_mask_invariance", "causal_invariance",
        "fully_masked_rows", "batch_independence", "cross_lengths", "determinism", "reference_outputs",
        "reference_gradients", "gradcheck",
    }  # fmt: skip
    assert all(r.status == "passed" for r in report.results)


@pytest.mark.parametrize(
    ("broken", "caught_by"),
    [
        (LeaksFuture, "causal_invariance"),
        (IgnoresKeyMask, "key_mask_invariance"),
        (NaNOnFullyMaskedRows, "fully_masked_rows"),
        (WrongScale, "reference_outputs"),
        (WrongGradient, "reference_gradients"),
    ],
)
def test_each_fault_is_caught_by_its_check(broken: type[Attention], caught_by: str) -> None:
    report = _check(broken)
    assert not report.passed
    assert report[caught_by].status == "failed", report[caught_by]
    with pytest.raises(AssertionError, match=caught_by):
        report.raise_for_failures()


def test_gradcheck_catches_a_wrong_gradient_in_a_non_exact_variant() -> None:
    class Approximate(WrongGradient):
        exact = False

    report = _check(Approximate)
    assert report["gradcheck"].status == "failed"
    assert "analytic gradient != finite differences" in report["gradcheck"].detail
    assert report["softmax_error"].status == "reported"


def test_the_base_class_refuses_causal_for_a_variant_without_it() -> None:
    class Bidirectional(Honest):
        supports_causal = False

        def forward(self, q, k, v, *, causal=False, key_mask=None):
            return self.attend(q, k, v, False, key_mask)  # would accept causal=True silently: the base refuses

    report = _check(Bidirectional)
    assert report["causal_rejected"].status == "passed"
    assert "supports_causal" in report["causal_rejected"].detail
    assert "decode" not in {r.name for r in report.results}  # no causal mode, no recurrent form


def test_forward_only_backends_have_gradient_checks_skipped() -> None:
    class ForwardOnly(Honest):
        def attend(self, q, k, v, causal, key_mask):
            if q.requires_grad:
                raise NotImplementedError("no backward on this device")
            return super().attend(q, k, v, causal, key_mask)

    report = _check(ForwardOnly)
    assert report.passed, report.failures
    assert report["reference_gradients"].status == "skipped"
    assert report["gradcheck"].status == "skipped"
    assert report["reference_outputs"].status == "passed"
    # the forward halves of the gradient-taking checks still run, and say that they ran forward only
    assert report["finite"].status == "passed"
    assert "forward only: no backward on this device" in report["finite"].detail
    assert report["fully_masked_rows"].status == "passed"


def test_a_forward_only_backend_is_still_checked_for_zero_fully_masked_rows() -> None:
    class ForwardOnlyNaN(NaNOnFullyMaskedRows):
        def attend(self, q, k, v, causal, key_mask):
            if q.requires_grad:
                raise NotImplementedError("no backward on this device")
            return super().attend(q, k, v, causal, key_mask)

    assert _check(ForwardOnlyNaN)["fully_masked_rows"].status == "failed"


def test_a_variant_that_computes_nothing_fails_instead_of_skipping() -> None:
    class Unimplemented(Honest):
        def attend(self, q, k, v, causal, key_mask):
            raise NotImplementedError("todo")

    report = _check(Unimplemented)
    assert not report.passed
    assert report["shape_dtype"].status == "failed"
    assert "not implemented here: todo" in report["shape_dtype"].detail


class NoValidate(Attention):
    """A plugin that writes only its maths: it never calls validate (the base class must)."""

    def __init__(self, *, head_dim: int, num_heads: int) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)

    def forward(self, q, k, v, *, causal=False, key_mask=None):
        return reference_attention(q, k, v, causal=causal, key_mask=key_mask)


def test_a_plugin_that_never_validates_passes_the_shape_checks() -> None:
    report = _check(NoValidate)
    assert report.passed, report.failures
    assert report["rejects_bad_shapes"].status == "passed"
    assert report["cross_lengths"].status == "passed"


def test_validation_runs_once_per_call_before_forward() -> None:
    calls = []

    class Counting(NoValidate):
        def validate(self, q, k, v, *, causal, key_mask):
            calls.append(causal)
            return super().validate(q, k, v, causal=causal, key_mask=key_mask)

        def forward(self, q, k, v, *, causal=False, key_mask=None):
            assert calls, "forward ran before validate"
            return super().forward(q, k, v, causal=causal, key_mask=key_mask)

    attn = Counting(head_dim=8, num_heads=2)
    q = torch.randn(1, 2, 5, 8)
    attn(q, q, q, causal=True)
    assert calls == [True]
    with pytest.raises(ValueError, match="num_heads=2, head_dim=8"):
        attn(q[:, :1], q[:, :1], q[:, :1])
    with pytest.raises(ValueError, match="causal=True needs self-attention"):
        attn(q, q[:, :, :3], q[:, :, :3], causal=True)


def test_a_causal_only_variant_is_checked_in_causal_mode_only() -> None:
    class CausalOnly(NoValidate):
        supports_noncausal = False

    report = _check(CausalOnly)
    assert report.passed, report.failures
    assert report["noncausal_rejected"].status == "passed"
    assert "supports_noncausal" in report["noncausal_rejected"].detail
    with pytest.raises(ValueError, match="causal-only"):
        CausalOnly(head_dim=8, num_heads=2)(*(torch.randn(1, 2, 4, 8),) * 3, causal=False)
    assert CausalOnly.unsupported_reason(device="cpu", backward=False, causal=False) is not None
    assert CausalOnly.unsupported_reason(device="cpu", backward=False, causal=True) is None
