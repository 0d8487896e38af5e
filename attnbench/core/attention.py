"""The attention contract every variant implements, and the mask helpers they share.

Tensors are ``(batch, heads, seq, head_dim)``, the layout of ``scaled_dot_product_attention``.
``key_mask`` is ``(batch, seq_k)`` bool with True = a real key that may be attended.

The base class checks every call's inputs before ``forward`` runs (so a variant writes only its maths), and
supplies the recurrent form — ``init_state`` / ``prefill`` / ``step`` / ``state_bytes`` — with a default that
is correct for any causal variant: a cache of every q, k, v so far, answered by the causal forward.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class AttentionShape:
    """The sizes of one validated attention call."""

    batch: int
    heads: int
    seq_q: int
    seq_k: int
    head_dim: int
    value_dim: int


@dataclass(frozen=True)
class KVCache:
    """The default decoding state: every query, key and value so far (O(t) memory, O(t) work per step)."""

    q: Tensor  # (B, H, t, D)
    k: Tensor  # (B, H, t, D)
    v: Tensor  # (B, H, t, Dv)
    key_mask: Tensor | None  # (B, t) bool; None while every key so far is real


class Attention(nn.Module):
    """Base class of every attention backend.

    Subclasses set the class attributes, take their options as keyword-only constructor arguments with
    defaults and type hints (the registry reads them), and implement ``forward`` and ``flops``.

    Calling the module validates its inputs first (:meth:`validate`: ranks, shapes, heads/head_dim, causal
    with cross, ``key_mask``), so ``forward`` may assume a well-formed call. ``step`` and ``prefill``
    overrides are validated the same way.
    """

    family: ClassVar[str] = "custom"
    exact: ClassVar[bool] = False
    supports_causal: ClassVar[bool] = True
    supports_cross: ClassVar[bool] = True
    # False for a causal-only variant (a recurrence): causal=False is refused, the kit checks causal mode only
    supports_noncausal: ClassVar[bool] = True
    # False when stepping cannot equal the causal forward (a pattern that depends on the total length)
    supports_decode: ClassVar[bool] = True
    # backward FLOPs as a multiple of forward's: 2 for plain autograd (DESIGN.md: fwd+bwd = 3 × fwd); a
    # variant that recomputes its forward in backward says 3
    backward_flops_factor: ClassVar[float] = 2.0

    spec: str | None = None  # canonical spec, set by create_attention

    def __init__(self, *, head_dim: int, num_heads: int, **options: object) -> None:
        super().__init__()
        if options:
            names = ", ".join(sorted(options))
            raise TypeError(f"{type(self).__name__} got unexpected options: {names}")
        for label, value in (("head_dim", head_dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive int, got {value!r}")
        self.head_dim = head_dim
        self.num_heads = num_heads

    @property
    def default_scale(self) -> float:
        return self.head_dim**-0.5

    def resolve_scale(self, scale: float | None) -> float:
        """A ``scale`` option: None → head_dim ** -0.5; anything but a finite positive number is refused."""
        if scale is None:
            return self.default_scale
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite positive number or none (head_dim ** -0.5), got {scale}")
        return scale

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # an override of step/prefill gets the same input checks as forward, without calling them itself
        for name, check in (("step", _validated_step), ("prefill", _validated_prefill)):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "_validates_inputs", False):
                setattr(cls, name, check(method))

    def __call__(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None, **kwargs: Any
    ) -> Tensor:
        self.validate(q, k, v, causal=causal, key_mask=key_mask)
        return super().__call__(q, k, v, causal=causal, key_mask=key_mask, **kwargs)

    @classmethod
    def unsupported_reason(cls, *, device: str, backward: bool, causal: bool) -> str | None:
        """Why this variant cannot run this way on ``device`` ("cpu", "cuda", ...); None when it can.

        Asked before anything is built, so a sweep can leave a variant out instead of failing its cells.
        """
        if causal and not cls.supports_causal:
            return f"{cls.__name__} has no causal mode (supports_causal=False)"
        if not causal and not cls.supports_noncausal:
            return f"{cls.__name__} is causal-only (supports_noncausal=False)"
        return None

    @classmethod
    def decode_unsupported_reason(cls) -> str | None:
        """Why this variant cannot decode token by token; None when ``prefill``/``step`` equal the causal forward."""
        if not cls.supports_causal:
            return f"{cls.__name__} has no causal mode (supports_causal=False), so no recurrent form"
        if not cls.supports_decode:
            return (
                f"{cls.__name__} cannot decode: its causal pattern depends on the total length (supports_decode=False)"
            )
        return None

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def flops(self, *, batch: int, seq_q: int, seq_k: int, causal: bool) -> int:
        """Analytic forward FLOPs: matrix multiplies only, 2 per multiply-add."""
        raise NotImplementedError(f"{type(self).__name__} does not report flops()")

    def pattern_mask(self, seq_q: int, seq_k: int, *, causal: bool) -> Tensor | None:
        """Which keys each query may attend, as bool ``(heads or 1, seq_q, seq_k)``; None = all keys.

        For tests and pictures at small n only.
        """
        return None

    def predicted_peak_bytes(
        self, *, batch: int, seq_q: int, seq_k: int, causal: bool, backward: bool, element_size: int
    ) -> int | None:
        """Analytic model of the extra bytes one call allocates beyond q, k, v; None = unknown."""
        return None

    # recurrent form ------------------------------------------------------------------------------------------
    def init_state(
        self, *, batch: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Any:
        """The empty past for :meth:`step`: here an empty :class:`KVCache`; variants keep what they need."""
        empty = torch.empty(batch, self.num_heads, 0, self.head_dim, device=device, dtype=dtype)
        return KVCache(q=empty, k=empty, v=empty, key_mask=None)

    def prefill(self, q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None) -> tuple[Tensor, Any]:
        """The causal forward over a prompt ``(B, H, n, D)``, and the state after it (ready for :meth:`step`)."""
        out = self(q, k, v, causal=True, key_mask=key_mask)
        return out, KVCache(q=q, k=k, v=v, key_mask=key_mask)

    def step(
        self, q: Tensor, k: Tensor, v: Tensor, state: Any, *, key_valid: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        """One causal decoding step: ``(B, H, 1, D)`` query, key, value → ``(B, H, 1, Dv)`` output, next state.

        Equals the last row of ``forward(..., causal=True)`` over every token so far; ``key_valid`` ``(B,)``
        bool marks a padded step (its key is never attended, as ``key_mask`` False). The default keeps every
        token and reruns the causal forward: correct for any causal variant, O(t) per step.
        """
        cache: KVCache = state
        key_mask = cache.key_mask
        if key_valid is not None or key_mask is not None:
            t, b = cache.k.shape[2], q.shape[0]
            past = key_mask if key_mask is not None else torch.ones(b, t, dtype=torch.bool, device=q.device)
            now = key_valid if key_valid is not None else torch.ones(b, dtype=torch.bool, device=q.device)
            key_mask = torch.cat([past, now[:, None]], dim=1)  # (B, t + 1)
        cache = KVCache(
            q=torch.cat([cache.q, q], dim=2), k=torch.cat([cache.k, k], dim=2), v=torch.cat([cache.v, v], dim=2),
            key_mask=key_mask,
        )  # fmt: skip
        out = self(cache.q, cache.k, cache.v, causal=True, key_mask=cache.key_mask)
        return out[:, :, -1:], cache

    def state_bytes(self, state: Any) -> int:
        """Bytes the state holds in use: every tensor in it (dataclass fields, tuples, dicts), slack not counted."""
        return tensor_bytes(state)

    def validate_step(self, q: Tensor, k: Tensor, v: Tensor, *, key_valid: Tensor | None) -> None:
        """Check one decoding step: one token of q, k, v in forward's layout, ``key_valid`` ``(batch,)`` bool."""
        name = type(self).__name__
        if reason := self.decode_unsupported_reason():
            raise ValueError(reason)
        for label, t in (("q", q), ("k", k), ("v", v)):
            if t.dim() != 4 or t.shape[2] != 1:
                raise ValueError(
                    f"{name}.step: {label} has shape {tuple(t.shape)}; a step takes one token per call, "
                    "(batch, heads, 1, head_dim)"
                )
        self.validate(q, k, v, causal=True, key_mask=None)
        if key_valid is not None and (key_valid.dtype != torch.bool or tuple(key_valid.shape) != (q.shape[0],)):
            raise ValueError(
                f"{name}.step: key_valid must be bool (batch,) = ({q.shape[0]},), "
                f"got {key_valid.dtype} {tuple(key_valid.shape)}"
            )

    def validate(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool, key_mask: Tensor | None) -> AttentionShape:
        """Check one call against the contract; raise ValueError naming what was passed and what is allowed.

        The base class runs this before every ``forward``; a variant calls it only to check more.
        """
        name = type(self).__name__
        shape = validate_attention_inputs(
            q,
            k,
            v,
            causal=causal,
            key_mask=key_mask,
            supports_causal=self.supports_causal,
            supports_cross=self.supports_cross,
            supports_noncausal=self.supports_noncausal,
            name=name,
        )
        if (shape.heads, shape.head_dim) != (self.num_heads, self.head_dim):
            raise ValueError(
                f"{name}: q has shape {tuple(q.shape)}, i.e. {shape.heads} heads of head_dim {shape.head_dim}; "
                f"this module was built for num_heads={self.num_heads}, head_dim={self.head_dim}"
            )
        return shape

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, num_heads={self.num_heads}"


def _validated_step(method: Callable[..., tuple[Tensor, Any]]) -> Callable[..., tuple[Tensor, Any]]:
    @functools.wraps(method)
    def step(
        self: Attention, q: Tensor, k: Tensor, v: Tensor, state: Any, *, key_valid: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        self.validate_step(q, k, v, key_valid=key_valid)
        return method(self, q, k, v, state, key_valid=key_valid)

    step._validates_inputs = True  # type: ignore[attr-defined]
    return step


def _validated_prefill(method: Callable[..., tuple[Tensor, Any]]) -> Callable[..., tuple[Tensor, Any]]:
    @functools.wraps(method)
    def prefill(
        self: Attention, q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        if reason := self.decode_unsupported_reason():
            raise ValueError(reason)
        self.validate(q, k, v, causal=True, key_mask=key_mask)
        return method(self, q, k, v, key_mask=key_mask)

    prefill._validates_inputs = True  # type: ignore[attr-defined]
    return prefill


Attention.step = _validated_step(Attention.step)  # type: ignore[method-assign]
Attention.prefill = _validated_prefill(Attention.prefill)  # type: ignore[method-assign]


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor inside ``obj`` (tensors, dataclasses, tuples, lists, dicts), by element count."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(tensor_bytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if isinstance(obj, (tuple, list)):
        return sum(tensor_bytes(x) for x in obj)
    if isinstance(obj, dict):
        return sum(tensor_bytes(x) for x in obj.values())
    return 0


def validate_attention_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool,
    key_mask: Tensor | None,
    supports_causal: bool = True,
    supports_cross: bool = True,
    supports_noncausal: bool = True,
    name: str = "attention",
) -> AttentionShape:
    for label, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(
                f"{name}: {label} has shape {tuple(t.shape)} ({t.dim()} dims); "
                "expected 4 dims (batch, heads, seq, head_dim)"
            )
    b, h, nq, d = q.shape
    if k.shape[:2] != (b, h) or v.shape[:2] != (b, h):
        raise ValueError(
            f"{name}: batch and heads must match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if k.shape[3] != d:
        raise ValueError(f"{name}: q and k head_dim differ: q {tuple(q.shape)}, k {tuple(k.shape)}")
    nk = k.shape[2]
    if v.shape[2] != nk:
        raise ValueError(f"{name}: k and v seq lengths differ: k {tuple(k.shape)}, v {tuple(v.shape)}")
    if causal and not supports_causal:
        raise ValueError(f"{name} does not support causal=True; use a variant whose supports_causal is True")
    if not causal and not supports_noncausal:
        raise ValueError(f"{name} is causal-only (supports_noncausal=False): call it with causal=True")
    if causal and nq != nk:
        raise ValueError(f"{name}: causal=True needs self-attention (seq_q == seq_k), got seq_q={nq}, seq_k={nk}")
    if nq != nk and not supports_cross:
        raise ValueError(
            f"{name} is a self-attention pattern (supports_cross=False) and needs seq_q == seq_k, "
            f"got seq_q={nq}, seq_k={nk}"
        )
    if key_mask is not None:
        if key_mask.dtype != torch.bool:
            raise ValueError(f"{name}: key_mask must be a bool tensor (True = attend), got {key_mask.dtype}")
        if tuple(key_mask.shape) != (b, nk):
            raise ValueError(f"{name}: key_mask has shape {tuple(key_mask.shape)}; expected (batch, seq_k) = {(b, nk)}")
    return AttentionShape(batch=b, heads=h, seq_q=nq, seq_k=nk, head_dim=d, value_dim=v.shape[3])


def causal_pair_count(seq_q: int, seq_k: int, *, causal: bool) -> int:
    """Number of (query, key) pairs a dense variant computes."""
    if not causal:
        return seq_q * seq_k
    return seq_q * (seq_q + 1) // 2


def causal_allowed(seq: int, *, device: torch.device | str | None = None) -> Tensor:
    """Bool ``(seq, seq)``: query i may see key j iff j <= i. Small n only (tests, references)."""
    return torch.ones(seq, seq, dtype=torch.bool, device=device).tril()


def rows_with_keys(key_mask: Tensor, seq_q: int, *, causal: bool) -> Tensor:
    """Bool ``(batch, seq_q)``: whether each query has at least one attendable key.

    O(batch·seq) memory: with ``causal`` a query i has a key iff the first real key is at or before i.
    """
    if not causal:
        return key_mask.any(dim=-1, keepdim=True).expand(-1, seq_q)
    positions = torch.arange(key_mask.shape[-1], device=key_mask.device)
    big = torch.full_like(positions, key_mask.shape[-1])
    first_real = torch.where(key_mask, positions, big).amin(dim=-1, keepdim=True)  # (B, 1)
    return positions[:seq_q].unsqueeze(0) >= first_real
