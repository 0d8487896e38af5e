"""The registered linear-attention variants: one feature map each, sharing the kernels in ``ops``."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from attnbench.core.attention import Attention
from attnbench.core.registry import register_attention
from attnbench.variants.linear.feature_maps import (
    EluFeatureMap,
    FavorFeatureMap,
    FeatureMap,
    Features,
    ReluFeatureMap,
    TaylorFeatureMap,
)
from attnbench.variants.linear.ops import (
    BLOCK_TOKENS,
    RecurrentState,
    block_tokens,
    causal_block_lengths,
    causal_linear_attention,
    fold_keys,
    initial_state,
    linear_attention,
    normalise,
    quadratic_linear_attention,
    recurrent_step,
    with_normaliser_column,
)

# the fastest on a 2-core CPU at head_dim 64 for elu, FAVOR+ (256 features) and Taylor (153) alike: smaller
# chunks pay per-chunk overhead, larger ones pay chunk² work in the quadratic part
DEFAULT_CHUNK = 64


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """States and normalisers are summed over up to n keys: never in less than fp32."""
    return torch.promote_types(dtype, torch.float32)


def _positive(name: str, value: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}; {fix}")


class LinearAttention(Attention):
    """φ(Q)(φ(K)ᵀV) / φ(Q)(φ(K)ᵀ1) with a pluggable feature map φ.

    Non-causal: one m×d state, O(n·m·d) time. Causal: chunks of ``chunk`` tokens, quadratic inside a chunk and
    a carried m×d state across chunks. Both stream the sequence in blocks and recompute a block's features in
    backward, so memory is O(n·d) plus one block's working set (see ``ops``). Decoding: :meth:`prefill` and
    :meth:`step` keep a fixed m×(d+1) state per head (the running feature-space sums and the stabiliser
    reference), O(m·d) per token whatever the context. States and normalisers are accumulated in fp32 (or
    fp64) whatever the input dtype.
    """

    family: ClassVar[str] = "linear"
    exact: ClassVar[bool] = False
    supports_causal: ClassVar[bool] = True
    supports_cross: ClassVar[bool] = True
    backward_flops_factor: ClassVar[float] = 3.0  # each block's forward is recomputed in backward

    feature_map: FeatureMap

    def _setup(self, feature_map: FeatureMap, chunk: int) -> None:
        _positive("chunk", chunk, f"use e.g. chunk={DEFAULT_CHUNK} (tokens per causal chunk)")
        self.feature_map = feature_map
        self.chunk = chunk

    @property
    def features(self) -> int:
        return self.feature_map.size

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        dtype = accumulation_dtype(q.dtype)
        q32, k32, v32 = (t.to(dtype) for t in (q, k, v))
        if causal:
            out = causal_linear_attention(q32, k32, v32, key_mask, self.feature_map, chunk=self.chunk)
        else:
            out = linear_attention(q32, k32, v32, key_mask, self.feature_map)
        return out.to(q.dtype)

    def reference(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        """The same features through the naive n×n form φ(Q)φ(K)ᵀ: what ``forward`` must equal. Small n only."""
        self.validate(q, k, v, causal=causal, key_mask=key_mask)  # not a forward: the base class does not check it
        queries, keys, v1 = self._prepare(q, k, v)
        return normalise(quadratic_linear_attention(queries, keys, v1, key_mask, causal=causal)).to(q.dtype)

    def _prepare(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Features, Tensor]:
        dtype = accumulation_dtype(q.dtype)
        queries = self.feature_map(q.to(dtype)).values  # a query's own scale cancels in its normalisation
        keys = self.feature_map(k.to(dtype))
        return queries, keys, with_normaliser_column(v.to(dtype))

    # recurrent decoding ------------------------------------------------------------------------------------------
    def init_state(
        self, *, batch: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> RecurrentState:
        """The empty past: zero sums, no reference yet (kept in the accumulation dtype of ``dtype``)."""
        device = None if device is None else torch.device(device)
        return initial_state(
            batch, self.num_heads, self.features, self.head_dim, dtype=accumulation_dtype(dtype), device=device
        )

    def prefill(
        self, q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None
    ) -> tuple[Tensor, RecurrentState]:
        """The causal forward over the prompt, and the m×(d+1) state after its last key."""
        out = self(q, k, v, causal=True, key_mask=key_mask)
        dtype = accumulation_dtype(q.dtype)
        with torch.no_grad():
            state = fold_keys(k.to(dtype), v.to(dtype), key_mask, self.feature_map)
        return out, state

    def step(
        self, q: Tensor, k: Tensor, v: Tensor, state: RecurrentState, *, key_valid: Tensor | None = None
    ) -> tuple[Tensor, RecurrentState]:
        """One decoding step: ``(B, H, 1, d)`` query, key and value → ``(B, H, 1, d)`` output and the next state.

        Equals the last position of ``forward(..., causal=True)``; ``key_valid`` ``(B,)`` bool plays ``key_mask``.
        """
        dtype = torch.promote_types(accumulation_dtype(q.dtype), state.kv.dtype)
        queries, keys, v1 = self._prepare(q.to(dtype), k.to(dtype), v.to(dtype))  # (B, H, 1, ·)
        key = Features(keys.values.squeeze(-2), None if keys.log_scale is None else keys.log_scale.squeeze(-1))
        state = RecurrentState(kv=state.kv.to(dtype), reference=state.reference.to(dtype))
        out, state = recurrent_step(queries.squeeze(-2), key, v1.squeeze(-2), state, key_valid)
        return normalise(out).to(q.dtype).unsqueeze(-2), state

    # cost models ---------------------------------------------------------------------------------------------------
    def flops(self, *, batch: int, seq_q: int, seq_k: int, causal: bool) -> int:
        m, e = self.features, self.head_dim + 1  # e: values plus the normaliser column
        if not causal:
            per_head = self.feature_map.projection_flops(seq_q + seq_k) + 2 * (seq_q + seq_k) * m * e
            return batch * self.num_heads * per_head
        size = min(self.chunk, seq_q)
        per_head = 0
        for tokens in causal_block_lengths(seq_q, size):
            chunks = tokens // size
            per_head += self.feature_map.projection_flops(2 * tokens)
            # chunk scores φ(Q_c)φ(K_c)ᵀ and their product with V_c; chunk states φ(K_c)ᵀV_c; φ(Q_c)·prefix
            per_head += 2 * tokens * size * (m + e) + 4 * tokens * m * e
            if self.feature_map.exponential and chunks > 1:  # with one chunk the mixing is a broadcast product
                per_head += 2 * (chunks + 1) * chunks * m * e  # re-referenced prefixes: a (G+1)×G mixing matmul
        return batch * self.num_heads * per_head

    def predicted_peak_bytes(
        self, *, batch: int, seq_q: int, seq_k: int, causal: bool, backward: bool, element_size: int
    ) -> int:
        """Live bytes beyond q, k, v: per-token buffers plus one streamed block's working set.

        Per token: the unnormalised and normalised outputs (and, with backward, the gradients of q, k, v
        and of the output, with their split/concatenation buffers). Per block: the features of its queries
        and keys, chunk scores, and chunk states; backward recomputes a block with its gradients alongside.
        benchmarks/linear_bench.py compares it with a live-tensor tracker: measured/predicted fell in 0.6–1.3
        over the built-in variants, head_dim 16 and 64, n 300–8192, causal or not, with or without backward.
        """
        m, e, compute = self.features, self.head_dim + 1, max(element_size, 4)
        scratch = self.feature_map.scratch_size()
        if causal:
            size = min(self.chunk, seq_q)
            block = min(block_tokens(size), causal_block_lengths(seq_q, size)[0])
            working_set = block * (2 * m + scratch + 2 * size + 2 * e) + 4 * (block // size) * m * e
        else:
            block = min(BLOCK_TOKENS, max(seq_q, seq_k))
            working_set = block * (m + scratch + 2 * e)
        if backward:
            per_token = 5 * e * seq_q + 4 * e * seq_k
            elements = per_token + working_set * 3 // 2
        else:
            elements = 4 * e * seq_q + working_set
        total = compute * elements
        if element_size < compute:  # fp32 copies of q, k, v in, and the output cast back
            total += compute * (seq_q + 2 * seq_k) * self.head_dim + element_size * seq_q * self.head_dim
        return batch * self.num_heads * total

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chunk={self.chunk}"


@register_attention("linear")
class EluLinearAttention(LinearAttention):
    """Linear attention with φ = elu + 1 (Katharopoulos et al., "Transformers are RNNs", 2020)."""

    def __init__(self, *, head_dim: int, num_heads: int, chunk: int = DEFAULT_CHUNK) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        self._setup(EluFeatureMap(head_dim=head_dim), chunk)


@register_attention("linear-relu")
class ReluLinearAttention(LinearAttention):
    """Linear attention with φ = relu."""

    def __init__(self, *, head_dim: int, num_heads: int, chunk: int = DEFAULT_CHUNK) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        self._setup(ReluFeatureMap(head_dim=head_dim), chunk)


@register_attention("performer")
class PerformerAttention(LinearAttention):
    """Performer (FAVOR+): positive orthogonal random features approximating softmax attention.

    Features are drawn once from ``seed``; with ``redraw=true`` a training-mode call draws fresh ones first.
    """

    feature_map: FavorFeatureMap

    def __init__(
        self,
        *,
        head_dim: int,
        num_heads: int,
        features: int = 256,
        redraw: bool = False,
        seed: int = 0,
        scale: float | None = None,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        _positive("features", features, "use e.g. features=256 (more features: closer to softmax, slower)")
        self.scale = self.resolve_scale(scale)
        self.redraw = redraw
        self._setup(FavorFeatureMap(head_dim=head_dim, features=features, scale=self.scale, seed=seed), chunk)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        if self.redraw and self.training:
            self.feature_map.resample()
        return super().forward(q, k, v, causal=causal, key_mask=key_mask)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, redraw={self.redraw}"


@register_attention("taylor")
class TaylorAttention(LinearAttention):
    """Based-style linear attention: 2nd-order Taylor features of exp on q, k projected to ``feature_dim``."""

    feature_map: TaylorFeatureMap

    def __init__(
        self,
        *,
        head_dim: int,
        num_heads: int,
        feature_dim: int = 16,
        seed: int = 0,
        scale: float | None = None,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        _positive("feature_dim", feature_dim, "use e.g. feature_dim=16 (1 + f + f(f+1)/2 features)")
        self.scale = self.resolve_scale(scale)
        feature_map = TaylorFeatureMap(
            head_dim=head_dim, num_heads=num_heads, feature_dim=feature_dim, scale=self.scale, seed=seed
        )
        self._setup(feature_map, chunk)
