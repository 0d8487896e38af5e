"""Softmax attention over a union of key sets without joining them: one fused pass per set, merged exactly.

A query block of the block engine attends its band (a strided view of the padded keys), its random blocks
and the global keys. Joining them with ``torch.cat`` copies every block's band — as many bytes as the keys
times the band width over the block — and on CPU that copy cost as much as the attention itself. Instead:

- **forward**: for each part ``p``, CPU SDPA's fused flash kernel returns the part's output ``O_p`` and the
  log-sum-exp ``L_p`` of its scores; the union's ``L = logsumexp_p L_p`` and ``O = Σ_p exp(L_p − L) O_p``.
- **backward**: the flash backward of part ``p`` called with the *merged* ``O`` and ``L`` is the gradient of
  the union softmax restricted to that part's keys (its probabilities ``exp(s − L)`` and the row term
  ``rowsum(dO ⊙ O)`` are the union's), so the queries' gradient is the sum over parts and each part's key
  and value gradients come out directly.

:func:`joined_attention` — one SDPA over the concatenated keys — is the reference beside it, and the path on
devices other than the CPU (CUDA's fused kernels return their log-sum-exp differently).

Masked scores are a large *finite* negative number, so a part with no attendable key for a row still has
a log-sum-exp near that number, and a row with none in *any* part ends up with the sum of the parts' uniform
averages, not one uniform average: such rows carry no meaning and the engine zeroes them (``rows_with_keys``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FLASH_BACKWARD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


class KeyPart:
    """One key set: ``keys``/``values`` ``(Bh, nb, W_p, F)`` (views allowed) and its additive ``mask``."""

    __slots__ = ("keys", "mask", "values")

    def __init__(self, keys: Tensor, values: Tensor, mask: Tensor | None) -> None:
        self.keys, self.values, self.mask = keys, values, mask


def attention_over_parts(queries: Tensor, parts: Sequence[KeyPart]) -> Tensor:
    """``softmax(q·kᵀ + mask)·v`` over the union of ``parts`` for ``(Bh, nb, blk, F)`` queries (scale 1)."""
    if len(parts) == 1:
        part = parts[0]
        return F.scaled_dot_product_attention(queries, part.keys, part.values, attn_mask=part.mask, scale=1.0)
    if queries.device.type == "cpu" and _FLASH is not None and _FLASH_BACKWARD is not None:
        masks = tuple(part.mask for part in parts)
        tensors = [t for part in parts for t in (part.keys, part.values)]
        try:
            return _MergedFlash.apply(masks, queries, *tensors)
        except RuntimeError:  # an input the private kernel refuses (SDPA would route it elsewhere): no fast path
            return joined_attention(queries, parts)
    return joined_attention(queries, parts)


def joined_attention(queries: Tensor, parts: Sequence[KeyPart]) -> Tensor:
    """The reference: one SDPA over the parts concatenated along the key axis (a copy of every key set)."""
    keys = torch.cat([part.keys for part in parts], dim=2)  # (Bh, nb, ΣW_p, F)
    values = torch.cat([part.values for part in parts], dim=2)
    masks = [part.mask if part.mask is not None else queries.new_zeros(1, 1, 1, part.keys.shape[2]) for part in parts]
    shape = torch.broadcast_shapes(*(m.shape[:-1] for m in masks))
    mask = torch.cat([m.expand(*shape, m.shape[-1]) for m in masks], dim=-1)  # (1, 1 or nb, 1 or blk, ΣW_p)
    if all(part.mask is None for part in parts):
        mask = None
    return F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, scale=1.0)


class _MergedFlash(torch.autograd.Function):
    @staticmethod
    def forward(ctx, masks: tuple[Tensor | None, ...], queries: Tensor, *keys_values: Tensor) -> Tensor:  # type: ignore[override]
        # folded in as each part finishes, in place on the first kernel's output: one part's output alive at a
        # time beside the running result (a fresh n·F buffer per part would also cost its page faults again)
        merged, lse = _FLASH(queries, keys_values[0], keys_values[1], attn_mask=masks[0], scale=1.0)
        for index in range(1, len(masks)):
            out, part_lse = _FLASH(
                queries, keys_values[2 * index], keys_values[2 * index + 1], attn_mask=masks[index], scale=1.0
            )  # (Bh, nb, blk, F), (Bh, nb, blk)
            total = torch.logaddexp(lse, part_lse)
            # (1 − w)·merged + w·out with w = exp(L_p − L): the two weights sum to 1, one rounding per part
            merged.lerp_(out, (part_lse - total).exp().unsqueeze(-1).to(out.dtype))
            lse = total
            del out
        ctx.masks = masks
        ctx.save_for_backward(queries, merged, lse, *keys_values)
        return merged

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        queries, merged, lse, *keys_values = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_queries: Tensor | None = None
        grads: list[Tensor] = []
        for index, mask in enumerate(ctx.masks):
            keys, values = keys_values[2 * index], keys_values[2 * index + 1]
            d_q, d_k, d_v = _FLASH_BACKWARD(
                grad_out, queries, keys, values, merged, lse, 0.0, False, attn_mask=mask, scale=1.0
            )
            grad_queries = d_q if grad_queries is None else grad_queries.add_(d_q)
            grads.extend((d_k, d_v))
        return (None, grad_queries, *grads)
