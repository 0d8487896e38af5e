"""Decoding Longformer: a ring of the last ``radius + 1`` keys plus the head of the sequence up to its last global.

A causal query at t sees the keys ``t - radius … t`` (the band, kept in a :class:`RingState`) and every
global key at a position ≤ t; a global query at position g sees every key ≤ g. So the only tokens older
than the band that a step can need are those up to the last global position P: the state keeps the first
``P + 1`` tokens (the "head") and the ring, ``P + radius + 2`` tokens at most however long the sequence grows.
Past P, only the global positions of the head are read; the rest of it is dead weight of a size fixed by
the options (not by t), which keeps ``prefill`` a plain slice.

A global key inside the band is read from the ring only, so no key is counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnbench.core.window_cache import RingState, ring_prefill


@dataclass(frozen=True)
class BandGlobalState:
    ring: RingState  # the band: the last radius + 1 tokens
    head_k: Tensor  # (B, H, h, D), h = min(tokens seen, last global position + 1)
    head_v: Tensor  # (B, H, h, Dv)
    head_valid: Tensor  # (B, h) bool: the token is real (not a padded step)

    @property
    def count(self) -> int:
        return self.ring.count

    def bytes_in_use(self) -> int:
        head = (self.head_k.numel() + self.head_v.numel()) * self.head_k.element_size()
        return self.ring.bytes_in_use() + head + self.head_valid.numel() * self.head_valid.element_size()


def band_global_empty(
    batch: int, heads: int, head_dim: int, *, radius: int, device: torch.device | str | None, dtype: torch.dtype
) -> BandGlobalState:
    ring = RingState.empty(batch, heads, radius + 1, head_dim, device=device, dtype=dtype)
    head = torch.zeros(batch, heads, 0, head_dim, device=device, dtype=dtype)
    return BandGlobalState(ring, head, head, torch.zeros(batch, 0, dtype=torch.bool, device=device))


def band_global_prefill(
    k: Tensor, v: Tensor, key_mask: Tensor | None, *, radius: int, global_positions: tuple[int, ...]
) -> BandGlobalState:
    """The state after a prompt ``(B, H, n, D)``: its last ``radius + 1`` tokens and its first ``P + 1``."""
    b, _, n, _ = k.shape
    kept = min(n, _head_length(global_positions))
    valid = torch.ones(b, n, dtype=torch.bool, device=k.device) if key_mask is None else key_mask
    return BandGlobalState(
        ring=ring_prefill(k, v, key_mask, slots=radius + 1),
        head_k=k[:, :, :kept],
        head_v=v[:, :, :kept],
        head_valid=valid[:, :kept],
    )


def band_global_step(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    state: BandGlobalState,
    key_valid: Tensor | None,
    *,
    radius: int,
    global_positions: tuple[int, ...],
    scale: float,
) -> tuple[Tensor, BandGlobalState]:
    """One token ``(B, H, 1, D)`` at position t = ``state.count``: band + earlier globals, or (global) all ≤ t."""
    t = state.count
    b = q.shape[0]
    now_valid = torch.ones(b, dtype=torch.bool, device=q.device) if key_valid is None else key_valid
    slot = torch.tensor([t % state.ring.slots], device=q.device)
    ring = RingState(
        k=state.ring.k.index_copy(2, slot, k.to(state.ring.k.dtype)),
        v=state.ring.v.index_copy(2, slot, v.to(state.ring.v.dtype)),
        valid=state.ring.valid.index_copy(1, slot, now_valid[:, None]),
        count=t + 1,
    )
    head_k, head_v, head_valid = state.head_k, state.head_v, state.head_valid
    if t < _head_length(global_positions):
        head_k = torch.cat([head_k, k.to(head_k.dtype)], dim=2)
        head_v = torch.cat([head_v, v.to(head_v.dtype)], dim=2)
        head_valid = torch.cat([head_valid, now_valid[:, None]], dim=1)
    state = BandGlobalState(ring, head_k, head_v, head_valid)

    if t in global_positions:  # a global query: every token so far, all of them in the head
        keys, values, allowed = head_k, head_v, head_valid
    else:  # the band, and the global keys older than it
        positions = torch.arange(head_k.shape[2], device=q.device)
        is_global = torch.zeros_like(positions, dtype=torch.bool)
        listed = [p for p in global_positions if p < head_k.shape[2]]
        is_global[listed] = True
        older_globals = head_valid & (is_global & (positions < t - radius))[None, :]  # (B, h)
        keys = torch.cat([ring.k, head_k], dim=2)
        values = torch.cat([ring.v, head_v], dim=2)
        allowed = torch.cat([ring.valid, older_globals], dim=1)
    return _softmax_over(q, keys, values, allowed, scale=scale), state


def _softmax_over(q: Tensor, keys: Tensor, values: Tensor, allowed: Tensor, *, scale: float) -> Tensor:
    scores = (q @ keys.mT.to(q.dtype)) * scale  # (B, H, 1, S)
    mask = allowed[:, None, None, :]  # (B, 1, 1, S)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1).masked_fill(~mask, 0.0)  # a query with no allowed key gets zeros
    return weights @ values.to(q.dtype)


def _head_length(global_positions: tuple[int, ...]) -> int:
    return max(global_positions) + 1 if global_positions else 0
