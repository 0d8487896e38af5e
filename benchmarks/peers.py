"""The attention code people use today, as attnbench plugin variants, configured like-for-like.

    pip install local-attention performer-pytorch      # optional: a missing library skips its cells
    attnbench --plugin benchmarks/peers.py bench complexity --seq-len 16384 --pass fwd \\
        --variant window:radius=256 --variant peer-local-attention:window=256 \\
        --variant peer-flex-window:radius=256 --variant peer-sdpa-window:radius=256 \\
        --variant performer:features=256 --variant peer-performer:features=256

- ``peer-local-attention``: lucidrains' ``local-attention`` (``LocalAttention``) with no rotary embedding,
  ``exact_windowsize`` (keys within ``window`` of the query: ``window:radius=window``), ``autopad``, one block
  back (and one ahead unless causal);
- ``peer-performer``: lucidrains' ``performer-pytorch`` (``FastAttention``), the FAVOR+ softmax kernel with
  ``features`` orthogonal random features (``performer:features=…``); causal mode is its prefix-sum path
  (``fast_transformers``' CUDA kernel when that is installed; not on CPU);
- ``peer-flex-window``: compiled ``flex_attention`` with the block mask ``create_block_mask`` makes from a
  window ``mask_mod`` — what a user writes (attnbench's own ``flex-window`` builds its block mask from block
  indices); forward-only on CPU;
- ``peer-sdpa-window``: ``scaled_dot_product_attention`` with a dense ``n × n`` boolean window mask, the
  O(n²) way to the same pattern.

A library that is not installed makes its variant unavailable, not the file: the sweeps record its cells
``skipped`` with the ``pip install`` line, and building it raises that line as a ``ValueError``. None of
these is a conformance-checked attnbench variant (``local-attention`` gives a query with no real key uniform
weights, for one); they are here to be timed. ``tests/test_peers.py`` checks that each computes the same
attention as its attnbench counterpart.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench import Attention, register_attention

INSTALL = {"local_attention": "local-attention", "performer_pytorch": "performer-pytorch"}


def missing_library(module: str, variant: str) -> str | None:
    """The one-line fix when ``module`` is not importable; None when it is."""
    if importlib.util.find_spec(module) is not None:
        return None
    return f"{variant} needs the {INSTALL[module]} package: pip install {INSTALL[module]}"


def _window_pattern(seq: int, radius: int, *, causal: bool) -> Tensor:
    i = torch.arange(seq)[:, None]
    j = torch.arange(seq)[None, :]
    allowed = (i - j).abs() <= radius
    return (allowed & (j <= i) if causal else allowed).unsqueeze(0)  # (1, n, n)


class _WindowPeer(Attention):
    """What the window peers share: the pattern |i − j| ≤ radius (causal: the radius keys before), exact."""

    family: ClassVar[str] = "peer"
    exact: ClassVar[bool] = True
    supports_cross: ClassVar[bool] = False
    radius: int

    def pattern_mask(self, seq_q: int, seq_k: int, *, causal: bool) -> Tensor:
        return _window_pattern(seq_q, self.radius, causal=causal)

    def flops(self, *, batch: int, seq_q: int, seq_k: int, causal: bool) -> int:
        # the useful work: each query's keys in the window, QKᵀ and PV at 2·head_dim FLOPs a pair each
        reach = self.radius + (0 if causal else self.radius) + 1
        return 4 * batch * self.num_heads * seq_q * min(reach, seq_k) * self.head_dim


@register_attention("peer-local-attention")
class LocalAttentionPeer(_WindowPeer):
    """lucidrains' local-attention with exact windows of ``window`` keys each side, no rotary embedding."""

    def __init__(self, *, head_dim: int, num_heads: int, window: int = 256) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        if (reason := missing_library("local_attention", "peer-local-attention")) is not None:
            raise ValueError(reason)
        if window < 1:
            raise ValueError(f"peer-local-attention: window must be >= 1 (keys each side), got {window}")
        from local_attention import LocalAttention

        self.radius = window

        def build(causal: bool) -> torch.nn.Module:
            return LocalAttention(
                window_size=window,
                causal=causal,
                look_backward=1,
                look_forward=0 if causal else 1,
                exact_windowsize=True,
                autopad=True,
                use_rotary_pos_emb=False,
                dropout=0.0,
            )

        self.causal_layer, self.full_layer = build(True), build(False)

    @classmethod
    def unsupported_reason(cls, *, device: str, backward: bool, causal: bool) -> str | None:
        return missing_library("local_attention", "peer-local-attention") or super().unsupported_reason(
            device=device, backward=backward, causal=causal
        )

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        layer = self.causal_layer if causal else self.full_layer
        if key_mask is None and not causal and q.shape[-2] % self.radius:
            # its autopad appends zero keys that a query may attend unless a mask marks them as padding
            key_mask = torch.ones(q.shape[0], q.shape[-2], dtype=torch.bool, device=q.device)
        return layer(q, k, v, mask=key_mask)


@register_attention("peer-performer")
class PerformerPeer(Attention):
    """lucidrains' performer-pytorch ``FastAttention``: FAVOR+ with ``features`` orthogonal random features."""

    family: ClassVar[str] = "peer"
    exact: ClassVar[bool] = False
    supports_cross: ClassVar[bool] = True

    def __init__(self, *, head_dim: int, num_heads: int, features: int = 256) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        if (reason := missing_library("performer_pytorch", "peer-performer")) is not None:
            raise ValueError(reason)
        if features < 1:
            raise ValueError(f"peer-performer: features must be >= 1, got {features}; e.g. features=256")
        from performer_pytorch import FastAttention

        self.features = features
        # its causal constructor prints that the CUDA kernel is missing; the CPU path it picks is the one timed
        with contextlib.redirect_stdout(io.StringIO()):
            self.causal_layer = FastAttention(dim_heads=head_dim, nb_features=features, causal=True)
        self.full_layer = FastAttention(dim_heads=head_dim, nb_features=features, causal=False)
        self.full_layer.projection_matrix.copy_(self.causal_layer.projection_matrix)  # one feature draw

    @classmethod
    def unsupported_reason(cls, *, device: str, backward: bool, causal: bool) -> str | None:
        return missing_library("performer_pytorch", "peer-performer") or super().unsupported_reason(
            device=device, backward=backward, causal=causal
        )

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        if key_mask is not None:
            # FastAttention takes no mask (its SelfAttention wrapper zeroes padded keys and values instead)
            raise ValueError("peer-performer takes no key_mask; time it without one")
        return (self.causal_layer if causal else self.full_layer)(q, k, v)

    def flops(self, *, batch: int, seq_q: int, seq_k: int, causal: bool) -> int:
        # feature maps of q and k (2·d·m each per row), then φ(K)ᵀV and φ(Q)·(φ(K)ᵀV) (2·m·d each per row)
        m, d = self.features, self.head_dim
        return batch * self.num_heads * (2 * d * m * (seq_q + seq_k) + 2 * m * d * (seq_k + seq_q))


@register_attention("peer-sdpa-window")
class SdpaWindowPeer(_WindowPeer):
    """``scaled_dot_product_attention`` with a dense ``n × n`` boolean window mask (kept per length)."""

    def __init__(self, *, head_dim: int, num_heads: int, radius: int = 256) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        if radius < 0:
            raise ValueError(f"peer-sdpa-window: radius must be >= 0, got {radius}")
        self.radius = radius
        self._masks: dict[tuple[int, bool, str], Tensor] = {}

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        n = q.shape[-2]
        key = (n, causal, str(q.device))
        if key not in self._masks:
            self._masks = {key: _window_pattern(n, self.radius, causal=causal).to(q.device)}
        allowed = self._masks[key]  # (1, n, n)
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, None, :]  # (B, 1, n, n)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


@functools.cache
def _compiled_flex() -> Callable[..., Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex_missing() -> str | None:
    if importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
        return f"peer-flex-window needs FlexAttention (torch >= 2.5), this is torch {torch.__version__}"
    return None


@register_attention("peer-flex-window")
class FlexWindowPeer(_WindowPeer):
    """Compiled FlexAttention with the block mask ``create_block_mask`` makes from a window ``mask_mod``."""

    def __init__(self, *, head_dim: int, num_heads: int, radius: int = 256, block: int = 128) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        if (reason := _flex_missing()) is not None:
            raise ValueError(reason)
        if radius < 0 or block < 1:
            raise ValueError(f"peer-flex-window: need radius >= 0 and block >= 1, got {radius}, {block}")
        self.radius, self.block = radius, block
        self._block_masks: dict[tuple[int, bool, str], Any] = {}

    @classmethod
    def unsupported_reason(cls, *, device: str, backward: bool, causal: bool) -> str | None:
        if backward and device.startswith("cpu"):
            return "peer-flex-window: FlexAttention has no CPU backward; time its forward, or run on cuda"
        return _flex_missing() or super().unsupported_reason(device=device, backward=backward, causal=causal)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        if key_mask is not None:
            raise ValueError("peer-flex-window takes no key_mask; time it without one")
        from torch.nn.attention.flex_attention import create_block_mask

        n, radius = q.shape[-2], self.radius

        def in_window(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            near = (q_idx - kv_idx).abs() <= radius
            return near & (kv_idx <= q_idx) if causal else near

        key = (n, causal, str(q.device))
        if key not in self._block_masks:
            # _compile: torch's advice for long sequences; eager, it builds dense n × n int64 temporaries
            self._block_masks = {
                key: create_block_mask(
                    in_window, None, None, n, n, device=str(q.device), BLOCK_SIZE=self.block, _compile=True
                )
            }
        return _compiled_flex()(q, k, v, block_mask=self._block_masks[key])
