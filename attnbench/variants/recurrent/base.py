"""What the gated/delta recurrent variants share: the contract's recurrent form on a fixed d_k×d_v state.

A variant turns the contract's q, k, v (and key mask) into the inputs of its recurrence — scaled queries,
keys carrying any write strength, log gates or β — in :meth:`RecurrentAttention.recurrence_inputs`. Gates and
write strengths are computed *there*, from the keys, by small per-head projections the variant owns (the
contract passes q, k, v only; in the papers they come from the layer input x, of which k is a projection).
A masked key gets gate 1 (log gate 0) and write strength 0: it neither decays nor writes the state, so
changing it changes nothing and a query with no real key so far reads an empty state and returns zeros.

These are causal recurrences: ``supports_noncausal = False`` (a bidirectional use would need a second,
reversed scan — a different model) and ``supports_cross = False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnbench.core.attention import Attention
from attnbench.variants.recurrent.delta import chunked_delta_rule, delta_step, naive_delta_rule
from attnbench.variants.recurrent.gated import chunked_gated_recurrence, gated_step, naive_gated_recurrence

# tokens per chunk: the intra-chunk L×L work against the n/L-step scan over chunks
DEFAULT_CHUNK = 64


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """States sum over up to n tokens: never in less than fp32."""
    return torch.promote_types(dtype, torch.float32)


@dataclass(frozen=True)
class RecurrenceInputs:
    """One call's inputs to a recurrence, in the accumulation dtype, masked keys already neutralised."""

    q: Tensor  # (B, H, N, d_k), scaled
    k: Tensor  # (B, H, N, d_k), times any write strength (gated family)
    v: Tensor  # (B, H, N, d_v)
    log_gate: Tensor | None = None  # ≤ 0; gated family (B, H, N, d_k or 1), gated delta rule (B, H, N)
    beta: Tensor | None = None  # (B, H, N) in [0, 1]; delta rule


class RecurrentAttention(Attention):
    """A causal linear recurrence with a fixed ``(d_k, d_v)`` state per head.

    ``forward`` runs the chunked form (``chunk`` tokens per chunk: O(n) time and memory, forward and
    backward), :meth:`reference` the naive token-by-token loop, :meth:`step` one token on the state.
    """

    family: ClassVar[str] = "recurrent"
    exact: ClassVar[bool] = False
    supports_causal: ClassVar[bool] = True
    supports_cross: ClassVar[bool] = False
    supports_noncausal: ClassVar[bool] = False

    def __init__(self, *, head_dim: int, num_heads: int, chunk: int, scale: float | None) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive int (tokens per chunk), got {chunk!r}; e.g. chunk=64")
        self.chunk = chunk
        self.scale = self.resolve_scale(scale)

    # what a variant defines ------------------------------------------------------------------------------------
    def recurrence_inputs(self, q: Tensor, k: Tensor, v: Tensor, valid: Tensor) -> RecurrenceInputs:
        """q, k, v ``(B, H, N, ·)`` (accumulation dtype) and ``valid`` ``(B, N)`` bool → the recurrence inputs."""
        raise NotImplementedError

    def chunked(self, x: RecurrenceInputs, state: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def naive(self, x: RecurrenceInputs, state: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def one_token(self, x: RecurrenceInputs, state: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` holds one token (N = 1); returns ``(B, H, d_v)`` and the next state."""
        raise NotImplementedError

    # the contract ----------------------------------------------------------------------------------------------
    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        return self._run(q, k, v, key_mask, chunked=True)[0]

    def reference(self, q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None) -> Tensor:
        """The naive token-by-token recurrence on the same inputs: what ``forward`` must equal. Small n only."""
        self.validate(q, k, v, causal=True, key_mask=key_mask)  # not a forward: the base class does not check it
        return self._run(q, k, v, key_mask, chunked=False)[0]

    def init_state(
        self, *, batch: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """The empty past: a zero ``(B, H, d_k, d_v)`` state in the accumulation dtype."""
        shape = (batch, self.num_heads, self.head_dim, self.head_dim)
        return torch.zeros(shape, device=device, dtype=accumulation_dtype(dtype))

    def prefill(self, q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._run(q, k, v, key_mask, chunked=True)

    def step(
        self, q: Tensor, k: Tensor, v: Tensor, state: Tensor, *, key_valid: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        dtype = torch.promote_types(accumulation_dtype(q.dtype), state.dtype)
        valid = _valid(None if key_valid is None else key_valid[:, None], q.shape[0], 1, q.device)
        x = self.recurrence_inputs(q.to(dtype), k.to(dtype), v.to(dtype), valid)
        out, state = self.one_token(x, state.to(dtype))
        return out.unsqueeze(-2).to(q.dtype), state

    def _run(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, *, chunked: bool) -> tuple[Tensor, Tensor]:
        dtype = accumulation_dtype(q.dtype)
        valid = _valid(key_mask, q.shape[0], q.shape[-2], q.device)
        x = self.recurrence_inputs(q.to(dtype), k.to(dtype), v.to(dtype), valid)
        out, state = self.chunked(x, None) if chunked else self.naive(x, None)
        return out.to(q.dtype), state

    def chunk_flops(self, seq: int) -> int:
        """Matmul FLOPs per head of the chunked form over ``seq`` tokens."""
        raise NotImplementedError

    def flops(self, *, batch: int, seq_q: int, seq_k: int, causal: bool) -> int:
        return batch * self.num_heads * self.chunk_flops(seq_q)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chunk={self.chunk}, scale={self.scale:.4g}"


def _valid(key_mask: Tensor | None, batch: int, seq: int, device: torch.device) -> Tensor:
    return torch.ones(batch, seq, dtype=torch.bool, device=device) if key_mask is None else key_mask


def _chunk_count(seq: int, chunk: int) -> tuple[int, int]:
    size = min(chunk, seq)
    return -(-seq // size), size


class GatedRecurrentAttention(RecurrentAttention):
    """``S_t = diag(exp(g_t)) S_{t-1} + k_t v_tᵀ`` (see ``gated``): RetNet, GLA, Mamba-2."""

    def chunked(self, x: RecurrenceInputs, state: Tensor | None) -> tuple[Tensor, Tensor]:
        assert x.log_gate is not None
        return chunked_gated_recurrence(x.q, x.k, x.v, x.log_gate, chunk=self.chunk, state=state)

    def naive(self, x: RecurrenceInputs, state: Tensor | None) -> tuple[Tensor, Tensor]:
        assert x.log_gate is not None
        return naive_gated_recurrence(x.q, x.k, x.v, x.log_gate, state)

    def one_token(self, x: RecurrenceInputs, state: Tensor) -> tuple[Tensor, Tensor]:
        assert x.log_gate is not None
        return gated_step(x.q[:, :, 0], x.k[:, :, 0], x.v[:, :, 0], x.log_gate[:, :, 0], state)

    def chunk_flops(self, seq: int) -> int:
        chunks, size = _chunk_count(seq, self.chunk)
        d = self.head_dim
        # per chunk: scores Q Kᵀ and scores·V (L² d each), chunk state Kᵀ V and the read Q·S (L d² each)
        return chunks * (4 * size * size * d + 4 * size * d * d)


class DeltaRuleAttention(RecurrentAttention):
    """``S_t = α_t S_{t-1} + β_t k_t (v_t − α_t S_{t-1}ᵀ k_t)ᵀ`` (see ``delta``): DeltaNet (α = 1), Gated DeltaNet."""

    def chunked(self, x: RecurrenceInputs, state: Tensor | None) -> tuple[Tensor, Tensor]:
        assert x.beta is not None
        return chunked_delta_rule(x.q, x.k, x.v, x.beta, chunk=self.chunk, log_gate=x.log_gate, state=state)

    def naive(self, x: RecurrenceInputs, state: Tensor | None) -> tuple[Tensor, Tensor]:
        assert x.beta is not None
        return naive_delta_rule(x.q, x.k, x.v, x.beta, x.log_gate, state)

    def one_token(self, x: RecurrenceInputs, state: Tensor) -> tuple[Tensor, Tensor]:
        assert x.beta is not None
        gate = None if x.log_gate is None else x.log_gate[:, :, 0]
        return delta_step(x.q[:, :, 0], x.k[:, :, 0], x.v[:, :, 0], x.beta[:, :, 0], state, gate)

    def chunk_flops(self, seq: int) -> int:
        chunks, size = _chunk_count(seq, self.chunk)
        d = self.head_dim
        # per chunk, in multiply-adds: K Kᵀ, Q Kᵀ and scores·Δ (L² d each), two triangular solves (L² d / 2
        # each), and W·S, Q·S, Kᵀ·Δ (L d² each)
        return chunks * (2 * 4 * size * size * d + 2 * 3 * size * d * d)
