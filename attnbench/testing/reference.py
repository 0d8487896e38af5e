"""The float64 softmax every ``exact`` variant must equal, and the error measure the kit reports."""

from __future__ import annotations

import torch
from torch import Tensor

ATOL = 1e-5
RTOL = 1e-4


def reference_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    allowed: Tensor | None = None,
    causal: bool = False,
    key_mask: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """Softmax attention computed in float64 over the allowed keys; returns q's dtype; differentiable.

    ``allowed`` is bool ``(heads or 1, seq_q, seq_k)`` (a variant's ``pattern_mask``); ``key_mask`` is
    ``(batch, seq_k)`` with True = attendable. A query with no allowed key returns zeros.
    """
    nq, nk = q.shape[-2], k.shape[-2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.einsum("bhid,bhjd->bhij", q.double(), k.double()) * scale  # (B, H, Nq, Nk)
    mask = torch.ones(1, 1, nq, nk, dtype=torch.bool, device=q.device)
    if allowed is not None:
        mask = mask & allowed.to(q.device).unsqueeze(0)  # (1, H|1, Nq, Nk)
    if causal:
        mask = mask & torch.ones(nq, nk, dtype=torch.bool, device=q.device).tril()
    if key_mask is not None:
        mask = mask & key_mask[:, None, None, :]
    has_key = mask.any(dim=-1, keepdim=True)
    # rows with no key get finite scores (not -inf) so neither the softmax nor its gradient produces NaN
    scores = scores.masked_fill(~mask & has_key, float("-inf")).masked_fill(~has_key, 0.0)
    weights = torch.softmax(scores, dim=-1) * has_key
    return torch.einsum("bhij,bhjd->bhid", weights, v.double()).to(q.dtype)


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """‖actual − expected‖ / ‖expected‖ in float64."""
    a, e = actual.detach().double(), expected.detach().double()
    return float((a - e).norm() / e.norm().clamp_min(1e-300))
