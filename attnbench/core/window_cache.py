"""Decoding a sliding window: a ring buffer of the last ``radius + 1`` keys and values.

Shared by the window variants (``window`` on the block-sparse engine, ``flex-window``) — a variant imports
only ``core``.

Slot ``t mod (radius + 1)`` holds token t, so the buffer always holds exactly the keys a causal query at t
may see (itself and the ``radius`` before it). Softmax does not care about the order of its keys, so the
ring is never rotated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class RingState:
    k: Tensor  # (B, H, S, D), S = radius + 1 slots
    v: Tensor  # (B, H, S, Dv)
    valid: Tensor  # (B, S) bool: the slot holds a real key (written, and not masked)
    count: int  # tokens seen so far

    @classmethod
    def empty(
        cls, batch: int, heads: int, slots: int, head_dim: int, *, device: torch.device | str | None, dtype: torch.dtype
    ) -> RingState:
        zeros = torch.zeros(batch, heads, slots, head_dim, device=device, dtype=dtype)
        valid = torch.zeros(batch, slots, dtype=torch.bool, device=device)
        return cls(k=zeros, v=zeros, valid=valid, count=0)

    @property
    def slots(self) -> int:
        return self.k.shape[2]

    def bytes_in_use(self) -> int:
        """Only the slots written so far count: an unfilled slot is preallocated slack."""
        used = min(self.count, self.slots)
        per_slot = (self.k[:, :, :1].numel() + self.v[:, :, :1].numel()) * self.k.element_size()
        return used * (per_slot + self.valid.shape[0] * self.valid.element_size())


def ring_prefill(k: Tensor, v: Tensor, key_mask: Tensor | None, *, slots: int) -> RingState:
    """The ring after a prompt: its last ``slots`` tokens, each in the slot it would have been stepped into."""
    b, h, n, d = k.shape
    state = RingState.empty(b, h, slots, d, device=k.device, dtype=k.dtype)
    kept = min(n, slots)
    positions = torch.arange(n - kept, n, device=k.device)
    index = positions % slots
    valid = torch.ones(b, kept, dtype=torch.bool, device=k.device) if key_mask is None else key_mask[:, -kept:]
    v_ring = v.new_zeros(b, h, slots, v.shape[-1])
    return RingState(
        k=state.k.index_copy(2, index, k[:, :, -kept:]),
        v=v_ring.index_copy(2, index, v[:, :, -kept:]),
        valid=state.valid.index_copy(1, index, valid),
        count=n,
    )


def ring_step(
    q: Tensor, k: Tensor, v: Tensor, state: RingState, key_valid: Tensor | None, *, scale: float
) -> tuple[Tensor, RingState]:
    """One token ``(B, H, 1, D)``: write it over the oldest slot, then softmax over the valid slots."""
    slot = torch.tensor([state.count % state.slots], device=q.device)
    valid_now = (
        torch.ones(q.shape[0], 1, dtype=torch.bool, device=q.device) if key_valid is None else key_valid[:, None]
    )
    state = RingState(
        k=state.k.index_copy(2, slot, k.to(state.k.dtype)),
        v=state.v.index_copy(2, slot, v.to(state.v.dtype)),
        valid=state.valid.index_copy(1, slot, valid_now),
        count=state.count + 1,
    )
    scores = (q @ state.k.mT.to(q.dtype)) * scale  # (B, H, 1, S)
    allowed = state.valid[:, None, None, :]  # (B, 1, 1, S)
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1).masked_fill(~allowed, 0.0)  # a query with no valid key gets zeros
    return weights @ state.v.to(q.dtype), state
