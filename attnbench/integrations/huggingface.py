"""Run an attnbench variant inside a Hugging Face transformers model (``pip install 'attnbench[hf]'``).

``register_hf_attention("window:radius=256")`` registers two functions with transformers under one name and
returns that name, to pass as ``attn_implementation=``:

- an attention function with transformers' signature ``(module, query, key, value, attention_mask, *,
  scaling, dropout, is_causal, **kwargs) -> (output (batch, seq, heads, head_dim), None)``, which builds the
  variant lazily per HF attention module (held as its submodule ``attnbench_attention``, so ``.to()``,
  ``state_dict`` and training see learned parameters), repeats key/value heads for grouped-query attention,
  and turns cached generation (fewer queries than keys) into the variant's cross form over the cache;
- a mask function that hands over the padding mask only, ``(batch, keys)`` bool, never a dense L×L mask:
  causality is the variant's algorithm, not a mask (without a registered mask function transformers ≥ 4.53
  passes no mask at all and padding is silently lost).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from attnbench import Attention, SpecError, create_attention
from attnbench.core.registry import parse_attention_spec

try:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "attnbench.integrations.huggingface needs transformers >= 4.53: pip install 'attnbench[hf]'"
    ) from err

NAME_PREFIX = "attnbench:"
SUBMODULE = "attnbench_attention"

# keyword arguments some models pass that change the maths in ways no attnbench variant implements
_UNSUPPORTED_KWARGS = ("sliding_window", "softcap", "s_aux", "sinks", "position_bias")

_registered: dict[str, HFAttentionSpec] = {}


@dataclass(frozen=True)
class HFAttentionSpec:
    """One registered variant: its canonical spec and whether it takes the model's scale as an option."""

    canonical: str
    takes_scale: bool

    @property
    def name(self) -> str:
        return NAME_PREFIX + self.canonical


def register_hf_attention(spec: str) -> str:
    """Register ``spec`` with transformers; return the name to pass as ``attn_implementation=``.

    Registering the same spec again is a no-op returning the same name.
    """
    parsed = parse_attention_spec(spec)
    takes_scale = "scale" in parsed.options
    if takes_scale and parsed.options["scale"] is not None:
        raise SpecError(
            f"attention {parsed.canonical!r}: inside a Hugging Face model the scale is the model's `scaling`; "
            "drop the scale option from the spec"
        )
    entry = HFAttentionSpec(canonical=parsed.canonical, takes_scale=takes_scale)
    _registered[entry.name] = entry
    AttentionInterface.register(entry.name, _attention_function(entry))
    AttentionMaskInterface.register(entry.name, padding_only_mask)
    return entry.name


def build_hf_attention(model: nn.Module) -> int:
    """Build now, rather than on the first call, the variant of every attention module that runs an attnbench spec.

    For variants with learned parameters: after this, ``model.parameters()`` (an optimizer), ``state_dict`` and
    ``load_state_dict`` include them before any forward. Recognises Llama-style attention modules (``head_dim``,
    ``scaling`` and ``config.num_attention_heads``); returns how many it built.
    """
    built = 0
    for module in model.modules():
        config = getattr(module, "config", None)
        implementation = getattr(config, "_attn_implementation", None)
        head_dim = getattr(module, "head_dim", None)
        if not (isinstance(implementation, str) and implementation.startswith(NAME_PREFIX)):
            continue
        if not isinstance(head_dim, int) or not hasattr(module, "scaling"):
            continue
        entry = _registered.get(implementation)
        if entry is None:
            raise ValueError(f"{implementation!r} is not registered yet: call register_hf_attention first")
        weight = next(module.parameters(), None)
        like = torch.empty(0, device=None if weight is None else weight.device)
        _variant_for(
            module, entry, num_heads=config.num_attention_heads, head_dim=head_dim, scaling=module.scaling, like=like
        )
        built += 1
    return built


# the mask function ---------------------------------------------------------------------------------------------
def padding_only_mask(
    *,
    batch_size: int | None = None,
    kv_length: int,
    kv_offset: int = 0,
    attention_mask: Tensor | None = None,
    q_length: int | None = None,
    q_offset: int | Tensor | None = None,
    cache_position: Tensor | None = None,
    device: torch.device | str | None = None,
    **_: Any,
) -> Tensor | None:
    """The keys' padding mask, ``(batch, keys)`` bool with True = real token, or None when every key is real.

    Accepts the keywords of both the 4.53 (``cache_position``) and the 5.x (``q_offset``, ``q_length``) mask
    interfaces and ignores the mask pattern transformers proposes. A static cache is longer than the tokens
    seen so far: the mask then covers only the filled keys, and the attention function drops the others.
    """
    if attention_mask is not None:
        seen = attention_mask.shape[-1]
    elif q_offset is not None and q_length is not None:
        seen = int(q_offset) + q_length
    elif cache_position is not None and cache_position.numel():
        seen = int(cache_position[-1]) + 1
    else:
        seen = kv_offset + kv_length
    filled = min(kv_length, seen - kv_offset)
    if attention_mask is None:
        if filled == kv_length:
            return None
        return torch.ones(batch_size or 1, filled, dtype=torch.bool, device=device)
    key_mask = attention_mask[:, kv_offset : kv_offset + filled].to(torch.bool)  # (B, Nk)
    if filled == kv_length and bool(key_mask.all()):
        return None
    return key_mask


# the attention function ----------------------------------------------------------------------------------------
def _attention_function(entry: HFAttentionSpec) -> Callable[..., tuple[Tensor, None]]:
    def attnbench_attention_forward(
        module: nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        is_causal: bool | None = None,
        **kwargs: Any,
    ) -> tuple[Tensor, None]:
        return hf_attention_forward(
            entry, module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, is_causal=is_causal,
            **kwargs,
        )  # fmt: skip

    attnbench_attention_forward.__qualname__ = f"attnbench_attention_forward[{entry.canonical}]"
    return attnbench_attention_forward


def hf_attention_forward(
    entry: HFAttentionSpec,
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    *,
    scaling: float | None = None,
    dropout: float = 0.0,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """transformers' attention call on ``(batch, heads, seq, head_dim)`` tensors → ``(batch, seq, heads, head_dim)``."""
    spec = entry.canonical
    for name in _UNSUPPORTED_KWARGS:
        if kwargs.get(name) is not None:
            raise ValueError(
                f"attnbench attention {spec!r} cannot apply `{name}` (this model passes it to attention); "
                "use a model without it or its own attn_implementation"
            )
    if dropout:
        raise ValueError(
            f"attnbench attention {spec!r} applies no attention dropout, got dropout={dropout}; "
            "set the model config's attention_dropout to 0"
        )
    # transformers' SDPA path: the call's is_causal wins, else the module's (decoders set it True)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    key, value = _repeat_kv_heads(query, key, value, spec)
    key_mask = _key_mask(attention_mask, batch=query.shape[0], keys=key.shape[2], causal=causal, spec=spec)
    if key_mask is not None and key_mask.shape[-1] < key.shape[2]:  # a static cache: drop the unfilled slots
        key, value = key[:, :, : key_mask.shape[-1]], value[:, :, : key_mask.shape[-1]]
    _refuse_packed_sequences(kwargs.get("position_ids"), attention_mask, query.shape[2], key.shape[2], spec)

    _, heads, _, head_dim = query.shape
    attention = _variant_for(
        module, entry, num_heads=heads, head_dim=head_dim, scaling=scaling, like=query, on_call=True
    )
    if not entry.takes_scale:
        query = query * _query_rescale(scaling, head_dim)
    out = _attend(attention, query, key, value, key_mask=key_mask, causal=causal, spec=spec)
    return rearrange(out, "b h n d -> b n h d").contiguous(), None


def _repeat_kv_heads(query: Tensor, key: Tensor, value: Tensor, spec: str) -> tuple[Tensor, Tensor]:
    """Grouped-query attention: each key/value head serves ``groups`` consecutive query heads (HF's repeat_kv)."""
    heads, kv_heads = query.shape[1], key.shape[1]
    if heads % kv_heads:
        raise ValueError(
            f"attnbench attention {spec!r}: {heads} query heads cannot share {kv_heads} key/value heads evenly"
        )
    groups = heads // kv_heads
    if groups == 1:
        return key, value
    key = repeat(key, "b h n d -> b (h g) n d", g=groups)  # (B, H, Nk, D)
    value = repeat(value, "b h n d -> b (h g) n d", g=groups)  # (B, H, Nk, Dv)
    return key, value


def _query_rescale(scaling: float | None, head_dim: int) -> float:
    """A variant without a scale option scores q·k by head_dim^-½; scaling q makes that the model's ``scaling``.

    Exact for every softmax-over-scores variant; a feature-map variant without a scale option sees the
    rescaled query as its input (what a model trained with it would see too).
    """
    if scaling is None or math.isclose(scaling, head_dim**-0.5, rel_tol=1e-9):
        return 1.0
    return scaling * head_dim**0.5


def _key_mask(attention_mask: Tensor | None, *, batch: int, keys: int, causal: bool, spec: str) -> Tensor | None:
    """The contract's ``key_mask`` (batch, seq_k) bool, True = real key, from what the model passed."""
    if attention_mask is None:
        return None
    if attention_mask.dim() == 2:
        return attention_mask.to(torch.bool).expand(batch, -1)
    if attention_mask.dim() == 4:  # a prepared mask the caller passed: usable only if it is causal + padding
        return _key_mask_from_4d(attention_mask, batch=batch, keys=keys, causal=causal, spec=spec)
    raise ValueError(
        f"attnbench attention {spec!r}: attention_mask has shape {tuple(attention_mask.shape)}; "
        "expected a (batch, keys) padding mask or a 4D (batch, 1, queries, keys) mask"
    )


def _key_mask_from_4d(mask: Tensor, *, batch: int, keys: int, causal: bool, spec: str) -> Tensor:
    if mask.dtype == torch.bool:
        allowed = mask
    else:  # additive: 0 where allowed, a large negative number (or -inf) where blocked
        allowed = mask == 0
        if bool(((mask != 0) & (mask > torch.finfo(mask.dtype).min / 2)).any()):
            raise ValueError(
                f"attnbench attention {spec!r}: the 4D attention_mask adds a bias to the scores; "
                "attnbench variants take a padding mask only"
            )
    allowed = allowed[..., -keys:].expand(batch, -1, -1, -1)  # (B, H or 1, Nq, Nk)
    queries = allowed.shape[2]
    # the last query sees every key it may (bottom-right causality), so its row is the padding mask
    key_mask = allowed[:, :, -1, :].any(dim=1)  # (B, Nk)
    expected = key_mask[:, None, None, :].expand(-1, 1, queries, -1)  # (B, 1, Nq, Nk)
    if causal:
        later = torch.ones(queries, keys, dtype=torch.bool, device=mask.device).tril(keys - queries)
        expected = expected & later
    has_key = expected.any(dim=-1, keepdim=True)  # rows with no key may be anything: they return zeros
    if bool(((allowed != expected) & has_key).any()):
        raise ValueError(
            f"attnbench attention {spec!r}: the 4D attention_mask is not a {'causal ' if causal else ''}padding "
            "mask (packed sequences or a custom pattern?); pass a (batch, keys) padding mask instead"
        )
    return key_mask


def _refuse_packed_sequences(
    position_ids: Tensor | None, attention_mask: Tensor | None, queries: int, keys: int, spec: str
) -> None:
    """transformers reads restarting position_ids as packed sequences; attnbench has no such mask."""
    # multimodal models pass 3D rotary positions, which say nothing about packing
    if position_ids is None or position_ids.dim() != 2 or attention_mask is not None:
        return
    if queries < 2 or queries != keys:
        return
    if bool((position_ids.diff(dim=-1) != 1).any()):
        raise ValueError(
            f"attnbench attention {spec!r} cannot separate packed sequences (position_ids restart within a row); "
            "pad the sequences into a batch with an attention_mask instead"
        )


def _variant_for(
    module: nn.Module,
    entry: HFAttentionSpec,
    *,
    num_heads: int,
    head_dim: int,
    scaling: float | None,
    like: Tensor,
    on_call: bool = False,
) -> Attention:
    """The variant this HF attention module runs, built on its first call and kept as its submodule."""
    scale = scaling if entry.takes_scale and scaling is not None else None
    built = getattr(module, SUBMODULE, None)
    if (
        isinstance(built, _HeldVariant)
        and (built.canonical, built.scale) == (entry.canonical, scale)
        and (built.attention.num_heads, built.attention.head_dim) == (num_heads, head_dim)
    ):
        return built.attention
    spec = entry.canonical
    if scale is not None:
        spec += ("," if ":" in spec else ":") + f"scale={scale!r}"
    attention = create_attention(spec, head_dim=head_dim, num_heads=num_heads)
    weight = next(module.parameters(), like)  # the model's own dtype, not an autocast one
    attention.to(device=like.device, dtype=weight.dtype if weight.is_floating_point() else like.dtype)
    attention.train(module.training)
    module.add_module(SUBMODULE, _HeldVariant(attention, canonical=entry.canonical, scale=scale))
    if on_call and any(p.requires_grad for p in attention.parameters()):
        warnings.warn(
            f"attnbench attention {entry.canonical!r} has learned parameters, created on this first call: an "
            "optimizer or load_state_dict from before it misses them; call build_hf_attention(model) first",
            stacklevel=4,
        )
    return attention


class _HeldVariant(nn.Module):
    """The built variant plus what it was built for, so a different spec or shape rebuilds it."""

    def __init__(self, attention: Attention, *, canonical: str, scale: float | None) -> None:
        super().__init__()
        self.attention = attention
        self.canonical = canonical
        self.scale = scale

    def extra_repr(self) -> str:
        return f"spec={self.canonical!r}"


# calls with fewer queries than keys ----------------------------------------------------------------------------
def _attend(
    attention: Attention, q: Tensor, k: Tensor, v: Tensor, *, key_mask: Tensor | None, causal: bool, spec: str
) -> Tensor:
    queries, keys = q.shape[2], k.shape[2]
    if queries == keys:
        return attention(q, k, v, causal=causal, key_mask=key_mask)
    if queries > keys:
        raise ValueError(f"attnbench attention {spec!r}: {queries} queries but only {keys} keys")
    reason = _no_cache_form_reason(attention)
    if not causal:  # cross-attention proper (encoder-decoder)
        if not type(attention).supports_cross:
            raise ValueError(
                f"attnbench attention {spec!r} cannot attend {queries} queries to {keys} other keys: it has no "
                "cross form (supports_cross=False); use softmax or a linear-family variant there"
            )
        return attention(q, k, v, causal=False, key_mask=key_mask)
    if reason is not None:
        raise ValueError(
            f"attnbench attention {spec!r} cannot serve cached generation ({queries} new queries against {keys} "
            f"cached keys): {reason}. Generate with use_cache=False, or use softmax or a linear-family variant"
        )
    past = keys - queries
    if queries == 1:  # the newest token sees every cached key: the cross form is exactly the causal row
        return attention(q, k, v, causal=False, key_mask=key_mask)
    # several new tokens at once: query i sees the cache plus new tokens up to itself (bottom-right causality)
    rows = [
        attention(
            q[:, :, i : i + 1],
            k[:, :, : past + i + 1],
            v[:, :, : past + i + 1],
            causal=False,
            key_mask=None if key_mask is None else key_mask[:, : past + i + 1],
        )
        for i in range(queries)
    ]
    return torch.cat(rows, dim=2)  # (B, H, Nq, Dv)


def _no_cache_form_reason(attention: Attention) -> str | None:
    """Why a causal row of this variant is not its cross form over the keys so far; None when it is.

    True of a variant that attends to every key (no pattern) and has a cross form: softmax and the linear
    family. A pattern (a window, blocks) depends on positions the cross form does not know.
    """
    cls = type(attention)
    if not cls.supports_cross:
        return "it has no cross form over a cache (supports_cross=False)"
    if attention.pattern_mask(1, 2, causal=False) is not None:
        return "its sparsity pattern depends on positions, which a cross form over the cache does not see"
    return None
