"""Linear-attention kernels: non-causal and causal (chunked), streamed in blocks; recurrent step; naive reference.

Values carry an extra column of ones (``v1``, width e = d + 1) so one matmul yields the numerator and the
normaliser φ(q)·Σφ(k) together; :func:`normalise` splits them. Masked keys get weight zero, so they add nothing
to either.

**Streaming.** Both forms walk the sequence in blocks of about :data:`BLOCK_TOKENS` tokens, carrying one m×e
state between blocks. Under autograd every block is checkpointed: only q, k, v, the block-boundary states and
the output stay alive, and a block's features (n·m, the largest tensors: m is 256 for Performer) are recomputed
in backward. Peak memory is O(n·(d + e) + block·(m + chunk)) plus the per-block states.

**Reference for exponential features.** Keys with a log scale s_j (FAVOR+) are weighted by exp(s_j − r), where
r is the largest log scale among the keys a query may see: every weight is ≤ 1 and the key that sets r has
weight 1, so nothing overflows or underflows wholesale. In the causal form r is a running maximum over past
keys only (an online softmax), so a future token cannot change — even by rounding — what an earlier query gets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import repeat

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from attnbench.variants.linear.feature_maps import FeatureMap, Features

FeatureFn = Callable[[Tensor], Features]
BLOCK_TOKENS = 1024  # tokens per streamed block: big enough for efficient matmuls, small next to long n
MAX_CHUNKS_PER_BLOCK = 32  # bounds the (chunks × chunks) prefix matrix of a block


def with_normaliser_column(v: Tensor) -> Tensor:
    return F.pad(v, (0, 1), value=1.0)  # (B, H, N, d + 1)


def normalise(out: Tensor) -> Tensor:
    """``(…, d + 1)`` numerator and normaliser → ``(…, d)`` output; a query with normaliser 0 gets 0.

    The weights are non-negative, so where the normaliser is positive the output is a convex combination of
    values and needs no guard; only 0 / 0 (no visible key, or all-zero ReLU features) does, and it divides
    by 1 instead. A fixed ε added to every normaliser would not be scale-free: FAVOR+'s stabilised
    features make the normaliser small, so ε would bias the output and stop the stabiliser (computed
    without gradient) from cancelling exactly — its gradient would then be wrong.
    """
    numerator, normaliser = out[..., :-1], out[..., -1:]
    return numerator / torch.where(normaliser > 0, normaliser, 1.0)


def masked_log_weights(keys: Features, key_mask: Tensor | None) -> Tensor | None:
    """``(B, H|1, N)`` log weight of every key: its log scale, −inf where masked; None when all are 0."""
    if key_mask is None:
        return keys.log_scale
    mask = key_mask[:, None, :]  # (B, 1, N)
    scale = keys.log_scale if keys.log_scale is not None else torch.zeros_like(mask, dtype=keys.values.dtype)
    return scale.masked_fill(~mask, -math.inf)


def finite_reference(running_max: Tensor) -> Tensor:
    # before any real key the maximum is −inf; 0 keeps exp() finite and every weight against it is 0 anyway
    return running_max.nan_to_num(neginf=0.0)


def _weight(log_w: Tensor, reference: Tensor) -> Tensor:
    """exp(log_w − reference), clamped at 1 (where no key was seen yet the finite reference is arbitrary)."""
    return torch.exp((log_w - reference).clamp_max(0.0))


def _maybe_checkpointed(fn: Callable[..., tuple[Tensor, ...]], *args: Tensor | None) -> tuple[Tensor, ...]:
    if not torch.is_grad_enabled():
        return fn(*args)
    return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False)


def _split(size: int, *xs: Tensor | None) -> list[tuple[Tensor | None, ...]]:
    """Blocks of ``size`` along the sequence (dim −2 of q/k/v, −1 of a key mask), grouped per block.

    ``split`` rather than slicing: its backward is one concatenation, where each slice's would build a
    full-length zero gradient (quadratic time over the blocks).
    """
    columns = [repeat(None) if x is None else x.split(size, dim=-2 if x.dim() == 4 else -1) for x in xs]
    return list(zip(*columns, strict=False))  # the None columns repeat forever


def _empty_state(like: Tensor, features: int) -> tuple[Tensor, Tensor]:
    """The state before any key: kv ``(B, H, m, e)`` zeros and reference ``(B, H)`` −inf."""
    b, h, _, d = like.shape
    kv = like.new_zeros(b, h, features, d + 1)
    return kv, like.new_full((b, h), -math.inf)


# non-causal ------------------------------------------------------------------------------------------------------
def linear_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, feature_map: FeatureMap) -> Tensor:
    """φ(Q)(φ(K)ᵀ[V, 1]), normalised: O(n·m·e) time, one m×e state. ``(B, H, Nq, d)``.

    Each block of queries is normalised on its own: without autograd the only n-sized buffer is the output.
    """
    kv = fold_keys(k, v, key_mask, feature_map).kv
    read_state = partial(_read_state, feature_map.frozen())
    outs = [normalise(_maybe_checkpointed(read_state, q_part, kv)[0]) for (q_part,) in _split(BLOCK_TOKENS, q)]
    return torch.cat(outs, dim=-2)


def fold_keys(k: Tensor, v: Tensor, key_mask: Tensor | None, feature_map: FeatureMap) -> RecurrentState:
    """Every key folded into one m×e state, referenced to the largest key log weight: the state after them all."""
    kv, reference = _empty_state(v, feature_map.size)
    add_keys = partial(_add_keys, feature_map.frozen())
    for k_part, v_part, mask in _split(BLOCK_TOKENS, k, v, key_mask):
        kv, reference = _maybe_checkpointed(add_keys, k_part, v_part, mask, kv, reference)
    return RecurrentState(kv=kv, reference=reference)


def _add_keys(
    feature_map: FeatureFn, k: Tensor, v: Tensor, key_mask: Tensor | None, kv: Tensor, reference: Tensor
) -> tuple[Tensor, Tensor]:
    """Fold one block of keys into the state, re-referencing it to the new largest key log weight."""
    keys = feature_map(k)
    v1 = with_normaliser_column(v)
    log_w = masked_log_weights(keys, key_mask)
    if log_w is None:
        return kv + keys.values.mT @ v1, reference
    new_reference = torch.maximum(reference, log_w.amax(dim=-1))  # (B, H|1)
    finite = finite_reference(new_reference)
    kv = kv * _weight(finite_reference(reference), finite)[..., None, None]
    v1 = v1 * _weight(log_w, finite.unsqueeze(-1)).unsqueeze(-1)
    return kv + keys.values.mT @ v1, new_reference


def _read_state(feature_map: FeatureFn, q: Tensor, kv: Tensor) -> tuple[Tensor]:
    return (feature_map(q).values @ kv,)  # a query's own scale cancels in its normalisation


# causal, chunked -------------------------------------------------------------------------------------------------
def block_tokens(chunk: int) -> int:
    """Tokens per streamed block: a whole number of chunks."""
    return chunk * max(1, min(MAX_CHUNKS_PER_BLOCK, BLOCK_TOKENS // chunk))


def causal_block_lengths(n: int, chunk: int) -> list[int]:
    """Token count of every block the causal form processes, the last one padded to whole chunks."""
    size = block_tokens(chunk)
    lengths = [size] * (n // size)
    if n % size:
        lengths.append(math.ceil(n % size / chunk) * chunk)
    return lengths


def causal_linear_attention(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, feature_map: FeatureMap, *, chunk: int
) -> Tensor:
    """Causal φ(Q)(φ(K)ᵀ[V, 1]) in chunks of ``chunk`` tokens, normalised block by block. ``(B, H, N, d)``.

    Within a chunk: the masked quadratic form (chunk × chunk scores). Across chunks: each chunk's m×e state,
    an exclusive prefix over the chunks of a block, and one state carried from block to block.
    """
    n = q.shape[-2]
    size = min(chunk, n)
    kv, reference = _empty_state(v, feature_map.size)
    block = partial(_causal_block, feature_map.frozen(), size)
    outs = []
    for *xs, mask in _split(block_tokens(size), q, k, v, key_mask):
        missing = -xs[0].shape[-2] % size
        if missing:
            # zero-padded keys sit after every real query, so causality already hides them
            xs = [F.pad(x, (0, 0, 0, missing)) for x in xs]
            mask = None if mask is None else F.pad(mask, (0, missing))
        out, kv, reference = _maybe_checkpointed(block, *xs, mask, kv, reference)
        outs.append(normalise(out))
    return torch.cat(outs, dim=-2)[:, :, :n]


def to_chunks(x: Tensor, size: int) -> Tensor:
    return rearrange(x, "b h (c l) ... -> b h c l ...", l=size)  # (B, H, C, L, …)


def from_chunks(x: Tensor) -> Tensor:
    return rearrange(x, "b h c l e -> b h (c l) e")


def _strictly_future(size: int, device: torch.device) -> Tensor:
    return torch.ones(size, size, dtype=torch.bool, device=device).triu(1)  # (L, L): key j after query i


def _causal_block(
    feature_map: FeatureFn,
    size: int,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None,
    kv_in: Tensor,
    reference_in: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """One block of whole chunks: outputs ``(B, H, T, e)``, the state after it and its reference."""
    queries = to_chunks(feature_map(q).values, size)  # (B, H, G, L, m)
    keys = feature_map(k)
    v1 = with_normaliser_column(v)
    log_w = masked_log_weights(keys, key_mask)
    k_c = to_chunks(keys.values, size)  # (B, H, G, L, m)
    if keys.log_scale is None:
        if log_w is not None:
            v1 = v1 * torch.exp(log_w).unsqueeze(-1)  # 1 for real keys, 0 for masked ones
        out, kv_out = _chunks(queries, k_c, to_chunks(v1, size), kv_in)
        return from_chunks(out), kv_out, reference_in
    assert log_w is not None
    out, kv_out, reference_out = _chunks_with_running_reference(
        queries, k_c, to_chunks(v1, size), to_chunks(log_w, size), kv_in, reference_in
    )
    return from_chunks(out), kv_out, reference_out


def _chunks(queries: Tensor, keys: Tensor, v1: Tensor, kv_in: Tensor) -> tuple[Tensor, Tensor]:
    """Chunked causal form, all key weights 1: ``(B, H, G, L, ·)`` chunks → outputs and the state after them."""
    states = keys.mT @ v1  # (B, H, G, m, e): what each chunk adds
    totals = kv_in.unsqueeze(2) + states.cumsum(dim=2)  # (B, H, G, m, e): state after each chunk
    before = torch.cat([kv_in.unsqueeze(2), totals[:, :, :-1]], dim=2)  # state before each chunk
    scores = (queries @ keys.mT).masked_fill_(_strictly_future(queries.shape[-2], queries.device), 0.0)
    out = (scores @ v1).add_(queries @ before)  # (B, H, G, L, e)
    # clone: a view would keep every chunk's state alive for as long as the carried one
    return out, totals[:, :, -1].clone()


def _chunks_with_running_reference(
    queries: Tensor, keys: Tensor, v1: Tensor, log_w: Tensor, kv_in: Tensor, reference_in: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """As :func:`_chunks`, for keys weighted exp(log_w) ``(B, H, G, L)`` against a running maximum.

    Query i uses r_i = max_{j≤i} log_w_j; chunk c's state is kept relative to r at its last token, and a prefix
    over chunks rescales each state by exp(r_then − r_now) ≤ 1: an online softmax over chunks.
    """
    size = queries.shape[-2]
    flat = rearrange(log_w, "b h g l -> b h (g l)")
    running = torch.maximum(flat.cummax(dim=-1).values, reference_in.unsqueeze(-1))  # (B, H, T), may be −inf
    r = to_chunks(finite_reference(running), size)  # (B, H, G, L): each query's reference
    chunk_end = r[..., -1]  # (B, H, G)
    states = keys.mT @ (v1 * _weight(log_w, chunk_end.unsqueeze(-1)).unsqueeze(-1))  # (B, H, G, m, e)

    # prefix p = 0…G (before chunk p; p = G is the block's outgoing state) is relative to the reference before p
    reference_before = torch.cat([finite_reference(reference_in).unsqueeze(-1), chunk_end], dim=-1)  # (B, H, G+1)
    count = states.shape[2]
    earlier = torch.ones(count + 1, count, dtype=torch.bool, device=states.device).tril(-1)  # chunk c before p
    mixing = (chunk_end.unsqueeze(-2) - reference_before.unsqueeze(-1)).masked_fill(~earlier, -math.inf)
    mixing = mixing.clamp_max(0.0).exp()  # (B, H, G+1, G)
    carried_in = _weight(finite_reference(reference_in).unsqueeze(-1), reference_before)  # (B, H, G+1)
    prefixes = torch.einsum("bhpc,bhcme->bhpme", mixing, states) + carried_in[..., None, None] * kv_in.unsqueeze(2)

    inter = (queries @ prefixes[:, :, :-1]).mul_(_weight(reference_before[..., :-1, None], r).unsqueeze(-1))
    # exp(log_w_j − r_i) for j ≤ i: ≤ 1, and 0 for masked or future keys
    decay = (log_w.unsqueeze(-2) - r.unsqueeze(-1)).masked_fill_(_strictly_future(size, queries.device), -math.inf)
    scores = (queries @ keys.mT).mul_(decay.exp_())  # (B, H, G, L, L)
    return (scores @ v1).add_(inter), prefixes[:, :, -1].clone(), running[..., -1].clone()


# recurrent decoding ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecurrentState:
    """Everything causal linear attention needs from the past: O(m·e) per head, whatever the length."""

    kv: Tensor  # (B, H, m, e): Σ_j exp(log_w_j − reference)·φ(k_j)⊗[v_j, 1]
    reference: Tensor  # (B, H): largest key log weight so far, −inf before the first key


def initial_state(
    batch: int, heads: int, features: int, value_dim: int, *, dtype: torch.dtype, device: torch.device | None
) -> RecurrentState:
    return RecurrentState(
        kv=torch.zeros(batch, heads, features, value_dim + 1, dtype=dtype, device=device),
        reference=torch.full((batch, heads), -math.inf, dtype=dtype, device=device),
    )


def recurrent_step(
    query: Tensor, key: Features, v1: Tensor, state: RecurrentState, key_valid: Tensor | None
) -> tuple[Tensor, RecurrentState]:
    """One token: ``query`` and ``key.values`` ``(B, H, m)``, ``v1`` ``(B, H, e)`` → ``(B, H, e)``, new state."""
    log_w = key.log_scale if key.log_scale is not None else torch.zeros_like(state.reference)
    if key_valid is not None:
        log_w = log_w.masked_fill(~key_valid[:, None], -math.inf)
    reference = torch.maximum(state.reference, log_w)
    finite = finite_reference(reference)
    carried = _weight(finite_reference(state.reference), finite)
    added = (key.values * _weight(log_w, finite).unsqueeze(-1)).unsqueeze(-1) * v1.unsqueeze(-2)  # (B, H, m, e)
    kv = state.kv * carried[..., None, None] + added
    out = (query.unsqueeze(-2) @ kv).squeeze(-2)
    return out, RecurrentState(kv=kv, reference=reference)


# reference -------------------------------------------------------------------------------------------------------
def quadratic_linear_attention(
    queries: Tensor, keys: Features, v1: Tensor, key_mask: Tensor | None, *, causal: bool
) -> Tensor:
    """The naive form: the n×n matrix φ(Q)φ(K)ᵀ, lower-triangular when causal. For tests at small n.

    Keys are weighted against the same reference as in the fast forms (the largest log weight a query may see),
    so the normaliser has the same scale.
    """
    scores = queries @ keys.values.mT  # (B, H, Nq, Nk)
    log_w = masked_log_weights(keys, key_mask)
    if log_w is not None:
        log_w = log_w.unsqueeze(-2).expand(*scores.shape[:-2], queries.shape[-2], -1)  # (B, H, Nq, Nk)
        if causal:
            log_w = log_w.masked_fill(_strictly_future(log_w.shape[-1], log_w.device), -math.inf)
        scores = scores * torch.exp(log_w - finite_reference(log_w.amax(dim=-1, keepdim=True)))
    if causal:
        scores = scores.tril()
    return scores @ v1
