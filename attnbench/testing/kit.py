"""The conformance kit: :func:`check_attention` runs the contract's checks on one variant and reports each.

Every check builds its own small inputs from a seed; a failing check says what differed and by how much.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from torch.autograd.gradcheck import GradcheckError

from attnbench.core.attention import Attention
from attnbench.core.registry import create_attention
from attnbench.testing.reference import ATOL, RTOL, reference_attention, relative_error

Status = Literal["passed", "failed", "skipped", "reported"]
GRADIENT_CHECKS = frozenset({"reference_gradients", "gradcheck"})  # the only ones a forward-only backend skips


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str = ""
    value: float | None = None


@dataclass
class CheckReport:
    spec: str
    exact: bool
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "failed"]

    def __getitem__(self, name: str) -> CheckResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no check named {name!r}; checks: {', '.join(r.name for r in self.results)}")

    def raise_for_failures(self) -> None:
        if self.failures:
            lines = "\n".join(f"  {r.name}: {r.detail}" for r in self.failures)
            raise AssertionError(f"attention {self.spec!r} failed {len(self.failures)} check(s):\n{lines}")


class _CheckFailedError(Exception):
    pass


def _close(actual: Tensor, expected: Tensor, what: str, *, atol: float = ATOL, rtol: float = RTOL) -> None:
    if actual.shape != expected.shape:
        raise _CheckFailedError(f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    a, e = actual.double(), expected.double()
    bad = ~torch.isclose(a, e, atol=atol, rtol=rtol)
    if bool(bad.any()):
        diff = (a - e).abs()
        worst = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
        raise _CheckFailedError(
            f"{what}: {int(bad.sum())} of {bad.numel()} elements differ (max abs diff "
            f"{float(diff.max()):.3g} at {worst}; atol={atol}, rtol={rtol})"
        )


def _finite(t: Tensor, what: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise _CheckFailedError(f"{what} has {int((~torch.isfinite(t)).sum())} non-finite values (NaN/inf)")


@dataclass
class _Inputs:
    q: Tensor
    k: Tensor
    v: Tensor
    key_mask: Tensor
    grad_out: Tensor


class _Kit:
    def __init__(
        self,
        make: Callable[[], Attention],
        label: str,
        *,
        batch: int,
        seq_len: int,
        cross_seq_len: int,
        seed: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.make = make
        self.label = label
        self.batch, self.seq_len, self.cross_seq_len = batch, seq_len, cross_seq_len
        self.seed, self.dtype, self.device = seed, dtype, device
        with _seeded(seed):
            self.module = make().to(device)
        self.heads, self.head_dim = self.module.num_heads, self.module.head_dim
        self.no_backward: str | None = None  # why gradients cannot be taken here, once a backend said so
        scale = getattr(self.module, "scale", None)
        self.scale = float(scale) if isinstance(scale, (int, float)) else self.head_dim**-0.5

    def inputs(self, seq_q: int | None = None, seq_k: int | None = None, *, salt: int = 0) -> _Inputs:
        nq = self.seq_len if seq_q is None else seq_q
        nk = nq if seq_k is None else seq_k
        g = torch.Generator().manual_seed(self.seed * 1000 + salt)
        shape = (self.batch, self.heads)

        def randn(*s: int) -> Tensor:
            return torch.randn(*s, generator=g).to(self.device, self.dtype)

        key_mask = torch.rand(self.batch, nk, generator=g) > 0.3
        key_mask[:, 0] = True  # every query (causal ones too) keeps at least one key
        return _Inputs(
            q=randn(*shape, nq, self.head_dim),
            k=randn(*shape, nk, self.head_dim),
            v=randn(*shape, nk, self.head_dim),
            key_mask=key_mask.to(self.device),
            grad_out=randn(*shape, nq, self.head_dim),
        )

    def run(self, x: _Inputs, *, causal: bool, key_mask: Tensor | None, module: Attention | None = None) -> Tensor:
        return (module or self.module)(x.q, x.k, x.v, causal=causal, key_mask=key_mask)

    def grads(
        self, x: _Inputs, *, causal: bool, key_mask: Tensor | None, fn: Callable[..., Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        q, k, v = (t.detach().clone().requires_grad_(True) for t in (x.q, x.k, x.v))
        out = self.module(q, k, v, causal=causal, key_mask=key_mask) if fn is None else fn(q, k, v)
        (out * x.grad_out).sum().backward()
        return out.detach(), (q.grad, k.grad, v.grad)  # type: ignore[return-value]

    def outputs_and_grads(
        self, x: _Inputs, *, causal: bool, key_mask: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor] | None]:
        """Output and input gradients; gradients None where the backend has no backward here (it said so)."""
        try:
            return self.grads(x, causal=causal, key_mask=key_mask)
        except NotImplementedError as err:
            self.no_backward = str(err)
        with torch.no_grad():
            return self.run(x, causal=causal, key_mask=key_mask), None

    def forward_only_note(self) -> str:
        return f" (forward only: {self.no_backward})" if self.no_backward else ""

    def modes(self) -> list[bool]:
        """The causal settings this variant accepts: non-causal unless causal-only, causal if supported."""
        return [c for c in (False, True) if (self.module.supports_causal if c else self.module.supports_noncausal)]

    @property
    def mode(self) -> bool:
        """The causal setting of the checks that use one mode: non-causal, unless the variant is causal-only."""
        return not self.module.supports_noncausal

    def allowed(self, seq_q: int, seq_k: int, causal: bool) -> Tensor | None:
        return self.module.pattern_mask(seq_q, seq_k, causal=causal)

    def reference(self, x: _Inputs, *, causal: bool, key_mask: Tensor | None, pattern: bool = True) -> Tensor:
        nq, nk = x.q.shape[-2], x.k.shape[-2]
        allowed = self.allowed(nq, nk, causal) if pattern else None
        return reference_attention(x.q, x.k, x.v, allowed=allowed, causal=causal, key_mask=key_mask, scale=self.scale)

    # the checks -----------------------------------------------------------------------------------------
    def check_shape_dtype(self) -> str:
        x = self.inputs()
        out = self.run(x, causal=self.mode, key_mask=None)
        expected = (self.batch, self.heads, self.seq_len, x.v.shape[-1])
        if tuple(out.shape) != expected:
            raise _CheckFailedError(f"output shape {tuple(out.shape)}, expected {expected}")
        if out.dtype != x.q.dtype:
            raise _CheckFailedError(f"output dtype {out.dtype}, expected the input dtype {x.q.dtype}")
        return f"{tuple(out.shape)} {out.dtype}"

    def check_finite(self) -> str:
        x = self.inputs(salt=1)
        for causal in self.modes():
            for key_mask in (None, x.key_mask):
                out, grads = self.outputs_and_grads(x, causal=causal, key_mask=key_mask)
                tag = f"causal={causal}, key_mask={'yes' if key_mask is not None else 'no'}"
                _finite(out, f"output ({tag})")
                for name, g in zip("qkv", grads or (), strict=False):
                    if g is None:
                        raise _CheckFailedError(f"d{name} is None ({tag}): the output does not depend on {name}")
                    _finite(g, f"d{name} ({tag})")
        return "outputs and gradients finite" + self.forward_only_note()

    def check_key_mask_invariance(self) -> str:
        x = self.inputs(salt=2)
        masked = ~x.key_mask[:, None, :, None]  # (B, 1, Nk, 1)
        noise = torch.randn_like(x.k) * 10
        k2 = torch.where(masked, x.k + noise, x.k)
        v2 = torch.where(masked, x.v - noise, x.v)
        for causal in self.modes():
            a = self.run(x, causal=causal, key_mask=x.key_mask)
            b = self.module(x.q, k2, v2, causal=causal, key_mask=x.key_mask)
            _close(b, a, f"outputs after changing masked keys/values (causal={causal})")
        return "changing masked keys and values leaves outputs unchanged"

    def check_causal_invariance(self) -> str:
        x = self.inputs(salt=3)
        t = self.seq_len // 2
        future = torch.zeros(1, 1, self.seq_len, 1, dtype=torch.bool, device=self.device)
        future[:, :, t + 1 :] = True
        q2, k2, v2 = (torch.where(future, y + 5 * torch.randn_like(y), y) for y in (x.q, x.k, x.v))
        for key_mask in (None, x.key_mask):
            a = self.run(x, causal=True, key_mask=key_mask)
            b = self.module(q2, k2, v2, causal=True, key_mask=key_mask)
            _close(b[:, :, : t + 1], a[:, :, : t + 1], f"outputs at positions <= {t} after changing later tokens")
        return f"positions <= {t} unaffected by tokens after {t}"

    def check_causal_rejected(self) -> str:
        x = self.inputs()
        try:
            self.run(x, causal=True, key_mask=None)
        except ValueError as err:
            return f"causal=True raises ValueError: {err}"
        raise _CheckFailedError("supports_causal is False but causal=True did not raise ValueError")

    def check_noncausal_rejected(self) -> str:
        x = self.inputs()
        try:
            self.run(x, causal=False, key_mask=None)
        except ValueError as err:
            return f"causal=False raises ValueError: {err}"
        raise _CheckFailedError("supports_noncausal is False but causal=False did not raise ValueError")

    def check_fully_masked_rows(self) -> str:
        if self.batch < 2:
            raise _CheckFailedError("needs batch >= 2")
        x = self.inputs(salt=4)
        key_mask = x.key_mask.clone()
        key_mask[1] = False
        for causal in self.modes():
            out, grads = self.outputs_and_grads(x, causal=causal, key_mask=key_mask)
            _finite(out, f"output with a fully masked batch item (causal={causal})")
            for name, g in zip("qkv", grads or (), strict=False):
                _finite(g, f"d{name} with a fully masked batch item (causal={causal})")
            if bool(out[1].abs().max() > 0):
                raise _CheckFailedError(
                    f"rows with every key masked are not zero (causal={causal}), max |out| = "
                    f"{float(out[1].abs().max()):.3g}"
                )
        if self.module.supports_causal:
            km = x.key_mask.clone()
            km[0, :3] = False  # causal queries 0..2 of item 0 see no real key
            out = self.run(x, causal=True, key_mask=km)
            _finite(out, "causal output whose first queries have no key")
            if bool(out[0, :, :3].abs().max() > 0):
                raise _CheckFailedError("causal queries whose visible keys are all masked are not zero")
        return "fully masked rows are zero, with finite gradients" + self.forward_only_note()

    def check_batch_independence(self) -> str:
        x = self.inputs(salt=5)
        for causal in self.modes():
            full = self.run(x, causal=causal, key_mask=x.key_mask)
            for i in range(self.batch):
                alone = self.module(
                    x.q[i : i + 1], x.k[i : i + 1], x.v[i : i + 1], causal=causal, key_mask=x.key_mask[i : i + 1]
                )
                _close(alone[0], full[i], f"item {i} alone vs in the batch (causal={causal})")
        return "each batch item computed alone equals its slice of the batch"

    def check_cross_lengths(self) -> str:
        x = self.inputs(self.seq_len, self.cross_seq_len, salt=6)
        if not (self.module.supports_cross and self.module.supports_noncausal):
            # causal-only: cross lengths are causal with seq_q != seq_k, which the contract refuses too
            try:
                self.run(x, causal=self.mode, key_mask=None)
            except ValueError:
                return "seq_q != seq_k raises ValueError (supports_cross or supports_noncausal is False)"
            raise _CheckFailedError("seq_q != seq_k did not raise ValueError, though the variant cannot do cross")
        out = self.run(x, causal=False, key_mask=x.key_mask)
        expected = (self.batch, self.heads, self.seq_len, x.v.shape[-1])
        if tuple(out.shape) != expected:
            raise _CheckFailedError(f"cross output shape {tuple(out.shape)}, expected {expected}")
        _finite(out, "cross output")
        try:
            self.run(x, causal=True, key_mask=None)
        except ValueError:
            return f"seq_q={self.seq_len}, seq_k={self.cross_seq_len} works; causal cross raises ValueError"
        raise _CheckFailedError("causal=True with seq_q != seq_k did not raise ValueError")

    def check_rejects_bad_shapes(self) -> str:
        x = self.inputs()
        bad = {
            "3-dim q": (x.q[0], x.k, x.v, None),
            "k/v lengths differ": (x.q, x.k, x.v[:, :, :-1], None),
            "key_mask of the wrong shape": (x.q, x.k, x.v, x.key_mask[:, :-1]),
            "more heads than num_heads": (*(torch.cat([t, t[:, :1]], dim=1) for t in (x.q, x.k, x.v)), None),
            "head_dim other than the module's": (*(torch.cat([t, t], dim=-1) for t in (x.q, x.k, x.v)), None),
        }
        for what, (q, k, v, km) in bad.items():
            try:
                self.module(q, k, v, causal=self.mode, key_mask=km)
            except ValueError:
                continue
            except Exception as err:
                raise _CheckFailedError(f"{what}: raised {type(err).__name__} instead of ValueError: {err}") from None
            raise _CheckFailedError(f"{what}: accepted without error")
        return "wrong ranks and mismatched shapes raise ValueError"

    def check_determinism(self) -> str:
        x = self.inputs(salt=7)
        a = self.run(x, causal=self.mode, key_mask=x.key_mask)
        again = self.run(x, causal=self.mode, key_mask=x.key_mask)
        _close(again, a, "a second call on the same inputs", atol=0, rtol=0)
        with _seeded(self.seed):
            twin = self.make().to(self.device)
        b = self.run(x, causal=self.mode, key_mask=x.key_mask, module=twin)
        _close(b, a, "a second module built under the same seed", atol=0, rtol=0)
        return "repeat calls and a rebuilt module under the same seed give identical outputs"

    def _reference_cases(self) -> Iterator[tuple[str, _Inputs, bool, Tensor | None]]:
        odd = self.inputs(self.seq_len + 3, salt=8)  # another length, so no size is special-cased
        for causal in self.modes():
            for x in (self.inputs(salt=9), odd):
                for key_mask in (None, x.key_mask):
                    tag = f"n={x.q.shape[-2]}, causal={causal}, key_mask={'yes' if key_mask is not None else 'no'}"
                    yield tag, x, causal, key_mask
        if self.module.supports_cross and self.module.supports_noncausal:
            x = self.inputs(self.seq_len, self.cross_seq_len, salt=10)
            yield f"cross {self.seq_len}x{self.cross_seq_len}", x, False, x.key_mask

    def check_reference_outputs(self) -> str:
        count = 0
        for tag, x, causal, key_mask in self._reference_cases():
            _close(
                self.run(x, causal=causal, key_mask=key_mask),
                self.reference(x, causal=causal, key_mask=key_mask),
                f"output vs reference_attention ({tag})",
            )
            count += 1
        return f"equal to reference_attention with pattern_mask in {count} cases"

    def check_reference_gradients(self) -> str:
        count = 0
        for tag, x, causal, key_mask in self._reference_cases():
            _, got = self.grads(x, causal=causal, key_mask=key_mask)
            nq, nk = x.q.shape[-2], x.k.shape[-2]
            allowed = self.allowed(nq, nk, causal)

            def ref(
                q: Tensor,
                k: Tensor,
                v: Tensor,
                allowed: Tensor | None = allowed,
                causal: bool = causal,
                key_mask: Tensor | None = key_mask,
            ) -> Tensor:
                return reference_attention(q, k, v, allowed=allowed, causal=causal, key_mask=key_mask, scale=self.scale)

            _, want = self.grads(x, causal=causal, key_mask=key_mask, fn=ref)
            for name, g, w in zip("qkv", got, want, strict=True):
                _close(g, w, f"d{name} vs reference_attention ({tag})")
            count += 1
        return f"gradients equal reference_attention's in {count} cases"

    def check_gradcheck(self) -> str:
        with _seeded(self.seed):
            module = self.make().to(self.device, torch.float64)
        g = torch.Generator().manual_seed(self.seed)
        n = min(self.seq_len, 9)
        q, k, v = (
            torch.randn(1, self.heads, n, self.head_dim, generator=g, dtype=torch.float64)
            .to(self.device)
            .requires_grad_(True)
            for _ in range(3)
        )
        key_mask = torch.ones(1, n, dtype=torch.bool, device=self.device)
        key_mask[0, n // 2] = False
        causal = module.supports_causal
        try:
            module(q, k, v, causal=causal, key_mask=key_mask)
        except NotImplementedError:
            raise  # a backend that cannot run here says why: reported as such, not as a float64 problem
        except (RuntimeError, TypeError) as err:
            return f"skipped: float64 not supported ({type(err).__name__}: {err})"

        def fn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return module(q, k, v, causal=causal, key_mask=key_mask)

        try:
            ok = torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True)
        except GradcheckError as err:
            first = str(err).strip().splitlines()[0]
            raise _CheckFailedError(f"analytic gradient != finite differences (float64, n={n}): {first}") from None
        if not ok:
            raise _CheckFailedError("analytic gradient != finite differences")
        return f"analytic gradients match finite differences (float64, n={n}, causal={causal})"

    def check_decode(self) -> str:
        """``prefill`` and a ``step`` loop over every token equal the causal forward, with and without a key mask.

        Also a prompt prefilled and the rest stepped, so the state ``prefill`` returns is the one ``step`` needs.
        """
        if reason := self.module.decode_unsupported_reason():
            return f"skipped: {reason}"
        module, n = self.module, self.seq_len
        x = self.inputs(salt=12)
        with torch.no_grad():
            for key_mask in (None, x.key_mask):
                tag = f"key_mask={'yes' if key_mask is not None else 'no'}"
                full = module(x.q, x.k, x.v, causal=True, key_mask=key_mask)
                prefilled, _ = module.prefill(x.q, x.k, x.v, key_mask=key_mask)
                _close(prefilled, full, f"prefill vs the causal forward ({tag})")
                state = module.init_state(batch=self.batch, device=self.device, dtype=self.dtype)
                stepped = self._steps(x, 0, state, key_mask)
                _close(stepped, full, f"step loop over {n} tokens vs the causal forward ({tag})")
            half = n // 2
            _, state = module.prefill(
                x.q[:, :, :half], x.k[:, :, :half], x.v[:, :, :half], key_mask=x.key_mask[:, :half]
            )
            stepped = self._steps(x, half, state, x.key_mask)
            _close(stepped, full[:, :, half:], f"prefill of {half} tokens, then steps, vs the causal forward")
            final_bytes = module.state_bytes(state)
        if not isinstance(final_bytes, int) or final_bytes < 0:
            raise _CheckFailedError(f"state_bytes returned {final_bytes!r}, expected a byte count (int >= 0)")
        return f"prefill and {n} steps equal the causal forward; state after them holds {final_bytes} bytes"

    def _steps(self, x: _Inputs, start: int, state: object, key_mask: Tensor | None) -> Tensor:
        outs = []
        for t in range(start, self.seq_len):
            valid = None if key_mask is None else key_mask[:, t]
            out, state = self.module.step(
                x.q[:, :, t : t + 1], x.k[:, :, t : t + 1], x.v[:, :, t : t + 1], state, key_valid=valid
            )
            outs.append(out)
        return torch.cat(outs, dim=2)

    def report_softmax_error(self) -> tuple[str, float]:
        parts, worst = [], 0.0
        for causal in self.modes():
            x = self.inputs(salt=11)
            out = self.run(x, causal=causal, key_mask=x.key_mask)
            ref = self.reference(x, causal=causal, key_mask=x.key_mask, pattern=False)
            err = relative_error(out, ref)
            worst = max(worst, err)
            parts.append(f"causal={causal}: {err:.3g}")
        return "relative error vs full softmax (not judged): " + ", ".join(parts), worst


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def check_attention(
    spec: str | Callable[[], Attention],
    *,
    head_dim: int = 8,
    num_heads: int = 2,
    batch: int = 2,
    seq_len: int = 70,
    cross_seq_len: int = 45,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    only: Collection[str] | None = None,
) -> CheckReport:
    """Run the conformance battery on one variant and return a structured report.

    ``spec`` is a spec string (built with ``create_attention``) or a zero-argument factory returning an
    :class:`Attention`. ``seq_len`` defaults to a length that is not a multiple of common block sizes.
    ``only`` names the checks to run (e.g. ``{"decode"}``); by default, every check that applies.
    """
    if isinstance(spec, str):
        label = spec

        def make() -> Attention:
            return create_attention(spec, head_dim=head_dim, num_heads=num_heads)
    else:
        make = spec
        label = getattr(spec, "__name__", repr(spec))
    kit = _Kit(
        make,
        label,
        batch=batch,
        seq_len=seq_len,
        cross_seq_len=cross_seq_len,
        seed=seed,
        dtype=dtype,
        device=torch.device(device),
    )
    module = kit.module
    label = module.spec or label
    report = CheckReport(spec=label, exact=module.exact)

    checks: list[tuple[str, Callable[[], str]]] = [
        ("shape_dtype", kit.check_shape_dtype),
        ("finite", kit.check_finite),
        ("rejects_bad_shapes", kit.check_rejects_bad_shapes),
        ("key_mask_invariance", kit.check_key_mask_invariance),
        (
            ("causal_invariance", kit.check_causal_invariance)
            if module.supports_causal
            else ("causal_rejected", kit.check_causal_rejected)
        ),
        *([] if module.supports_noncausal else [("noncausal_rejected", kit.check_noncausal_rejected)]),
        ("fully_masked_rows", kit.check_fully_masked_rows),
        ("batch_independence", kit.check_batch_independence),
        ("cross_lengths", kit.check_cross_lengths),
        ("determinism", kit.check_determinism),
    ]
    if module.exact:
        checks += [
            ("reference_outputs", kit.check_reference_outputs),
            ("reference_gradients", kit.check_reference_gradients),
        ]
    checks.append(("gradcheck", kit.check_gradcheck))
    if module.supports_causal:
        checks.append(("decode", kit.check_decode))
    if only is not None:
        known = {name for name, _ in checks} | {"softmax_error"}
        if unknown := sorted(set(only) - known):
            raise ValueError(
                f"unknown check(s) {', '.join(unknown)}; this variant's checks: {', '.join(sorted(known))}"
            )
        checks = [(name, fn) for name, fn in checks if name in only]

    for name, fn in checks:
        with torch.random.fork_rng(devices=[]):
            try:
                detail = fn()
            except _CheckFailedError as err:
                report.results.append(CheckResult(name, "failed", str(err)))
                continue
            except NotImplementedError as err:
                # a backend may lack a backward here (FlexAttention on CPU) and say so: gradient checks are then
                # skipped, but a forward that is not implemented is a failure, not a pass by omission
                status: Status = "skipped" if name in GRADIENT_CHECKS else "failed"
                report.results.append(CheckResult(name, status, f"not implemented here: {err}"))
                continue
            except Exception as err:
                where = traceback.extract_tb(err.__traceback__)[-1]
                report.results.append(
                    CheckResult(name, "failed", f"raised {type(err).__name__}: {err} ({where.filename}:{where.lineno})")
                )
                continue
        status = "skipped" if detail.startswith("skipped:") else "passed"
        report.results.append(CheckResult(name, status, detail))

    if not module.exact and (only is None or "softmax_error" in only):
        try:
            detail, value = kit.report_softmax_error()
            report.results.append(CheckResult("softmax_error", "reported", detail, value))
        except Exception as err:
            report.results.append(CheckResult("softmax_error", "failed", f"raised {type(err).__name__}: {err}"))
    return report
