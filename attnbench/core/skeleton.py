"""The shared transformer skeleton ("Attention Is All You Need") with a pluggable backend in every slot.

Three shapes: :class:`EncoderClassifier`, :class:`DecoderLM` and :class:`Seq2Seq`. Each attention slot
(encoder self, decoder self, cross) takes its own spec; ``attention`` is the default for all of them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from attnbench.core.attention import Attention
from attnbench.core.baseline import BASELINE
from attnbench.core.positional import (
    POSITIONAL_KINDS,
    PositionalKind,
    RotaryEmbedding,
    additive_positional,
    embedding_scale,
)
from attnbench.core.registry import attention_class, create_attention, parse_attention_spec

CROSS_FALLBACK = BASELINE


# configs ---------------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class TransformerConfig:
    vocab_size: int
    d_model: int = 128
    num_heads: int = 4
    num_layers: int = 2
    d_ff: int | None = None  # None = 4 · d_model, as in the paper
    dropout: float = 0.1
    norm_first: bool = False  # False = post-LN as in the paper; True = pre-LN
    activation: Literal["relu", "gelu"] = "relu"
    positional: PositionalKind = "sinusoidal"
    max_len: int = 8192  # learned positions only
    attention: str = BASELINE  # the default spec for every attention slot
    pad_id: int | None = 0

    def __post_init__(self) -> None:
        _require(self.vocab_size >= 1, f"vocab_size must be >= 1, got {self.vocab_size}")
        _require(self.d_model >= 1 and self.num_heads >= 1, "d_model and num_heads must be >= 1")
        _require(
            self.d_model % self.num_heads == 0,
            f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}",
        )
        _require(self.num_layers >= 1, f"num_layers must be >= 1, got {self.num_layers}")
        _require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _require(self.activation in ("relu", "gelu"), f"activation must be relu or gelu, got {self.activation!r}")
        _require(
            self.positional in POSITIONAL_KINDS,
            f"positional must be one of {', '.join(POSITIONAL_KINDS)}, got {self.positional!r}",
        )
        if self.positional == "rotary":
            _require(self.head_dim % 2 == 0, f"rotary positions need an even head_dim, got {self.head_dim}")
        _require(
            self.pad_id is None or 0 <= self.pad_id < self.vocab_size,
            f"pad_id={self.pad_id} is outside the vocabulary (size {self.vocab_size})",
        )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def ffn_dim(self) -> int:
        return 4 * self.d_model if self.d_ff is None else self.d_ff


@dataclass(kw_only=True)
class EncoderClassifierConfig(TransformerConfig):
    num_classes: int
    pooling: Literal["cls", "mean"] = "cls"
    encoder_attention: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.num_classes >= 2, f"num_classes must be >= 2, got {self.num_classes}")
        _require(self.pooling in ("cls", "mean"), f"pooling must be cls or mean, got {self.pooling!r}")


@dataclass(kw_only=True)
class DecoderLMConfig(TransformerConfig):
    decoder_attention: str | None = None
    tie_embeddings: bool = True


@dataclass(kw_only=True)
class Seq2SeqConfig(TransformerConfig):
    num_decoder_layers: int | None = None  # None = num_layers
    encoder_attention: str | None = None
    decoder_attention: str | None = None
    cross_attention: str | None = None
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        for label, tok in (("bos_id", self.bos_id), ("eos_id", self.eos_id)):
            _require(0 <= tok < self.vocab_size, f"{label}={tok} is outside the vocabulary (size {self.vocab_size})")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


# attention slots -------------------------------------------------------------------------------------------
def resolve_cross_spec(spec: str) -> tuple[str, str | None]:
    """The spec a cross-attention slot really uses, and why it differs from ``spec`` (None if it doesn't)."""
    cls = attention_class(parse_attention_spec(spec).name)
    if cls.supports_cross:
        return spec, None
    return CROSS_FALLBACK, (
        f"attention {spec!r} is a self-attention pattern (supports_cross=False); "
        f"the cross-attention slot uses {CROSS_FALLBACK!r}"
    )


def _self_attention_backend(spec: str, config: TransformerConfig, *, causal: bool, slot: str) -> Attention:
    backend = create_attention(spec, head_dim=config.head_dim, num_heads=config.num_heads)
    if causal and not backend.supports_causal:
        raise ValueError(
            f"the {slot} slot needs causal attention but {spec!r} does not support it; "
            "pick a variant with supports_causal=True (see `attnbench list`)"
        )
    if not causal and not backend.supports_noncausal:
        raise ValueError(
            f"the {slot} slot needs bidirectional attention but {spec!r} is causal-only (supports_noncausal=False); "
            "use it in a decoder slot or pick another variant"
        )
    return backend


# building blocks -------------------------------------------------------------------------------------------
class MultiHeadAttention(nn.Module):
    """Q/K/V/O projections around a pluggable backend; rotary (if any) is applied to q and k in self-attention."""

    def __init__(
        self,
        d_model: int,
        backend: Attention,
        *,
        dropout: float = 0.0,
        rotary: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = backend.num_heads
        if d_model != backend.num_heads * backend.head_dim:
            raise ValueError(
                f"d_model={d_model} != num_heads·head_dim = {backend.num_heads}·{backend.head_dim} of the backend"
            )
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)
        self.backend = backend
        self.rotary = rotary
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        *,
        causal: bool = False,
        key_mask: Tensor | None = None,
    ) -> Tensor:
        source = x if memory is None else memory
        q = rearrange(self.q_proj(x), "b n (h d) -> b h n d", h=self.num_heads)
        k = rearrange(self.k_proj(source), "b n (h d) -> b h n d", h=self.num_heads)
        v = rearrange(self.v_proj(source), "b n (h d) -> b h n d", h=self.num_heads)
        if self.rotary is not None and memory is None:
            q, k = self.rotary(q), self.rotary(k)
        out = self.backend(q, k, v, causal=causal, key_mask=key_mask)
        return self.dropout(self.o_proj(rearrange(out, "b h n d -> b n (h d)")))


class FeedForward(nn.Module):
    """Position-wise FFN: Linear → activation → dropout → Linear."""

    def __init__(self, d_model: int, d_ff: int, *, activation: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, d_ff),
            nn.ReLU() if activation == "relu" else nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(d_ff, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class AddNorm(nn.Module):
    """Residual connection with LayerNorm: post-LN ``norm(x + f(x))`` or pre-LN ``x + f(norm(x))``."""

    def __init__(self, d_model: int, *, norm_first: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.norm_first = norm_first

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        if self.norm_first:
            return x + sublayer(self.norm(x))
        return self.norm(x + sublayer(x))


class EncoderLayer(nn.Module):
    def __init__(self, config: TransformerConfig, backend: Attention, rotary: RotaryEmbedding | None) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(config.d_model, backend, dropout=config.dropout, rotary=rotary)
        self.ffn = FeedForward(config.d_model, config.ffn_dim, activation=config.activation, dropout=config.dropout)
        self.attn_norm = AddNorm(config.d_model, norm_first=config.norm_first)
        self.ffn_norm = AddNorm(config.d_model, norm_first=config.norm_first)

    def forward(self, x: Tensor, key_mask: Tensor | None = None, *, causal: bool = False) -> Tensor:
        x = self.attn_norm(x, lambda h: self.self_attn(h, causal=causal, key_mask=key_mask))
        return self.ffn_norm(x, self.ffn)


class DecoderLayer(nn.Module):
    """Causal self-attention, then (if given a cross backend) cross-attention to the encoder memory, then FFN."""

    def __init__(
        self,
        config: TransformerConfig,
        self_backend: Attention,
        cross_backend: Attention | None,
        rotary: RotaryEmbedding | None,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(config.d_model, self_backend, dropout=config.dropout, rotary=rotary)
        self.self_norm = AddNorm(config.d_model, norm_first=config.norm_first)
        self.cross_attn = (
            None if cross_backend is None else MultiHeadAttention(config.d_model, cross_backend, dropout=config.dropout)
        )
        self.cross_norm = None if cross_backend is None else AddNorm(config.d_model, norm_first=config.norm_first)
        self.ffn = FeedForward(config.d_model, config.ffn_dim, activation=config.activation, dropout=config.dropout)
        self.ffn_norm = AddNorm(config.d_model, norm_first=config.norm_first)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        *,
        key_mask: Tensor | None = None,
        memory_key_mask: Tensor | None = None,
    ) -> Tensor:
        x = self.self_norm(x, lambda h: self.self_attn(h, causal=True, key_mask=key_mask))
        if self.cross_attn is not None and self.cross_norm is not None:
            if memory is None:
                raise ValueError("this decoder layer has cross attention and needs the encoder memory")
            cross = self.cross_attn
            x = self.cross_norm(x, lambda h: cross(h, memory, key_mask=memory_key_mask))
        return self.ffn_norm(x, self.ffn)


class TokenEmbedding(nn.Module):
    """Token embedding × sqrt(d_model) plus additive positions, then dropout."""

    def __init__(self, config: TransformerConfig, vocab_size: int | None = None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size or config.vocab_size, config.d_model)
        nn.init.normal_(self.embedding.weight, std=config.d_model**-0.5)
        self.scale = embedding_scale(config.d_model)
        self.positional = additive_positional(config.positional, config.d_model, config.max_len)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, tokens: Tensor, *, prefix: Tensor | None = None) -> Tensor:
        x = self.embedding(tokens) * self.scale  # (B, N, d_model)
        if prefix is not None:
            x = torch.cat((prefix.expand(x.shape[0], -1, -1), x), dim=1)  # (B, P + N, d_model)
        if self.positional is not None:
            x = self.positional(x)
        return self.dropout(x)


def _rotary(config: TransformerConfig) -> RotaryEmbedding | None:
    return RotaryEmbedding(config.head_dim) if config.positional == "rotary" else None


def _padding_mask(tokens: Tensor, pad_id: int | None, key_mask: Tensor | None) -> Tensor | None:
    if key_mask is not None:
        if key_mask.shape != tokens.shape or key_mask.dtype != torch.bool:
            raise ValueError(
                f"key_mask must be bool with the tokens' shape {tuple(tokens.shape)}, "
                f"got {key_mask.dtype} {tuple(key_mask.shape)}"
            )
        return key_mask
    if pad_id is None:
        return None
    mask = tokens != pad_id
    return None if bool(mask.all()) else mask


class Encoder(nn.Module):
    def __init__(self, config: TransformerConfig, spec: str) -> None:
        super().__init__()
        rotary = _rotary(config)
        self.layers = nn.ModuleList(
            EncoderLayer(config, _self_attention_backend(spec, config, causal=False, slot="encoder"), rotary)
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm_first else nn.Identity()

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, key_mask)
        return self.final_norm(x)


# the three models ------------------------------------------------------------------------------------------
class EncoderClassifier(nn.Module):
    """Encoder + pooling (a learned CLS vector at position 0, or the mean over real tokens) + linear head."""

    def __init__(self, config: EncoderClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.attention_spec = config.encoder_attention or config.attention
        self.embed = TokenEmbedding(config)
        self.cls = nn.Parameter(torch.randn(1, 1, config.d_model) * 0.02) if config.pooling == "cls" else None
        self.encoder = Encoder(config, self.attention_spec)
        self.head = nn.Linear(config.d_model, config.num_classes)

    def forward(self, tokens: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """``tokens`` (B, N) → class logits (B, num_classes). Padding (pad_id or key_mask False) is ignored."""
        mask = _padding_mask(tokens, self.config.pad_id, key_mask)
        x = self.embed(tokens, prefix=self.cls)
        if self.cls is not None and mask is not None:
            mask = torch.cat((mask.new_ones(mask.shape[0], 1), mask), dim=1)  # the CLS slot is always real
        h = self.encoder(x, mask)
        if self.cls is not None:
            pooled = h[:, 0]
        elif mask is None:
            pooled = h.mean(dim=1)
        else:
            weights = mask.unsqueeze(-1).to(h.dtype)  # (B, N, 1)
            pooled = (h * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        return self.head(pooled)


class DecoderLM(nn.Module):
    """Decoder-only language model: causal self-attention layers and next-token logits."""

    def __init__(self, config: DecoderLMConfig) -> None:
        super().__init__()
        self.config = config
        self.attention_spec = config.decoder_attention or config.attention
        self.embed = TokenEmbedding(config)
        rotary = _rotary(config)
        self.layers = nn.ModuleList(
            DecoderLayer(
                config,
                _self_attention_backend(self.attention_spec, config, causal=True, slot="decoder self-attention"),
                None,
                rotary,
            )
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm_first else nn.Identity()
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embed.embedding.weight

    def forward(self, tokens: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """``tokens`` (B, N) → logits (B, N, vocab); position t sees tokens ≤ t only."""
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, key_mask=key_mask)
        return self.head(self.final_norm(x))

    @torch.no_grad()
    def generate(self, prefix: Tensor, max_new_tokens: int, *, eos_id: int | None = None) -> Tensor:
        """Greedy continuation of ``prefix`` (B, P) by up to ``max_new_tokens`` tokens."""
        tokens = prefix
        done = torch.zeros(prefix.shape[0], dtype=torch.bool, device=prefix.device)
        for _ in range(max_new_tokens):
            next_token = self(tokens)[:, -1].argmax(dim=-1)
            if eos_id is not None and self.config.pad_id is not None:
                next_token = next_token.masked_fill(done, self.config.pad_id)
            tokens = torch.cat((tokens, next_token.unsqueeze(1)), dim=1)
            if eos_id is not None:
                done |= next_token == eos_id
                if bool(done.all()):
                    break
        return tokens


class Seq2Seq(nn.Module):
    """Encoder–decoder with cross attention: teacher-forced ``forward`` and ``greedy_decode``."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder_spec = config.encoder_attention or config.attention
        self.decoder_spec = config.decoder_attention or config.attention
        requested_cross = config.cross_attention or config.attention
        self.cross_spec, self.cross_fallback_reason = resolve_cross_spec(requested_cross)
        if self.cross_fallback_reason:
            warnings.warn(self.cross_fallback_reason, UserWarning, stacklevel=2)
        self.src_embed = TokenEmbedding(config)
        self.tgt_embed = TokenEmbedding(config)
        self.encoder = Encoder(config, self.encoder_spec)
        rotary = _rotary(config)
        num_decoder_layers = config.num_decoder_layers or config.num_layers
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(
                config,
                _self_attention_backend(self.decoder_spec, config, causal=True, slot="decoder self-attention"),
                create_attention(self.cross_spec, head_dim=config.head_dim, num_heads=config.num_heads),
                rotary,
            )
            for _ in range(num_decoder_layers)
        )
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm_first else nn.Identity()
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.head.weight = self.tgt_embed.embedding.weight

    def encode(self, src: Tensor, src_key_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        mask = _padding_mask(src, self.config.pad_id, src_key_mask)
        return self.encoder(self.src_embed(src), mask), mask

    def decode(self, tgt_in: Tensor, memory: Tensor, memory_key_mask: Tensor | None) -> Tensor:
        x = self.tgt_embed(tgt_in)
        for layer in self.decoder_layers:
            x = layer(x, memory, memory_key_mask=memory_key_mask)
        return self.head(self.final_norm(x))

    def forward(self, src: Tensor, tgt_in: Tensor, src_key_mask: Tensor | None = None) -> Tensor:
        """Teacher forcing: ``src`` (B, S), ``tgt_in`` (B, T) starting with BOS → logits (B, T, vocab)."""
        memory, mask = self.encode(src, src_key_mask)
        return self.decode(tgt_in, memory, mask)

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, max_len: int, src_key_mask: Tensor | None = None) -> Tensor:
        """Greedy output tokens (B, L ≤ max_len), BOS excluded; stops once every row has produced EOS.

        After a row's EOS its remaining positions hold ``pad_id`` (or EOS if the config has no pad).
        """
        memory, mask = self.encode(src, src_key_mask)
        batch = src.shape[0]
        filler = self.config.pad_id if self.config.pad_id is not None else self.config.eos_id
        tokens = torch.full((batch, 1), self.config.bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(batch, dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            next_token = self.decode(tokens, memory, mask)[:, -1].argmax(dim=-1)
            next_token = next_token.masked_fill(done, filler)
            tokens = torch.cat((tokens, next_token.unsqueeze(1)), dim=1)
            done |= next_token == self.config.eos_id
            if bool(done.all()):
                break
        return tokens[:, 1:]
